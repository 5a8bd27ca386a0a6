"""The weights' storage policy: strides that fit the budget, the hard cap, the estimate."""

from __future__ import annotations

import pytest

from spectral_callbacks.live.storage_policy import WeightPolicy, plan_weights, snapshot_bytes

MB = 1_000_000


def test_snapshot_bytes_count_every_parameter_in_the_saved_dtype() -> None:
    assert snapshot_bytes([(10, 20), (3, 4, 5, 5)], "float32") == (200 + 300) * 4
    assert snapshot_bytes([(10, 20)], "float16") == 400
    assert snapshot_bytes([(10, 20)], None) == 0


@pytest.mark.parametrize(
    ("expected", "budget", "stride"),
    [(11, 100 * MB, 1), (11, 8 * MB, 3), (11, 2 * MB, 11), (11, MB, 11), (None, 8 * MB, 1), (11, None, 1)],
)
def test_the_stride_spreads_what_fits_over_the_run(expected, budget, stride) -> None:
    policy = plan_weights(2 * MB, expected, budget)
    assert policy.stride == stride
    if expected and budget:
        kept = len(range(0, expected, stride))
        assert kept * 2 * MB <= max(budget, 2 * MB)


def test_keeps_every_strideth_snapshot_and_never_passes_the_budget() -> None:
    policy = WeightPolicy(snapshot_bytes=2 * MB, max_bytes=8 * MB, stride=3)
    assert [policy.keeps(snapshot, 0) for snapshot in range(7)] == [
        True,
        False,
        False,
        True,
        False,
        False,
        True,
    ]
    assert policy.keeps(3, 6 * MB) and not policy.keeps(3, 6 * MB + 1)
    assert not WeightPolicy(0).keeps(0, 0)  # weights not saved
    assert WeightPolicy(2 * MB).keeps(5, 10**12)  # no limit


def test_the_estimate_says_what_is_written_and_how_to_change_it() -> None:
    assert plan_weights(2 * MB, 11, None).estimate(11) == (
        "this run will write about 22 MB of weights (2 MB per snapshot, all 11 snapshots)"
    )
    thinned = plan_weights(2 * MB, 11, 8 * MB).estimate(11)
    assert "weights are kept for 4 of the 11 snapshots (every 3rd), spectra for all" in thinned
    assert "Raise max_run_file_bytes" in thinned and "8 MB" in thinned
    assert "not saved" in WeightPolicy(0).estimate(5)
    assert plan_weights(2 * MB, 11, None).estimate(11, may_skip=True) == (  # max_overhead may skip some
        "this run will write at most about 22 MB of weights (2 MB per snapshot, if max_overhead "
        "skips none of the 11 snapshots)"
    )
