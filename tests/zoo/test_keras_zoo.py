"""Keras architectures trained with ``KerasSpectralCallback`` on torch and TensorFlow, checked against
WeightWatcher 0.7.x.

Each model of :mod:`keras_models` (Keras' MobileNetV2, a Transformer block, a small CNN with
separable, grouped and depthwise convs) trains one short epoch with the callback on each backend;
WeightWatcher's default ``analyze()`` of the final model is the reference for the run file's last
snapshot: the same matrices by name and the same numbers (relative 1e-6; measured: 1e-13).

WeightWatcher reads Keras models through TensorFlow only: on the torch backend it takes a Keras
model for a torch module (Keras' torch layers derive from ``torch.nn.Module``) and finds no layer
in it. So the TensorFlow side runs in a subprocess (Keras fixes its backend once per process): it
analyzes each architecture holding the weights trained on torch (a ``.weights.h5`` file, which
every backend reads), then trains each model on TensorFlow with the callback and analyzes it.

Two more checks from the same runs: ``spectral-callbacks analyze`` of the final model saved as
``.keras`` gives the run file's numbers, and Keras' MobileNetV2 has the same matrices (order,
kinds, torch-layout shapes) as Hugging Face's at the same width through the torch capture.

Every difference between WeightWatcher's analysis and ours is listed here, with its reason:

- Grouped and depthwise convs (``DepthwiseConv2D``, ``Conv2D(groups > 1)``): the same layers, but
  WeightWatcher reads the stored kernel ``(kh, kw, a, b)`` as an ungrouped conv, ``kh * kw``
  slices of ``a x b`` (a depthwise kernel ``(3, 3, C, multiplier)``: nine ``C x multiplier``
  slices mixing unrelated channels), and we as the block-diagonal matrix each tap applies
  (``groups * kh * kw`` blocks). Eigenvalues, fit and spectral norm differ; the Frobenius norm is
  the same entries either way (both halve conv eigenvalues), so ``log_norm`` is compared, and each
  side's eigenvalue count is checked against its own rule.
- ``SeparableConv2D``: WeightWatcher analyzes its first weight, the depthwise kernel, under the
  layer's name (as a grouped conv above); we analyze it as ``<layer>.depthwise`` and the ``1 x 1``
  pointwise kernel as ``<layer>.pointwise``, which WeightWatcher does not see.
- ``MultiHeadAttention``: WeightWatcher walks ``model.layers`` and would descend through a layer's
  ``submodules``, which Keras 3 layers do not have, so it never reaches the four ``EinsumDense``
  projections (and MultiHeadAttention itself is no type it knows). We analyze them as
  ``<layer>.query``, ``.key``, ``.value``, ``.output``.
- ``EinsumDense`` with a 3-D kernel (``head_proj``, ``"abc,cde->abde"``, kernel ``(64, 4, 32)``):
  WeightWatcher takes any layer whose class name contains "dense" for a Dense and its kernel's
  largest and smallest axes for N and M; M = 4 is below its ``min_evals`` (8), so it skips the
  layer. We analyze the ``(128, 64)`` linear map it applies. A 2-D ``EinsumDense`` (``ffn_up``)
  is a Dense to both.
- Fewer than ``SMALL_N_CUTOFF`` (20) eigenvalues: WeightWatcher 0.7.7 fits them with a
  small-sample estimator of its own and we with the standard fit: ``alpha``, ``D``, ``xmin`` and
  the tail size are compared only from 20 eigenvalues on (norms and counts always).
"""

from __future__ import annotations

import collections
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

keras = pytest.importorskip("keras")
for _module in ("tensorflow", "weightwatcher"):  # both used in the subprocess only: not imported here
    if importlib.util.find_spec(_module) is None:
        pytest.skip(f"{_module} is not installed", allow_module_level=True)

import keras_models  # noqa: E402 - after the skips above

from spectral_callbacks import KerasSpectralCallback, open_run  # noqa: E402
from spectral_callbacks.capture.keras import analyzable_layers, skipped_weights  # noqa: E402
from spectral_callbacks.posthoc import analyze_paths  # noqa: E402

pytestmark = pytest.mark.slow  # about a minute in all: two backends, three models, WeightWatcher

BACKENDS = ("torch", "tensorflow")
HELPERS = str(Path(__file__).parents[1] / "helpers")
RELATIVE = 1e-6
SMALL_N_CUTOFF = 20  # weightwatcher.WW_powerlaw.SMALL_N_CUTOFF in 0.7.7
FIT_METRICS = ("alpha", "D", "xmin", "num_pl_spikes")
ONLY_OURS = {  # matrices WeightWatcher does not see (module docstring)
    "mobilenet_v2": set(),
    "transformer": {"attn.query", "attn.key", "attn.value", "attn.output", "head_proj"},
    "mixed_convs": {"separable.pointwise"},
}
WEIGHTWATCHER_NAME = {"separable.depthwise": "separable"}  # its row of a SeparableConv2D
POSTHOC_NAME = {"attn/query": "attn.query", "attn/key": "attn.key", "attn/value": "attn.value",
                "attn/attention_output": "attn.output"}  # fmt: skip
MIN_FITS = {"mobilenet_v2": 20, "transformer": 3, "mixed_convs": 1}  # fits compared, at least


@pytest.fixture(scope="module")
def torch_side(tmp_path_factory: pytest.TempPathFactory) -> types.SimpleNamespace:
    """Each model trained on this process's backend (torch) with the callback, its final weights
    saved for the TensorFlow side, and the wall times."""
    assert keras.backend.backend() == "torch", keras.backend.backend()
    root = tmp_path_factory.mktemp("keras_zoo_torch")
    models, runs, weights, seconds = {}, {}, {}, {}
    for name, build in keras_models.MODELS.items():
        start = time.perf_counter()
        model = build()
        callback = KerasSpectralCallback(root / name, tensorboard=False)
        keras_models.fit(name, model, [callback])
        seconds[name] = time.perf_counter() - start
        models[name], runs[name] = model, callback.run_path
        weights[name] = str(root / f"{name}.weights.h5")
        model.save_weights(weights[name])
        model.save(root / f"{name}.keras")
    yield types.SimpleNamespace(root=root, models=models, runs=runs, weights=weights, seconds=seconds)
    print("\nkeras zoo on torch: " + ", ".join(f"{name} {s:.1f} s" for name, s in seconds.items()))


@pytest.fixture(scope="module")
def tensorflow_side(torch_side: types.SimpleNamespace) -> dict[str, Any]:
    """:func:`keras_models.tensorflow_side` in a subprocess on the TensorFlow backend."""
    request = torch_side.root / "request.json"
    log_dir = torch_side.root / "tensorflow"
    request.write_text(json.dumps({"torch_weights": torch_side.weights, "log_dir": str(log_dir)}))
    env = {
        **os.environ,
        "KERAS_BACKEND": "tensorflow",
        "CUDA_VISIBLE_DEVICES": "",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # keras_models imports shared test modules, on sys.path in this process by tests/conftest.py
        "PYTHONPATH": os.pathsep.join(filter(None, [HELPERS, os.environ.get("PYTHONPATH")])),
    }
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, keras_models.__file__, str(request)],
        env=env, cwd=torch_side.root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-4000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    parts = ", ".join(
        f"{name} fit {side['seconds']['fit']:.1f} s, WeightWatcher {side['seconds']['weightwatcher']:.1f} s"
        for name, side in result["tensorflow"].items()
    )
    print(f"\nkeras zoo on tensorflow: subprocess {seconds:.1f} s ({parts})")
    return result


@pytest.fixture(
    scope="module", params=[(backend, name) for backend in BACKENDS for name in keras_models.MODELS],
    ids=lambda param: "-".join(param),
)  # fmt: skip
def zoo(
    request: pytest.FixtureRequest, torch_side: types.SimpleNamespace, tensorflow_side: dict[str, Any]
) -> Any:
    """One model on one backend: its run file and its last snapshot's rows, WeightWatcher's rows of
    the final model, the weights not analyzed, and the model on torch (the same architecture, for
    its layers)."""
    backend, name = request.param
    tensorflow = tensorflow_side
    if backend == "torch":
        run_path = torch_side.runs[name]
        reference = tensorflow["weightwatcher_of_torch_weights"][name]
        skipped = skipped_weights(torch_side.models[name])
        keras_file = torch_side.root / f"{name}.keras"
    else:
        run_path = tensorflow["tensorflow"][name]["run_path"]
        keras_file = tensorflow["tensorflow"][name]["keras_file"]
        reference = tensorflow["tensorflow"][name]["weightwatcher"]
        skipped = tensorflow["tensorflow"][name]["skipped"]
    reader = open_run(run_path)
    yield types.SimpleNamespace(
        backend=backend, name=name, reader=reader, rows=run_file_rows(reader), reference=reference,
        skipped=skipped, keras_file=keras_file,
        model=torch_side.models[name], torch_skipped=skipped_weights(torch_side.models[name]),
    )  # fmt: skip
    reader.close()


def run_file_rows(reader: Any) -> dict[str, dict[str, Any]]:
    """The run file's last snapshot per matrix: its metrics and kind."""
    rows = {}
    for layer in reader.layers:
        values: dict[str, Any] = {
            metric: float(series[-1]) for metric, series in reader.metrics(layer).items()
        }
        values["kind"] = reader.layer_info(layer)["kind"]
        rows[layer] = values
    return rows


@dataclass(frozen=True)
class GroupedKernel:
    """A grouped or depthwise kernel as Keras stores it, and its groups, from the layer's configuration."""

    stored: tuple[int, ...]  # (*kernel, a, b)
    groups: int
    in_per_group: int
    out_per_group: int

    @property
    def taps(self) -> int:
        return math.prod(self.stored[:-2])


def grouped_kernels(model: keras.Model) -> dict[str, GroupedKernel]:
    """The model's grouped and depthwise kernels by our matrix name."""
    found = {}
    for layer in model.layers:
        depthwise = getattr(layer, "depthwise_kernel", None)
        if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
            depthwise, name = layer.kernel, layer.name
        elif depthwise is not None:
            name = f"{layer.name}.depthwise"
        elif isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)) and layer.groups > 1:
            stored = tuple(layer.kernel.shape)
            found[layer.name] = GroupedKernel(stored, layer.groups, stored[-2], stored[-1] // layer.groups)
            continue
        else:
            continue
        stored = tuple(depthwise.shape)  # (*kernel, channels, multiplier)
        found[name] = GroupedKernel(stored, stored[-2], 1, stored[-1])
    return found


def test_the_run_covers_the_initialization_and_the_epoch(zoo: Any) -> None:
    assert zoo.reader.epochs.tolist() == [0, 1]
    assert zoo.reader.dropped == []
    assert str(zoo.reader.attributes["framework"]) == "keras"


def test_run_file_holds_weightwatchers_matrices(zoo: Any) -> None:
    ours = zoo.rows
    seen_by_weightwatcher = {WEIGHTWATCHER_NAME.get(name, name) for name in ours} - ONLY_OURS[zoo.name]
    assert sorted(seen_by_weightwatcher) == sorted(zoo.reference)
    assert ONLY_OURS[zoo.name] <= set(ours)
    grouped = grouped_kernels(zoo.model)
    for name, row in ours.items():
        assert row["kind"].startswith(("grouped_", "depthwise_")) == (name in grouped), (name, row["kind"])


def test_run_file_numbers_are_weightwatchers(zoo: Any) -> None:
    """Every metric the rules share within RELATIVE (counts exactly), fits from 20 eigenvalues."""
    grouped = grouped_kernels(zoo.model)
    fits = 0
    for name, row in zoo.rows.items():
        if name in ONLY_OURS[zoo.name]:
            continue
        expected = zoo.reference[WEIGHTWATCHER_NAME.get(name, name)]
        metrics = ["log_norm"]
        if name not in grouped:
            metrics += ["log_spectral_norm", "num_evals"]
            if expected["num_evals"] >= SMALL_N_CUTOFF:
                metrics += FIT_METRICS
                fits += 1
        for metric in metrics:
            value, reference = row[metric], float(expected[metric])
            if metric.startswith("num_"):
                assert value == reference, (name, metric, value, reference)
            else:
                assert math.isclose(value, reference, rel_tol=RELATIVE), (name, metric, value, reference)
    assert fits >= MIN_FITS[zoo.name]


def test_grouped_layers_are_counted_by_each_rule(zoo: Any) -> None:
    """WeightWatcher: ``taps * min(a, b)`` eigenvalues of a stored ``(*taps, a, b)`` kernel; ours:
    ``groups * taps * min(out / groups, in / groups)``."""
    ours = zoo.rows
    grouped = grouped_kernels(zoo.model)
    for name, kernel in grouped.items():
        reference = zoo.reference[WEIGHTWATCHER_NAME.get(name, name)]
        assert reference["num_evals"] == kernel.taps * min(kernel.stored[-2:]), name
        blocks = kernel.groups * kernel.taps
        assert ours[name]["num_evals"] == blocks * min(kernel.in_per_group, kernel.out_per_group), name
    assert grouped or zoo.name == "transformer"


def test_every_weight_is_analyzed_or_listed_as_skipped(zoo: Any) -> None:
    """The skipped weights are the model's weights that no analyzed matrix reads, each under the
    name of a layer holding it; the same on both backends."""
    read = {
        variable.path
        for weight in analyzable_layers(zoo.model)
        for variable in weight.owner.weights
        if variable.name == weight.attribute
    }
    assert len(zoo.skipped) + len(read) == len({variable.path for variable in zoo.model.weights})
    for key in zoo.skipped:
        layer_name, variable_name = re.fullmatch(r"([^./]+)[./]?.*\.([^.]+)", key).groups()
        variables = zoo.model.get_layer(layer_name).weights
        assert any(variable.name == variable_name for variable in variables), key
    assert zoo.skipped == zoo.torch_skipped
    reasons = {reason.split(" (")[0] for reason in zoo.skipped.values()}
    assert reasons <= {"1-D weight", "bias"}, reasons


def test_run_file_lists_the_skipped_weights(zoo: Any) -> None:
    assert zoo.reader.skipped_parameters == zoo.skipped


MOVEMENT = ("delta_W", "relative_delta", "delta_W_slices", "cka")  # since the previous snapshot


def test_posthoc_analysis_of_the_saved_model_is_the_run_files_last_snapshot(zoo: Any) -> None:
    """``spectral-callbacks analyze`` of the final model saved as ``.keras`` (read with h5py, no
    Keras) finds the run file's matrices with the same numbers, but for the documented differences
    of the post-hoc reader: it names attention projections by their Keras sublayers and does not
    analyze ``EinsumDense`` layers (their equation would need Keras' parser), and a single model
    has no previous snapshot to measure movement from."""
    (result,) = analyze_paths([Path(zoo.keras_file)])
    assert not result.failed
    rows = {POSTHOC_NAME.get(row.name, row.name): row for row in result.rows if row.status != "skipped"}
    not_analyzed = {row.name for row in result.rows if row.status == "skipped"}
    einsum = {layer.name for layer in zoo.model.layers if isinstance(layer, keras.layers.EinsumDense)}
    assert not_analyzed == {f"{name}/0" for name in einsum}
    assert sorted(rows) == sorted(set(zoo.rows) - einsum)
    for name, row in rows.items():
        assert row.kind == zoo.rows[name]["kind"], name
        for metric, value in row.metrics().items():
            if metric in MOVEMENT:
                assert math.isnan(value), (name, metric)
                continue
            expected = zoo.rows[name][metric]
            both_nan = math.isnan(value) and math.isnan(expected)
            assert both_nan or math.isclose(value, expected, rel_tol=1e-9), (name, metric, value, expected)


def test_keras_and_transformers_mobilenet_v2_have_the_same_matrices() -> None:
    """Keras' MobileNetV2 and Hugging Face's at the same width have the same architecture: the same
    matrices in the same order, with the same kinds and torch-layout shapes from either capture."""
    pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    from spectral_callbacks.capture.torch import analyzable_layers as torch_layers

    torch.manual_seed(0)
    config = MobileNetV2Config(
        num_channels=3, image_size=keras_models.IMAGE_SIZE, depth_multiplier=0.35,
        num_labels=keras_models.NUM_CLASSES,
    )  # fmt: skip
    hugging_face = [(w.kind, w.shape) for w in torch_layers(MobileNetV2ForImageClassification(config))]
    model = keras_models.mobilenet_v2()
    ours = [(w.kind, w.shape) for w in analyzable_layers(model)]
    assert ours == hugging_face
    classes = collections.Counter(type(layer).__name__ for layer in model.layers)
    kinds = collections.Counter(kind for kind, _ in ours)
    assert kinds == {"conv2d": classes["Conv2D"], "depthwise_conv2d": classes["DepthwiseConv2D"], "linear": 1}
