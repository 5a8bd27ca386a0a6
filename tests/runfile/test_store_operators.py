"""Operator spectra in the run file: ``/operators/<layer>/`` rows written per due snapshot, read back
by ``RunReader`` (committed snapshots only), cut on resume; and failures recorded, never raised."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from run_files import append_snapshot, open_writer

from spectral_callbacks import open_run
from spectral_callbacks.analysis.operators import (
    LAMBDA_MAX_MARGIN,
    OperatorOptions,
    OperatorSpec,
    analyze_operator,
    analyze_operators,
)
from spectral_callbacks.runfile.reader import RUN_FILE_NAME
from spectral_callbacks.runfile.store import RunWriter
from spectral_callbacks.spectra import ConvOperator, exact_circular_conv_svals

OPTIONS = OperatorOptions(every_n_epochs=2, top_k=4, bins=10, num_moments=64, num_probes=4)
HW = (6, 6)


def kernel(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((4, 2, 3, 3)).astype(np.float32)


SPEC = OperatorSpec.of(
    "blocks/conv", ConvOperator(kernel(0), input_hw=HW, padding=1, padding_mode="circular"), (1, 1)
)


# the run of these tests: operator rows only (no parameter analyzed as a matrix), no saved weights
OPERATOR_RUN = {
    "parameters": (),
    "run_id": "operators",
    "config": {"operator_every_n_epochs": OPTIONS.every_n_epochs},
    "weights_dtype": None,
    "operators": (SPEC,),
    "operator_options": OPTIONS,
}


def snapshot(writer: RunWriter, epoch: int, *, commit: bool = True) -> None:
    """What the worker does: index row, operator rows of a due epoch, then "analyzed"."""
    operators = analyze_operators([SPEC], {SPEC.name: kernel(epoch)}, OPTIONS, epoch)
    append_snapshot(writer, epoch, 10 * epoch, {}, specs=(), operators=operators, commit=commit)


@pytest.fixture
def run_path(tmp_path: Path) -> Path:
    path = tmp_path / RUN_FILE_NAME
    writer = open_writer(path, **OPERATOR_RUN)
    for epoch in range(4):
        snapshot(writer, epoch)
    snapshot(writer, 4, commit=False)  # written, never committed: invisible
    writer.close()
    return path


def exact_evals(epoch: int) -> np.ndarray:
    return exact_circular_conv_svals(kernel(epoch), HW) ** 2


def test_rows_of_due_committed_snapshots_are_read_back(run_path: Path) -> None:
    with open_run(run_path) as run:
        assert run.operators == ["blocks/conv"]
        assert run.operator_info("blocks/conv")["dimension"] == 2 * 6 * 6
        assert run.operator_epochs("blocks/conv").tolist() == [0, 2]
        np.testing.assert_allclose(
            run.operator_spectral_norm("blocks/conv"),
            np.sqrt([exact_evals(0)[0], exact_evals(2)[0]]),
            rtol=1e-8,
        )
        top, edges, counts, errors = run.operator_spectrum("blocks/conv", 2)
        np.testing.assert_allclose(top, exact_evals(2)[:4], rtol=1e-8)
        assert edges == pytest.approx(np.linspace(0, (1 + LAMBDA_MAX_MARGIN) * top[0], 11))
        assert counts.sum() == pytest.approx(72) and counts.shape == errors.shape == (10,)
        np.testing.assert_allclose(run.operator_spectrum("blocks/conv")[0], top)  # the last one


def test_missing_epoch_or_layer_says_what_there_is(run_path: Path) -> None:
    with open_run(run_path) as run:
        with pytest.raises(KeyError, match=r"No operator spectrum of 'blocks/conv' at epoch 1 .*\[0, 2\]"):
            run.operator_spectrum("blocks/conv", 1)
        with pytest.raises(KeyError, match=r"at epoch 4"):  # written but not committed
            run.operator_spectrum("blocks/conv", 4)
        with pytest.raises(KeyError, match=r"No operator layer 'conv' .* Available: blocks/conv\."):
            run.operator_spectral_norm("conv")


def test_resume_cuts_operator_rows_after_the_checkpoint(run_path: Path) -> None:
    writer = open_writer(run_path, **OPERATOR_RUN, resume_after_step=10)
    snapshot(writer, 2)  # training resumed at epoch 1 redoes epoch 2 with other weights
    writer.close()
    with open_run(run_path) as run:
        assert run.operator_epochs("blocks/conv").tolist() == [0, 2]
        np.testing.assert_allclose(run.operator_spectrum("blocks/conv", 2)[0], exact_evals(2)[:4], rtol=1e-8)
    with h5py.File(run_path, "r", libver="latest", swmr=True) as file:
        group = file["operators/blocks|conv"]
        assert group["snapshot"][...].tolist() == [0, 2]  # the old epoch 2 and the uncommitted 4 cut
        assert all(group[name].shape[0] == 2 for name in group)


def test_failures_are_recorded_not_raised() -> None:
    bad = kernel(0)
    bad[0, 0, 0, 0] = np.nan
    failed = analyze_operator(SPEC, bad, OPTIONS)
    assert not failed.ok and np.isnan(failed.spectral_norm) and "NaN" in failed.reason
    missing = analyze_operators([SPEC], {}, OPTIONS, epoch=0)[0]
    assert not missing.ok and missing.reason == "its kernel is not in the snapshot"
    assert analyze_operators([SPEC], {}, OPTIONS, epoch=1) == []  # not due
    zero = analyze_operator(SPEC, np.zeros_like(bad), OPTIONS)
    assert not zero.ok and "lambda_max" in zero.reason
