"""Layer distances against closed forms and WeightWatcher 0.7.7's ``distances``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spectral_callbacks.spectra import matrices_of
from spectral_callbacks.spectra.distances import layer_distance


def view(name: str, weight: np.ndarray):
    views = matrices_of(name, weight, None, min_evals=1)
    assert isinstance(views, list)
    return views[0]


def test_scaled_copy_has_the_closed_form_distances() -> None:
    """W2 = c W1: ||W2 - W1|| = |c - 1| ||W1||, relative |c - 1|, and the alignment is 1."""
    weight = np.random.default_rng(0).standard_normal((40, 24))
    distance = layer_distance(view("w", weight), view("w", 1.5 * weight))
    assert distance.delta_W == pytest.approx(0.5 * np.linalg.norm(weight), rel=1e-12)
    assert distance.relative_delta == pytest.approx(0.5, rel=1e-12)
    assert distance.delta_W_slices == pytest.approx(distance.delta_W, rel=1e-12)
    assert distance.cka == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("shape", [(3000, 64), (64, 3000), (24, 16, 3, 3)])
def test_without_alignment_the_distances_come_from_blocks_of_rows_equal_to_numpy_s(shape) -> None:
    """Blocks of rows (3 for the embedding-like 3000 x 64) give numpy's float64 norms."""
    rng = np.random.default_rng(1)
    before = rng.standard_normal(shape).astype(np.float32)
    after = before + rng.standard_normal(shape).astype(np.float32) * np.float32(1e-3)
    distance = layer_distance(view("w", before), view("w", after), alignment=False)
    change = after.astype(np.float64) - before.astype(np.float64)
    assert distance.delta_W == pytest.approx(np.linalg.norm(change.ravel()), rel=1e-12)
    relative = np.linalg.norm(change.ravel()) / np.linalg.norm(before.astype(np.float64).ravel())
    assert distance.relative_delta == pytest.approx(relative, rel=1e-12)
    slices = change.reshape(*shape[:2], -1).transpose(2, 0, 1) if len(shape) == 4 else change[None]
    expected_slices = np.mean([np.linalg.norm(part) for part in slices])
    assert distance.delta_W_slices == pytest.approx(expected_slices, rel=1e-12)
    assert math.isnan(distance.cka)


def test_orthogonal_rows_have_zero_alignment_and_slices_average() -> None:
    """Matrices with orthogonal column spaces: A^T B = 0. A conv's slice distances average."""
    first = np.zeros((6, 4))
    first[:3, :2] = np.eye(3, 2)
    second = np.zeros((6, 4))
    second[3:, 2:] = np.eye(3, 2)
    assert layer_distance(view("w", first), view("w", second)).cka == pytest.approx(0.0, abs=1e-15)
    kernel = np.zeros((8, 4, 1, 2))
    moved = kernel.copy()
    moved[0, 0, 0, 1] = 3.0  # one slice moves by 3, the other not at all
    distance = layer_distance(view("c", kernel + 1.0), view("c", moved + 1.0))
    assert distance.delta_W == pytest.approx(3.0)
    assert distance.delta_W_slices == pytest.approx(1.5)
    assert distance.relative_delta == pytest.approx(3.0 / math.sqrt(64))


def test_different_shapes_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'w' has slices of shape"):
        layer_distance(view("w", np.ones((4, 3))), view("w", np.ones((5, 3))))


def test_matches_weightwatcher_distances_on_a_torch_model() -> None:
    torch = pytest.importorskip("torch")
    weightwatcher = pytest.importorskip("weightwatcher")

    def model(seed: int):
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3),
            torch.nn.Conv2d(16, 8, 3),
            torch.nn.Flatten(),
            torch.nn.Linear(8 * 4 * 4, 64),
            torch.nn.Linear(64, 96),
        )

    first, second = model(0), model(1)
    watcher = weightwatcher.WeightWatcher()
    ours = {}
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        if name.endswith("weight"):
            ours[name.removesuffix(".weight")] = layer_distance(view(name, a.numpy()), view(name, b.numpy()))
    columns = {"raw": "delta_W", "euclidean": "delta_W_slices", "cka": "cka"}
    for method, field in columns.items():
        _, _, details = watcher.distances(first, second, method=method)
        assert len(details) == len(ours)
        for (_, row), distance in zip(details.iterrows(), ours.values(), strict=True):
            assert getattr(distance, field) == pytest.approx(float(row["delta_W"]), rel=1e-6), (
                method,
                row["name"],
            )
