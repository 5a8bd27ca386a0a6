"""Alpha over training and batch size (Martin & Mahoney, 2021): alpha and alpha_weighted per layer, phases.

Martin & Mahoney (2021) find that training drives the power-law exponent alpha of the layers'
ESDs into 2-4, and that the batch size moves a small model through the 5+1 phases of training,
all else equal: smaller batches, heavier tails (lower alpha). Here the MiniAlexNet-style net of
Martin (2018) (``configs/batch_size.yaml``) trains on scikit-learn's digits for 20 epochs with
the same learning rate and random seed for each batch size in :data:`VALUES`. The section reports
alpha and alpha_weighted per layer over epochs and at the end, the phase label of every layer at
every epoch, and validation and test accuracy.

The phase labels are the analysis's (:func:`spectral_callbacks.spectra.phase_label`), read back from
the run file (``open_run(path).phases(layer)``).

Run: ``python -m experiments.batch_size_study`` (about 3 minutes on 2 busy cores; ``--smoke``: seconds,
into ``runs/smoke/``; ``--report-only``: rewrite the section from existing runs).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from experiments.phases import phase_figure
from experiments.results import figure_link, markdown_table, save_figure
from experiments.study import parse_study_args, run_sweep_study
from experiments.sweep_report import (
    SweepResults,
    describe_setup,
    epoch_table,
    short_layer,
    spearman,
    write_figures,
)
from spectral_callbacks import MODEL_AVERAGE, CompareTable, format_cell

__all__ = ["KNOB", "PARAMETER", "STUDY", "VALUES", "main", "section"]

STUDY = "batch_size"
MODULE = "experiments.batch_size_study"
KNOB = "data.init_args.batch_size"
PARAMETER = "batch_size"
VALUES = ("4", "16", "64", "256")
SMOKE_VALUES = ("8", "64")
SMOKE_OVERRIDES = ("--trainer.max_epochs=2", "--data.init_args.max_samples=200")
METRICS = ("alpha", "alpha_weighted")
PUBLISHED_ALPHA_RANGE = (2.0, 4.0)  # where Martin & Mahoney (2021) find well-trained layers' alphas
# Layers with fewer eigenvalues are left out of the alpha-range counts: a power law fitted to 25
# values (the 1-channel conv1's pooled slices) or 10 (the classifier) says little; Martin & Mahoney
# (2021) calibrate their estimator on 1,000.
MIN_FIT_EVALS = 100


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the sweep (unless ``--report-only``), write figures and the RESULTS.md section.

    Returns:
        The directory of the figures.
    """
    options = parse_study_args(
        MODULE, __doc__.split("\n\n")[0], argv,
        values=VALUES, smoke_values=SMOKE_VALUES, smoke_overrides=SMOKE_OVERRIDES, metrics=METRICS,
    )  # fmt: skip
    return run_sweep_study(options, STUDY, KNOB, PARAMETER, section)


def section(
    results: SweepResults, out: Path, results_file: Path, metrics: Sequence[str], command: str
) -> str:
    """The markdown section: setup, verdict, tables and figures, all from the runs."""
    layers = results.layers()
    alpha = results.table("alpha")
    epoch = alpha.common_epoch()
    final = {metric: results.final(metric) for metric in ("alpha", "alpha_weighted")}
    validation, test = results.final_metric("val/accuracy"), results.final_metric("test/accuracy")
    header = [PARAMETER, "steps", "val accuracy", "test accuracy"]
    header += [f"{short_layer(layer)} alpha" for layer in layers]
    header += ["average alpha", "average alpha_weighted"]
    rows = [
        [results.values[label], results.records[label]["steps"], validation[label], test[label]]
        + [final["alpha"][layer][label] for layer in layers]
        + [final["alpha"][MODEL_AVERAGE][label], final["alpha_weighted"][MODEL_AVERAGE][label]]
        for label in results.labels
    ]
    phases = {layer: {label: _phases(results, label, layer) for label in results.labels} for layer in layers}
    epochs = alpha.epochs(results.labels[0])
    figure = save_figure(
        phase_figure(
            {short_layer(layer): {_row(results, label): phases[layer][label] for label in results.labels}
             for layer in layers},
            epochs, title="phase of training per layer (rows: batch size)",
        ),
        out / "phases.png",
    )  # fmt: skip
    links = [figure_link(figure, results_file, "phase labels per layer, batch size and epoch")]
    for metric in metrics:
        written = write_figures(results, metric, out, esd=metric == metrics[0])
        for key, caption in (
            ("training", f"{metric} per layer during training"),
            ("parameter", f"{metric} at epoch {epoch} against the batch size"),
            ("esd", f"ESDs at epoch {epoch}"),
        ):
            if key in written:
                links.append(figure_link(written[key], results_file, caption))
    return "\n\n".join(
        [
            "## Alpha over training and batch size (Martin & Mahoney, 2021)",
            f"`{command}`: {len(results.runs)} runs, {describe_setup(results)} "
            "Averages leave out the classifier (the last layer), as Martin & Mahoney (2021) do.",
            verdict(results, layers, alpha, final, phases),
            f"**At the end of training (epoch {epoch}).** `steps`: optimizer steps taken.",
            markdown_table(header, rows),
            f"**Model-average `{metrics[0]}` per epoch.**",
            epoch_table(results, metrics[0], [MODEL_AVERAGE]),
            "**Phase per layer** (`spectral_callbacks.spectra.phase_label`, as the analysis stored it).",
            _phase_table(results, layers, phases, epochs),
            *links,
        ]
    )


def verdict(
    results: SweepResults,
    layers: Sequence[str],
    alpha_table: CompareTable,
    final: dict[str, dict[str, dict[str, float]]],
    phases: dict[str, dict[str, list[str]]],
) -> str:
    """Sentences on agreement with Martin & Mahoney (2021), computed from the runs."""
    low, high = PUBLISHED_ALPHA_RANGE
    labels = results.labels
    reader = results.runs[0].reader
    fitted = [layer for layer in layers if _num_evals(reader.layer_info(layer)) >= MIN_FIT_EVALS]
    small = [short_layer(layer) for layer in layers if layer not in fitted]
    first = alpha_table.at_epoch(alpha_table.epochs(labels[0])[0])

    def count(values: dict[str, dict[str, float]], test: Callable[[float], bool]) -> int:
        return sum(bool(test(values[layer][label])) for layer in fitted for label in labels)

    start_avg = [first[MODEL_AVERAGE][label] for label in labels]
    end_avg = [final["alpha"][MODEL_AVERAGE][label] for label in labels]
    sizes = [results.values[label] for label in labels]
    inside = [count(values, lambda a: low <= a <= high) for values in (first, final["alpha"])]
    below = [count(values, lambda a: a < low) for values in (first, final["alpha"])]
    left_out = f" ({', '.join(small)} left out: fewer than {MIN_FIT_EVALS} eigenvalues)" if small else ""
    parts = [
        f"Alpha falls into {format_cell(low)}-{format_cell(high)} as training proceeds: of the "
        f"{len(fitted) * len(labels)} layer-runs of {', '.join(short_layer(x) for x in fitted)}{left_out}, "
        f"{inside[0]} are in that range at initialization and {inside[1]} at the end ({below[0]} and "
        f"{below[1]} below it); the model-average alpha goes from "
        + ", ".join(
            f"{format_cell(a)} to {format_cell(b)} (batch {format_cell(s)})"
            for a, b, s in zip(start_avg, end_avg, sizes, strict=True)
        )
        + "."
    ]
    rho = spearman(sizes, end_avg)
    alpha = final["alpha"]
    per_layer = ", ".join(
        f"{short_layer(layer)} {format_cell(spearman(sizes, [alpha[layer][label] for label in labels]))}"
        for layer in layers
    )
    parts.append(
        f"Against the batch size, the final model-average alpha has Spearman rho {format_cell(rho)} "
        f"(per layer: {per_layer}); a positive rho means smaller batches end with lower alpha."
    )
    parts.append(
        "Phases at the end, from the smallest batch to the largest: "
        + "; ".join(
            f"{short_layer(layer)} {', '.join(phases[layer][label][-1] for label in labels)}"
            for layer in fitted
        )
        + "."
    )
    accuracy = results.final_metric("test/accuracy")
    parts.append(
        f"All else equal includes the number of epochs, so smaller batches also take more optimizer "
        f"steps ({', '.join(str(results.records[label]['steps']) for label in labels)}): the largest "
        f"batch ends at test accuracy {format_cell(accuracy[labels[-1]])} against "
        f"{format_cell(accuracy[labels[0]])} for the smallest, so less training is part of its lighter "
        "tails, as in Martin & Mahoney's set-up."
    )
    falls = all(b < a for a, b in zip(start_avg, end_avg, strict=True)) and inside[1] > inside[0]
    if falls and rho > 0:
        agreement = "Agrees with Martin & Mahoney (2021)"
    elif falls:
        agreement = "Agrees with Martin & Mahoney (2021) on alpha over training, not on the batch size"
    elif rho > 0:
        agreement = "Agrees with Martin & Mahoney (2021) on the batch size, not on alpha over training"
    else:
        agreement = "Does not agree with Martin & Mahoney (2021)"
    return f"**{agreement}.**\n\n" + "\n".join(f"- {part}" for part in parts)


def _num_evals(info: dict) -> int:
    """Eigenvalues in a layer's ESD: ``M`` per slice, slices pooled."""
    return int(info["M"]) * int(info["num_slices"])


def _phases(results: SweepResults, label: str, layer: str) -> list[str]:
    reader = next(run.reader for run in results.runs if run.label == label)
    return reader.phases(layer)


def _row(results: SweepResults, label: str) -> str:
    return f"{format_cell(results.values[label])}"


def _phase_table(
    results: SweepResults,
    layers: Sequence[str],
    phases: dict[str, dict[str, list[str]]],
    epochs: Sequence[int],
) -> str:
    """Phase labels at up to six epochs from first to last, and how often each phase occurs."""
    shown = sorted({round(i * (len(epochs) - 1) / 5) for i in range(6)})
    header = ["layer", PARAMETER, *[f"epoch {epochs[i]}" for i in shown], "most frequent"]
    rows = []
    for layer in layers:
        for index, label in enumerate(results.labels):
            labels = phases[layer][label]
            common = Counter(labels).most_common(1)[0][0]
            name = short_layer(layer) if index == 0 else ""
            rows.append([name, results.values[label], *[labels[i] for i in shown], common])
    return markdown_table(header, rows)


if __name__ == "__main__":
    main()
