"""The results-file helper: each study owns the text between its markers and nothing else; a smoke
run's outputs go to ``<runs>/smoke/``."""

from __future__ import annotations

import pytest

from experiments.results import (
    DEFAULT_OUT,
    DEFAULT_RESULTS,
    DEFAULT_RUNS,
    figure_link,
    markdown_table,
    parse_study,
    section_markers,
    study_parser,
    write_section,
)


def test_sections_are_replaced_in_place_and_others_kept(tmp_path):
    results = tmp_path / "RESULTS.md"
    write_section("first", "one", results)
    write_section("second", "two", results)
    write_section("first", "uno\n", results)
    text = results.read_text()
    assert "one" not in text
    assert text.index("uno") < text.index("two")
    assert text.count("<!-- study:first -->") == 1 and text.count("<!-- /study:first -->") == 1


def test_text_outside_the_markers_survives(tmp_path):
    results = tmp_path / "RESULTS.md"
    template = "# Title\n\nwritten by hand\n\n<!-- study:a -->\n{}\n<!-- /study:a -->\n\ntail\n"
    results.write_text(template.format("old"))
    write_section("a", "new", results)
    assert results.read_text() == template.format("new")


def test_a_broken_section_is_refused(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("<!-- study:a -->\nno closing marker\n")
    with pytest.raises(ValueError, match="broken section for study 'a'"):
        write_section("a", "new", results)


def test_study_names_are_checked():
    assert section_markers("neuron_graph") == ("<!-- study:neuron_graph -->", "<!-- /study:neuron_graph -->")
    with pytest.raises(ValueError, match="Invalid study name"):
        section_markers("a b")


def test_markdown_table_and_figure_link(tmp_path):
    assert markdown_table(["k", "x"], [[1, 0.123456], ["a", float("nan")]]).splitlines() == [
        "| k | x |",
        "|---|---|",
        "| 1 | 0.1235 |",
        "| a | - |",
    ]
    link = figure_link(tmp_path / "results" / "s" / "f.png", tmp_path / "RESULTS.md", "caption")
    assert link == "![caption](results/s/f.png)"


def test_a_smoke_run_writes_under_the_runs_smoke_directory(tmp_path):
    parser = study_parser(None)
    real = parse_study(parser, [])
    assert (real.runs, real.out, real.results) == (DEFAULT_RUNS, DEFAULT_OUT, DEFAULT_RESULTS)
    smoke = parse_study(parser, ["--smoke"])
    runs = DEFAULT_RUNS / "smoke"
    assert (smoke.runs, smoke.out, smoke.results) == (runs, runs / "results", runs / "RESULTS.md")
    moved = parse_study(parser, ["--smoke", "--runs", str(tmp_path)])
    assert (moved.out, moved.results) == (tmp_path / "smoke" / "results", tmp_path / "smoke" / "RESULTS.md")
    out, results = tmp_path / "figures", tmp_path / "RESULTS.md"
    given = parse_study(parser, ["--smoke", "--out", str(out), "--results", str(results)])
    assert (given.runs, given.out, given.results) == (DEFAULT_RUNS / "smoke", out, results)
