"""Conv operator spectra study (anonymous, 2019): the smoke run's runs, CSVs, evidence, figures and
section; the learning-rate schedules; the statistics; and the claims' rules on evidence made up to
land on each side of them."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from conftest import assert_png, read_csv, section_of

from experiments.conv_operator_report import (
    CSV_COLUMNS,
    GAIN_MARGIN,
    LAYERS,
    NULL_COLUMNS,
    claims,
    growth,
    low_share,
)
from experiments.conv_operator_spectra import (
    LR,
    REAL,
    SCHEDULES,
    SMOKE,
    STUDY,
    KernelBank,
    StepDecayClassifier,
)
from experiments.models import ConvNet
from experiments.verdicts import Evidence, derive_verdicts, evidence_path, read_evidence, verdicts_markdown
from spectral_callbacks import open_run
from spectral_callbacks.spectra import exact_circular_conv_svals

CONVS = ("network.conv1_1", "network.conv1_2")


@pytest.mark.slow
def test_smoke_run_writes_runs_csvs_evidence_figures_and_a_section(smoke) -> None:
    runs, out, results = smoke
    end = SMOKE.epochs
    for value in SMOKE.weight_decays:
        for schedule in SCHEDULES:
            for seed in range(SMOKE.seeds):
                with open_run(runs / STUDY / f"wd_{value}" / schedule / f"seed{seed}") as run:
                    assert run.operators == list(CONVS)
                    assert run.operator_epochs("network.conv1_1").tolist() == list(range(end + 1))
                    assert run.operator_info("network.conv1_2")["input_hw"] == (SMOKE.image_size,) * 2
                    # Lanczos gives the exact top eigenvalue; zero padding keeps it under the circular conv's
                    circular = exact_circular_conv_svals(
                        run.weights("network.conv1_1", end), (SMOKE.image_size + 2,) * 2
                    )
                    assert 0 < run.operator_spectral_norm("network.conv1_1")[-1] <= circular[0] * (1 + 1e-9)
    rows = pd.DataFrame(read_csv(out / "spectral_norm.csv", CSV_COLUMNS))
    runs_count = len(SMOKE.weight_decays) * len(SCHEDULES) * SMOKE.seeds
    assert len(rows) == runs_count * len(CONVS) * (end + 1)
    last = rows[rows["epoch"] == str(end)]
    assert set(last[last["schedule"] == "cut"]["lr"].astype(float)) == {LR * 0.1}
    assert set(last[last["schedule"] == "constant"]["lr"].astype(float)) == {LR}
    # with the same seed, the runs with and without the cut are one run up to the cut
    early = rows[rows["epoch"].astype(int) <= SMOKE.decay_epoch].astype({"sigma": float})
    pairs = early.pivot_table(
        index=["weight_decay", "seed", "layer", "epoch"], columns="schedule", values="sigma"
    )
    np.testing.assert_allclose(pairs["cut"], pairs["constant"], rtol=1e-5)
    nulls = read_csv(out / "permuted_kernels.csv", NULL_COLUMNS)
    assert len(nulls) == len(SMOKE.weight_decays) * SMOKE.seeds * len(CONVS)
    # the kernel bank holds each run's end kernel, its entries permuted
    with (
        open_run(runs / STUDY / "permuted") as bank,
        open_run(runs / STUDY / "wd_0" / "cut" / "seed0") as run,
    ):
        assert len(bank.operators) == len(nulls)
        for index, layer in enumerate(CONVS):
            permuted, trained = bank.weights(f"convs.{index}", 0), run.weights(layer, end)
            assert permuted.shape == trained.shape and not np.array_equal(permuted, trained)
            np.testing.assert_array_equal(np.sort(permuted.ravel()), np.sort(trained.ravel()))
    evidence = read_evidence(evidence_path(out.parent, STUDY))
    for name in ("spectral_norm.png", "low_share.png", "esd.png"):
        assert_png(out / name)
    section = section_of(results, STUDY)
    assert section.strip().startswith("## Conv operator spectra and a learning-rate cut (anonymous, 2019)")
    assert "python -m experiments.conv_operator_spectra --smoke" in section
    assert verdicts_markdown(derive_verdicts(claims(SMOKE), evidence)) in section
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", section):
        assert_png(results.parent / link)


def test_the_learning_rate_is_cut_after_the_decay_epoch_or_kept() -> None:
    network = ConvNet((3, 8, 8), 10, channels=[[2]], hidden=(4,))
    for gamma, after in ((SCHEDULES["cut"], LR / 10), (SCHEDULES["constant"], LR)):
        config = StepDecayClassifier(network, decay_epoch=3, gamma=gamma, lr=LR).configure_optimizers()
        optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
        rates = []
        for _ in range(5):
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        assert rates == pytest.approx([LR] * 3 + [after] * 2)


def test_the_kernel_bank_holds_the_kernels_at_their_layers_input_shapes() -> None:
    kernels = [np.arange(2 * 3 * 9, dtype=np.float32).reshape(2, 3, 3, 3), np.ones((4, 2, 3, 3), np.float32)]
    info = {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1, "padding_mode": "zeros"}
    infos = [{**info, "in_shape": (3, 8, 8)}, {**info, "in_shape": (2, 8, 8)}]
    bank = KernelBank(kernels, infos)
    for conv, kernel in zip(bank.convs, kernels, strict=True):
        np.testing.assert_array_equal(conv.weight.detach().numpy(), kernel)
        assert conv.bias is None
    assert bank.training_step(None, 0).item() == 0  # zeros in, and the optimizer does not move them
    assert bank.configure_optimizers().param_groups[0]["lr"] == 0


def test_statistics_of_a_histogram_and_of_a_norms_course() -> None:
    edges, counts = np.linspace(0, 1.0, 11), np.array([3.0, 1, 1, 1, 1, 1, 0, 0, 0, 2])
    assert low_share(np.array([1.0]), edges, counts) == pytest.approx(0.3)  # the first bin: 3 of 10
    assert low_share(np.array([0.5]), edges, counts) == pytest.approx(1.5 / 10)  # half of it
    assert growth({0: 1.0, 2: 1.21}, 0, 2) == pytest.approx(10.0)
    assert growth({3: 2.0, 4: 1.0}, 3, 4) == pytest.approx(-50.0)


def _norm_evidence(before: float, after: float, constant_after: float, value: str = "0") -> Evidence:
    noise = np.array([-0.1, 0.0, 0.1, 0.05, -0.05])
    rows = []
    for layer in LAYERS:
        for seed, wiggle in enumerate(noise):
            for schedule, later in (("cut", after), ("constant", constant_after)):
                rows.append((f"norm_before_{layer}", f"{schedule}_wd{value}", seed, before + wiggle))
                rows.append((f"norm_after_{layer}", f"{schedule}_wd{value}", seed, later + wiggle))
    return Evidence(rows)


@pytest.mark.parametrize(
    ("before", "after", "constant_after", "verdict", "null_passes"),
    [
        (1.0, -1.0, 0.5, "agrees", False),  # grows, falls after the cut, keeps growing without it
        (1.0, -1.0, -2.0, "partly", True),  # falls without the cut too, and faster
        (-1.0, -1.0, 0.5, "partly", False),  # falls after the cut, but did not grow before it
        (1.0, 0.3, 0.5, "disagrees", False),  # the cut slows the growth, the norm does not fall
    ],
)
def test_the_norm_rule(before, after, constant_after, verdict, null_passes) -> None:
    norm_claim = claims(REAL)[0]
    judged = norm_claim.judge(_norm_evidence(before, after, constant_after))
    assert (judged.verdict, judged.null_passes) == (verdict, null_passes)
    assert norm_claim.judge(_norm_evidence(1.0, -1.0, 0.5, value="1e-2")).verdict == "not testable here"


def _tail_evidence(gain: float, permuted_gain: float) -> Evidence:
    rows = []
    for layer in LAYERS:
        for seed, wiggle in enumerate([-0.01, 0.0, 0.01]):
            rows += [
                (f"low_share_{layer}", "init_wd0", seed, 0.1),
                (f"low_share_{layer}", "end_wd0", seed, 0.1 + gain + wiggle),
                (f"low_share_{layer}", "permuted_wd0", seed, 0.1 + permuted_gain + wiggle),
                (f"low_share_gain_{layer}", "trained_wd0", seed, gain + wiggle),
                (f"low_share_gain_{layer}", "permuted_wd0", seed, permuted_gain + wiggle),
            ]
    return Evidence(rows)


@pytest.mark.parametrize(
    ("gain", "permuted_gain", "verdict", "null_passes"),
    [
        (0.5, 0.0, "agrees", False),
        (0.5, 0.3, "partly", True),  # permuting the entries keeps the tail: not the structure's doing
        (GAIN_MARGIN / 2, 0.0, "disagrees", False),  # a gain, but below the margin
    ],
)
def test_the_tail_rule(gain, permuted_gain, verdict, null_passes) -> None:
    judged = claims(REAL)[-1].judge(_tail_evidence(gain, permuted_gain))
    assert (judged.verdict, judged.null_passes) == (verdict, null_passes)
    assert claims(REAL)[-1].judge(Evidence([("low_share_gain_conv1_1", "x", 0, 1.0)])).verdict == (
        "not testable here"
    )
