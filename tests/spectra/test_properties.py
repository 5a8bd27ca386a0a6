"""Property-based tests (hypothesis, derandomized): invariances and bounds that hold for every matrix."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from spectral_callbacks.spectra import analyze_matrix, analyze_view, frame_potential, matrices_of

PROPERTY_SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None)

# Realistic weight magnitudes: exact zeros or |w| in [1e-3, 1e3] (no overflow, no subnormal rows).
ELEMENTS = st.one_of(st.just(0.0), st.floats(1e-3, 1e3), st.floats(-1e3, -1e-3))


def matrices(max_side: int = 24) -> st.SearchStrategy[np.ndarray]:
    shapes = st.tuples(st.integers(2, max_side), st.integers(2, max_side))
    return hnp.arrays(np.float64, shapes, elements=ELEMENTS)


@st.composite
def random_weights(draw) -> np.ndarray:
    """A seeded random matrix with ``N >= 2 M`` (bulk away from zero), Gaussian or Student-t."""
    seed = draw(st.integers(0, 2**32 - 1))
    m = draw(st.integers(10, 60))
    n = draw(st.integers(2 * m, 4 * m))
    rng = np.random.default_rng(seed)
    if draw(st.booleans()):
        weight = rng.standard_normal((n, m))
    else:
        weight = rng.standard_t(draw(st.sampled_from([2.0, 2.5, 3.0, 5.0])), size=(n, m))
    return weight if draw(st.booleans()) else weight.T


@PROPERTY_SETTINGS
@given(weight=random_weights(), log_scale=st.floats(-2.0, 2.0))
def test_alpha_is_invariant_to_scaling_the_weights(weight: np.ndarray, log_scale: float) -> None:
    scale = 10.0**log_scale
    base = analyze_matrix(weight)
    scaled = analyze_matrix(scale * weight)
    assert scaled.alpha == pytest.approx(base.alpha, rel=1e-9)
    assert scaled.xmin == pytest.approx(scale**2 * base.xmin, rel=1e-9)
    assert abs(scaled.D - base.D) <= 1e-9 * base.D + 1e-12
    assert scaled.stable_rank == pytest.approx(base.stable_rank, rel=1e-9)
    assert scaled.log_norm == pytest.approx(base.log_norm + 2 * log_scale, abs=1e-9)


@PROPERTY_SETTINGS
@given(weight=random_weights(), seed=st.integers(0, 1000))
def test_spectrum_is_invariant_to_permuting_rows_and_columns(weight: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    permuted = weight[rng.permutation(weight.shape[0])][:, rng.permutation(weight.shape[1])]
    a, b = analyze_matrix(weight), analyze_matrix(permuted)
    assert b.alpha == pytest.approx(a.alpha, rel=1e-9)
    assert b.frame_potential == pytest.approx(a.frame_potential, rel=1e-9)


@PROPERTY_SETTINGS
@given(weight=matrices())
def test_stable_rank_lies_between_one_and_m(weight: np.ndarray) -> None:
    assume(np.any(weight != 0))
    (view,) = matrices_of("w", weight, "linear", min_evals=1)
    result = analyze_view(view)
    assert 1.0 - 1e-9 <= result.stable_rank <= min(weight.shape) + 1e-9
    assert result.stable_rank == pytest.approx(
        np.linalg.norm(weight, "fro") ** 2 / np.linalg.norm(weight, 2) ** 2, rel=1e-9
    )


@PROPERTY_SETTINGS
@given(weight=matrices())
def test_frame_potential_is_at_least_the_tight_frame_bound(weight: np.ndarray) -> None:
    assume(np.any(weight != 0))
    fp = frame_potential(weight)
    assert fp.frame_potential_normalized >= 1.0 - 1e-9
    n = int(np.count_nonzero(np.any(weight != 0, axis=1)))
    d = weight.shape[1]
    assert fp.frame_potential >= max(n, n * n / d) * (1 - 1e-9)
    assert fp.frame_potential <= n * n * (1 + 1e-9)  # every |<w_i, w_j>| <= 1


@PROPERTY_SETTINGS
@given(weight=matrices(), scales=hnp.arrays(np.float64, 24, elements=st.floats(1e-2, 1e2)))
def test_frame_potential_ignores_row_lengths(weight: np.ndarray, scales: np.ndarray) -> None:
    assume(np.any(weight != 0))
    rescaled = weight * scales[: weight.shape[0], None]
    assert frame_potential(rescaled).frame_potential == pytest.approx(
        frame_potential(weight).frame_potential, rel=1e-9
    )
