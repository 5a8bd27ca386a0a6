"""``SpectralCallback``: snapshots of a Lightning model's weights, analyzed while training runs.

Works with ``lightning.pytorch`` and with ``pytorch_lightning``: the class derives from the
``Callback`` of each package that is installed, so either ``Trainer`` accepts it.
"""

from __future__ import annotations

import importlib
import time
import warnings
from pathlib import Path
from typing import Any

from ..capture.torch import LayerWeight, analyzable_layers, copy_weights
from ..config import SpectralConfig
from ..reader import RUN_FILE_NAME
from ..selection import LayerFilter
from ..store import ParameterSpec, new_run_id
from ..worker import AnalysisWorker, RunSpec, Snapshot

__all__ = ["SpectralCallback", "SpectralWarning"]


def _lightning_packages() -> list[Any]:
    packages = []
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            packages.append(importlib.import_module(name))
        except ImportError:
            continue
    if not packages:
        raise ImportError("SpectralCallback needs Lightning: pip install lightning (or pytorch-lightning)")
    return packages


_PACKAGES = _lightning_packages()
# Raised errors are both packages' MisconfigurationException, so either package's users catch them.
_MisconfigurationException = type(
    "MisconfigurationException",
    tuple(
        dict.fromkeys(
            importlib.import_module(f"{package.__name__}.utilities.exceptions").MisconfigurationException
            for package in _PACKAGES
        )
    ),
    {"__module__": __name__},
)


class SpectralWarning(UserWarning):
    """Something about the spectral analysis the user should know; training goes on."""


class SpectralCallback(*(package.Callback for package in _PACKAGES)):
    """Snapshot every analyzable layer at epoch 0 and after every n-th epoch (or step).

    The weights are copied off the device and handed to a separate process that writes them
    with their spectra (ESD, alpha, norms, rank, frame potential, MP fit) to ``spectra.h5`` and
    TensorBoard, in the trainer's TensorBoard logger directory when it has one. Training never
    waits for the analysis, except by ``on_full="block"`` when the queue is full.

    Args: see :class:`spectral_callbacks.config.SpectralConfig`; ``log_dir`` wins over the
    logger's directory when given.

    Example:
        >>> trainer = pl.Trainer(max_epochs=20, callbacks=[SpectralCallback()])  # doctest: +SKIP
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        every_n_steps: int | None = None,
        layers: LayerFilter = None,
        exclude: LayerFilter = None,
        save_weights: bool = True,
        weights_dtype: str = "float32",
        log_dir: str | Path | None = None,
        tensorboard: bool = True,
        queue_size: int = 4,
        on_full: str = "block",
        min_evals: int = 8,
        normalize: str | None = None,
        conv2d_norm: bool = True,
        xmax: float | str | None = None,
        histogram_bins: int = 64,
        esd_figures: bool = False,
        blas_threads: int = 1,
        close_timeout: float = 600.0,
    ):
        super().__init__()
        try:
            self.config = SpectralConfig(
                every_n_epochs=every_n_epochs, every_n_steps=every_n_steps, layers=layers,
                exclude=exclude, save_weights=save_weights, weights_dtype=weights_dtype,
                log_dir=None if log_dir is None else str(log_dir), tensorboard=tensorboard,
                queue_size=queue_size, on_full=on_full, min_evals=min_evals, normalize=normalize,
                conv2d_norm=conv2d_norm, xmax=xmax, histogram_bins=histogram_bins,
                esd_figures=esd_figures, blas_threads=blas_threads, close_timeout=close_timeout,
            )  # fmt: skip
        except ValueError as error:
            raise _MisconfigurationException(str(error)) from error
        self.run_dir: Path | None = None
        self.run_path: Path | None = None
        self._run_id: str | None = None
        self._resume: dict[str, Any] = {}
        self._layers: list[LayerWeight] = []
        self._worker: AnalysisWorker | None = None
        self._last_step = -1
        self._last_epoch = -1
        self._warned: set[str] = set()

    # -- set-up ---------------------------------------------------------------------------------
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero:
            return
        if not _has_lazy_parameters(pl_module):
            self._layers = self._find_layers(pl_module)
        self.run_dir = self._choose_run_dir(trainer)
        _check_writable(self.run_dir)

    def state_dict(self) -> dict[str, Any]:
        return {
            "run_path": None if self.run_path is None else str(self.run_path),
            "run_id": self._run_id,
            "last_step": self._last_step,
            "last_epoch": self._last_epoch,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume = dict(state_dict)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        self._open_run(trainer)
        if not _has_lazy_parameters(pl_module) and not self._resuming:
            self._start_worker(pl_module)
            self._capture(epoch=0, step=trainer.global_step)

    # -- snapshots ------------------------------------------------------------------------------
    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if trainer.is_global_zero and self._worker is None:
            # lazy layers are materialized now, before the first update: the initialization
            self._start_worker(pl_module)
            if not self._resuming:
                self._capture(epoch=0, step=trainer.global_step)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not trainer.is_global_zero or self._worker is None:
            return
        every = self.config.every_n_steps
        step = trainer.global_step
        if every is not None and step > self._last_step and step % every == 0:
            self._capture(epoch=trainer.current_epoch, step=step)
        self._relay_messages()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero or self._worker is None or self.config.every_n_steps is not None:
            return
        epoch = trainer.current_epoch + 1
        if epoch % self.config.every_n_epochs == 0 and epoch > self._last_epoch:
            self._capture(epoch=epoch, step=trainer.global_step)

    # -- shutdown -------------------------------------------------------------------------------
    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._close()

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._close()

    # -- internals ------------------------------------------------------------------------------
    @property
    def _resuming(self) -> bool:
        return bool(self._resume.get("run_path")) and self.run_path == Path(self._resume["run_path"])

    def _find_layers(self, pl_module: Any) -> list[LayerWeight]:
        try:
            layers = analyzable_layers(pl_module, self.config.layers, self.config.exclude)
        except ValueError as error:
            raise _MisconfigurationException(str(error)) from error
        if not layers:
            modules = sorted({type(module).__name__ for module in pl_module.modules()})
            raise _MisconfigurationException(
                "SpectralCallback found no analyzable layer (Linear, Conv1d/2d, Embedding, "
                f"MultiheadAttention) in the model; its modules are: {', '.join(modules)}."
            )
        return layers

    def _choose_run_dir(self, trainer: Any) -> Path:
        if self.config.log_dir is not None:
            return Path(self.config.log_dir)
        for logger in trainer.loggers:
            if type(logger).__name__ == "TensorBoardLogger":
                return Path(logger.log_dir)
        return Path(trainer.default_root_dir) / "spectral_logs"

    def _open_run(self, trainer: Any) -> None:
        saved = self._resume.get("run_path")
        if saved and Path(saved).exists():
            self.run_path, self._run_id = Path(saved), self._resume.get("run_id")
            self._last_step = int(self._resume.get("last_step", -1))
            self._last_epoch = int(self._resume.get("last_epoch", -1))
            return
        if saved:
            _warn(f"run file {saved} from the checkpoint is gone; starting a new run file", self._warned)
        self.run_path = self.run_dir / RUN_FILE_NAME
        if self.run_path.exists():
            raise _MisconfigurationException(
                f"Run file {self.run_path} already exists and belongs to another run. To continue that "
                "run, resume from its checkpoint (trainer.fit(..., ckpt_path=...)); otherwise pass "
                "another log_dir to SpectralCallback."
            )
        self._run_id = new_run_id()

    def _start_worker(self, pl_module: Any) -> None:
        if not self._layers:
            self._layers = self._find_layers(pl_module)
        config = self.config
        spec = RunSpec(
            path=str(self.run_path),
            run_id=self._run_id,
            parameters=tuple(ParameterSpec(w.name, w.kind, tuple(w.parameter.shape)) for w in self._layers),
            config_json=config.to_json(),
            framework="lightning",
            tensorboard_dir=str(self.run_dir) if config.tensorboard else None,
            save_weights=config.save_weights,
            weights_dtype=config.weights_dtype,
            min_evals=config.min_evals,
            analysis_options=config.analysis_options(),
            histogram_bins=config.histogram_bins,
            esd_figures=config.esd_figures,
            resume_after_step=self._last_step if self._resuming else None,
        )
        self._worker = AnalysisWorker(
            spec, queue_size=config.queue_size, on_full=config.on_full, blas_threads=config.blas_threads
        )
        self._worker.start()

    def _capture(self, epoch: int, step: int) -> None:
        snapshot = Snapshot(epoch=epoch, step=step, time=time.time(), arrays=copy_weights(self._layers))
        self._worker.submit(snapshot)
        self._last_step, self._last_epoch = step, epoch
        self._relay_messages()

    def _relay_messages(self) -> None:
        if self._worker is not None:
            for kind, text in self._worker.messages():
                _warn(text, self._warned, once_per=kind if kind == "skipped" else text)

    def _close(self) -> None:
        if self._worker is None:
            return
        worker, self._worker = self._worker, None
        for kind, text in worker.close(self.config.close_timeout):
            _warn(text, self._warned, once_per=kind if kind == "skipped" else text)
        if worker.dropped:
            _warn(f"{worker.dropped} snapshot(s) dropped because the analysis fell behind (on_full='drop'); "
                  f"they are listed in {self.run_path}", self._warned)  # fmt: skip


def _has_lazy_parameters(module: Any) -> bool:
    from torch.nn.parameter import UninitializedParameter

    return any(isinstance(parameter, UninitializedParameter) for parameter in module.parameters())


def _check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".spectral-write-test-{new_run_id()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise _MisconfigurationException(
            f"SpectralCallback cannot write its run file to {directory}: {error}. Pass a writable log_dir."
        ) from error


def _warn(text: str, warned: set[str], once_per: str | None = None) -> None:
    key = once_per or text
    if key in warned:
        return
    warned.add(key)
    suffix = (
        " (further such messages are recorded in the run file only)" if once_per and once_per != text else ""
    )
    warnings.warn(f"SpectralCallback: {text}{suffix}", SpectralWarning, stacklevel=2)
