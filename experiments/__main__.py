"""``python -m experiments fit|validate|test --config configs/<x>.yaml``, or ``sweep`` over one knob.

``python -m experiments sweep --config configs/reg_sweep.yaml --knob model.init_args.fc_l2
--values 0 1e-4 5e-4`` runs one fit (and test) per value; see :mod:`experiments.sweep`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the sweep or to the LightningCLI subcommands."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["sweep"]:
        from experiments.sweep import main as sweep_main

        return sweep_main(args[1:])
    from experiments.cli import cli_main

    cli_main(None if argv is None else args)  # None: LightningCLI reads sys.argv itself
    return 0


if __name__ == "__main__":
    sys.exit(main())
