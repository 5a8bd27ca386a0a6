"""``SpectralCallback``: snapshots of a Lightning model's weights, analyzed while training runs.

Works with ``lightning.pytorch`` and with ``pytorch_lightning``: the class derives from the
``Callback`` of each package that is installed, so either ``Trainer`` accepts it.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from typing_extensions import override

from ..analysis.alerts import SpectralMonitor
from ..analysis.blas_environment import blas_threads_limited
from ..analysis.operators import OperatorSpec, estimate_operator_seconds, operator_budget_warning
from ..capture.selection import LayerFilter
from ..capture.sharded import ShardedCapture, is_sharded_strategy
from ..capture.torch import (
    InputSizes,
    LayerWeight,
    OperatorLayer,
    copy_weights,
    find_layers,
    operator_layers,
    operator_specs,
)
from ..live.config import SpectralConfig
from ..live.session import SnapshotCosts, SpectralSession, SpectralWarning, check_writable
from ..live.storage_policy import DEFAULT_MAX_RUN_FILE_BYTES
from ..live.thread_lending import torch_thread_pool
from ..runfile.store import ParameterSpec
from ..spectra.esd import GRAM_RTOL
from ..spectra.matrices import DEFAULT_MIN_EVALS

if TYPE_CHECKING:
    import lightning.pytorch as pl

__all__ = ["SpectralCallback", "SpectralWarning"]


def _lightning_packages() -> list[Any]:
    packages = []
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            packages.append(importlib.import_module(name))
        except ImportError:
            continue
    if not packages:
        raise ImportError(
            "SpectralCallback needs Lightning: pip install 'spectral-callbacks[torch]' (or pytorch-lightning)"
        )
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


class SpectralCallback(*(package.Callback for package in _PACKAGES)):
    """Snapshot every analyzable layer at epoch 0 and after every n-th epoch (or step).

    The weights are copied off the device and handed to a separate process that writes them
    with their spectra (ESD, alpha, norms, rank, frame potential, MP fit) to ``spectra.h5`` and
    TensorBoard: in the directory of the trainer's TensorBoard (else CSV) logger, otherwise in a
    new ``spectral_logs/version_N`` under ``default_root_dir``; a resumed run continues in its run
    file's directory. Training never waits for the analysis, except by ``on_full="block"`` when
    the queue is full. Each analyzed snapshot's scalars (``alpha/<layer>``, ``model/alpha``, ...)
    also go to every logger in ``trainer.loggers`` at the snapshot's step (TensorBoard loggers
    only when ``tensorboard=False``) and to ``trainer.callback_metrics``.

    With ``operators``, conv layers are also analyzed as the linear maps they apply to whole
    feature maps (anonymous, 2019): the largest eigenvalues of ``A^T A`` and a KPM histogram of all of
    them, per snapshot whose epoch is a multiple of ``operator_every_n_epochs``. The input size of
    each layer is measured on the first training batch (with forward pre-hooks, removed after it),
    so the worker starts and the initialization is snapshotted just before the first optimizer step.

    Args: see :class:`spectral_callbacks.live.config.SpectralConfig`; ``log_dir`` wins over the
    logger's directory when given.

    Example:
        >>> trainer = pl.Trainer(max_epochs=20, callbacks=[SpectralCallback()])  # doctest: +SKIP
        >>> SpectralCallback(operators="auto")  # also every Conv2d's operator spectrum  # doctest: +SKIP
    """

    # set in ``setup`` on every rank when the strategy shards the weights (FSDP, ZeRO-3)
    _sharding: ShardedCapture | None = None

    def __init__(
        self,
        every_n_epochs: int = 1,
        *,
        every_n_steps: int | None = None,
        layers: LayerFilter = None,
        exclude: LayerFilter = None,
        save_weights: bool = True,
        weights_dtype: str = "float32",
        max_run_file_bytes: int | None = DEFAULT_MAX_RUN_FILE_BYTES,
        log_dir: str | Path | None = None,
        tensorboard: bool = True,
        queue_size: int = 4,
        on_full: str = "block",
        min_evals: int = DEFAULT_MIN_EVALS,
        max_evals: int | None = 16384,
        normalize: str | None = None,
        conv2d_norm: bool = True,
        xmax: float | str | None = None,
        esd_method: str = "auto",
        gram_rtol: float = GRAM_RTOL,
        fix_fingers: str | None = None,
        detX: bool = False,  # noqa: N803 - WeightWatcher's option name
        randomize: bool = False,
        randomize_seed: int = 0,
        max_overhead: float | None = None,
        histogram_bins: int = 64,
        esd_figures: bool = False,
        blas_threads: int = 1,
        lend_threads: bool = True,
        close_timeout: float = 600.0,
        operators: dict[str, tuple[int, int]] | str | None = None,
        operator_every_n_epochs: int = 1,
        operator_top_k: int = 8,
        operator_bins: int = 50,
        operator_moments: int = 256,
        operator_probes: int = 8,
        monitor: SpectralMonitor | None = None,
        deltas: str | None = None,
        analysis_executor: str = "process",
        analysis_workers: int | None = None,
    ):
        super().__init__()
        try:
            self.config = SpectralConfig(
                every_n_epochs=every_n_epochs, every_n_steps=every_n_steps, layers=layers,
                exclude=exclude, save_weights=save_weights, weights_dtype=weights_dtype,
                max_run_file_bytes=max_run_file_bytes,
                log_dir=None if log_dir is None else str(log_dir), tensorboard=tensorboard,
                queue_size=queue_size, on_full=on_full, min_evals=min_evals, max_evals=max_evals,
                normalize=normalize, conv2d_norm=conv2d_norm, xmax=xmax, esd_method=esd_method,
                gram_rtol=gram_rtol, fix_fingers=fix_fingers, detX=detX, randomize=randomize,
                randomize_seed=randomize_seed, max_overhead=max_overhead, histogram_bins=histogram_bins,
                esd_figures=esd_figures, blas_threads=blas_threads, lend_threads=lend_threads,
                close_timeout=close_timeout, operators=operators,
                operator_every_n_epochs=operator_every_n_epochs, operator_top_k=operator_top_k,
                operator_bins=operator_bins, operator_moments=operator_moments,
                operator_probes=operator_probes, monitor=monitor, deltas=deltas,
                analysis_executor=analysis_executor, analysis_workers=analysis_workers,
            )  # fmt: skip
        except ValueError as error:
            raise _MisconfigurationException(str(error)) from error
        self._session = SpectralSession(
            self.config,
            framework="lightning",
            caller="SpectralCallback",
            resume_hint="resume from its checkpoint (trainer.fit(..., ckpt_path=...))",
            thread_pool=torch_thread_pool(),
        )
        self._resume: dict[str, Any] = {}
        self._layers: list[LayerWeight] = []
        self._skipped: dict[str, str] = {}  # parameters found in no analyzable layer, with the reason
        self._operators: list[OperatorLayer] = []
        self._operator_weights: list[LayerWeight] = []  # operator kernels not captured otherwise
        self._input_sizes: InputSizes | None = None
        # operator spectra's estimated seconds per snapshot, checked against the first epoch's time
        self._operator_estimate: float | None = None
        self._estimate_cost = 0.0  # seconds the estimate itself took
        self._epoch_started: float | None = None
        self._new_run_dir: tuple[Path, bool] | None = None  # from setup: (directory, versioned)

    @property
    def run_dir(self) -> Path | None:
        """Where the run file and the TensorBoard events go (known once training starts)."""
        return self._session.run_dir

    @property
    def run_path(self) -> Path | None:
        """The run's HDF5 file (known once training starts)."""
        return self._session.run_path

    @property
    def costs(self) -> SnapshotCosts:
        """What this fit's snapshots have cost so far, part by part (copy, hand-over, lent
        thread, the analysis' CPU), to account for the overhead; see ``SnapshotCosts``."""
        return self._session.costs

    # -- set-up ---------------------------------------------------------------------------------
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._sharding = self._sharded_capture(trainer, pl_module)
        if stage != "fit" or not trainer.is_global_zero:
            return
        if not _has_lazy_parameters(pl_module):
            self._layers = self._find_layers(pl_module)
            if self._sharding is not None:
                with _as_misconfiguration():
                    self._layers = self._sharding.bind(self._layers)
        if self.config.operators is not None:
            with _as_misconfiguration():
                self._operators = operator_layers(pl_module, self.config.operators)
        self._new_run_dir = self._choose_run_dir(trainer)
        with _as_misconfiguration():
            check_writable(self._new_run_dir[0], "SpectralCallback")

    @override
    def state_dict(self) -> dict[str, Any]:
        return self._session.state_dict()

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume = dict(state_dict)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with self._sharded_round(trainer, maybe_due=True):
            if not trainer.is_global_zero:
                return
            directory, versioned = self._new_run_dir
            with _as_misconfiguration():  # a resumed run continues in its run file's directory instead
                self._session.open(directory, self._resume, versioned=versioned)
            if self._operators:  # the worker starts once the first batch has shown the input sizes
                self._input_sizes = InputSizes(self._operators)
            elif not _has_lazy_parameters(pl_module):
                self._start(pl_module, trainer.global_step)

    # -- snapshots ------------------------------------------------------------------------------
    @override
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        if trainer.is_global_zero and not self._session.started:
            # lazy layers are materialized and operator inputs measured now, before the first
            # update: the weights are the initialization
            self._start(pl_module, trainer.global_step)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        every = self.config.every_n_steps
        with self._sharded_round(trainer, maybe_due=every is not None and trainer.global_step % every == 0):
            if not trainer.is_global_zero or not self._session.started:
                return
            if self._session.due_step(trainer.global_step):
                self._capture(epoch=trainer.current_epoch, step=trainer.global_step)
            else:
                self._session.relay()
            self._log_results(trainer)

    @override
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.is_global_zero and self._session.started:
            self._session.relay()  # a thread lent at a capture goes back once the worker is done
            self._log_results(trainer)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Validation at the end of a training epoch sees the epoch's final weights (no optimizer
        # step comes between): the snapshot due after the epoch is taken now, so that its analysis
        # runs while training waits for validation instead of during the next epoch.
        maybe_due = not trainer.sanity_checking and trainer.is_last_batch and self._epoch_maybe_due(trainer)
        with self._sharded_round(trainer, maybe_due):
            if (
                trainer.is_global_zero
                and self._session.started
                and not trainer.sanity_checking
                and trainer.is_last_batch
                and self._session.due_epoch(trainer.current_epoch + 1)
            ):
                self._capture(epoch=trainer.current_epoch + 1, step=trainer.global_step)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started = time.monotonic()

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._operator_estimate is not None and self._epoch_started is not None:
            # the estimate's own products ran in this epoch: they are not training time
            epoch_seconds = time.monotonic() - self._epoch_started - self._estimate_cost
            warning = operator_budget_warning(
                self._operator_estimate, epoch_seconds, self.config.operator_options()
            )
            self._operator_estimate = None  # checked once, on the first epoch
            if warning:
                self._session.warn(warning)
        with self._sharded_round(trainer, self._epoch_maybe_due(trainer)):
            if (
                trainer.is_global_zero
                and self._session.started
                and self._session.due_epoch(trainer.current_epoch + 1)
            ):
                self._capture(epoch=trainer.current_epoch + 1, step=trainer.global_step)
                self._log_results(trainer)
        if trainer.world_size > 1 and self.config.monitor is not None and self.config.monitor.stop:
            # every rank decides together at the same point, as EarlyStopping does under DDP
            stop = trainer.strategy.broadcast(self._session.stop_requested, src=0)
            trainer.should_stop = trainer.should_stop or bool(stop)

    # -- shutdown -------------------------------------------------------------------------------
    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close(log_to=trainer)  # the worker's last results, the final snapshot's included

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._close()

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._close()

    # -- internals ------------------------------------------------------------------------------
    def _find_layers(self, pl_module: pl.LightningModule) -> list[LayerWeight]:
        with _as_misconfiguration():
            found = find_layers(pl_module, self.config.layers, self.config.exclude)
        if not found.weights:
            modules = sorted({type(module).__name__ for module in pl_module.modules()})
            raise _MisconfigurationException(
                "SpectralCallback found no analyzable layer (Linear, Hugging Face Conv1D, Conv1d/2d, "
                f"Embedding, MultiheadAttention) in the model; its modules are: {', '.join(modules)}."
            )
        self._skipped = found.skipped
        return found.weights

    def _choose_run_dir(self, trainer: pl.Trainer) -> tuple[Path, bool]:
        """The directory of a new run file, and whether a new ``version_N`` is to be made in it.

        An explicit ``log_dir``; else the versioned directory of the first TensorBoard logger
        (its events and ours side by side) or CSV logger; else, as the other loggers keep no
        directory of their own per run, a new ``spectral_logs/version_N`` under the trainer's
        ``default_root_dir``, so that running the same script again starts a new run file.
        ``trainer.log_dir`` is not used: it is a collective call under DDP, and this runs on
        global rank zero only.
        """
        if self.config.log_dir is not None:
            return Path(self.config.log_dir), False
        for kind in ("TensorBoardLogger", "CSVLogger"):
            for logger in trainer.loggers:
                if _is_logger(logger, kind):
                    return Path(logger.log_dir), False
        return Path(trainer.default_root_dir) / "spectral_logs", True

    def _log_results(self, trainer: pl.Trainer) -> None:
        """Hand the results the worker reported to the trainer's loggers and ``callback_metrics``.

        As ``LearningRateMonitor`` does: every logger's ``log_metrics``, on global rank zero, each
        snapshot's scalars at the snapshot's own step (they arrive later than that step), named
        as the worker's TensorBoard tags. TensorBoard loggers are left out while the worker writes
        its own events (``tensorboard=True``): the same tags again would be duplicate curves, and
        in the logger's new version of a resumed run, a second TensorBoard run for one training
        run. No logger is fine: the run file and the worker's events have everything.
        """
        if self._session.stop_requested and trainer.world_size == 1:
            trainer.should_stop = True  # with more ranks, decided together at the epoch's end
        results = self._session.take_results()
        if not results or not trainer.is_global_zero:
            return
        import torch

        loggers = [
            logger
            for logger in trainer.loggers
            if not (self.config.tensorboard and _is_logger(logger, "TensorBoardLogger"))
        ]
        latest: dict[str, float] = {}
        for result in results:
            for logger in loggers:
                logger.log_metrics(dict(result.metrics), step=result.step)
            latest.update(result.metrics)
        # where EarlyStopping and ModelCheckpoint find monitored values
        trainer.callback_metrics.update({name: torch.tensor(value) for name, value in latest.items()})

    def _start(self, pl_module: pl.LightningModule, step: int) -> None:
        """Start the worker and take the first snapshot (the initialization, for a new run)."""
        if not self._layers:
            self._layers = self._find_layers(pl_module)
        specs = [ParameterSpec(w.name, w.kind, w.shape, w.aliases) for w in self._layers]
        operators = self._operator_specs()
        captured = self._session.start(
            specs,
            operators,
            self._skipped,
            analysis_costs_training=pl_module.device.type == "cpu",
            expected_snapshots=self._expected_snapshots(pl_module.trainer),
        )
        _PACKAGES[0].utilities.rank_zero_info(f"SpectralCallback: {self._session.storage_estimate}")
        self._layers = [layer for layer in self._layers if layer.name in captured]
        self._operator_weights = [
            LayerWeight(layer.name, "conv2d", type(layer.module), layer.module.weight)
            for layer in self._operators
            if layer.name not in captured and layer.name in {spec.name for spec in operators}
        ]
        epoch = self._session.first_snapshot_epoch(step)
        if epoch is not None:
            self._capture(epoch=epoch, step=step)

    def _expected_snapshots(self, trainer: pl.Trainer) -> int | None:
        """Snapshots this fit will take (the first included), or None when it cannot be known."""
        config = self.config
        if config.every_n_steps is not None:
            steps = trainer.estimated_stepping_batches
            return int(steps) // config.every_n_steps + 1 if math.isfinite(steps) else None
        if trainer.max_epochs is None or trainer.max_epochs < 0:
            return None
        return max(0, trainer.max_epochs - trainer.current_epoch) // config.every_n_epochs + 1

    def _operator_specs(self) -> list[OperatorSpec]:
        """The operator layers' specs from the input sizes of the first batch; hooks removed."""
        if self._input_sizes is None:
            return []
        sizes, self._input_sizes = self._input_sizes, None
        sizes.remove()
        with _as_misconfiguration():
            specs, left_out = operator_specs(self._operators, sizes.sizes)
        for name, reason in left_out.items():
            self._session.warn(f"layer {name} is not analyzed as an operator: {reason}")
        if specs:
            self._operator_estimate = self._estimate_operator_seconds(specs)
        return specs

    def _estimate_operator_seconds(self, specs: list[OperatorSpec]) -> float:
        """Seconds of one core the operator spectra of a snapshot will take (one timed product per
        layer, on the worker's BLAS thread count), said once; the first epoch's length is checked
        against it."""
        options = self.config.operator_options()
        modules = {layer.name: layer.module for layer in self._operators}
        started = time.monotonic()
        with blas_threads_limited(self.config.blas_threads):
            seconds = sum(
                estimate_operator_seconds(spec, modules[spec.name].weight.detach().cpu().numpy(), options)
                for spec in specs
            )
        self._estimate_cost = time.monotonic() - started
        _PACKAGES[0].utilities.rank_zero_info(
            f"SpectralCallback: operator spectra of {len(specs)} conv layer(s) will take about "
            f"{seconds:.3g} s of one core per snapshot whose epoch is a multiple of "
            f"operator_every_n_epochs={options.every_n_epochs}."
        )
        return seconds

    def _capture(self, epoch: int, step: int) -> None:
        weights = self._layers + self._operator_weights
        copy = copy_weights if self._sharding is None else self._sharding.copy
        self._session.capture(epoch, step, lambda: copy(weights))

    # -- sharded training (FSDP, ZeRO-3): every rank takes part in each snapshot's gathers ------
    def _sharded_capture(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> ShardedCapture | None:
        """The per-layer gathering of a strategy that shards the weights, None for one that does
        not (single device, DDP: rank zero copies its own whole weights, as always)."""
        if not is_sharded_strategy(trainer.strategy):
            return None
        strategy = type(trainer.strategy).__name__
        if self.config.operators is not None:
            raise _MisconfigurationException(
                f"SpectralCallback(operators=...) is not supported with {strategy}, which shards the "
                f"weights; received operators={self.config.operators!r}."
            )
        if _has_lazy_parameters(pl_module):
            raise _MisconfigurationException(
                f"SpectralCallback does not support lazy layers with {strategy}: the layers are found "
                "before the strategy shards them."
            )
        return ShardedCapture(pl_module, lambda: trainer.strategy.model)

    def _sharded_round(self, trainer: pl.Trainer, maybe_due: bool) -> contextlib.AbstractContextManager:
        """Where rank zero may take a snapshot (``maybe_due``: the schedule allows one, a
        decision every rank makes alike), all ranks meet to gather the weights it asks for."""
        if self._sharding is None or not maybe_due:
            return contextlib.nullcontext()
        return self._sharding.round(leader=trainer.is_global_zero)

    def _epoch_maybe_due(self, trainer: pl.Trainer) -> bool:
        """Whether the epoch schedule may have a snapshot due after the current epoch."""
        config = self.config
        return config.every_n_steps is None and (trainer.current_epoch + 1) % config.every_n_epochs == 0

    def _close(self, log_to: pl.Trainer | None = None) -> None:
        """Stop the worker once its queue is done; its last results go to ``log_to``'s loggers,
        or nowhere after an exception (they are in the run file either way)."""
        if self._input_sizes is not None:
            self._input_sizes.remove()
            self._input_sizes = None
        running = self._session.started
        self._session.close()
        if running and self._session.costs.taken:
            _PACKAGES[0].utilities.rank_zero_info(f"SpectralCallback: {self._session.costs.summary()}")
        if log_to is not None:
            self._log_results(log_to)
        else:
            self._session.take_results()


@contextlib.contextmanager
def _as_misconfiguration() -> Iterator[None]:
    """Lightning users catch ``MisconfigurationException``; the shared code raises ``ValueError``."""
    try:
        yield
    except ValueError as error:
        raise _MisconfigurationException(str(error)) from error


def _is_logger(logger: Any, kind: str) -> bool:
    """Whether ``logger`` is (a subclass of) Lightning's logger class ``kind``, from either package."""
    return any(cls.__name__ == kind for cls in type(logger).__mro__)


def _has_lazy_parameters(module: Any) -> bool:
    from torch.nn.parameter import UninitializedParameter

    return any(isinstance(parameter, UninitializedParameter) for parameter in module.parameters())
