"""The Gram path: eigenvalues of W^T W where certified, SVD elsewhere, against numpy.linalg.svd,
known spectra and exact integer arithmetic; every metric as the SVD path's."""

from __future__ import annotations

import math

import numpy as np
import pytest
from known_spectra import with_singular_values

from spectral_callbacks.spectra import EVALS_THRESH, analyze_matrix, analyze_view, matrices_of
from spectral_callbacks.spectra.esd import (
    GRAM_RTOL,
    Thresholds,
    compute_singular_values,
    singular_values,
)
from spectral_callbacks.spectra.gram import (
    GRAM_BLOCK_ROWS,
    GRAM_LARGE_BLOCK_ROWS,
    certified,
    expected_certified,
    gram_eigenvalues,
    gram_matrix,
    lapack_eigvalsh,
)

EPS64 = float(np.finfo(np.float64).eps)
EPS16 = float(np.finfo(np.float16).eps)
COUNTS = ("num_evals", "num_pl_spikes", "rank", "rank_loss", "rank_nr", "rank_loss_nr", "num_spikes")
# metrics of the large eigenvalues (tail, norms): exact to bound / lambda, ~1e-12 here
TAIL = (
    "alpha", "xmin", "xmax", "D", "sigma", "alpha_weighted", "log_alpha_norm", "norm", "log_norm",
    "spectral_norm", "log_spectral_norm", "stable_rank", "sv_max",
)  # fmt: skip
# metrics that mix in every eigenvalue, each within GRAM_RTOL: within GRAM_RTOL too
WHOLE = ("entropy", "mp_s", "lambda_plus", "mp_softrank", "lambda_min")


def view_of(weight: np.ndarray, kind: str | None = None):
    views = matrices_of("w", weight, kind)
    assert isinstance(views, list)
    return views[0]


def rank_deficient(rows: int, columns: int, rank: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, rank)) @ rng.standard_normal((rank, columns))


def reference_evals(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """numpy's squared singular values (descending) of each slice, and their own error bound
    (LAPACK's SVD: each sigma within a few ``n eps sigma_max``)."""
    sigma = np.linalg.svd(np.asarray(weight, dtype=np.float64), compute_uv=False)
    error = 8 * max(weight.shape) * EPS64 * sigma[..., :1]
    return sigma**2, 2 * sigma * error + error**2


# --- forming the Gram matrix -------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["row-major", "column-major", "conv slice", "transposed"])
@pytest.mark.parametrize(("rows", "block_rows"), [(40, None), (300, None), (300, 64), (1000, 7), (129, 128)])
def test_gram_matrix_is_exact_on_integers_and_counts_its_roundings(layout, rows, block_rows) -> None:
    """Small integers: every product and sum is exact in float64, so blocked, pairwise-summed
    dsyrk must give exactly the integer Gram matrix; ``k`` is ``b + ceil(log2(blocks))``."""
    rng = np.random.default_rng(rows)
    integers = rng.integers(-50, 51, size=(rows, 24))
    if layout == "row-major":
        matrix = integers.astype(np.float32)
    elif layout == "column-major":
        matrix = np.asfortranarray(integers, dtype=np.float64)
    elif layout == "conv slice":
        kernel = np.zeros((rows, 24, 3, 3), dtype=np.float32)
        kernel[:, :, 1, 2] = integers
        matrix = view_of(kernel).slices[5]
    else:
        matrix = np.ascontiguousarray(integers.T, dtype=np.float32).T
    gram, roundings = gram_matrix(matrix, block_rows)
    np.testing.assert_array_equal(np.triu(gram), np.triu(integers.T @ integers))
    block = min(block_rows or GRAM_BLOCK_ROWS, rows)
    assert roundings == block + math.ceil(math.log2(math.ceil(rows / block)))


def test_gram_matrices_wider_than_512_add_their_blocks_in_sequence() -> None:
    """Two n x n partial sums in memory, not log2(blocks) + 1: k = b + blocks - 1."""
    integers = np.random.default_rng(0).integers(-20, 21, size=(1300, 520))
    gram, roundings = gram_matrix(integers.astype(np.float32))
    np.testing.assert_array_equal(np.triu(gram), np.triu(integers.T @ integers))
    assert roundings == GRAM_LARGE_BLOCK_ROWS + 2  # 3 blocks of 512 rows


# --- the error bound -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "shape", "dtype"),
    [
        ("gaussian", (300, 60), np.float32),
        ("student-t", (2000, 40), np.float64),
        ("graded columns", (500, 30), np.float64),  # column norms over 8 decades
        ("very tall", (20000, 8), np.float32),
        ("square", (150, 150), np.float32),
        ("ill-conditioned", (200, 50), np.float64),
    ],
)
def test_every_gram_eigenvalue_is_within_the_bound_of_numpys(case, shape, dtype) -> None:
    rng = np.random.default_rng(len(case))
    if case == "student-t":
        weight = rng.standard_t(3.0, size=shape)
    elif case == "graded columns":
        weight = rng.standard_normal(shape) * np.logspace(-4, 4, shape[1])
    elif case == "ill-conditioned":
        weight = with_singular_values(np.logspace(0, -12, shape[1]), shape[0], np.random.default_rng(1))
    else:
        weight = rng.standard_normal(shape)
    weight = weight.astype(dtype)
    evals, delta = gram_eigenvalues(weight)
    expected, reference_error = reference_evals(weight)
    assert np.all(np.abs(evals - expected) <= delta + reference_error)
    assert np.all(np.diff(evals) <= 0)
    # the bound is far from tight, but not vacuous: below 1e-8 of the largest eigenvalue here
    assert delta < 1e-8 * expected[0]


def test_a_certified_slice_has_every_eigenvalue_within_rtol() -> None:
    """Singular values over two decades (eigenvalues over four): certified, each within rtol."""
    s = np.logspace(0, -2, 50)
    weight = with_singular_values(s, 200, np.random.default_rng(2))
    evals, delta = gram_eigenvalues(weight)
    assert certified(evals, delta, GRAM_RTOL)
    expected, reference_error = reference_evals(weight)
    np.testing.assert_allclose(evals, s**2, rtol=GRAM_RTOL)
    assert np.all(np.abs(evals - expected) <= GRAM_RTOL * expected + reference_error)
    # the large ones far better: the tail to delta / lambda
    np.testing.assert_allclose(evals[:10], expected[:10], rtol=1e-10)


@pytest.mark.parametrize(
    ("case", "falls_back"),
    [("condition 10", False), ("condition 1e3", False), ("condition 1e6", True), ("condition 1e12", True)],
)
def test_the_certificate_fails_exactly_on_ill_conditioned_slices(case: str, falls_back: bool) -> None:
    """Eigenvalue ratios of 1e2 and 1e6 are far inside float64's reach; 1e12 and 1e24 are not."""
    condition = float(case.split()[-1])
    s = np.geomspace(1, 1 / condition, 40)
    weight = with_singular_values(s, 300, np.random.default_rng(3)).astype(np.float32)
    result = compute_singular_values(view_of(weight), method="gram")
    assert result.fallback.tolist() == [falls_back] and result.gram.tolist() == [not falls_back]
    assert np.isnan(result.bound[0]) == falls_back
    expected = np.linalg.svd(weight.astype(np.float64), compute_uv=False)
    if falls_back:  # the SVD path's values, bit for bit
        np.testing.assert_array_equal(result.values, singular_values(view_of(weight), method="svd"))
    np.testing.assert_allclose(result.values[0], expected, rtol=GRAM_RTOL / 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_exactly_rank_deficient_matrix_falls_back_and_keeps_its_rank(dtype) -> None:
    weight = rank_deficient(150, 60, 20, seed=4).astype(dtype)
    view = view_of(weight)
    result = compute_singular_values(view, method="gram")
    assert result.fallback.tolist() == [True] and not result.gram.any()
    np.testing.assert_array_equal(result.values, singular_values(view, method="svd"))
    spectrum = analyze_view(view, method="gram")
    assert (spectrum.gram_slices, spectrum.gram_fallbacks) == (0, 1)
    assert spectrum.rank == np.linalg.matrix_rank(weight) == 20


def test_in_a_conv_view_exactly_the_rank_deficient_slices_fall_back() -> None:
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((40, 24, 3, 3))
    deficient = {(0, 0), (2, 1)}
    for i, j in deficient:
        weight[:, :, i, j] = rank_deficient(40, 24, 5, seed=i + j)
    view = view_of(weight.astype(np.float32))
    result = compute_singular_values(view, method="auto")
    assert set(np.flatnonzero(result.fallback)) == {3 * i + j for i, j in deficient}
    assert np.array_equal(result.gram, ~result.fallback)
    expected = np.stack([np.linalg.svd(s.astype(np.float64), compute_uv=False) for s in view.slices])
    np.testing.assert_allclose(result.values[result.gram], expected[result.gram], rtol=GRAM_RTOL / 2)
    np.testing.assert_allclose(
        result.values[result.fallback], expected[result.fallback], rtol=0, atol=1e-12 * expected.max()
    )


# --- thresholds the metrics compare with ---------------------------------------------------------


def planted(value: float, seed: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A well-conditioned 120 x 40 matrix whose 20th eigenvalue (sigma^2) is ``value``."""
    s = np.sqrt(np.r_[np.linspace(4.0, 1.0, 19), value, np.linspace(0.9, 0.5, 20)])
    return with_singular_values(s, 120, np.random.default_rng(seed)), s


@pytest.mark.parametrize(
    ("thresholds", "falls_back"),
    [
        (Thresholds(), False),
        (Thresholds(absolute=(0.95,)), True),  # the planted eigenvalue itself
        (Thresholds(absolute=(0.95 * (1 + 1e-13),)), True),  # within its error interval
        (Thresholds(absolute=(0.93, 0.97)), False),  # between eigenvalues
        (Thresholds(per_slice=(0.95 / 4.0,)), True),  # relative to the largest
        (Thresholds(per_slice=(0.94 / 4.0,)), False),
    ],
)
def test_a_threshold_inside_an_error_interval_sends_the_slice_to_the_svd(thresholds, falls_back) -> None:
    weight, s = planted(0.95)
    result = compute_singular_values(view_of(weight), method="gram", thresholds=thresholds)
    assert result.fallback.tolist() == [falls_back]
    np.testing.assert_allclose(result.values[0], s, rtol=GRAM_RTOL / 2)


def test_a_threshold_relative_to_the_views_largest_eigenvalue_checks_every_slice() -> None:
    """Slice 1's planted eigenvalue is 0.95 / 16 of slice 0's largest (64 = 4 * 16)."""
    big, _ = planted(0.95, seed=7)
    small, _ = planted(0.95, seed=8)
    weight = np.stack([4 * big, small], axis=-1)[:, :, None, :]  # conv2d (120, 40, 1, 2)
    view = view_of(weight)
    result = compute_singular_values(view, method="gram", thresholds=Thresholds(per_view=(0.95 / 64,)))
    assert result.fallback.tolist() == [False, True]


@pytest.mark.parametrize(("kind", "raw_threshold"), [("linear", EVALS_THRESH), ("conv2d", 2 * EVALS_THRESH)])
def test_an_eigenvalue_at_evals_thresh_on_the_esd_scale_is_computed_by_svd(kind, raw_threshold) -> None:
    """conv2d eigenvalues are halved before the 1e-5 cut: 2e-5 is the raw value that sits on it."""
    for value, falls_back in ((raw_threshold, True), (3 * raw_threshold, False)):
        weight, _ = planted(value)
        weight = weight[:, :, None, None] if kind == "conv2d" else weight
        spectrum = analyze_matrix(weight, method="gram")
        assert spectrum.gram_fallbacks == int(falls_back), value
        reference = analyze_matrix(weight, method="svd")
        assert spectrum.alpha == pytest.approx(reference.alpha, rel=1e-9)


def test_a_singular_value_on_the_rank_tolerance_of_float16_weights_is_computed_by_svd() -> None:
    """float16's eps puts numpy's rank tolerance N * eps * sigma_max at 0.117 sigma_max for
    N = 120: an eigenvalue there decides rank and rank_loss, so the SVD computes it."""
    tolerance = 120 * EPS16
    for value, falls_back in ((4.0 * tolerance**2, True), (4.0 * (1.5 * tolerance) ** 2, False)):
        weight, _ = planted(value)
        view = view_of(weight)
        spectrum = analyze_view(view, weights_dtype=np.float16, method="gram")
        assert spectrum.gram_fallbacks == int(falls_back)
        assert spectrum.rank == analyze_view(view, weights_dtype=np.float16, method="svd").rank


# --- every metric as the SVD path's ---------------------------------------------------------------


def parity_weight(case: str) -> tuple[np.ndarray, str | None]:
    rng = np.random.default_rng(len(case))
    if case == "gaussian tall float32":
        return rng.standard_normal((300, 100)).astype(np.float32), None
    if case == "student-t wide float64":
        return rng.standard_t(3.0, size=(100, 300)), None
    if case == "square float32":
        return rng.standard_normal((120, 120)).astype(np.float32), None
    if case == "ill-conditioned":
        return with_singular_values(np.logspace(0, -12, 50), 200, np.random.default_rng(9)), None
    if case == "rank-deficient":
        return rank_deficient(150, 60, 20, seed=10).astype(np.float32), None
    if case == "conv student-t":
        return (rng.standard_t(3.0, size=(64, 32, 3, 3)) / 17).astype(np.float32), None
    if case == "grouped conv, 36 slices":
        return rng.standard_normal((4, 16, 8, 3, 3)).astype(np.float32), "grouped_conv2d"
    raise AssertionError(case)


PARITY_CASES = [
    "gaussian tall float32",
    "student-t wide float64",
    "square float32",
    "ill-conditioned",
    "rank-deficient",
    "conv student-t",
    "grouped conv, 36 slices",
]


@pytest.mark.parametrize("case", PARITY_CASES)
@pytest.mark.parametrize("method", ["auto", "gram"])
def test_every_metric_equals_the_svd_paths(case: str, method: str) -> None:
    weight, kind = parity_weight(case)
    view = view_of(weight, kind)
    ours, svd = analyze_view(view, method=method), analyze_view(view, method="svd")
    assert (svd.gram_slices, svd.gram_fallbacks) == (0, 0)
    assert ours.gram_slices + ours.gram_fallbacks <= view.slices.shape[0]
    assert (ours.status, ours.phase) == (svd.status, svd.phase)
    ours_metrics, svd_metrics = ours.metrics(), svd.metrics()
    for name in COUNTS:
        assert ours_metrics[name] == svd_metrics[name], name
    for name in TAIL:
        assert ours_metrics[name] == pytest.approx(svd_metrics[name], rel=1e-9, nan_ok=True), name
    for name in WHOLE:
        assert ours_metrics[name] == pytest.approx(svd_metrics[name], rel=GRAM_RTOL, nan_ok=True), name
    assert ours.sv_min == pytest.approx(svd.sv_min, rel=GRAM_RTOL / 2)
    # the Gram path's frame potential comes from its float64 Gram matrices, the SVD path's from
    # products in the weights' precision: both within float32's rounding of the float64 value
    expected = float64_frame_potential(view.neurons)
    assert ours.frame_potential == pytest.approx(expected, rel=1e-6)
    assert svd.frame_potential == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(ours.evals, svd.evals, rtol=GRAM_RTOL)
    if ours.gram_slices == 0:  # nothing from the Gram path: the same numbers bit for bit
        frame = ("frame_potential", "frame_potential_normalized")
        ours_metrics, svd_metrics = (
            {k: v for k, v in m.items() if k not in frame} for m in (ours_metrics, svd_metrics)
        )
        assert ours_metrics == pytest.approx(svd_metrics, rel=0, abs=0, nan_ok=True)


def float64_frame_potential(neurons: np.ndarray) -> float:
    """``sum_ij <w_i, w_j>^2`` of the unit rows by numpy in float64 (all-zero rows left out)."""
    rows = np.asarray(neurons, dtype=np.float64).reshape(neurons.shape[0], -1)
    rows = rows[np.linalg.norm(rows, axis=1) > 0]
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return float(np.sum((unit @ unit.T) ** 2))


@pytest.mark.parametrize(
    ("shape", "kind", "from_gram"),
    [
        ((64, 64, 3, 3), "conv2d", True),  # square slices: taken as W_s W_s^T
        ((32, 64, 3, 3), "conv2d", True),  # wide slices: transposed anyway
        ((64, 32, 3, 3), "conv2d", False),  # tall slices: the Gram matrix is of the inputs
        ((48, 200), "linear", True),
        ((4, 8, 16, 3, 3), "grouped_conv2d", False),  # slices of different groups
    ],
)
def test_frame_potential_reuses_the_neurons_gram_matrix_of_the_gram_path(shape, kind, from_gram) -> None:
    rng = np.random.default_rng(21)
    weight = rng.standard_t(4, size=shape).astype(np.float32)
    weight[3] = 0.0  # all-zero neurons have no direction and are left out
    view = view_of(weight, kind)
    computed = compute_singular_values(view, method="gram", neuron_gram=True)
    assert (computed.neuron_gram is not None) == from_gram
    spectrum = analyze_view(view, method="gram")
    expected = float64_frame_potential(view.neurons)
    tolerance = 1e-12 if from_gram else 1e-6  # float64 Gram matrix, or float32 products
    assert spectrum.frame_potential == pytest.approx(expected, rel=tolerance)
    n, d = int(np.count_nonzero(np.any(view.neurons, axis=1))), view.neurons.shape[1]
    assert spectrum.frame_potential_normalized == pytest.approx(expected / max(n, n * n / d), rel=tolerance)


@pytest.mark.parametrize(
    ("case", "gram_slices"),
    [("gaussian tall float32", 1), ("conv student-t", 9), ("rank-deficient", 0), ("ill-conditioned", 0)],
)
def test_well_conditioned_views_use_the_gram_path_by_default(case: str, gram_slices: int) -> None:
    weight, kind = parity_weight(case)
    spectrum = analyze_view(view_of(weight, kind))
    assert spectrum.gram_slices == gram_slices
    assert spectrum.gram_fallbacks == view_of(weight, kind).slices.shape[0] - gram_slices


def test_auto_leaves_large_square_slices_to_the_svd_and_gram_tries_them() -> None:
    """A 600 x 600 Gaussian: smallest eigenvalue ~1e-6 of the mean, too small for rtol=1e-6
    (the Gram matrix would be formed in vain); a looser rtol lets auto try it. The default takes
    a ResNet's 512 x 512 conv slices (a Gram matrix from 128-row blocks, so a smaller bound)."""
    tight, loose_rtol = 1e-6, 1e-3
    assert not expected_certified(600, 600, tight)
    assert expected_certified(600, 600, loose_rtol)
    assert expected_certified(512, 512, GRAM_RTOL) and not expected_certified(512, 512, tight)
    assert expected_certified(1800, 600, tight) and expected_certified(30522, 384, tight)
    view = view_of(np.random.default_rng(11).standard_normal((600, 600)).astype(np.float32))
    auto = compute_singular_values(view, method="auto", rtol=tight)
    assert not auto.gram.any() and not auto.fallback.any()
    tried = compute_singular_values(view, method="gram", rtol=tight)
    assert tried.gram[0] != tried.fallback[0]
    loose = compute_singular_values(view, method="auto", rtol=loose_rtol)
    assert loose.gram[0] != loose.fallback[0]
    expected = np.linalg.svd(view.slices[0].astype(np.float64), compute_uv=False)
    for result, rtol in ((auto, 1e-12), (tried, tight), (loose, loose_rtol)):
        np.testing.assert_allclose(result.values[0], expected, rtol=rtol)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"method": "eig"}, r"method='eig'.*'auto', 'gram', 'svd'"),
        ({"rtol": 0.0}, r"rtol=0.0"),
        ({"rtol": 1.5}, r"rtol=1.5"),
    ],
)
def test_invalid_options_are_named(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compute_singular_values(view_of(np.ones((20, 10))), **options)


def test_reused_workspace_buffers_give_the_fresh_buffers_eigenvalues() -> None:
    """gram_eigenvalues computes in buffers kept between calls (overwritten by the eigensolver);
    alternating shapes and reusing them must not change a single bit of the result."""
    rng = np.random.default_rng(7)
    matrices = [rng.standard_normal(shape).astype(np.float32) for shape in [(300, 64), (64, 64), (1000, 64)]]
    for _ in range(3):
        for matrix in matrices:
            evals, _ = gram_eigenvalues(matrix)
            fresh, _ = gram_matrix(matrix)
            assert np.all(np.tril(fresh, -1) == 0)
            np.testing.assert_array_equal(evals, lapack_eigvalsh(fresh)[::-1])
