"""The experiments' LightningCLI: ``python -m experiments fit --config configs/<x>.yaml``.

Model and data are given by ``class_path`` (any ``LightningModule`` and ``LightningDataModule``);
the data module's ``input_shape`` and ``num_classes`` are passed to the model's network, so one
model file works with any dataset. Optimizer settings belong to the model (its
``configure_optimizers``), so ``hparams.yaml`` records them with the other knobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

__all__ = ["ExperimentCLI", "cli_main"]


class ExperimentCLI(LightningCLI):
    """``LightningCLI`` with models and data modules chosen by ``class_path`` in the config.

    Args:
        args: command-line arguments (``None``: ``sys.argv``), or a dict of settings.
        run: run the subcommand (``fit``, ``validate``, ``test``, ...); with ``False`` the
            arguments have no subcommand and only the objects are built.
        **kwargs: passed to ``LightningCLI``.
    """

    def __init__(self, args: Sequence[str] | dict[str, Any] | None = None, run: bool = True, **kwargs: Any):
        kwargs.setdefault("parser_kwargs", {"description": "Train a model of the experiments."})
        super().__init__(
            model_class=None,
            datamodule_class=None,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in ("input_shape", "num_classes"):
            parser.link_arguments(
                f"data.{name}", f"model.init_args.network.init_args.{name}", apply_on="instantiate"
            )


def cli_main(args: Sequence[str] | None = None) -> ExperimentCLI:
    """Run a LightningCLI subcommand (``fit``, ``validate``, ``test``, ``predict``) of the experiments."""
    return ExperimentCLI(args=None if args is None else list(args))
