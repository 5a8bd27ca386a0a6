"""Martin (2018) in Keras 3: a MiniAlexNet on CIFAR-10, L2 on its FC layers, watched by KerasSpectralCallback.

Martin (2018) trains a small AlexNet (two 5x5 conv layers with max pooling, then fully connected layers
of 384 and 192 units and the classifier) with L2 regularization of the FC layers, and finds that
too much of it collapses their rank: the smallest eigenvalue of ``W^T W`` drops to zero. One run
per ``--l2`` value goes to ``<log-dir>/l2_<value>`` (a run file and TensorBoard events), so
``spectral-callbacks compare <log-dir>/l2_*`` plots the metrics against L2.

Data: ``--data-dir DIR`` with CIFAR-10's "python version" batches (``data_batch_1`` ...
``data_batch_5``, ``test_batch``, in DIR or its ``cifar-10-batches-py``; nothing is downloaded),
or ``--synthetic``: a seeded 32x32x3 stand-in of class patterns that runs offline in a minute or
two. The CIFAR-10 batches are Python pickles, the format the dataset ships in: only read files
you trust. Usage::

    python -m experiments.keras_minialexnet --synthetic
    python -m experiments.keras_minialexnet --data-dir ~/data/cifar-10-batches-py --epochs 20 --backend jax
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import pickle
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load_cifar10", "main", "mini_alexnet", "synthetic_images"]

CIFAR10_BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
NUM_CLASSES = 10
FC_LAYERS = ("fc1", "fc2")  # the regularized layers, whose rank Martin (2018) watches
SUMMARY_METRICS = ("alpha", "log_norm", "stable_rank", "lambda_min", "rank_loss")

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


# -- data ---------------------------------------------------------------------------------------------
def load_cifar10(data_dir: str | Path) -> Arrays:
    """CIFAR-10 as ``(x_train, y_train, x_test, y_test)``: images ``(n, 32, 32, 3)`` standardized per
    channel with the training images' mean and deviation, labels ``int64``.

    Raises:
        FileNotFoundError: the batches are neither in ``data_dir`` nor in its ``cifar-10-batches-py``.
    """
    data_dir = Path(data_dir).expanduser()
    for directory in (data_dir, data_dir / "cifar-10-batches-py"):
        if all((directory / name).is_file() for name in CIFAR10_BATCHES):
            break
    else:
        raise FileNotFoundError(
            f"No CIFAR-10 python batches in {data_dir}: expected {', '.join(CIFAR10_BATCHES)} there or "
            "in its cifar-10-batches-py/ (the extracted 'CIFAR-10 python version'; nothing is downloaded)."
        )
    batches = [_cifar_batch(directory / name) for name in CIFAR10_BATCHES]
    x_train = np.concatenate([images for images, _ in batches[:-1]])
    y_train = np.concatenate([labels for _, labels in batches[:-1]])
    x_test, y_test = batches[-1]
    mean, std = x_train.mean(axis=(0, 1, 2)), x_train.std(axis=(0, 1, 2))
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open("rb") as handle:
        batch = pickle.load(handle, encoding="bytes")  # the dataset's own format (trusted files only)
    rows = np.asarray(batch[b"data"], dtype=np.uint8)  # (n, 3072): 1024 red, 1024 green, 1024 blue
    images = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32) / np.float32(255)
    return images, np.asarray(batch[b"labels"], dtype=np.int64)


def synthetic_images(
    num_samples: int, *, test_fraction: float = 0.2, noise: float = 1.5, seed: int = 0
) -> Arrays:
    """A learnable stand-in for CIFAR-10: ``(n, 32, 32, 3)`` images of 10 classes.

    Each class has a smooth colored pattern (the sum of three gratings of random orientation,
    1-4 cycles per image and color, unit deviation); an example is its class pattern shifted
    circularly by up to 8 pixels each way, scaled by a contrast in [0.5, 1.5], plus Gaussian noise.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:32, 0:32] / 32.0
    patterns = np.zeros((NUM_CLASSES, 32, 32, 3))
    for pattern in patterns:
        for _ in range(3):
            angle, cycles, phase = rng.uniform(0, math.pi), rng.uniform(1, 4), rng.uniform(0, 2 * math.pi)
            grating = np.cos(2 * math.pi * cycles * (x * math.cos(angle) + y * math.sin(angle)) + phase)
            pattern += grating[..., None] * rng.standard_normal(3)
        pattern -= pattern.mean()
        pattern /= pattern.std()
    labels = rng.permutation(np.arange(num_samples) % NUM_CLASSES)
    shifts = rng.integers(-8, 9, size=(num_samples, 2))
    images = np.stack(
        [
            np.roll(patterns[label], tuple(shift), axis=(0, 1))
            for label, shift in zip(labels, shifts, strict=True)
        ]
    )
    images *= rng.uniform(0.5, 1.5, size=(num_samples, 1, 1, 1))
    images += noise * rng.standard_normal(images.shape)
    split = num_samples - round(test_fraction * num_samples)
    images = images.astype(np.float32)
    return images[:split], labels[:split], images[split:], labels[split:]


# -- model --------------------------------------------------------------------------------------------
def mini_alexnet(l2: float, channels: Sequence[int] = (64, 64), hidden: Sequence[int] = (384, 192)) -> Any:
    """Martin's (2018) MiniAlexNet in Keras 3: [conv 5x5, ReLU, max pool 3x3/2] x 2, FC 384, FC 192, output.

    As in Martin's Keras model: Glorot-normal kernels, biases 0.1, L2 of ``l2`` on the FC kernels.
    Layers are named ``conv1, conv2, fc1, fc2, out`` (the Lightning experiments' names).
    """
    import keras

    def initializers() -> dict[str, Any]:
        return {"kernel_initializer": "glorot_normal", "bias_initializer": keras.initializers.Constant(0.1)}

    layers = [keras.Input((32, 32, 3))]
    for index, width in enumerate(channels, start=1):
        layers += [
            keras.layers.Conv2D(
                width, 5, padding="same", activation="relu", name=f"conv{index}", **initializers()
            ),
            keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{index}"),
        ]
    layers.append(keras.layers.Flatten(name="flatten"))
    for index, width in enumerate(hidden, start=1):
        regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
        layers.append(
            keras.layers.Dense(
                width, activation="relu", name=f"fc{index}", kernel_regularizer=regularizer, **initializers()
            )
        )
    layers.append(keras.layers.Dense(NUM_CLASSES, name="out", kernel_initializer="glorot_normal"))
    return keras.Sequential(layers, name="mini_alexnet")


# -- the experiment -----------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> dict[float, Path]:
    """Train one MiniAlexNet per L2 value; print each run's table and a comparison of the FC layers.

    Returns:
        The run directory of each L2 value.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    _fill_defaults(args)
    if (args.data_dir is None) == (not args.synthetic):
        parser.error("pass either --data-dir DIR (CIFAR-10 python batches) or --synthetic")
    runs = {l2: Path(args.log_dir) / f"l2_{l2:g}" for l2 in args.l2}
    existing = [str(path) for path in runs.values() if (path / "spectra.h5").exists()]
    if existing:
        parser.error(f"run files exist already: {', '.join(existing)}; pass another --log-dir")
    keras = _import_keras(args.backend, parser)
    from spectral_callbacks import KerasSpectralCallback, format_columns, open_run, run_table

    data = synthetic_images(args.samples, seed=args.seed) if args.synthetic else load_cifar10(args.data_dir)
    x_train, y_train, x_test, y_test = data
    if args.samples and not args.synthetic:
        x_train, y_train = x_train[: args.samples], y_train[: args.samples]
    print(f"{len(x_train)} training and {len(x_test)} test images; Keras {keras.__version__} on "
          f"{keras.backend.backend()}")  # fmt: skip

    summary = []
    for l2, run_dir in runs.items():
        keras.utils.set_random_seed(args.seed)
        model = mini_alexnet(l2, channels=args.channels)
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=args.lr, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        callback = KerasSpectralCallback(run_dir)
        started = time.perf_counter()
        history = model.fit(
            x_train,
            y_train,
            batch_size=args.batch_size,
            epochs=args.epochs,
            validation_data=(x_test, y_test),
            callbacks=[callback],
            verbose=2 if args.verbose else 0,
        )
        accuracy = history.history["val_accuracy"][-1]
        print(f"\n== l2={l2:g}: {args.epochs} epochs in {time.perf_counter() - started:.1f} s, "
              f"test accuracy {accuracy:.3f}; run file {callback.run_path}")  # fmt: skip
        with open_run(callback.run_path) as run:
            print(run_table(run))
            last = int(run.epochs[-1])
            for layer in FC_LAYERS:
                summary.append([layer, f"{l2:g}", *[run.metric(m, layer)[-1] for m in SUMMARY_METRICS]])
    print(
        f"\nFC layers at epoch {last} by L2 (Martin, 2018: more L2, smaller lambda_min, until the rank "
        "collapses)"
    )
    rows = sorted(summary, key=lambda row: (row[0], float(row[1])))
    print(format_columns(["layer", "l2", *SUMMARY_METRICS], rows))
    print(f"\nSee the spectra evolve:\n  tensorboard --logdir {args.log_dir}")
    print(f"and compare the runs:\n  spectral-callbacks compare {args.log_dir}/l2_* --metric lambda_min")
    return runs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.keras_minialexnet", description=__doc__.split("\n\n")[0]
    )
    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", help="directory with CIFAR-10's python batches")
    data.add_argument(
        "--synthetic", action="store_true", help="a generated stand-in for CIFAR-10 (offline, fast)"
    )
    data.add_argument(
        "--samples",
        type=int,
        default=None,
        help="examples to generate (default 2000) or CIFAR-10 images to keep",
    )
    training = parser.add_argument_group("training")
    training.add_argument(
        "--l2", type=float, nargs="+", default=None,
        help="L2 on fc1 and fc2, one run each (default: 0.0003 0.0005, Martin's; 0.0005 0.05 synthetic)",
    )  # fmt: skip
    training.add_argument("--epochs", type=int, default=None, help="default: 5 with --synthetic, else 20")
    training.add_argument("--channels", type=int, nargs=2, default=None,
                          help="conv channels (default: 64 64; 16 16 with --synthetic)")  # fmt: skip
    training.add_argument("--batch-size", type=int, default=64)
    training.add_argument("--lr", type=float, default=0.01)
    training.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", default="keras_runs/minialexnet", help="runs go to LOG_DIR/l2_<value>")
    parser.add_argument("--backend", choices=("jax", "torch", "tensorflow"), default=None,
                        help="Keras backend (default: $KERAS_BACKEND, else torch)")  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="Keras' per-epoch log lines")
    return parser


def _fill_defaults(args: argparse.Namespace) -> None:
    """Sizes not given: small ones for --synthetic (a minute or two on 2 cores), else Martin's (2018)."""
    small = args.synthetic
    args.samples = args.samples if args.samples is not None else (2000 if small else 0)
    args.epochs = args.epochs if args.epochs is not None else (5 if small else 20)
    args.channels = args.channels or ([16, 16] if small else [64, 64])
    # a few synthetic epochs need a stronger L2 than Martin's 20 CIFAR-10 epochs to shrink the FC spectra
    args.l2 = args.l2 or ([0.0005, 0.05] if small else [0.0003, 0.0005])


def _import_keras(backend: str | None, parser: argparse.ArgumentParser) -> Any:
    """Keras on ``backend``: the backend must be chosen before Keras is first imported."""
    backend = backend or os.environ.get("KERAS_BACKEND") or "torch"
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = backend
    keras = importlib.import_module("keras")
    if keras.backend.backend() != backend:
        parser.error(
            f"Keras was already imported with the {keras.backend.backend()} backend; cannot use {backend}"
        )
    return keras


if __name__ == "__main__":
    main()
