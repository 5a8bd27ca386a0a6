"""WeightWatcher's options during training: a fit with ``fix_fingers``, ``detX`` and
``randomize`` writes their columns for every snapshot, equal to a recomputation on the saved
weights with the same options and seed, and their scalars to TensorBoard."""

from __future__ import annotations

import math
import types

import pytest
from tensorboard_events import assert_layer_scalars, read_events

from spectral_callbacks import SpectralCallback, open_run
from spectral_callbacks.analysis.model import analyze_weights

OPTIONS = {"fix_fingers": "clip_xmax", "detX": True, "randomize": True, "randomize_seed": 7}
COLUMNS = ("num_fingers", "raw_alpha", "num_traps", "rand_distance", "max_rand_eval", "detX_num", "ERG_gap")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny: types.SimpleNamespace) -> types.SimpleNamespace:
    root = tmp_path_factory.mktemp("options")
    callback = SpectralCallback(log_dir=root, **OPTIONS)
    trainer = tiny.make_trainer(root, [callback], max_epochs=2)
    trainer.fit(tiny.make_model(), datamodule=tiny.make_datamodule())
    return types.SimpleNamespace(path=callback.run_path, run_dir=callback.run_dir)


def test_every_snapshot_has_the_options_columns_of_a_recomputation(run, tiny) -> None:
    with open_run(run.path) as reader:
        steps = reader.snapshots()["step"].tolist()
        assert len(steps) == 3
        for name in tiny.LAYERS:
            kind = reader.layer_info(name)["kind"]
            stored = reader.metrics(name)
            for row, epoch in enumerate(range(3)):
                (expected,) = analyze_weights([(name, reader.weights(name, epoch), kind)], **OPTIONS)
                for column in COLUMNS:
                    value = expected.metrics()[column]
                    assert stored[column][row] == pytest.approx(value, rel=1e-9, nan_ok=True), (name, column)
                assert math.isfinite(stored["rand_distance"][row]) and math.isfinite(stored["detX_num"][row])


def test_the_options_scalars_are_in_tensorboard(run, tiny) -> None:
    with open_run(run.path) as reader:
        steps = reader.snapshots()["step"].tolist()
        assert_layer_scalars(
            read_events(run.run_dir), reader, tiny.LAYERS, steps, ("num_traps", "rand_distance", "detX_num")
        )


def test_a_bad_option_is_refused_by_name() -> None:
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    with pytest.raises(MisconfigurationException, match="fix_fingers='clip'"):
        SpectralCallback(fix_fingers="clip")
    with pytest.raises(MisconfigurationException, match="pass xmax=None"):
        SpectralCallback(fix_fingers="clip_xmax", xmax="max")
    with pytest.raises(MisconfigurationException, match="randomize_seed=-1"):
        SpectralCallback(randomize=True, randomize_seed=-1)
    with pytest.raises(MisconfigurationException, match="deltas='start'"):
        SpectralCallback(deltas="start")
    with pytest.raises(MisconfigurationException, match="save_weights=True, or deltas='previous'"):
        SpectralCallback(deltas="init", save_weights=False)
