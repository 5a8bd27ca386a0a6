"""Keras architectures for the zoo tests, their random data, WeightWatcher's analysis of them, and
the TensorFlow side of the tests (run in a subprocess: Keras fixes its backend once per process).

- ``mobilenet_v2``: ``keras.applications.MobileNetV2(alpha=0.35)`` on 32x32 images, 10 classes
  (its 17 ``DepthwiseConv2D`` are the grouped layers).
- ``transformer``: one Transformer block from Keras layers: token ``Embedding``,
  ``MultiHeadAttention``, ``LayerNormalization``, an ``EinsumDense`` that is a Dense
  (``"abc,cd->abd"``), an ``EinsumDense`` with a 3-D kernel (``"abc,cde->abde"``), ``Dense``.
- ``mixed_convs``: a small CNN with one of each other convolution Keras has a rule for:
  ``SeparableConv2D``, ``Conv2D(groups=4)`` and ``DepthwiseConv2D(depth_multiplier=2)``.

Every layer of both is a top-level layer of the model with a fixed name, so WeightWatcher (which
walks ``model.layers``) and our capture name them alike, and a model rebuilt in another process
has the same names. Widths of 64 and more give WeightWatcher 20 eigenvalues or more to fit.

Run as a script (``KERAS_BACKEND=tensorflow python keras_models.py request.json``) it does the
TensorFlow side and prints one line ``RESULT <json>``; see :func:`tensorflow_side`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
from weightwatcher_runs import weightwatcher_analysis

BATCH_SIZE = 8
NUM_BATCHES = 2
NUM_CLASSES = 10
IMAGE_SIZE = 32
VOCABULARY, SEQUENCE, WIDTH, HEADS, HEAD_DIM = 512, 16, 64, 4, 16

# WeightWatcher's row columns kept for the comparison
WW_COLUMNS = ("layer_type", "N", "M", "rf", "num_evals", "alpha", "xmin", "D", "num_pl_spikes",
              "log_norm", "log_spectral_norm")  # fmt: skip


def mobilenet_v2() -> keras.Model:
    """Keras' MobileNetV2 at width 0.35 on 32x32 images, untrained, seeded."""
    keras.utils.set_random_seed(0)
    return keras.applications.MobileNetV2(
        input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), alpha=0.35, weights=None, classes=NUM_CLASSES
    )


def transformer() -> keras.Model:
    """One post-norm Transformer block and a classification head, every layer named."""
    keras.utils.set_random_seed(0)
    layers = keras.layers
    tokens = keras.Input((SEQUENCE,), dtype="int32", name="tokens")
    x = layers.Embedding(VOCABULARY, WIDTH, name="embed")(tokens)
    attended = layers.MultiHeadAttention(HEADS, HEAD_DIM, name="attn")(x, x)
    x = layers.LayerNormalization(name="norm1")(layers.Add(name="residual1")([x, attended]))
    hidden = layers.EinsumDense("abc,cd->abd", (SEQUENCE, 2 * WIDTH), bias_axes="d", name="ffn_up")(x)
    hidden = layers.Activation("gelu", name="gelu")(hidden)
    hidden = layers.Dense(WIDTH, name="ffn_down")(hidden)
    x = layers.LayerNormalization(name="norm2")(layers.Add(name="residual2")([x, hidden]))
    heads = layers.EinsumDense("abc,cde->abde", (SEQUENCE, HEADS, 32), name="head_proj")(x)
    pooled = layers.GlobalAveragePooling1D(name="pool")(layers.Reshape((SEQUENCE, HEADS * 32))(heads))
    return keras.Model(tokens, layers.Dense(NUM_CLASSES, name="classifier")(pooled), name="transformer")


def mixed_convs() -> keras.Model:
    """Conv2D, SeparableConv2D, grouped Conv2D and DepthwiseConv2D on 16x16x8 inputs, then a Dense."""
    keras.utils.set_random_seed(0)
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((16, 16, 8)),
            layers.Conv2D(32, 3, padding="same", activation="relu", name="stem"),
            layers.SeparableConv2D(
                64, 3, depth_multiplier=2, padding="same", activation="relu", name="separable"
            ),
            layers.Conv2D(64, 3, groups=4, padding="same", activation="relu", name="grouped"),
            layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise"),
            layers.GlobalAveragePooling2D(name="pool"),
            layers.Dense(NUM_CLASSES, name="classifier"),
        ],
        name="mixed_convs",
    )


MODELS: dict[str, Callable[[], keras.Model]] = {
    "mobilenet_v2": mobilenet_v2, "transformer": transformer, "mixed_convs": mixed_convs,
}  # fmt: skip


def data(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``NUM_BATCHES`` batches of random inputs and labels for a model of :data:`MODELS`."""
    rng = np.random.default_rng(0)
    size = BATCH_SIZE * NUM_BATCHES
    if name == "mobilenet_v2":
        x = rng.normal(size=(size, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    elif name == "mixed_convs":
        x = rng.normal(size=(size, 16, 16, 8)).astype("float32")
    else:
        x = rng.integers(0, VOCABULARY, size=(size, SEQUENCE)).astype("int32")
    return x, rng.integers(0, NUM_CLASSES, size=size)


def fit(name: str, model: keras.Model, callbacks: list[keras.callbacks.Callback]) -> None:
    """One epoch of Adam on :func:`data`, eagerly: on TensorFlow, tracing MobileNetV2 into a graph
    takes about 20 s, eager execution of the two batches about 2 s (torch runs eagerly anyway)."""
    from_logits = name != "mobilenet_v2"  # MobileNetV2 ends with a softmax
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        jit_compile=False,
        run_eagerly=True,
    )
    x, y = data(name)
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)


def weightwatcher_rows(model: keras.Model) -> dict[str, dict[str, Any]]:
    """WeightWatcher's default ``analyze()`` of a Keras model on the TensorFlow backend, one dict
    of :data:`WW_COLUMNS` per row by layer name, its output silenced.

    On the torch backend WeightWatcher takes a Keras model for a torch module (its classes derive
    from ``torch.nn.Module``) and finds no layer in it, hence the TensorFlow backend.
    """
    frame = weightwatcher_analysis(model)
    return {
        str(row["name"]): {column: _plain(row[column]) for column in WW_COLUMNS}
        for _, row in frame.iterrows()
    }


def tensorflow_side(request: dict[str, Any]) -> dict[str, Any]:
    """Everything the zoo tests need from the TensorFlow backend, for every model of :data:`MODELS`.

    ``request["torch_weights"][name]`` is a ``.weights.h5`` file of the model trained on the torch
    backend: WeightWatcher's rows of the same architecture holding those weights go to
    ``["weightwatcher_of_torch_weights"][name]``. Then each model trains one epoch here with
    ``KerasSpectralCallback(<request["log_dir"]>/<name>)``; ``["tensorflow"][name]`` gets its
    run file, WeightWatcher's rows and ``skipped_weights`` of the final model, the final model
    saved as ``<log_dir>/<name>.keras``, and the wall times.
    """
    from spectral_callbacks import KerasSpectralCallback
    from spectral_callbacks.capture.keras import skipped_weights

    assert keras.backend.backend() == "tensorflow", keras.backend.backend()
    result: dict[str, Any] = {"weightwatcher_of_torch_weights": {}, "tensorflow": {}}
    for name, path in request["torch_weights"].items():
        model = MODELS[name]()
        model.load_weights(path)
        result["weightwatcher_of_torch_weights"][name] = weightwatcher_rows(model)
    for name, build in MODELS.items():
        start = time.perf_counter()
        model = build()
        callback = KerasSpectralCallback(Path(request["log_dir"]) / name, tensorboard=False)
        fit(name, model, [callback])
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        rows = weightwatcher_rows(model)
        keras_file = Path(request["log_dir"]) / f"{name}.keras"
        model.save(keras_file)
        result["tensorflow"][name] = {
            "run_path": str(callback.run_path),
            "keras_file": str(keras_file),
            "weightwatcher": rows,
            "skipped": skipped_weights(model),
            "seconds": {"fit": fit_seconds, "weightwatcher": time.perf_counter() - start},
        }
    return result


def _plain(value: Any) -> Any:
    """A pandas cell as a JSON value."""
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value)
    return str(value)


if __name__ == "__main__":
    print("RESULT " + json.dumps(tensorflow_side(json.loads(Path(sys.argv[1]).read_text()))))
