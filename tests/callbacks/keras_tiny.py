"""A tiny Keras model, data and a weight recorder for the tests of ``KerasSpectralCallback``.

The model has the layers of the Lightning tests' ``TinyNet`` under the same names and, in torch
layout, the same shapes, so both callbacks' run files have the same layout. A fit takes about a
second; the spawned analysis worker (2-4 s to start) dominates, so tests share fits where they can.
Import this module after ``pytest.importorskip("keras")``.
"""

from __future__ import annotations

import keras
import numpy as np
from tiny_layout import BATCH_SIZE, NUM_CLASSES, TINY_LAYERS
from tiny_layout import KINDS as KINDS  # re-exported: the tests read the layout from this module
from tiny_layout import NUM_BATCHES as NUM_BATCHES


def make_model(seed: int = 0, lr: float = 0.05) -> keras.Model:
    """Conv2D on 8x8x3 inputs, then three Dense layers (and a BatchNormalization, never captured)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(16, name="fc1"),
            keras.layers.BatchNormalization(name="norm"),
            keras.layers.Activation("relu", name="relu"),
            keras.layers.Dense(16, activation="relu", name="fc2"),
            keras.layers.Dense(NUM_CLASSES, name="head"),
        ],
        name="tiny",
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def make_data(num_batches: int = NUM_BATCHES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    size = num_batches * BATCH_SIZE
    x = rng.normal(size=(size, 8, 8, 3)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=size)
    return x, y


def fit(model: keras.Model, callbacks: list, epochs: int = 2, **kwargs) -> keras.callbacks.History:
    x, y = make_data()
    return model.fit(
        x, y, batch_size=BATCH_SIZE, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks, **kwargs
    )


def torch_layout(layer: keras.layers.Layer) -> np.ndarray:
    """The layer's kernel from ``get_weights()``, transposed to torch layout (independent of capture)."""
    kernel = layer.get_weights()[0]
    if kernel.ndim == 4:  # (kh, kw, in, out) -> (out, in, kh, kw)
        return kernel.transpose(3, 2, 0, 1).copy()
    return kernel.T.copy()  # (in, out) -> (out, in)


def weights_of(model: keras.Model) -> dict[str, np.ndarray]:
    return {name: torch_layout(model.get_layer(name)) for name in TINY_LAYERS}


class WeightRecorder(keras.callbacks.Callback):
    """Records the weights where KerasSpectralCallback should snapshot them.

    ``at_epoch[e]`` holds the weights after ``e`` epochs (the first: before training);
    ``at_step[s]`` after ``s`` optimizer steps. Put it after the spectral callback.
    """

    def __init__(self) -> None:
        super().__init__()
        self.at_epoch: dict[int, dict[str, np.ndarray]] = {}
        self.at_step: dict[int, dict[str, np.ndarray]] = {}
        self._step = 0

    def on_train_begin(self, logs=None) -> None:
        self._step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self._started = False

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        if not self._started:
            self._started = True
            self.at_epoch[epoch] = self.at_step[self._step] = weights_of(self.model)

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        self._step += 1
        self.at_step[self._step] = weights_of(self.model)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        self.at_epoch[epoch + 1] = weights_of(self.model)


# the attention model: embedding width, heads, head size, sequence length, vocabulary
D_MODEL, HEADS, HEAD_DIM, SEQ, VOCAB = 16, 2, 8, 6, 40


class Block(keras.layers.Layer):
    """A custom layer holding a Dense: nested names are joined by '/'."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.proj = keras.layers.Dense(D_MODEL, name="proj")
        self.norm = keras.layers.LayerNormalization(name="norm")

    def call(self, x):
        return self.norm(x + self.proj(x))


def transformer_model() -> keras.Model:
    """Embedding, MultiHeadAttention, a custom Block, Conv1D, a shared Dense and a Sequential head."""
    keras.utils.set_random_seed(0)
    tokens = keras.Input((SEQ,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, D_MODEL, name="emb")(tokens)
    x = keras.layers.MultiHeadAttention(HEADS, HEAD_DIM, name="mha")(x, x)
    x = Block(name="block")(x)
    x = keras.layers.Conv1D(12, 3, name="conv1d")(x)
    shared = keras.layers.Dense(12, name="shared")
    x = shared(shared(x))  # one layer applied twice: one matrix
    x = keras.layers.Flatten(name="flat")(x)
    head = keras.Sequential(
        [keras.layers.Dense(10, name="fc"), keras.layers.Dense(4, name="out")], name="head"
    )
    return keras.Model(tokens, head(x))
