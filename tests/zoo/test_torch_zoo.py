"""Third-party torch architectures trained with ``SpectralCallback``, checked against WeightWatcher.

Each model of :mod:`torch_models` (GPT-2, BERT, BART, ViT, ResNet, MobileNetV2, built from
``transformers`` configs) trains one short epoch in Lightning with the callback; WeightWatcher
0.7.x's default ``analyze()`` of the final model is the reference for both the run file's last
snapshot and the post-hoc :func:`spectral_callbacks.analyze_model` of the same model: the same
matrices by name, and the same numbers.

Every difference between WeightWatcher's analysis and ours is listed here, with its reason:

- Tied parameters (GPT-2's ``lm_head`` is ``transformer.wte``; BART's ``model.shared`` is both
  ``embed_tokens`` and ``lm_head``): WeightWatcher analyzes the tensor once per module holding it,
  we once, under the first of those modules in ``named_modules()`` order, the others recorded as
  its aliases. The groups are found from the torch modules themselves (same ``weight`` object).
- Grouped and depthwise convs (MobileNetV2's 3x3 ``conv_3x3``, ``groups == channels``): the same
  layers, but WeightWatcher reads a ``(C, 1, 3, 3)`` kernel as if ungrouped (nine ``C x 1`` slices)
  and we as the block-diagonal matrix each tap applies (``C * 9`` blocks of ``1 x 1``): eigenvalues,
  fit and spectral norm differ. The Frobenius norm is the same either way (the same entries), so
  ``log_norm`` is still compared.
- Fewer than ``SMALL_N_CUTOFF`` (20) eigenvalues: WeightWatcher 0.7.7 fits them with a small-sample
  estimator of its own (bias-corrected MLE, tails of at least 8, xmin chosen by ``D - 0.868 /
  sqrt(n)``), we with the standard fit: ``alpha``, ``D``, ``xmin`` and the tail size are not
  compared for those (the eigenvalues and norms are).
- The run file's layer names carry the LightningModule's attribute (``net.``) in front of the
  Hugging Face model's module names; WeightWatcher and ``analyze_model`` see the model itself.

No model here has a packed ``nn.MultiheadAttention`` projection, so the run files hold no
``[q]``/``[k]``/``[v]`` views.
"""

from __future__ import annotations

import math
import types
import warnings
from typing import Any

import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")
weightwatcher = pytest.importorskip("weightwatcher")

from torch import nn  # noqa: E402 - after the skips above
from torch_models import MODELS, ZooModel  # noqa: E402
from weightwatcher_runs import weightwatcher_analysis  # noqa: E402

from spectral_callbacks import SpectralCallback, analyze_model, open_run  # noqa: E402

# A model's fit, both analyses and its checks take a few seconds; a worker that never ends fails
# the test instead of stalling the suite.
pytestmark = pytest.mark.timeout(120)

WRAPPER = "net."  # the LightningModule attribute holding the model: the run file's name prefix
RELATIVE = 1e-6
FIT_METRICS = ("alpha", "D", "xmin")  # and the tail size, num_pl_spikes, exactly


def small_n_cutoff() -> int:
    """Below this many eigenvalues WeightWatcher's fit is its small-sample estimator (0: a
    version without one)."""
    from weightwatcher import WW_powerlaw

    return int(getattr(WW_powerlaw, "SMALL_N_CUTOFF", 0))


class ZooModule(pl.LightningModule):
    """Trains a model that returns an output with a ``loss`` for keyword batches."""

    def __init__(self, net: nn.Module, batches: list[dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.net = net
        self.batches = batches

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.net(**batch).loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.net.parameters(), lr=1e-3)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self.batches, batch_size=None)  # each item is one batch


def weightwatcher_rows(model: nn.Module) -> dict[str, dict[str, float]]:
    """WeightWatcher's default ``analyze()``, one dict per row by ``longname``, its output silenced."""
    frame = weightwatcher_analysis(model)
    return {str(row["longname"]): row.to_dict() for _, row in frame.iterrows()}


def tied_groups(model: nn.Module, names: list[str]) -> dict[str, list[str]]:
    """``{first name: [other names]}`` of the modules among ``names`` holding the same weight
    tensor, the first in ``named_modules()`` order; from the modules themselves."""
    order = {name: index for index, (name, _) in enumerate(model.named_modules(remove_duplicate=False))}
    groups: dict[int, list[str]] = {}
    for name in sorted(names, key=order.__getitem__):
        groups.setdefault(id(model.get_submodule(name).weight), []).append(name)
    return {group[0]: group[1:] for group in groups.values() if len(group) > 1}


@pytest.fixture(scope="module", params=list(MODELS))
def zoo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One model trained with the callback, its run file's last snapshot, WeightWatcher's and
    ``analyze_model``'s analyses of the final model."""
    spec: ZooModel = MODELS[request.param]
    root = tmp_path_factory.mktemp(spec.name)
    net = spec.build()
    module = ZooModule(net, spec.batches())
    callback = SpectralCallback()
    trainer = pl.Trainer(
        default_root_dir=str(root), max_epochs=1, accelerator="cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[callback],
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        trainer.fit(module)
    net.eval()
    reference = weightwatcher_rows(net)
    posthoc = analyze_model(net)
    reader = open_run(callback.run_path)
    aliases = {
        unprefixed(name): [unprefixed(other) for other in others]
        for name, others in reader.parameter_aliases.items()
    }
    yield types.SimpleNamespace(
        name=spec.name, net=net, trainer=trainer, reader=reader, reference=reference,
        run_rows=run_file_rows(reader), run_aliases=aliases, posthoc=posthoc,
        tied=tied_groups(net, list(reference)),
    )  # fmt: skip
    reader.close()


def unprefixed(name: str) -> str:
    assert name.startswith(WRAPPER), name
    return name[len(WRAPPER) :]


def run_file_rows(reader: Any) -> dict[str, dict[str, Any]]:
    """The run file's last snapshot per matrix: its metrics and kind, by model name."""
    rows = {}
    for layer in reader.layers:
        values = {metric: float(series[-1]) for metric, series in reader.metrics(layer).items()}
        values["kind"] = reader.layer_info(layer)["kind"]
        values["status"] = reader.layer_status(layer)[-1][0]
        rows[unprefixed(layer)] = values
    return rows


def posthoc_rows(analysis: Any) -> dict[str, dict[str, Any]]:
    rows = {}
    for row in analysis.analyzed():
        assert row.name not in rows, f"analyze_model lists {row.name} twice"
        rows[row.name] = {**row.metrics(), "kind": row.kind, "status": row.status}
    return rows


def is_grouped(net: nn.Module, name: str) -> bool:
    return getattr(net.get_submodule(name), "groups", 1) > 1


def assert_same_layers(zoo: Any, ours: dict[str, dict[str, Any]], aliases: dict[str, list[str]]) -> None:
    """Our matrices, each with its aliases, are exactly WeightWatcher's; tied groups are the model's."""
    assert aliases == zoo.tied, "aliases are not the model's tied modules"
    expanded = sorted([*ours, *(alias for names in aliases.values() for alias in names)])
    assert expanded == sorted(zoo.reference)
    assert not set(ours) & {alias for names in aliases.values() for alias in names}
    for name, row in ours.items():
        grouped = is_grouped(zoo.net, name)
        assert row["kind"].startswith(("grouped_", "depthwise_")) == grouped, (name, row["kind"])


def compared_metrics(zoo: Any, name: str) -> tuple[str, ...]:
    """The metrics ours and WeightWatcher's share for one matrix under the documented rules."""
    if is_grouped(zoo.net, name):
        return ("log_norm",)
    metrics = ("log_norm", "log_spectral_norm", "num_evals")
    if zoo.reference[name]["num_evals"] < small_n_cutoff():
        return metrics
    return (*metrics, *FIT_METRICS, "num_pl_spikes")


def assert_same_numbers(zoo: Any, ours: dict[str, dict[str, Any]], aliases: dict[str, list[str]]) -> int:
    """Every shared metric within RELATIVE (counts exactly); returns how many fits were compared."""
    fits = 0
    for name, row in ours.items():
        metrics = compared_metrics(zoo, name)
        fits += "alpha" in metrics
        for reference_name in (name, *aliases.get(name, [])):
            expected = zoo.reference[reference_name]
            for metric in metrics:
                value, reference = row[metric], float(expected[metric])
                if metric.startswith("num_"):
                    assert value == reference, (reference_name, metric, value, reference)
                else:
                    assert math.isclose(value, reference, rel_tol=RELATIVE), (
                        reference_name, metric, value, reference,
                    )  # fmt: skip
    return fits


def test_the_run_covers_the_initialization_and_the_epoch(zoo: Any) -> None:
    assert zoo.trainer.state.finished
    assert zoo.reader.epochs.tolist() == [0, 1]
    assert zoo.reader.dropped == []


def test_run_file_holds_weightwatchers_matrices(zoo: Any) -> None:
    assert_same_layers(zoo, zoo.run_rows, zoo.run_aliases)


def test_run_file_numbers_are_weightwatchers(zoo: Any) -> None:
    fits = assert_same_numbers(zoo, zoo.run_rows, zoo.run_aliases)
    assert fits >= 5


def test_analyze_model_holds_weightwatchers_matrices(zoo: Any) -> None:
    assert_same_layers(zoo, posthoc_rows(zoo.posthoc), zoo.tied)


def test_analyze_model_numbers_are_weightwatchers(zoo: Any) -> None:
    fits = assert_same_numbers(zoo, posthoc_rows(zoo.posthoc), zoo.tied)
    assert fits >= 5


def test_every_parameter_is_analyzed_or_listed_as_skipped(zoo: Any) -> None:
    """Each parameter of the model is captured or in ``skipped_parameters``, and no analyzed
    matrix is listed as skipped."""
    captured = {unprefixed(name) for name in zoo.reader.parameters}
    skipped = {unprefixed(name) for name in zoo.reader.skipped_parameters}
    missing = [
        name
        for name, _ in zoo.net.named_parameters()
        if name not in skipped and name.removesuffix(".weight") not in captured
    ]
    assert missing == []
    assert not {unprefixed(layer) for layer in zoo.reader.layers} & skipped
