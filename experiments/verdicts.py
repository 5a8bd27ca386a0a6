"""Verdicts on a source's claims, derived from a study's evidence by rules fixed in code.

A study states each claim it tests as a :class:`Claim`: the source's statement made testable, the
rule in words, and the rule as a function of the evidence. The evidence is a long table, one
number per row (``statistic``, ``condition``, ``seed``, ``value``), that the study writes to
``<out>/<study>/evidence.csv`` and commits. The verdicts in ``RESULTS.md`` are rendered from that
file by :func:`derive_verdicts`, and a test renders them again from the committed file: a verdict
can be changed only by changing the data or the rule, never by editing the text.

Every rule measures its statistic on a null baseline too (a random graph with the same number of
edges, the same network at initialization, a Gaussian matrix of the same shape, ...) and reports
whether the null would have passed the same test; a claim whose null passes cannot be "agrees"
(:func:`derive_verdicts` refuses it).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "EVIDENCE_COLUMNS",
    "VERDICTS",
    "Claim",
    "Evidence",
    "Interval",
    "Verdict",
    "derive_verdicts",
    "evidence_path",
    "mean_interval",
    "read_evidence",
    "verdicts_markdown",
    "write_evidence",
]

VERDICTS = ("agrees", "partly", "disagrees", "not testable here")
EVIDENCE_COLUMNS = ("statistic", "condition", "seed", "value")
EVIDENCE_FILE = "evidence.csv"


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided confidence interval (Student's t over ``n`` independent values)."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        if self.n < 2:
            return f"{_number(self.mean)} (n = {self.n})"
        return f"{_number(self.mean)} [{_number(self.low)}, {_number(self.high)}] (n = {self.n})"

    def above(self, other: Interval) -> bool:
        """Whether this whole interval lies above ``other``'s."""
        return self.low > other.high

    def below(self, other: Interval) -> bool:
        """Whether this whole interval lies below ``other``'s."""
        return self.high < other.low


def mean_interval(values: Iterable[float], level: float = 0.95) -> Interval:
    """The mean of ``values`` and its ``level`` confidence interval, Student's t with n - 1 degrees
    of freedom (NaN values are left out; one value gives a zero-width interval)."""
    from scipy import stats

    data = np.asarray([float(v) for v in values], dtype=np.float64)
    data = data[np.isfinite(data)]
    if data.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(data.mean())
    if data.size < 2:
        return Interval(mean, mean, mean, 1)
    half = float(stats.t.ppf(0.5 + level / 2, data.size - 1) * data.std(ddof=1) / math.sqrt(data.size))
    return Interval(mean, mean - half, mean + half, int(data.size))


class Evidence:
    """A study's evidence: rows of (statistic, condition, seed, value), queried by name."""

    def __init__(self, rows: Iterable[Sequence[object]]):
        self.rows: list[tuple[str, str, int, float]] = [
            (str(statistic), str(condition), int(seed), float(value))  # type: ignore[call-overload]
            for statistic, condition, seed, value in rows
        ]

    def values(self, statistic: str, condition: str) -> np.ndarray:
        """The values of ``statistic`` under ``condition``, in seed order.

        Raises:
            KeyError: nothing was recorded for that pair (a rule asking for evidence the study
                did not produce is a bug in the study, not a verdict).
        """
        found = sorted((seed, value) for s, c, seed, value in self.rows if s == statistic and c == condition)
        if not found:
            raise KeyError(f"No evidence for statistic {statistic!r} under condition {condition!r}.")
        return np.asarray([value for _, value in found], dtype=np.float64)

    def interval(self, statistic: str, condition: str, level: float = 0.95) -> Interval:
        """:func:`mean_interval` of :meth:`values`."""
        return mean_interval(self.values(statistic, condition), level)

    def conditions(self, statistic: str) -> list[str]:
        """The conditions under which ``statistic`` was recorded, in first-recorded order."""
        return list(dict.fromkeys(c for s, c, _, _ in self.rows if s == statistic))


@dataclass(frozen=True)
class Verdict:
    """What a rule concluded.

    Attributes:
        verdict: one of :data:`VERDICTS`.
        evidence: the numbers the verdict rests on, in a sentence (intervals, the null's).
        null_passes: whether the null baseline passes the claim's test too (``None`` only for
            "not testable here").
    """

    verdict: str
    evidence: str
    null_passes: bool | None


@dataclass(frozen=True)
class Claim:
    """A source's claim as a testable statement and the rule that judges it.

    Attributes:
        key: a short identifier, unique in its study.
        source: who made the claim (authors, year).
        statement: the claim, as the study tests it.
        rule: the rule in words: the statistic, the null baseline, what each verdict needs.
        judge: the rule as a function of the evidence.
    """

    key: str
    source: str
    statement: str
    rule: str
    judge: Callable[[Evidence], Verdict]


def derive_verdicts(claims: Sequence[Claim], evidence: Evidence) -> list[tuple[Claim, Verdict]]:
    """Each claim judged on the evidence.

    Raises:
        ValueError: a rule returned a word outside :data:`VERDICTS`, said "agrees" while its null
            baseline passes the same test, or gave no null outcome for a testable claim.
    """
    judged = []
    for claim in claims:
        verdict = claim.judge(evidence)
        if verdict.verdict not in VERDICTS:
            raise ValueError(f"Claim {claim.key!r}: verdict {verdict.verdict!r} is not one of {VERDICTS}.")
        if verdict.verdict != "not testable here" and verdict.null_passes is None:
            raise ValueError(f"Claim {claim.key!r}: a testable claim needs its null baseline's outcome.")
        if verdict.verdict == "agrees" and verdict.null_passes:
            raise ValueError(
                f"Claim {claim.key!r}: 'agrees' although the null baseline passes the same test."
            )
        judged.append((claim, verdict))
    return judged


def verdicts_markdown(judged: Sequence[tuple[Claim, Verdict]]) -> str:
    """The verdicts as the results file shows them: per claim, the claim, the rule, the evidence
    (with the null baseline's outcome) and the verdict."""
    null = {True: "the null baseline passes too", False: "the null baseline does not pass", None: "no null"}
    blocks = []
    for claim, verdict in judged:
        blocks.append(
            "\n".join(
                [
                    f"**Claim `{claim.key}` ({claim.source}).** {claim.statement}",
                    f"- Rule: {claim.rule}",
                    f"- Evidence: {verdict.evidence} ({null[verdict.null_passes]}).",
                    f"- **Verdict: {verdict.verdict}.**",
                ]
            )
        )
    return "\n\n".join(blocks)


def evidence_path(out: str | Path, study: str) -> Path:
    """Where study ``study`` writes its evidence under the studies' output directory ``out``."""
    return Path(out) / study / EVIDENCE_FILE


def write_evidence(path: str | Path, evidence: Evidence) -> Path:
    """Write the evidence as CSV (full precision; directories created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(EVIDENCE_COLUMNS)
        writer.writerows((s, c, seed, repr(value)) for s, c, seed, value in evidence.rows)
    return path


def read_evidence(path: str | Path) -> Evidence:
    """Read evidence written by :func:`write_evidence`.

    Raises:
        ValueError: the header is not :data:`EVIDENCE_COLUMNS`.
    """
    with Path(path).open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = tuple(next(reader, ()))
        if header != EVIDENCE_COLUMNS:
            raise ValueError(f"{path}: expected the columns {EVIDENCE_COLUMNS}, found {header}.")
        return Evidence(reader)


def _number(value: float) -> str:
    return f"{value:.4g}"
