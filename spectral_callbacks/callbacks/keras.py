"""``KerasSpectralCallback``: snapshots of a Keras 3 model's weights, analyzed while training runs.

Works on every Keras 3 backend (jax, torch, tensorflow): weights are read with
``keras.ops.convert_to_numpy`` and the analysis process writes TensorBoard through tensorboardX,
so neither TensorFlow nor torch is needed. The run file and TensorBoard tags are the same as
``SpectralCallback``'s, so runs of both frameworks can be compared.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

try:
    import keras
except ImportError as error:
    raise ImportError(
        f"KerasSpectralCallback needs Keras 3 and a backend: pip install 'spectral-callbacks[keras]' jax "
        f"(or torch, or tensorflow). Importing keras failed: {error}"
    ) from error

from ..analysis.alerts import SpectralMonitor
from ..capture.keras import (
    KerasWeight,
    analyzable_layers,
    copy_weights,
    layer_names,
    skipped_weights,
    to_numpy,
)
from ..capture.selection import LayerFilter
from ..live.config import SpectralConfig
from ..live.session import SnapshotCosts, SpectralSession, SpectralWarning, check_writable
from ..live.storage_policy import DEFAULT_MAX_RUN_FILE_BYTES
from ..live.thread_lending import torch_thread_pool
from ..runfile.reader import RUN_FILE_NAME, open_run
from ..runfile.store import ParameterSpec
from ..spectra.esd import GRAM_RTOL
from ..spectra.matrices import DEFAULT_MIN_EVALS

__all__ = ["KerasSpectralCallback", "SpectralWarning"]

_CALLER = "KerasSpectralCallback"


class KerasSpectralCallback(keras.callbacks.Callback):
    """Snapshot every analyzable layer before training and after every n-th epoch (or batch).

    The weights are copied to host memory and handed to a separate process that writes them with
    their spectra (ESD, alpha, norms, rank, frame potential, MP fit) to ``<log_dir>/spectra.h5``
    and TensorBoard events in ``log_dir``. Training never waits for the analysis, except by
    ``on_full="block"`` when the queue is full.

    Snapshots are numbered like Keras' epochs: the one taken before the first epoch of ``fit`` is
    epoch ``initial_epoch`` (0 for a new model: the initialization), the one after Keras' epoch
    ``e`` (0-based) is epoch ``e + 1``. Their step is the optimizer's iteration count.

    Calling ``fit`` again with the same callback continues its run file. A new callback continues
    the run file in ``log_dir`` only with ``resume=True`` (start ``fit`` with ``initial_epoch``);
    epochs already in the file are not snapshotted again.

    The scalar metrics also go into the ``logs`` of every ``on_epoch_end``, named as the TensorBoard
    tags (``alpha/<layer>``, ``model/alpha``, ...), as plain floats: the latest snapshot the
    analysis has finished, NaN until it has finished one. Every key is there from the first epoch
    on, so list this callback before ``CSVLogger`` and ``TensorBoard``, which read the keys of the
    callbacks before them (``CSVLogger`` fixes its columns at the first epoch).

    Args:
        log_dir: directory of the run file and the TensorBoard events (created if needed).
        every_n_epochs: snapshot after every n-th epoch.
        every_n_batches: snapshot every n optimizer steps instead (``every_n_epochs`` is then
            ignored).
        layers, exclude: layer names (``/``-joined for nested layers), regular expressions or
            layer classes (``keras.layers.Dense``) to include / leave out.
        save_weights: keep the raw weights of every snapshot in the run file.
        resume: continue an existing run file in ``log_dir`` instead of refusing it.
        weights_dtype, max_run_file_bytes, tensorboard, queue_size, on_full, min_evals, max_evals,
            normalize, conv2d_norm, xmax, esd_method, gram_rtol, fix_fingers, detX, randomize,
            randomize_seed, max_overhead, histogram_bins, esd_figures, blas_threads, lend_threads,
            close_timeout, monitor, deltas, analysis_executor, analysis_workers: as
            :class:`spectral_callbacks.live.config.SpectralConfig` and ``SpectralCallback``. Threads
            are lent on the torch backend only (jax and TensorFlow size their pools once). A
            ``SpectralMonitor(stop=True)`` alert sets ``model.stop_training``.

    Conv layers' operator spectra (``SpectralCallback(operators=...)``; anonymous, 2019) are not
    supported here yet: they need the torch layer's padding options and measured input size.

    Raises:
        ImportError: Keras 2 / ``tf.keras`` is installed instead of Keras 3.
        ValueError, TypeError: an invalid setting; the message ends with the value received.

    Example:
        >>> model.fit(x, y, epochs=20, callbacks=[KerasSpectralCallback("logs/run1")])  # doctest: +SKIP
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        *,
        every_n_epochs: int = 1,
        every_n_batches: int | None = None,
        layers: LayerFilter = None,
        exclude: LayerFilter = None,
        save_weights: bool = True,
        weights_dtype: str = "float32",
        max_run_file_bytes: int | None = DEFAULT_MAX_RUN_FILE_BYTES,
        resume: bool = False,
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
        monitor: SpectralMonitor | None = None,
        deltas: str | None = None,
        analysis_executor: str = "process",
        analysis_workers: int | None = None,
    ):
        _check_keras_3()
        super().__init__()
        if not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(f"Expected `log_dir` to be a path. Received: log_dir={log_dir!r}")
        if every_n_batches is not None and (
            not isinstance(every_n_batches, int) or isinstance(every_n_batches, bool) or every_n_batches < 1
        ):
            raise ValueError(
                f"Invalid value for every_n_batches: expected an integer >= 1 or None. "
                f"Received: every_n_batches={every_n_batches!r}"
            )
        self.config = SpectralConfig(
            every_n_epochs=every_n_epochs, every_n_steps=every_n_batches, layers=layers,
            exclude=exclude, save_weights=save_weights, weights_dtype=weights_dtype,
            max_run_file_bytes=max_run_file_bytes,
            log_dir=os.fspath(log_dir), tensorboard=tensorboard, queue_size=queue_size,
            on_full=on_full, min_evals=min_evals, max_evals=max_evals, normalize=normalize,
            conv2d_norm=conv2d_norm, xmax=xmax, esd_method=esd_method, gram_rtol=gram_rtol,
            fix_fingers=fix_fingers, detX=detX, randomize=randomize, randomize_seed=randomize_seed,
            max_overhead=max_overhead, histogram_bins=histogram_bins, esd_figures=esd_figures,
            blas_threads=blas_threads, lend_threads=lend_threads, close_timeout=close_timeout,
            monitor=monitor, deltas=deltas, analysis_executor=analysis_executor,
            analysis_workers=analysis_workers,
        )  # fmt: skip
        self.resume = bool(resume)
        self._session = self._new_session()
        self._weights: list[KerasWeight] = []
        self._epoch = 0
        self._epoch_first_step = 0  # optimizer steps before the current epoch
        self._step_offset = 0
        self._first_epoch_of_fit = True
        self._accumulation = 1
        self._metrics: dict[str, float] = {}  # what the epoch-end logs get: the latest results
        if every_n_batches is None and not self._session.lends_threads:
            # Keras dispatches batch hooks asynchronously (jax) only while no callback overrides
            # them: the default, marked as such, stands in for ours when batches don't matter
            # (they do while threads are lent: the batch hook gives them back).
            self.on_train_batch_end = super().on_train_batch_end

    @property
    def run_dir(self) -> Path:
        """Where the run file and the TensorBoard events go."""
        return Path(self.config.log_dir)

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
    def set_model(self, model: Any) -> None:
        if not isinstance(model, keras.Model):
            kind = f"{type(model).__module__}.{type(model).__qualname__}"
            raise TypeError(
                "KerasSpectralCallback works with Keras 3 models (keras.Model); Keras 2 / tf.keras "
                f"models are not supported. Received: model of type {kind}"
            )
        super().set_model(model)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._session.close()  # a previous fit that raised never reached on_train_end
        model = self.model
        self._weights = self._find_layers(model)
        check_writable(self.run_dir, _CALLER)
        saved = self._saved_state()  # a new session when the previous fit's run file is gone
        session = self._session
        session.open(self.run_dir, saved)
        captured = session.start(
            [ParameterSpec(w.name, w.kind, w.shape) for w in self._weights],
            skipped=skipped_weights(model),
            analysis_costs_training=_trains_on_cpu(),
            expected_snapshots=self._expected_snapshots(),
        )
        if self.params.get("verbose"):
            print(f"{_CALLER}: {session.storage_estimate}")
        self._weights = [weight for weight in self._weights if weight.name in captured]  # max_evals
        iterations = _optimizer_steps(model)
        # steps never go back, also when a resumed fit starts with a fresh optimizer
        self._step_offset = max(0, session.last_step - iterations) if session.resuming else 0
        self._epoch_first_step = iterations + self._step_offset
        self._first_epoch_of_fit = True
        optimizer = getattr(model, "optimizer", None)
        self._accumulation = getattr(optimizer, "gradient_accumulation_steps", None) or 1
        # every key from the first epoch on; a continued run keeps its latest values until replaced
        previous = self._metrics if session.resuming else {}
        self._metrics = {name: previous.get(name, math.nan) for name in session.metric_names()}

    # -- snapshots ------------------------------------------------------------------------------
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        if self._first_epoch_of_fit and self._session.started:
            self._first_epoch_of_fit = False
            if self._session.last_epoch < 0:  # nothing in the run yet: the weights training starts from
                self._capture(epoch=epoch, step=self._epoch_first_step)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if not self._session.started:
            return
        # ``batch`` is the last batch of this call (Keras runs ``steps_per_execution`` at once)
        step = self._epoch_first_step + (batch + 1) // self._accumulation
        if self._session.due_step(step):
            self._capture(epoch=self._epoch, step=step)
        else:
            self._session.relay()
        self._stop_if_alerted()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        session = self._session
        if not session.started:
            return
        self._snapshot_at_epoch_end(epoch)
        self._update_logs(logs)
        self._stop_if_alerted()

    # -- shutdown -------------------------------------------------------------------------------
    def on_train_end(self, logs: dict | None = None) -> None:
        self._session.close()
        self._update_logs(logs)  # the final snapshot's, for the callbacks after this one

    # -- internals ------------------------------------------------------------------------------
    def _snapshot_at_epoch_end(self, epoch: int) -> None:
        session = self._session
        self._epoch_first_step = _optimizer_steps(self.model) + self._step_offset
        if session.due_epoch(epoch + 1):
            self._capture(epoch=epoch + 1, step=self._epoch_first_step)
        elif session.resuming and self.config.every_n_steps is None and epoch + 1 <= session.last_epoch:
            session.warn(
                f"epochs up to {session.last_epoch} are in the run file {session.run_path} already and "
                f"are not snapshotted again; to continue the run after them, pass "
                f"model.fit(..., initial_epoch={session.last_epoch})"
            )
        else:
            session.relay()

    def _expected_snapshots(self) -> int | None:
        """Snapshots this fit will take (the first included), or None when it cannot be known."""
        epochs, steps = self.params.get("epochs"), self.params.get("steps")
        if not isinstance(epochs, int):
            return None
        if self.config.every_n_steps is not None:
            return epochs * steps // self.config.every_n_steps + 1 if isinstance(steps, int) else None
        return epochs // self.config.every_n_epochs + 1

    def _stop_if_alerted(self) -> None:
        """Stop training, as ``EarlyStopping`` does, once an alert of a ``stop=True`` monitor arrived."""
        if self._session.stop_requested:
            self.model.stop_training = True

    def _update_logs(self, logs: dict | None) -> None:
        """Put the latest results in ``logs`` (the dict Keras hands to every callback in turn)."""
        for result in self._session.take_results():
            # one snapshot's values throughout: its NaN metrics are not reported, so NaN here
            self._metrics = {name: result.metrics.get(name, math.nan) for name in self._metrics}
            self._metrics.update(result.metrics)  # names outside the layer list, if any
        if logs is not None:
            logs.update(self._metrics)

    def _find_layers(self, model: keras.Model) -> list[KerasWeight]:
        weights = analyzable_layers(model, self.config.layers, self.config.exclude)
        if not weights:
            raise ValueError(
                "KerasSpectralCallback found no analyzable layer (Dense, EinsumDense, Conv1D, Conv2D, "
                "DepthwiseConv1D/2D, SeparableConv1D/2D, Embedding, MultiHeadAttention) in the model. "
                "Received: a model with layers "
                f"{', '.join(layer_names(model)) or '(none)'}"
            )
        return weights

    def _new_session(self) -> SpectralSession:
        return SpectralSession(
            self.config,
            framework="keras",
            caller=_CALLER,
            resume_hint="pass resume=True and model.fit(..., initial_epoch=<its last epoch>)",
            thread_pool=torch_thread_pool() if keras.backend.backend() == "torch" else None,
        )

    def _saved_state(self) -> dict[str, Any] | None:
        """The run to continue: this callback's own (a later ``fit``), or with ``resume=True`` the
        run file in ``log_dir``; ``None`` for a new run."""
        layers = [weight.name for weight in self._weights]
        own = self._session.run_path if self._session.run_id is not None else None
        if own is not None and own.exists():
            return _run_file_state(own, layers, "a model with other layers than the previous fit's")
        if own is not None:
            self._session.warn(f"run file {own} of the previous fit is gone; starting a new run file")
            self._session = self._new_session()
        path = self.run_dir / RUN_FILE_NAME
        if self.resume and path.exists():
            return _run_file_state(path, layers, "resume=True")
        return None

    def _capture(self, epoch: int, step: int) -> None:
        self.model  # noqa: B018 - on jax, reading Callback.model syncs the training state into the variables
        self._session.capture(epoch, step, lambda: copy_weights(self._weights))


def _trains_on_cpu() -> bool:
    """Whether the Keras backend computes on the CPU (no accelerator it would use is visible)."""
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            return jax.default_backend() == "cpu"
        if backend == "tensorflow":
            import tensorflow as tf

            return not tf.config.list_logical_devices("GPU")
        if backend == "torch":
            import torch

            return not torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - unknown: count the analysis as training's cost
        return True
    return True


def _check_keras_3() -> None:
    version = str(getattr(keras, "__version__", "0"))
    if int(version.split(".")[0]) < 3:
        raise ImportError(
            "KerasSpectralCallback requires Keras 3 (pip install 'keras>=3'); Keras 2 and tf.keras "
            f"are not supported. Received: keras.__version__={version!r}"
        )


def _optimizer_steps(model: keras.Model) -> int:
    """The optimizer's iteration count (restored with the optimizer by ``load_model``), else 0."""
    iterations = getattr(getattr(model, "optimizer", None), "iterations", None)
    return 0 if iterations is None else int(to_numpy(iterations))


def _run_file_state(path: Path, layers: list[str], received: str) -> dict[str, Any]:
    """The run id and last snapshot of an existing run file, as ``SpectralSession.state_dict``.

    Raises:
        ValueError: the file is unreadable, or was recorded with other layers than ``layers``.
    """
    with open_run(path) as run:
        if sorted(run.parameters) != sorted(layers):
            raise ValueError(
                f"Cannot continue the run {path}: it was recorded with the layers {run.parameters}, "
                f"the model has {layers}. Pass another log_dir for a new run. Received: {received}"
            )
        index = run.snapshots()
        return {
            "run_path": str(path),
            "run_id": str(run.attributes["run_id"]),
            "last_step": int(index["step"].max(initial=-1)),
            "last_epoch": int(index["epoch"].max(initial=-1)),
        }
