"""WeightWatcher's options through the public API: ``analyze_model(fix_fingers=..., detX=...,
randomize=...)`` against WeightWatcher 0.7.7's ``analyze()`` with the same options, on a
heavy-tailed torch model with linear and conv layers (the per-option modules are checked in
detail in tests/spectra)."""

from __future__ import annotations

import numpy as np
import pytest
from weightwatcher_runs import set_student_t_weights, weightwatcher_analysis

from spectral_callbacks import analyze_model

torch = pytest.importorskip("torch")
pytest.importorskip("weightwatcher")

PARITY = 1e-6
# deterministic columns, equal to WeightWatcher's
COLUMNS = (
    "alpha", "raw_alpha", "xmin", "xmax", "D", "num_pl_spikes", "alpha_weighted", "log_alpha_norm",
    "detX_num", "detX_val", "detX_val_unrescaled", "ERG_gap", "num_ERG_spikes",
)  # fmt: skip


@pytest.fixture(scope="module")
def model():
    """Student-t weights (2.5 degrees of freedom): heavy tails, some with fingers."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(16, 32, 3),
        torch.nn.Flatten(),
        torch.nn.Linear(300, 200),
        torch.nn.Linear(200, 400),
        torch.nn.Linear(400, 100),
    )
    set_student_t_weights(model, 2.5)
    return model


def test_fix_fingers_and_detx_equal_weightwatchers(model) -> None:
    ours = {row.name: row for row in analyze_model(model, fix_fingers="clip_xmax", detX=True).analyzed()}
    theirs = weightwatcher_analysis(model, fix_fingers="clip_xmax", detX=True)
    assert len(theirs) == len(ours) == 4
    fingered = 0
    for (_, reference), row in zip(theirs.iterrows(), ours.values(), strict=True):
        for column in COLUMNS:
            expected = float(reference[column])
            assert getattr(row, column) == pytest.approx(expected, rel=PARITY, abs=PARITY), (row.name, column)
        # WeightWatcher reports one finger fewer than its own fit leaves out (see spectra.fingers)
        assert row.num_fingers == (reference["num_fingers"] + 1 if reference["num_fingers"] > 0 else 0)
        fingered += row.num_fingers > 0
    assert fingered > 0


def test_randomize_is_reproducible_and_agrees_with_weightwatcher_in_distribution(model) -> None:
    """Shuffles are seeded per matrix: the same seed gives the same columns; WeightWatcher draws
    from numpy's global generator in its own order, so its values are other draws of the same
    distribution: its trap counts and distances lie within three standard deviations of ours over
    eight seeds (its global generator is seeded, so that the test is deterministic)."""
    first = analyze_model(model, randomize=True, randomize_seed=3).analyzed()
    again = analyze_model(model, randomize=True, randomize_seed=3).analyzed()
    assert [row.rand_distance for row in first] == [row.rand_distance for row in again]
    seeds = [analyze_model(model, randomize=True, randomize_seed=seed).analyzed() for seed in range(8)]
    np.random.seed(0)
    theirs = weightwatcher_analysis(model, randomize=True)
    for position, (_, reference) in enumerate(theirs.iterrows()):
        for column, floor in (("num_traps", 1.0), ("rand_distance", 1e-3)):
            draws = np.array([getattr(rows[position], column) for rows in seeds])
            assert abs(float(reference[column]) - draws.mean()) <= 3 * draws.std() + floor, column


def test_base_model_gives_the_spectra_of_the_change_as_weightwatcher(model) -> None:
    """A fine-tuned copy (small Gaussian steps on every weight) against its base: the rows are the
    spectra of W - W_base, equal to WeightWatcher's ``base_model`` analysis."""
    import copy

    tuned = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in tuned.parameters():
            parameter.add_(0.005 * torch.randn(parameter.shape, generator=generator))
    ours = analyze_model(tuned, base_model=model).analyzed()
    theirs = weightwatcher_analysis(tuned, base_model=model)
    assert len(theirs) == len(ours) == 4
    for (_, reference), row in zip(theirs.iterrows(), ours, strict=True):
        for column in ("alpha", "D", "log_norm", "log_spectral_norm", "stable_rank", "num_evals"):
            assert getattr(row, column) == pytest.approx(float(reference[column]), rel=PARITY), (
                row.name,
                column,
            )
    # the delta is not the weights: its norm is that of the steps
    weights = {row.name: row for row in analyze_model(tuned).analyzed()}
    assert all(row.log_norm < weights[row.name].log_norm - 1 for row in ours)


def test_base_model_without_a_parameter_or_with_another_shape_skips_it_with_the_reason() -> None:
    rng = np.random.default_rng(0)
    model = {"a": rng.standard_normal((40, 20)), "b": rng.standard_normal((30, 20))}
    base = {"a": rng.standard_normal((40, 20)), "b": rng.standard_normal((20, 30))}
    rows = {row.name: row for row in analyze_model(model, base_model=base)}
    assert rows["a"].status == "ok"
    assert rows["b"].status == "skipped" and "differs from the base model" in rows["b"].reason
    rows = {row.name: row for row in analyze_model(model, base_model={"a": base["a"]})}
    assert rows["b"].reason == "not in the base model"
    with pytest.raises(TypeError, match="base_model takes"):
        analyze_model(model, base_model=[1, 2])
