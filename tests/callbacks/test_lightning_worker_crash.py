"""A dying analysis worker never stalls training: it is reported, restarted once, and the run goes on.

The fit runs in a child process with a watchdog (faulthandler dumps the stacks and exits), so a
training loop that hangs is a test failure with a traceback instead of a stuck test session.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from spectral_callbacks import open_run

WATCHDOG_SECONDS = 40  # the fit takes 5-15 s

_SCRIPT = textwrap.dedent(
    """
    import faulthandler, multiprocessing, os, signal, sys, time, warnings

    root, watchdog, helpers, mode = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
    faulthandler.dump_traceback_later(watchdog, exit=True)
    sys.path.insert(0, helpers)
    import lightning.pytorch as pl
    from conftest import make_loader, make_model, make_trainer
    from spectral_callbacks import SpectralCallback, SpectralWarning, open_run

    every_n_steps = 1 if mode == "busy" else None
    callback = SpectralCallback(
        log_dir=os.path.join(root, "spectral"), tensorboard=False, queue_size=1, every_n_steps=every_n_steps
    )


    def kill_worker():
        workers = [p for p in multiprocessing.active_children() if p.name == "spectral-worker"]
        assert len(workers) == 1, workers
        os.kill(workers[0].pid, signal.SIGKILL)
        workers[0].join(10)
        print("KILLED", flush=True)


    class KillWorker(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if mode == "busy" and trainer.global_step == 6:  # snapshots queued and in analysis
                kill_worker()

        def on_train_epoch_start(self, trainer, pl_module):
            if mode != "idle" or trainer.current_epoch != 2:
                return
            deadline = time.time() + 30
            while time.time() < deadline:  # wait until epoch 2 is analyzed: the worker is idle
                try:
                    with open_run(callback.run_path) as run:
                        if 2 in run.epochs.tolist():
                            break
                except (OSError, ValueError):
                    pass
                time.sleep(0.1)
            kill_worker()


    trainer = make_trainer(root, [callback, KillWorker()], max_epochs=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(make_model(), make_loader())
    for warning in caught:
        if issubclass(warning.category, SpectralWarning):
            print("SPECTRAL-WARNING", warning.message, flush=True)
    print("FINISHED", trainer.current_epoch, flush=True)
    """
)


def fit_and_kill(root: Path, mode: str) -> subprocess.CompletedProcess:
    helpers = Path(__file__).parent
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(root), str(WATCHDOG_SECONDS), str(helpers), mode],
        capture_output=True, text=True, timeout=WATCHDOG_SECONDS + 60,
    )  # fmt: skip


def test_killed_worker_is_restarted_and_training_finishes(tmp_path: Path) -> None:
    result = fit_and_kill(tmp_path, "idle")
    output = result.stdout + "\n" + result.stderr[-6000:]
    assert "KILLED" in result.stdout, output
    assert result.returncode == 0, f"training did not finish after the worker was killed:\n{output}"
    assert "FINISHED 4" in result.stdout, output

    warnings = [line for line in result.stdout.splitlines() if line.startswith("SPECTRAL-WARNING")]
    assert any("died" in line and "restarted" in line for line in warnings), warnings
    assert not any("died again" in line for line in warnings), warnings

    with open_run(tmp_path / "spectral") as run:
        # nothing was in flight when the worker died; the restarted worker analyzes epochs 3 and 4
        assert run.epochs.tolist() == [0, 1, 2, 3, 4]
        assert len(run.snapshots()["epoch"]) == 5


def test_worker_killed_mid_analysis_loses_no_snapshot(tmp_path: Path) -> None:
    """Killed with a snapshot half analyzed and others queued: the restarted worker catches up on
    what the file holds unanalyzed and gets the unacknowledged snapshots again."""
    result = fit_and_kill(tmp_path, "busy")
    output = result.stdout + "\n" + result.stderr[-6000:]
    assert "KILLED" in result.stdout and result.returncode == 0, output
    with open_run(tmp_path / "spectral") as run:
        steps = run.snapshots()["step"].tolist()
        assert sorted(steps) == list(range(4 * 4 + 1)), steps  # every step once: 4 epochs x 4 batches
        assert run.steps.tolist() == sorted(steps)  # and all analyzed
