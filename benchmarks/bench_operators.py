"""Spectra of conv layers as whole operators (anonymous, 2019): Lanczos and KPM against exact spectra.

The operators: 3x3 convolutions with circular padding (stride 1), whose exact singular values the 2-D
FFT gives (``exact_circular_conv_svals``, one small SVD per frequency), so the estimates can be
checked on operators far too large to form:

* 64 -> 64 channels on a 40x40 input: ``A^T A`` is 102,400-dimensional;
* 64 -> 64 channels on 56x56, the size of ResNet-18's first stage: 200,704-dimensional.

Kernels: "random" (Gaussian, He-scaled) and "trained" (heavy-tailed Student-t entries plus three strong
rank-one spikes, like trained layers). What is measured, per operator: median times of ``--repeats``
runs (seeds 0, 1, ...), the worst run's errors:

* ``top_eigenvalues(op, 1)``: wall time, products with one vector, and the relative error of the
  largest eigenvalue against the exact one;
* ``kpm_density(op, 50, lambda_max=1.01 * top)`` with its defaults (256 moments, 8 probes): wall
  time, products, and L1 = sum over bins |c_kpm - c_exact| / n, i.e. the L1 distance between the
  two histograms normalized to densities (``sum |p_kpm - p_exact| * bin width``);
* for context, the exact FFT reference's time.

Targets (per operator, on this 2-core machine): Lanczos + KPM < 60 s, L1 < 0.05 with 50 bins,
top eigenvalue within 1e-6 relative. The machine is shared: multi-threaded BLAS suffers badly
from other processes (a spinning thread waits for a descheduled one), hence ``--threads``.
Run: ``.venv/bin/python benchmarks/bench_operators.py [--threads N] [--repeats K] [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import numpy as np
from common import load_average
from scipy.sparse.linalg import LinearOperator
from threadpoolctl import threadpool_limits

from spectral_callbacks.spectra import ConvOperator, exact_circular_conv_svals, kpm_density, top_eigenvalues

CASES = ((64, 40), (64, 56))  # (channels, input size)
BINS = 50
TARGET_SECONDS = 60.0
TARGET_L1 = 0.05
TARGET_TOP = 1e-6


@dataclass
class Row:
    """Medians over the repeats for one operator and kernel."""

    channels: int
    size: int
    kernel: str
    exact_s: float
    lanczos_s: float
    lanczos_products: int
    kpm_s: float
    kpm_products: int
    top_error: float
    l1: float

    @property
    def dimension(self) -> int:
        return self.channels * self.size * self.size

    @property
    def total_s(self) -> float:
        return self.lanczos_s + self.kpm_s


class Counted(LinearOperator):
    """Counts the vectors a symmetric operator is applied to."""

    def __init__(self, operator: LinearOperator) -> None:
        super().__init__(operator.dtype, operator.shape)
        self.operator, self.count = operator, 0

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        self.count += 1
        return self.operator.matvec(x)


def kernel(kind: str, channels: int, seed: int) -> np.ndarray:
    """A random (Gaussian) or trained-like (heavy-tailed + spikes) 3x3 kernel."""
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(9 * channels)
    if kind == "random":
        return scale * rng.standard_normal((channels, channels, 3, 3))
    bulk = scale * rng.standard_t(2.5, (channels, channels, 3, 3))
    u, v = rng.standard_normal((channels, 3)), rng.standard_normal((3, 9 * channels))
    return bulk + ((u * [4.0, 2.5, 1.5]) @ v * scale**2).reshape(bulk.shape)


def measure(channels: int, size: int, kind: str, repeats: int) -> Row:
    """Time the exact reference, Lanczos and KPM ``repeats`` times (seeds 0, 1, ...): median times,
    the last run's products, the worst run's errors."""
    weight = kernel(kind, channels, seed=channels)
    op = ConvOperator(weight, input_hw=(size, size), padding=1, padding_mode="circular")
    times: dict[str, list[float]] = {"exact": [], "lanczos": [], "kpm": []}
    l1: list[float] = []
    top_errors: list[float] = []
    for repeat in range(repeats):
        start = time.perf_counter()
        exact = exact_circular_conv_svals(weight, (size, size)) ** 2
        times["exact"].append(time.perf_counter() - start)
        counted = Counted(op.gram())
        start = time.perf_counter()
        top = top_eigenvalues(counted, 1, seed=repeat)
        times["lanczos"].append(time.perf_counter() - start)
        start = time.perf_counter()
        density = kpm_density(op, BINS, lambda_max=1.01 * top[0], seed=repeat)
        times["kpm"].append(time.perf_counter() - start)
        reference = np.histogram(exact, density.edges)[0]
        l1.append(float(np.abs(density.counts - reference).sum() / exact.size))
        top_errors.append(abs(top[0] - exact[0]) / exact[0])
    return Row(
        channels=channels,
        size=size,
        kernel=kind,
        exact_s=statistics.median(times["exact"]),
        lanczos_s=statistics.median(times["lanczos"]),
        lanczos_products=counted.count,
        kpm_s=statistics.median(times["kpm"]),
        kpm_products=density.num_matvecs,
        top_error=max(top_errors),
        l1=max(l1),
    )


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'operator':<24}{'n':>9}{'kernel':>9}{'exact s':>9}{'Lanczos s':>11}{'(prods)':>9}"
        f"{'KPM s':>8}{'(prods)':>9}{'total s':>9}{'top rel err':>13}{'L1':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        name = f"{r.channels}->{r.channels} 3x3 @ {r.size}x{r.size}"
        print(
            f"{name:<24}{r.dimension:>9,}{r.kernel:>9}{r.exact_s:>9.2f}{r.lanczos_s:>11.2f}"
            f"{r.lanczos_products:>9}{r.kpm_s:>8.2f}{r.kpm_products:>9}{r.total_s:>9.2f}"
            f"{r.top_error:>13.1e}{r.l1:>9.4f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1, see above)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per operator; medians are shown")
    parser.add_argument("--quick", action="store_true", help="only the 102,400-dimensional operator")
    args = parser.parse_args()
    cases = CASES[:1] if args.quick else CASES
    rows = []
    with threadpool_limits(limits=args.threads, user_api="blas"):
        for channels, size in cases:
            for kind in ("random", "trained"):
                rows.append(measure(channels, size, kind, args.repeats))
    print(f"BLAS threads: {args.threads}; median times and worst errors of {args.repeats} runs (seeds 0..)")
    print("KPM: 256 moments, 8 probes, lambda_max = 1.01 x Lanczos' top eigenvalue")
    print("L1 = sum over the 50 bins of |c_kpm - c_exact| / n  (= L1 distance of the normalized densities)")
    print_table(rows)
    print(f"{load_average()}\n")
    for r in rows:
        name = f"{r.channels}->{r.channels} @ {r.size}x{r.size} {r.kernel:<7}"
        for passed, text in (
            (r.total_s < TARGET_SECONDS, f"Lanczos + KPM {r.total_s:.1f} s < {TARGET_SECONDS:g} s"),
            (r.l1 < TARGET_L1, f"L1 {r.l1:.4f} < {TARGET_L1:g}"),
            (r.top_error < TARGET_TOP, f"top eigenvalue rel. error {r.top_error:.1e} < {TARGET_TOP:g}"),
        ):
            print(f"{'PASS' if passed else 'FAIL'}  {name}: {text}")


if __name__ == "__main__":
    main()
