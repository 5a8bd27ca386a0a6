"""The Keras MiniAlexNet experiment (Martin, 2018): CIFAR-10 batches, synthetic data, and tiny runs."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from experiments.keras_minialexnet import (  # noqa: E402
    CIFAR10_BATCHES,
    _cifar_batch,
    load_cifar10,
    main,
    synthetic_images,
)
from spectral_callbacks import open_run  # noqa: E402

LAYERS = ["conv1", "conv2", "fc1", "fc2", "out"]


def write_cifar_batches(directory: Path, per_batch: int = 8) -> None:
    """Batches in CIFAR-10's python format: rows of 1024 red, 1024 green, 1024 blue bytes."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index, name in enumerate(CIFAR10_BATCHES):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        data[0, :1024], data[0, 1024:2048], data[0, 2048:] = 10, 20, 30  # a red/green/blue marker
        labels = [(index + i) % 10 for i in range(per_batch)]
        with (directory / name).open("wb") as handle:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, handle)


def test_cifar_batches_become_standardized_channel_last_images(tmp_path: Path) -> None:
    write_cifar_batches(tmp_path / "cifar-10-batches-py")
    x_train, y_train, x_test, y_test = load_cifar10(tmp_path)  # the parent directory works too
    assert x_train.shape == (40, 32, 32, 3) and x_test.shape == (8, 32, 32, 3)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert y_train[:8].tolist() == list(range(8)) and y_test.tolist() == [5, 6, 7, 8, 9, 0, 1, 2]
    np.testing.assert_allclose(x_train.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(x_train.std(axis=(0, 1, 2)), 1, atol=1e-4)
    # the marker image: one value per channel, red < green < blue, in the last axis
    marker = x_train[0]
    assert np.ptp(marker[..., 0]) == 0 and np.ptp(marker[..., 1]) == 0 and np.ptp(marker[..., 2]) == 0
    raw = _cifar_batch(tmp_path / "cifar-10-batches-py" / "data_batch_1")[0][0]
    assert raw[0, 0].tolist() == pytest.approx([10 / 255, 20 / 255, 30 / 255])


def test_missing_cifar_batches_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"data_batch_1.*test_batch.*nothing is downloaded"):
        load_cifar10(tmp_path)


def test_synthetic_images_are_seeded_and_balanced() -> None:
    x_train, y_train, x_test, y_test = synthetic_images(200, seed=3)
    assert x_train.shape == (160, 32, 32, 3) and x_test.shape == (40, 32, 32, 3)
    assert np.bincount(np.concatenate([y_train, y_test])).tolist() == [20] * 10
    np.testing.assert_array_equal(synthetic_images(200, seed=3)[0], x_train)
    assert not np.array_equal(synthetic_images(200, seed=4)[0], x_train)


def test_synthetic_run_writes_one_run_per_l2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["--synthetic", "--samples", "120", "--epochs", "1", "--channels", "4", "4"]
    runs = main([*argv, "--l2", "0.0005", "0.05", "--log-dir", str(tmp_path)])
    assert runs == {0.0005: tmp_path / "l2_0.0005", 0.05: tmp_path / "l2_0.05"}
    for run_dir in runs.values():
        with open_run(run_dir) as run:
            assert run.epochs.tolist() == [0, 1]
            assert run.layers == LAYERS
            assert (run.layer_info("fc1")["N"], run.layer_info("fc1")["M"]) == (384, 4 * 8 * 8)
            assert run.attributes["framework"] == "keras"
    output = capsys.readouterr().out
    assert "FC layers at epoch 1 by L2" in output and "spectral-callbacks compare" in output
    with pytest.raises(SystemExit):  # the run files exist now: refused before training
        main([*argv, "--l2", "0.05", "--log-dir", str(tmp_path)])
    assert "run files exist already" in capsys.readouterr().err


def test_cifar_run(tmp_path: Path) -> None:
    write_cifar_batches(tmp_path / "cifar")
    argv = ["--data-dir", str(tmp_path / "cifar"), "--epochs", "1", "--channels", "4", "4", "--l2", "0.0003"]
    (run_dir,) = main([*argv, "--log-dir", str(tmp_path / "runs")]).values()
    with open_run(run_dir) as run:
        assert run.epochs.tolist() == [0, 1]
        assert run.steps.tolist() == [0, 1]  # 40 images, batches of 64


@pytest.mark.parametrize("argv", [[], ["--synthetic", "--data-dir", "x"]])
def test_exactly_one_data_source(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(argv)
    assert "either --data-dir" in capsys.readouterr().err
