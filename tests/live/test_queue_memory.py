"""The snapshot queue against the available memory: shortened when it would take more than half,
refused when one snapshot in flight would not fit; unchanged where memory is unknown (the
callback's side: tests/callbacks/test_storage_budget.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spectral_callbacks.live.queue_memory import available_memory, fitting_queue_size

GB = 10**9


def test_available_memory_reads_memavailable(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   12000000 kB\n")
    assert available_memory(meminfo) == 12_000_000 * 1024
    meminfo.write_text("MemTotal: 5 kB\n")
    assert available_memory(meminfo) is None
    assert available_memory(tmp_path / "absent") is None


@pytest.mark.parametrize(
    ("snapshot", "queue", "available", "expected"),
    [
        (1 * GB, 4, 100 * GB, 4),  # 6 GB in flight of 100: as asked
        (10 * GB, 4, 100 * GB, 3),  # half of 100 GB holds 5 snapshots: 2 in flight, 3 queued
        (20 * GB, 4, 100 * GB, 1),  # half holds 2: at least one queued
        (20 * GB, 4, None, 4),  # unknown memory: unchanged
    ],
)
def test_the_queue_fits_in_half_the_available_memory(snapshot, queue, available, expected) -> None:
    assert fitting_queue_size(snapshot, queue, available) == expected


def test_a_snapshot_that_cannot_fit_three_times_is_refused() -> None:
    with pytest.raises(MemoryError, match="do not fit in the 50 GB available"):
        fitting_queue_size(20 * GB, 4, 50 * GB)
