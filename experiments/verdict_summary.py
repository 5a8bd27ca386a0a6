"""All the studies' verdicts in one table, at the top of the results file.

Finds every study module that states claims (a module of ``experiments`` with ``CLAIMS`` and
``STUDY``), derives its verdicts from its committed evidence
(``experiments/results/<study>/evidence.csv``) and writes the table of claims and verdicts as the
``summary`` section of ``RESULTS.md``, with a link to each study's section for the rule and the
numbers.

Run: ``python -m experiments.verdict_summary`` (after a study has rewritten its evidence).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import experiments
from experiments.results import DEFAULT_OUT, DEFAULT_RESULTS, markdown_table, write_section
from experiments.verdicts import derive_verdicts, evidence_path, read_evidence

__all__ = ["STUDY_SUMMARY", "judged_studies", "main", "summary_section"]

STUDY_SUMMARY = "summary"
_NOT_STUDIES = {"__main__", "verdict_summary"}


def judged_studies() -> list[ModuleType]:
    """The study modules that state claims, in name order."""
    names = sorted(
        info.name for info in pkgutil.iter_modules(experiments.__path__) if info.name not in _NOT_STUDIES
    )
    modules = [importlib.import_module(f"experiments.{name}") for name in names]
    return [module for module in modules if hasattr(module, "CLAIMS") and hasattr(module, "STUDY")]


def summary_section(out: Path = DEFAULT_OUT) -> str:
    """The markdown table of every judged study's claims and the verdicts its evidence gives."""
    rows = []
    for module in judged_studies():
        evidence = read_evidence(evidence_path(out, module.STUDY))
        for claim, verdict in derive_verdicts(module.CLAIMS, evidence):
            rows.append(
                [f"`{module.STUDY}`", claim.source, f"`{claim.key}`", claim.statement, verdict.verdict]
            )
    header = "## Verdicts at a glance"
    intro = (
        "Derived by each study's rules from its committed `evidence.csv` (the rule, the numbers and the "
        "null baseline of every claim are in the study's section below). Regenerate with "
        "`python -m experiments.verdict_summary`."
    )
    table = markdown_table(["study", "source", "claim", "statement", "verdict"], rows)
    return f"{header}\n\n{intro}\n\n{table}"


def main(argv: Sequence[str] | None = None) -> Path:
    """Write the summary section of the results file."""
    parser = argparse.ArgumentParser(description="Write the table of all the studies' verdicts.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory of the studies' outputs")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="markdown file of the results")
    args = parser.parse_args(argv)
    path = write_section(STUDY_SUMMARY, summary_section(args.out), args.results)
    print(f"wrote the verdict summary of {path}")
    return path


if __name__ == "__main__":
    main()
