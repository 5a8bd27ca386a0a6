"""``SpectrumOptions``: one validated object for how each matrix is analyzed, the same checks and
wording from the callbacks, the command line and post-hoc analysis."""

from __future__ import annotations

import pytest

from spectral_callbacks.analysis.model import analyze_weights
from spectral_callbacks.analysis.options import SpectrumOptions
from spectral_callbacks.live.config import SpectralConfig
from spectral_callbacks.posthoc import AnalysisOptions

BAD = [
    ({"min_evals": 0}, "min_evals=0: expected an integer >= 1"),
    ({"normalize": "M"}, "normalize='M': expected None or 'N'"),
    ({"conv2d_norm": 1}, "conv2d_norm=1: expected True or False"),
    ({"xmax": "min"}, "xmax='min': expected None, 'max' or a number > 0"),
    ({"esd_method": "qr"}, "esd_method='qr': expected one of"),
    ({"gram_rtol": 1.5}, "gram_rtol=1.5: expected a number in"),
]


@pytest.mark.parametrize(("value", "message"), BAD)
@pytest.mark.parametrize("build", [SpectrumOptions, SpectralConfig, AnalysisOptions])
def test_every_entry_point_refuses_a_bad_value_with_the_same_words(build, value: dict, message: str) -> None:
    with pytest.raises(
        ValueError, match=f"^Invalid value for {message}".replace("(", r"\(").replace(")", r"\)")
    ):
        build(**value)


def test_the_callbacks_settings_carry_their_options_whole() -> None:
    config = SpectralConfig(min_evals=5, normalize="N", esd_method="svd", gram_rtol=1e-6)
    assert config.spectrum_options() == SpectrumOptions(
        min_evals=5, normalize="N", esd_method="svd", gram_rtol=1e-6
    )
    assert AnalysisOptions(min_evals=5, esd_method="svd").spectrum() == SpectrumOptions(
        min_evals=5, esd_method="svd"
    )


def test_a_run_files_settings_give_back_the_options_old_files_too() -> None:
    options = SpectrumOptions(min_evals=9, xmax="max", esd_method="gram")
    stored = {**SpectralConfig(min_evals=9, xmax="max", esd_method="gram").__dict__, "every_n_epochs": 3}
    assert SpectrumOptions.from_config(stored) == options
    assert SpectrumOptions.from_config({"min_evals": 9, "normalize": None}) == SpectrumOptions(min_evals=9)


def test_the_keyword_arguments_are_analyze_weights_own() -> None:
    import numpy as np

    weight = np.random.default_rng(0).standard_normal((40, 20))
    (row,) = analyze_weights([("w", weight, "linear")], **SpectrumOptions(esd_method="svd").kwargs())
    assert row.gram_slices == 0 and row.status != "skipped"


def test_the_tensorboard_layout_has_charts_only_for_the_options_a_run_has_on() -> None:
    from spectral_callbacks.analysis.averages import SCALAR_METRICS, layout_metrics

    plain = layout_metrics(SpectrumOptions())
    assert "alpha" in plain and "relative_delta" in plain
    assert not {"num_traps", "rand_distance", "num_fingers", "raw_alpha", "detX_num", "ERG_gap"} & set(plain)
    randomized = layout_metrics(SpectrumOptions(randomize=True))
    assert {"num_traps", "rand_distance"} <= set(randomized) and "detX_num" not in randomized
    every = layout_metrics(SpectrumOptions(randomize=True, detX=True, fix_fingers="clip_xmax"))
    assert every == SCALAR_METRICS
