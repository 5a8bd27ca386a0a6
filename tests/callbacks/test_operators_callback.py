"""Conv layers analyzed as operators on whole feature maps (anonymous, 2019) by ``SpectralCallback``.

Two fits share the work: one names the layer and its input size, with a circular-padded conv
whose exact spectrum the 2-D FFT gives (Sedghi et al. 2019), and a TensorBoard logger; one uses
``"auto"`` on TinyNet's zero-padded conv, checked against the dense matrix that torch's own
convolution builds. Bad settings are refused before the first optimizer step.
"""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from tensorboard_events import read_events
from torch import nn

from spectral_callbacks import SpectralCallback, SpectralWarning, open_run
from spectral_callbacks.spectra import exact_circular_conv_svals

MAX_EPOCHS = 2
INPUT_HW = (8, 8)
DIMENSION = 3 * 8 * 8  # C_in * H * W: A^T A is the smaller Gram operator of the 3 -> 8 channel conv
BUDGET_WARNING = "operator spectra take about"


def circular_model(tiny: types.SimpleNamespace) -> nn.Module:
    """TinyNet with a circular-padded conv: block circulant, so its exact spectrum is known."""
    model = tiny.make_model()
    torch.manual_seed(1)
    model.conv = nn.Conv2d(3, 8, 3, padding=1, padding_mode="circular")
    return model


def fit(tiny, root, callback: SpectralCallback, model: nn.Module, **kwargs) -> types.SimpleNamespace:
    recorder = tiny.WeightRecorder()
    trainer = tiny.make_trainer(root, [callback, recorder], max_epochs=MAX_EPOCHS, **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, tiny.make_loader())
    spectral = [str(w.message) for w in caught if issubclass(w.category, SpectralWarning)]
    # on a model this small the operator spectra take about as long as an epoch: said or not
    spectral = [text for text in spectral if BUDGET_WARNING not in text]
    return types.SimpleNamespace(callback=callback, recorder=recorder, warnings=spectral, root=root)


@pytest.fixture(scope="module")
def named(tmp_path_factory, tiny) -> types.SimpleNamespace:
    root = tmp_path_factory.mktemp("operators_named")
    logger = TensorBoardLogger(save_dir=str(root), name="tb")
    callback = SpectralCallback(operators={"conv": INPUT_HW})
    run = fit(tiny, root, callback, circular_model(tiny), logger=logger)
    run.log_dir = logger.log_dir
    return run


@pytest.fixture(scope="module")
def auto(tmp_path_factory, tiny) -> types.SimpleNamespace:
    """``"auto"`` every 2 epochs, with the conv left out of the matrix analysis (``layers``)."""
    root = tmp_path_factory.mktemp("operators_auto")
    callback = SpectralCallback(
        layers=["fc1"], operators="auto", operator_every_n_epochs=2, tensorboard=False, log_dir=str(root)
    )
    return fit(tiny, root, callback, tiny.make_model())


def test_named_run_has_an_operator_row_per_epoch(named) -> None:
    assert named.warnings == []
    with open_run(named.callback.run_path) as run:
        assert run.operators == ["conv"]
        assert run.operator_epochs("conv").tolist() == list(range(MAX_EPOCHS + 1))
        info = run.operator_info("conv")
        assert info["input_hw"] == INPUT_HW and info["padding_mode"] == "circular"
        assert info["in_shape"] == (3, 8, 8) and info["out_shape"] == (8, 8, 8)
        assert info["stride"] == (1, 1) and info["padding"] == (1, 1) and info["dimension"] == DIMENSION


def test_top_eigenvalues_equal_the_exact_fft_spectrum(named) -> None:
    with open_run(named.callback.run_path) as run:
        norms = run.operator_spectral_norm("conv")
        for row, epoch in enumerate(range(MAX_EPOCHS + 1)):
            top, edges, counts, errors = run.operator_spectrum("conv", epoch)
            exact = exact_circular_conv_svals(run.weights("conv", epoch), INPUT_HW) ** 2
            np.testing.assert_allclose(top, exact[: top.size], rtol=1e-6)
            assert norms[row] == pytest.approx(np.sqrt(exact[0]), rel=1e-6)
            assert edges[0] == 0 and edges[-1] == pytest.approx(1.01 * exact[0])
            assert counts.sum() == pytest.approx(DIMENSION, rel=1e-6)
            assert edges.size == counts.size + 1 == errors.size + 1 == 51
            # the histogram holds the exact eigenvalues: a bin's count is off by a few at most
            exact_counts = np.histogram(exact, bins=edges)[0]
            assert np.abs(np.cumsum(counts) - np.cumsum(exact_counts)).max() < 0.1 * DIMENSION


def test_tensorboard_has_operator_histograms_and_spectral_norms(named, tiny) -> None:
    events = read_events(named.log_dir)
    steps = [epoch * tiny.NUM_BATCHES for epoch in range(MAX_EPOCHS + 1)]
    histograms = events.Histograms("operator_esd/conv")
    assert [event.step for event in histograms] == steps
    with open_run(named.callback.run_path) as run:
        for event, epoch in zip(histograms, range(MAX_EPOCHS + 1), strict=True):
            _, edges, counts, _ = run.operator_spectrum("conv", epoch)
            value = event.histogram_value
            assert value.num == pytest.approx(np.maximum(counts, 0).sum())
            np.testing.assert_allclose(value.bucket_limit, edges[1:])
            np.testing.assert_allclose(value.bucket, np.maximum(counts, 0))
        scalars = events.Scalars("operator_spectral_norm/conv")
        assert [event.step for event in scalars] == steps
        np.testing.assert_allclose([e.value for e in scalars], run.operator_spectral_norm("conv"), rtol=1e-6)


def test_auto_measures_the_input_and_matches_torchs_dense_operator(auto, tiny) -> None:
    assert auto.warnings == []
    with open_run(auto.callback.run_path) as run:
        assert run.operators == ["conv"] and "conv" not in run.parameters
        assert run.operator_info("conv")["input_hw"] == INPUT_HW
        assert run.operator_epochs("conv").tolist() == [0, 2]
        assert run.epochs.tolist() == [0, 1, 2]  # every snapshot is analyzed; operators every 2nd
        for epoch in (0, 2):
            weight = torch.from_numpy(auto.recorder.at_epoch[epoch]["conv"]).double()
            basis = torch.eye(DIMENSION, dtype=torch.float64).reshape(DIMENSION, 3, *INPUT_HW)
            dense = torch.nn.functional.conv2d(basis, weight, padding=1).reshape(DIMENSION, -1)
            exact = torch.linalg.svdvals(dense).numpy() ** 2
            top, _, counts, _ = run.operator_spectrum("conv", epoch)
            np.testing.assert_allclose(top, exact[: top.size], rtol=1e-6)
            assert counts.sum() == pytest.approx(DIMENSION, rel=1e-6)


# -- bad input -------------------------------------------------------------------------------------
def refused(tmp_path, tiny, model: nn.Module, match: str, **kwargs) -> str:
    """Fit with ``SpectralCallback(**kwargs)``: it must raise before the first optimizer step."""
    initial = tiny.weights_of(model)
    trainer = tiny.make_trainer(tmp_path, [SpectralCallback(log_dir=str(tmp_path), **kwargs)])
    with pytest.raises(MisconfigurationException, match=match) as error:
        trainer.fit(model, tiny.make_loader())
    assert trainer.global_step == 0
    for name, weights in tiny.weights_of(model).items():
        np.testing.assert_array_equal(weights, initial[name])
    return str(error.value)


def test_unknown_layer_is_refused_listing_the_conv_layers(tmp_path, tiny) -> None:
    message = refused(tmp_path, tiny, tiny.make_model(), r"matches no layer", operators={"conv9": (8, 8)})
    assert "'conv9'" in message and "Conv2d layers: conv." in message


def test_linear_layer_is_refused_naming_its_type(tmp_path, tiny) -> None:
    refused(tmp_path, tiny, tiny.make_model(), r"layer fc1, a Linear; .*Conv2d", operators={"fc1": (8, 8)})


def test_transposed_conv_is_refused(tmp_path, tiny) -> None:
    model = tiny.make_model()
    model.up = nn.ConvTranspose2d(8, 3, 3)  # outside the forward pass
    refused(tmp_path, tiny, model, r"layer up, a transposed convolution", operators={"up": (8, 8)})


def test_input_size_that_does_not_fit_names_the_expected_one(tmp_path, tiny) -> None:
    message = refused(
        tmp_path, tiny, tiny.make_model(), r"does not fit layer conv", operators={"conv": (16, 16)}
    )
    assert "operators['conv']=(16, 16)" in message and "expected (H, W) = (8, 8)" in message


def test_input_too_small_for_the_layer_is_refused(tmp_path, tiny) -> None:
    model = tiny.make_model()
    model.wide = nn.Conv2d(3, 4, 5)  # no padding: a 5x5 kernel needs inputs of at least 5x5
    refused(tmp_path, tiny, model, r"operators\['wide'\]=\(4, 4\) .*too small", operators={"wide": (4, 4)})


@pytest.mark.parametrize(
    ("operators", "match"),
    [
        ("all", r"operators='all'.*None, 'auto' or a non-empty dict"),
        ({}, r"operators=\{\}"),
        ({"conv": (8,)}, r"operators\['conv'\]=\(8,\).*two integers >= 1"),
        ({"conv": (8, 0)}, r"operators\['conv'\]=\(8, 0\)"),
        ({"conv": 8}, r"operators\['conv'\]=8"),
    ],
)
def test_invalid_operators_setting_is_refused_on_creation(operators, match) -> None:
    with pytest.raises(MisconfigurationException, match=match):
        SpectralCallback(operators=operators)


@pytest.mark.parametrize(
    "name", ["operator_every_n_epochs", "operator_top_k", "operator_bins", "operator_probes"]
)
def test_invalid_operator_option_is_refused_on_creation(name) -> None:
    with pytest.raises(
        MisconfigurationException, match=rf"Invalid value for {name}=0: expected an integer >= 1"
    ):
        SpectralCallback(operators="auto", **{name: 0})


@pytest.mark.parametrize(("estimate", "warned"), [(1e6, True), (0.0, False)])
def test_operator_cost_estimate_is_said_and_checked_against_the_first_epoch(
    tmp_path, tiny, monkeypatch, caplog, estimate: float, warned: bool
) -> None:
    import spectral_callbacks.callbacks.lightning as lightning_callback

    estimated = []

    def fixed_estimate(spec, weight, options) -> float:
        estimated.append((spec.name, weight.shape, options.num_moments))
        return estimate

    monkeypatch.setattr(lightning_callback, "estimate_operator_seconds", fixed_estimate)
    callback = SpectralCallback(
        operators="auto", operator_moments=64, tensorboard=False, log_dir=str(tmp_path)
    )
    trainer = tiny.make_trainer(tmp_path, [callback], max_epochs=2)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("INFO"):
        warnings.simplefilter("always")
        trainer.fit(tiny.make_model(), tiny.make_loader())
    assert estimated == [("conv", (8, 3, 3, 3), 64)]  # once per run, on the conv's kernel
    assert f"will take about {estimate:.3g} s of one core per snapshot" in caplog.text
    budget = [str(w.message) for w in caught if BUDGET_WARNING in str(w.message)]
    assert len(budget) == (1 if warned else 0)
    if warned:
        assert "operator_every_n_epochs=1" in budget[0] and "operator_moments=64" in budget[0]
