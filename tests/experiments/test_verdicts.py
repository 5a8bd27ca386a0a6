"""Verdicts come from the committed evidence by the studies' own rules: every study that states
claims has its evidence committed, and its section of the results file shows exactly the verdicts
its rules derive from that evidence today."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from experiments.results import DEFAULT_OUT, DEFAULT_RESULTS, section_markers
from experiments.verdict_summary import STUDY_SUMMARY, judged_studies, summary_section
from experiments.verdicts import (
    Claim,
    Evidence,
    Verdict,
    derive_verdicts,
    evidence_path,
    mean_interval,
    read_evidence,
    verdicts_markdown,
    write_evidence,
)


def section_of(study: str) -> str:
    text = DEFAULT_RESULTS.read_text(encoding="utf-8")
    opening, closing = section_markers(study)
    assert opening in text, f"RESULTS.md has no section for {study}"
    return text[text.index(opening) : text.index(closing)]


@pytest.mark.parametrize("module", judged_studies(), ids=lambda module: module.__name__)
def test_each_section_shows_the_verdicts_its_committed_evidence_gives(module):
    evidence = read_evidence(evidence_path(DEFAULT_OUT, module.STUDY))
    markdown = verdicts_markdown(derive_verdicts(module.CLAIMS, evidence))
    assert markdown in section_of(module.STUDY)


@pytest.mark.parametrize("module", judged_studies(), ids=lambda module: module.__name__)
def test_no_claim_agrees_without_a_null_baseline_that_fails(module):
    evidence = read_evidence(evidence_path(DEFAULT_OUT, module.STUDY))
    for claim, verdict in derive_verdicts(module.CLAIMS, evidence):
        if verdict.verdict == "agrees":
            assert verdict.null_passes is False, claim.key


def test_the_summary_shows_every_judged_studys_verdicts():
    assert len(judged_studies()) >= 6
    assert summary_section() in section_of(STUDY_SUMMARY)


def test_the_interval_is_students_t():
    values = np.random.default_rng(0).normal(3.0, 2.0, size=7)
    interval = mean_interval(values, level=0.9)
    low, high = stats.t.interval(0.9, 6, loc=values.mean(), scale=stats.sem(values))
    assert interval.mean == pytest.approx(values.mean())
    assert (interval.low, interval.high) == pytest.approx((low, high))
    assert mean_interval([1.0, math.nan]).n == 1
    assert mean_interval([]).n == 0


def claim(verdict: Verdict) -> Claim:
    return Claim("k", "Someone, 2020", "x rises", "x's interval above the null's", lambda _: verdict)


def test_agreement_with_a_passing_null_is_refused():
    with pytest.raises(ValueError, match="null baseline passes"):
        derive_verdicts([claim(Verdict("agrees", "x", null_passes=True))], Evidence([]))
    with pytest.raises(ValueError, match="needs its null"):
        derive_verdicts([claim(Verdict("partly", "x", null_passes=None))], Evidence([]))
    with pytest.raises(ValueError, match="not one of"):
        derive_verdicts([claim(Verdict("yes", "x", null_passes=False))], Evidence([]))
    judged = derive_verdicts([claim(Verdict("not testable here", "no data", null_passes=None))], Evidence([]))
    assert "**Verdict: not testable here.**" in verdicts_markdown(judged)


def test_evidence_round_trips_through_csv(tmp_path):
    rows = [("alpha", "trained", 1, 2.5), ("alpha", "trained", 0, 1 / 3), ("alpha", "null", 0, 6.0)]
    evidence = Evidence(rows)
    loaded = read_evidence(write_evidence(tmp_path / "evidence.csv", evidence))
    assert loaded.values("alpha", "trained").tolist() == [1 / 3, 2.5]
    assert loaded.conditions("alpha") == ["trained", "null"]
    with pytest.raises(KeyError, match="No evidence"):
        loaded.values("alpha", "untrained")
    (tmp_path / "bad.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="expected the columns"):
        read_evidence(tmp_path / "bad.csv")
