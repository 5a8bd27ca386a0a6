"""Running ``spectral-callbacks analyze`` in this process on a damaged file, and the contract its
outcome must keep.

The contract: exit code 0 (the damage left a readable file) or 1; on 1, stderr is one line that
starts with the program's name, names the file and says what is wrong; never a traceback; and
the Python allocations of the whole command (numpy's included, which tracemalloc sees) and the
process's peak resident memory stay under :data:`MEMORY_BOUND`, so a lying shape cannot make a
reader allocate what the header claims.

Hypothesis profiles: ``fuzz-ci`` (the default: a few dozen cases per format, derandomized, no
example database, so CI runs the same cases every time) and ``fuzz-slow`` (10,000 cases per
format, random), chosen with ``SPECTRAL_FUZZ_PROFILE=slow``.
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import shutil
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, reject, settings

from spectral_callbacks.cli import main

MEMORY_BOUND = 200 << 20
PROGRAM = "spectral-callbacks: "

_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
}
settings.register_profile("fuzz-ci", max_examples=60, derandomize=True, database=None, **_COMMON)
settings.register_profile("fuzz-slow", max_examples=10_000, database=None, **_COMMON)


def fuzz_settings() -> settings:
    """The profile named by ``SPECTRAL_FUZZ_PROFILE`` (``ci``, the default, or ``slow``), with
    ``SPECTRAL_FUZZ_EXAMPLES`` cases per format when set."""
    profile = settings.get_profile(f"fuzz-{os.environ.get('SPECTRAL_FUZZ_PROFILE', 'ci')}")
    if "SPECTRAL_FUZZ_EXAMPLES" in os.environ:
        return settings(profile, max_examples=int(os.environ["SPECTRAL_FUZZ_EXAMPLES"]))
    return profile


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str
    python_peak: int
    resident_growth: int


def analyze(path: Path) -> Outcome:
    """``spectral-callbacks analyze PATH`` in this process: exit code, output, and memory used."""
    out, err = io.StringIO(), io.StringIO()
    resident_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    tracemalloc.start()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["analyze", str(path)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10) - resident_before
    return Outcome(code, out.getvalue(), err.getvalue(), peak, growth)


def check_contract(path: Path, outcome: Outcome) -> None:
    """Assert the contract of a damaged input (see the module's docstring)."""
    assert "Traceback" not in outcome.out + outcome.err, outcome.err
    assert outcome.python_peak < MEMORY_BOUND, f"Python allocations peaked at {outcome.python_peak:,} bytes"
    assert outcome.resident_growth < MEMORY_BOUND, (
        f"resident memory grew by {outcome.resident_growth:,} bytes"
    )
    assert outcome.code in (0, 1), (outcome.code, outcome.err)
    if outcome.code == 0:
        return
    lines = outcome.err.strip().splitlines()
    assert len(lines) == 1, outcome.err
    (line,) = lines
    assert line.startswith(f"{PROGRAM}{path}"), line
    assert len(line) > len(f"{PROGRAM}{path}") + 15, f"says nothing of what is wrong: {line!r}"


@contextlib.contextmanager
def damaged_copy(template: Path, mutate: Callable[[Path], None]) -> Iterator[Path]:
    """A copy of ``template`` (file or directory) in a fresh directory, mutated; removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        copy = root / "case" / template.name
        if template.is_dir():
            shutil.copytree(template, copy, symlinks=True)
        else:
            copy.parent.mkdir()
            shutil.copy(template, copy)
        try:
            mutate(copy)
        except Exception:  # noqa: BLE001 - a mutation that does not apply to this file (h5py refused it)
            reject()
        yield copy
    finally:
        shutil.rmtree(root, ignore_errors=True)
