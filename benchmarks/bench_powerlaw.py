"""Speed and agreement of our power-law fit against the two references users compare it with.

What is measured: wall time (best of k repeats, ``time.perf_counter``) of

* ``powerlaw.Fit(evals, parameter_ranges={"alpha": [1, 1e6]})`` (powerlaw 2.0, unbounded alpha),
* WeightWatcher 0.7.x's default fit ``weightwatcher.WW_powerlaw.WWFit(evals)`` (if importable),
* ours, ``spectral_callbacks.spectra.fit_power_law(evals)``,

on the same eigenvalues, for n = 512 ... 4096: realistic ESDs (squared singular values of
``(2n, n)`` Student-t matrices, df=3: heavy-tailed, alpha typically 4-12) and Pareto samples with a
known exponent (alpha = 2.5). Why: the fit runs once per layer per logged epoch, so it must cost
little next to the SVD, and it must give the references' numbers (|delta alpha| < 1e-6).

Targets at n = 4096: >= 100x faster than powerlaw, >= 3x faster than WWFit, |delta alpha| < 1e-6.
``--quick`` skips powerlaw at n = 4096 (its slowest case). Run:
``.venv/bin/python benchmarks/bench_powerlaw.py [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import powerlaw
import scipy.linalg
from common import best_time, load_average

from spectral_callbacks.spectra import fit_power_law

with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:  # WeightWatcher prints about CUDA on import
        from weightwatcher.WW_powerlaw import WWFit
    except ImportError:
        WWFit = None

SIZES = (512, 1024, 2048, 4096)
TARGET_N = 4096
PARETO_ALPHA = 2.5
TARGET_VS_POWERLAW = 100.0
TARGET_VS_WW = 3.0
TARGET_DELTA_ALPHA = 1e-6


@dataclass
class Row:
    """Timings (seconds; NaN when not run) and differences for one data set."""

    data: str
    n: int
    ours: float
    powerlaw: float = math.nan
    ww: float = math.nan
    d_alpha_pl: float = math.nan
    d_D_pl: float = math.nan  # noqa: N815 - D is the KS distance's name
    d_alpha_ww: float = math.nan
    d_D_ww: float = math.nan  # noqa: N815 - D is the KS distance's name


def student_t_esd(n: int, rng: np.random.Generator) -> np.ndarray:
    """Squared singular values of a ``(2n, n)`` matrix of Student-t (df=3) entries."""
    return np.square(scipy.linalg.svdvals(rng.standard_t(3.0, size=(2 * n, n)), check_finite=False))


def pareto_sample(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` draws of a Pareto law ``p(x) ~ x^-2.5`` on ``[1, inf)``."""
    return 1.0 + rng.pareto(PARETO_ALPHA - 1.0, size=n)


def measure(data: str, evals: np.ndarray, skip_powerlaw: bool) -> Row:
    """Time the three fits on ``evals`` and compare their alpha and D."""
    n = evals.size
    ours_time, ours = best_time(lambda: fit_power_law(evals), 7 if n <= 1024 else 5)
    row = Row(data, n, ours_time)
    if not skip_powerlaw:

        def reference() -> Any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return powerlaw.Fit(evals, parameter_ranges={"alpha": [1, 1e6]}, verbose=False)

        row.powerlaw, fit = best_time(reference, 3 if n <= 1024 else 1)
        row.d_alpha_pl, row.d_D_pl = abs(fit.alpha - ours.alpha), abs(fit.D - ours.D)
    if WWFit is not None:
        row.ww, fit = best_time(lambda: WWFit(evals), 5 if n <= 1024 else 3)
        row.d_alpha_ww, row.d_D_ww = abs(fit.alpha - ours.alpha), abs(fit.D - ours.D)
    return row


def print_table(rows: list[Row]) -> None:
    """One line per data set: times in ms, speed-ups, and differences of alpha and D."""
    header = (
        f"{'data':<10}{'n':>6}{'powerlaw ms':>13}{'WW ms':>9}{'ours ms':>9}{'pl/ours':>9}{'WW/ours':>9}"
        f"{'|da| pl':>10}{'|dD| pl':>10}{'|da| WW':>10}{'|dD| WW':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.data:<10}{r.n:>6}{1e3 * r.powerlaw:>13.1f}{1e3 * r.ww:>9.2f}{1e3 * r.ours:>9.2f}"
            f"{r.powerlaw / r.ours:>9.1f}{r.ww / r.ours:>9.2f}"
            f"{r.d_alpha_pl:>10.1e}{r.d_D_pl:>10.1e}{r.d_alpha_ww:>10.1e}{r.d_D_ww:>10.1e}"
        )


def verdicts(rows: list[Row]) -> list[tuple[str, str]]:
    """PASS/FAIL/SKIP for each target on each n = 4096 data set (SKIP: reference not run)."""
    results = []
    for r in (r for r in rows if r.n == TARGET_N):
        deltas = [d for d in (r.d_alpha_pl, r.d_alpha_ww) if not math.isnan(d)]
        checks = [
            (
                r.powerlaw / r.ours,
                r.powerlaw / r.ours >= TARGET_VS_POWERLAW,
                f">= {TARGET_VS_POWERLAW:g}x vs powerlaw",
            ),
            (r.ww / r.ours, r.ww / r.ours >= TARGET_VS_WW, f">= {TARGET_VS_WW:g}x vs WWFit"),
            (
                max(deltas, default=math.nan),
                max(deltas, default=0.0) < TARGET_DELTA_ALPHA,
                "|delta alpha| < 1e-6",
            ),
        ]
        for value, passed, text in checks:
            verdict = "SKIP" if math.isnan(value) else "PASS" if passed else "FAIL"
            results.append((verdict, f"{r.data:<9} n={r.n}: {text} (measured {value:.3g})"))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip powerlaw at n=4096")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"WeightWatcher WWFit: {'available' if WWFit is not None else 'NOT importable'}")
    rows = []
    for n in SIZES:
        skip = args.quick and n == TARGET_N
        rows.append(measure("student-t", student_t_esd(n, rng), skip))
        rows.append(measure("pareto", pareto_sample(n, rng), skip))
    print_table(rows)
    print(f"{load_average()}\n")
    for verdict, text in verdicts(rows):
        print(f"{verdict}  {text}")


if __name__ == "__main__":
    main()
