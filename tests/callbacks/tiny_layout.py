"""The layout of the tiny models of the callback tests, the same under Lightning and Keras.

Lightning's ``TinyNet`` (conftest.py) and the Keras model (keras_tiny.py) have these layers under
these names with these torch-layout shapes, so both callbacks' run files have the same layout and
the tests can compare them. It stays next to them: the scripts that the crash and backend tests
run in fresh processes import both with only this directory on their path.
"""

from __future__ import annotations

BATCH_SIZE = 8
NUM_BATCHES = 4  # optimizer steps per epoch
NUM_CLASSES = 10

# Analyzable layers and the shape of each weight. Every one has at least 8 eigenvalues
# (min_evals), so each is one analyzed layer in the run file:
# conv: 9 slices of (8, 3) -> 27 eigenvalues; fc1: 16; fc2: 16; head: 10.
TINY_LAYERS = {
    "conv": (8, 3, 3, 3),
    "fc1": (16, 8 * 8 * 8),
    "fc2": (16, 16),
    "head": (NUM_CLASSES, 16),
}
KINDS = {"conv": "conv2d", "fc1": "linear", "fc2": "linear", "head": "linear"}
