"""What handing a snapshot from training to the analysis process costs each side, in CPU seconds:
the arrays pickled through the worker's queue against written into shared memory and mapped
(``live/snapshot_files.py``).

The sender is this process; the receiver a spawned one, as the analysis process is. Per snapshot,
the sender's CPU time covers putting it on a ``multiprocessing`` queue of one (with the queue's
feeder thread, which pickles and writes the pipe) or writing its file and putting the locations;
the receiver's covers getting it and reading every array once (a mapped array's pages are read
when first touched, so both ways are charged for the reading the analysis does anyway). Each way
sends ``--snapshots`` snapshots, the ways take turns ``--rounds`` times, and the best round of
each is reported.

Snapshots: the float32 weights of the ResNet-18 of ``bench_overhead.py`` (45 MB) and of a
MiniLM-sized model (89 MB, ``bench_posthoc.py``'s shapes).
Run: ``.venv/bin/python benchmarks/bench_handover.py [--snapshots N] [--rounds K]``
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections.abc import Callable

import numpy as np

from spectral_callbacks.live.shared_arrays import mapped
from spectral_callbacks.live.snapshot_files import SnapshotFiles


def resnet18_arrays() -> dict[str, np.ndarray]:
    import torch
    from overhead_models import ResNet18

    from spectral_callbacks.capture.torch import copy_weights, find_layers

    torch.manual_seed(0)
    return copy_weights(find_layers(ResNet18()).weights)


def minilm_sized_arrays() -> dict[str, np.ndarray]:
    from bench_posthoc import small_model

    rng = np.random.default_rng(0)
    return {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in small_model().items()}


def receive(inbox: multiprocessing.Queue, outbox: multiprocessing.Queue) -> None:
    """Get snapshots until None; report the CPU seconds spent getting and reading them."""
    started = time.process_time()
    checksum = 0.0
    while (message := inbox.get()) is not None:
        arrays = mapped(message)
        checksum += sum(float(array.sum(dtype=np.float64)) for array in arrays.values())
        outbox.put("ack")
    outbox.put((time.process_time() - started, checksum))


def handed_over(arrays: dict[str, np.ndarray], snapshots: int, shared: bool) -> tuple[float, float]:
    """(sender's, receiver's) CPU seconds per snapshot, one way."""
    context = multiprocessing.get_context("spawn")
    inbox, outbox = context.Queue(maxsize=1), context.Queue()
    receiver = context.Process(target=receive, args=(inbox, outbox))
    receiver.start()
    files = SnapshotFiles.in_shared_memory() if shared else SnapshotFiles(None)
    inbox.put({})  # the receiver is up and reading before the clock starts
    outbox.get()
    started = time.process_time()
    for step in range(snapshots):
        inbox.put(files.pack(step, arrays))
        outbox.get()  # acknowledged: analyzed, as the worker acknowledges
        files.release(step)
    sender = time.process_time() - started
    inbox.put(None)
    seconds, _ = outbox.get()
    receiver.join()
    files.close()
    return sender / snapshots, seconds / (snapshots + 1)


def compare(label: str, make: Callable[[], dict[str, np.ndarray]], snapshots: int, rounds: int) -> None:
    arrays = make()
    size = sum(array.nbytes for array in arrays.values()) / 1e6
    best: dict[bool, tuple[float, float]] = {}
    for _ in range(rounds):
        for shared in (False, True):
            sender, receiver = handed_over(arrays, snapshots, shared)
            old = best.get(shared, (np.inf, np.inf))
            best[shared] = (min(old[0], sender), min(old[1], receiver))
    print(f"{label}: {size:.0f} MB per snapshot, CPU seconds per snapshot (best of {rounds})")
    print(f"  {'':24} {'training':>9} {'analysis':>9}")
    for shared, name in ((False, "pickled through the queue"), (True, "shared memory")):
        print(f"  {name:24} {best[shared][0]:9.4f} {best[shared][1]:9.4f}")
    ratios = [best[False][i] / best[True][i] for i in (0, 1)]
    print(f"  {'ratio (queue / shared)':24} {ratios[0]:8.1f}x {ratios[1]:8.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--snapshots", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    compare("ResNet-18", resnet18_arrays, args.snapshots, args.rounds)
    compare("MiniLM-sized", minilm_sized_arrays, args.snapshots, args.rounds)


if __name__ == "__main__":
    main()
