"""The snapshot queue checked against the memory the machine has.

Each snapshot waiting for the analysis is a float32 copy of the captured weights; besides the
``queue_size`` waiting ones, one is being copied by training and one analyzed by the worker. For
a 7B model that is 28 GB each: a queue of 4 would need 170 GB. The queue is made shorter when its
snapshots would take more than half the available memory, and training is refused a start when
even a queue of one would not fit at all.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["available_memory", "fitting_queue_size"]

_IN_FLIGHT = 2  # besides the queue: the snapshot being copied, the one being analyzed
_SHARE = 0.5  # of the available memory the snapshots may take


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Bytes of memory available to new allocations (Linux's ``MemAvailable``), None elsewhere."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def fitting_queue_size(snapshot_bytes: int, queue_size: int, available: int | None) -> int:
    """``queue_size``, or the largest smaller one (at least 1) whose snapshots take at most half
    of ``available`` bytes; unchanged when the available memory is unknown.

    Raises:
        MemoryError: even one snapshot in the queue would not fit in ``available``.
    """
    if available is None or snapshot_bytes == 0:
        return queue_size
    if (1 + _IN_FLIGHT) * snapshot_bytes > available:
        raise MemoryError(
            f"a snapshot's weights take {snapshot_bytes / 1e9:.3g} GB, and three of them (one waiting, "
            f"one copied, one analyzed) do not fit in the {available / 1e9:.3g} GB available. Capture "
            "fewer layers (layers=/exclude=), or set max_evals to leave the largest out."
        )
    fitting = int(_SHARE * available // snapshot_bytes) - _IN_FLIGHT
    return max(1, min(queue_size, fitting))
