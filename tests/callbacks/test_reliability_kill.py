"""Hard kills at random moments lose nothing committed, and resuming continues the same run file.

One run directory goes through many fits of the same training: each resumes from the last
checkpoint and is killed with SIGKILL at a random moment, alternately the whole process group
(training and analysis worker: a machine crash) and the training process alone (the orphaned
worker must finish and close the file by itself). After every kill the run file must open, list
each epoch at most once, and hold for every committed snapshot exactly the weights training had
at that epoch. A last fit runs to the end: then every epoch is there, analyzed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from spectral_callbacks import open_run

pytestmark = pytest.mark.slow

KILLS = 10
EPOCHS = 16
FIT_TIMEOUT = 120

_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    import torch

    root, helpers = sys.argv[1], sys.argv[2]
    sys.path.insert(0, helpers)
    torch.set_num_threads(1)  # deterministic: a resumed epoch has the weights it had before
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from conftest import make_loader, make_model, make_trainer, weights_of
    from spectral_callbacks import SpectralCallback


    class SaveWeights(pl.Callback):
        '''Before SpectralCallback captures: the weights of each epoch, written atomically.'''

        def _save(self, module, epoch):
            path = os.path.join(root, f"weights-{epoch}.npz")
            np.savez(path + ".tmp.npz", **weights_of(module))
            os.replace(path + ".tmp.npz", path)

        def on_train_start(self, trainer, pl_module):
            if trainer.global_step == 0:
                self._save(pl_module, 0)

        def on_train_epoch_end(self, trainer, pl_module):
            self._save(pl_module, trainer.current_epoch + 1)


    class Slow(pl.Callback):
        def on_train_batch_end(self, *args):
            time.sleep(0.03)


    last = os.path.join(root, "checkpoints", "last.ckpt")
    callbacks = [
        SaveWeights(),
        SpectralCallback(log_dir=os.path.join(root, "spectral"), tensorboard=False),
        Slow(),
        ModelCheckpoint(dirpath=os.path.join(root, "checkpoints"), save_last=True),
    ]
    trainer = make_trainer(root, callbacks, max_epochs=int(sys.argv[3]), enable_checkpointing=True)
    trainer.fit(make_model(), make_loader(num_batches=20), ckpt_path=last if os.path.exists(last) else None)
    """
)


def start_fit(root: Path, number: int) -> subprocess.Popen:
    """A fit in its own process group (so the worker can be killed with it); output in a log."""
    helpers = Path(__file__).parent
    log = (root / f"fit-{number}.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, str(root), str(helpers), str(EPOCHS)],
        stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip


def spectral_messages(root: Path) -> str:
    """What the fits said about the analysis, for failure messages."""
    lines = []
    for log in sorted(root.glob("fit-*.log")):
        lines += [f"{log.name}: {line}" for line in log.read_text().splitlines() if "Spectral" in line]
    return "\n".join(lines)


def check_run(root: Path) -> list[int]:
    """Every committed snapshot once, with the weights training had; returns the analyzed epochs."""
    with open_run(root / "spectral") as run:
        index = run.snapshots()
        committed = [e for e, s in zip(index["epoch"], index["status"], strict=True) if s != "dropped"]
        assert len(committed) == len(set(committed)), f"an epoch is duplicated: {index}"
        for epoch in committed:
            saved = np.load(root / f"weights-{epoch}.npz")
            for layer in ("conv", "fc1", "fc2", "head"):
                np.testing.assert_array_equal(
                    run.weights(layer, epoch), saved[layer], err_msg=f"epoch {epoch}"
                )
        analyzed = run.epochs.tolist()
        for epoch in analyzed:
            assert np.isfinite(run.metric("log_norm", "fc1")[analyzed.index(epoch)])
        return analyzed


def test_random_hard_kills_lose_nothing_and_resume_appends(tmp_path: Path) -> None:
    rng = random.Random(20261123)
    kills = []
    while len(kills) < KILLS:
        fit = start_fit(tmp_path, len(kills))
        # the first fit is killed after its first checkpoint: without one there is nothing to resume
        while not (tmp_path / "checkpoints" / "last.ckpt").exists() and fit.poll() is None:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.2, 3.0))
        whole_group = len(kills) % 2 == 0
        if fit.poll() is not None:  # the fit finished first: nothing to kill this time
            break
        if whole_group:
            os.killpg(fit.pid, signal.SIGKILL)
        else:
            fit.send_signal(signal.SIGKILL)
        fit.wait(FIT_TIMEOUT)
        kills.append("group" if whole_group else "training")
        check_run(tmp_path)

    fit = start_fit(tmp_path, len(kills))
    assert fit.wait(FIT_TIMEOUT) == 0, (tmp_path / f"fit-{len(kills)}.log").read_text()[-4000:]
    analyzed = check_run(tmp_path)
    assert analyzed == list(range(EPOCHS + 1)), f"{kills}\n{spectral_messages(tmp_path)}"
    assert len(kills) >= KILLS // 2, kills  # the kills really happened, mid-training
