"""Our ``analyze`` against WeightWatcher's ``analyze()`` on checkpoints you have (safetensors).

For each path (a ``.safetensors`` file or a directory of shards, which WeightWatcher reads too):
both analyses with their defaults, one BLAS thread, the time of each, how many layers each
analyzed, and the largest |difference| over the matched layers of the five metrics issue 9 names
(target < 0.01; with float64 SVDs on both sides the differences are rounding, ~1e-13).

Run: ``.venv/bin/python benchmarks/compare_weightwatcher.py PATH [PATH ...]``
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from common import best_time, weightwatcher_details
from threadpoolctl import threadpool_limits

from spectral_callbacks.posthoc import analyze_paths

METRICS = ("alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank")
TARGET = 0.01


def compare(path: Path) -> bool:
    """Print the comparison for one path; whether every metric is within the target."""
    ours_time, (result,) = best_time(lambda: analyze_paths([path]), 1)
    if result.error is not None:
        raise SystemExit(f"{path}: {result.error}")
    ours = {row.name: row for row in result.rows if row.status != "skipped"}
    ww_time, details = best_time(lambda: weightwatcher_details(str(path)), 1)
    if details is None:
        raise SystemExit("WeightWatcher is not installed: pip install weightwatcher")
    worst = dict.fromkeys(METRICS, 0.0)
    matched = 0
    for _, row in details.iterrows():
        mine = ours.get(str(row["longname"]).removesuffix(".weight"))
        if mine is None:
            continue
        matched += 1
        for metric in METRICS:
            worst[metric] = max(worst[metric], abs(getattr(mine, metric) - float(row[metric])))
    print(f"\n== {path} ({result.format})")
    print(f"ours: {len(ours)} layers in {ours_time:.2f} s; WeightWatcher: {len(details)} layers in "
          f"{ww_time:.2f} s ({ww_time / ours_time:.1f}x ours); matched {matched}")  # fmt: skip
    for metric, value in worst.items():
        print(f"  max |delta {metric}| = {value:.1e}")
    return matched == len(details) and all(value < TARGET for value in worst.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args()
    os.environ.update({name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    with threadpool_limits(limits=1):
        verdicts = [compare(path) for path in args.paths]
    verdict = "PASS" if all(verdicts) else "FAIL"
    print(f"\n{verdict}: every WeightWatcher layer matched, all |delta| < {TARGET}")


if __name__ == "__main__":
    main()
