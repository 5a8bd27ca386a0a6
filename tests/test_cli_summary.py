"""``spectral-callbacks summary``: run directories searched as ``compare`` does, the per-layer table,
and the parameters left out of the analysis (skipped, with their reasons, and tied names).

Run files are written through the store API with the worker's steps (no process), and the
expected values come from analyzing the same arrays directly, not from the run file.
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from run_files import append_snapshot, open_writer

from spectral_callbacks.cli import main
from spectral_callbacks.reporting.tables import NAMES_SHOWN
from spectral_callbacks.runfile.reader import RUN_FILE_NAME, open_run
from spectral_callbacks.runfile.store import ParameterSpec

SPECS = (
    ParameterSpec("fc1", "linear", (32, 16)),
    ParameterSpec("fc2", "linear", (24, 16)),
    ParameterSpec("tiny", "linear", (4, 3)),  # 3 eigenvalues < min_evals=8: the store skips it
)
ONE_D = "1-D parameter has no matrix view"
# a GPT-2-like record: every bias and norm scale of 4 blocks, and the position table
GPT_SKIPPED = {
    **{
        f"h.{block}.{name}": ONE_D
        for block in range(4)
        for name in ("ln_1.weight", "ln_1.bias", "attn.c_attn.bias", "ln_2.weight", "mlp.c_fc.bias")
    },
    "wpe.weight": "position embedding table (not a layer)",
}


def write_run(
    path: Path, *, seed: int, specs=SPECS, skipped: dict[str, str] | None = None, epochs: int = 2
) -> list[list]:
    """A closed run file; returns each epoch's analysis of the arrays written (the reference)."""
    rng = np.random.default_rng(seed)
    writer = open_writer(
        path, parameters=specs, run_id=f"run-{seed}", config={"every_n_epochs": 1}, weights_dtype=None,
        skipped=skipped,
    )  # fmt: skip
    references = []
    try:
        for epoch in range(epochs):
            arrays = {spec.name: rng.standard_normal(spec.shape) for spec in specs}
            references.append(append_snapshot(writer, epoch, 10 * epoch, arrays, specs=specs))
    finally:
        writer.close()
    return references


def summary(capsys: pytest.CaptureFixture, *arguments: object) -> tuple[int, str, str]:
    code = main(["summary", *map(str, arguments)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def sections(out: str) -> dict[str, list[str]]:
    """The output split at its ``== <run file>`` lines."""
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        if line.startswith("== "):
            found[line[3:]] = current = []
        else:
            current.append(line)
    return found


def alpha_cell(spectra: list, layer: str) -> str:
    """How the table prints a layer's alpha (4 significant digits), from the direct analysis."""
    return f"{next(s.alpha for s in spectra if s.name == layer):.4g}"


def test_a_lightning_logs_directory_is_searched_for_its_runs(tmp_path: Path, capsys) -> None:
    logs = tmp_path / "lightning_logs"
    references = {
        version: write_run(logs / f"version_{version}" / RUN_FILE_NAME, seed=version) for version in (0, 1)
    }
    (logs / "version_2").mkdir()  # a run without a run file (no callback) is not an error
    code, out, err = summary(capsys, logs)
    assert code == 0 and err == ""
    found = sections(out)
    assert list(found) == [str(logs / f"version_{version}" / RUN_FILE_NAME) for version in (0, 1)]
    for version, lines in zip((0, 1), found.values(), strict=True):
        header = lines[0].split()
        assert header[:5] == ["layer", "kind", "shape", "alpha@0", "alpha@1"]
        rows = {line.split()[0]: line.split() for line in lines[2:] if line and not line[0].isspace()}
        for layer in ("fc1", "fc2"):
            assert rows[layer][3] == alpha_cell(references[version][0], layer)
            assert rows[layer][4] == alpha_cell(references[version][-1], layer)
        assert "tiny" not in rows


def test_one_run_by_its_directory_or_its_file(tmp_path: Path, capsys) -> None:
    path = tmp_path / "run" / RUN_FILE_NAME
    write_run(path, seed=3)
    by_directory = summary(capsys, path.parent)
    by_file = summary(capsys, path)
    assert by_directory == by_file
    assert by_file[0] == 0 and by_file[1].startswith(f"== {path}\n")


def test_a_directory_without_run_files_is_one_line_and_exit_code_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "lightning_logs" / "version_0").mkdir(parents=True)
    code, out, err = summary(capsys, tmp_path / "lightning_logs")
    assert code == 2 and out == ""
    assert err == (
        f"spectral-callbacks: No run file (spectra.h5) in {tmp_path / 'lightning_logs'} or its "
        "subdirectories; pass run directories written by SpectralCallback, or their run files.\n"
    )
    code, _, err = summary(capsys, tmp_path / "missing")
    assert code == 2 and err == f"spectral-callbacks: No run file or directory at {tmp_path / 'missing'}.\n"


def test_an_unreadable_run_file_is_reported_and_the_others_summarized(tmp_path: Path, capsys) -> None:
    good = tmp_path / "runs" / "a" / RUN_FILE_NAME
    write_run(good, seed=4)
    bad = tmp_path / "runs" / "b" / RUN_FILE_NAME
    bad.parent.mkdir()
    bad.write_bytes(good.read_bytes()[:2048])  # truncated
    code, out, err = summary(capsys, tmp_path / "runs")
    assert code == 1
    assert list(sections(out)) == [str(good)]
    (line,) = err.splitlines()
    assert line.startswith(f"spectral-callbacks: {bad} is not a readable HDF5 run file")


# -- parameters not analyzed -------------------------------------------------------------------------
@pytest.fixture
def gpt_like_run(tmp_path: Path) -> Path:
    """A run whose capture skipped a GPT-2-like set of parameters, and with one tied tensor."""
    specs = (*SPECS, ParameterSpec("wte.weight", "embedding", (40, 16), aliases=("lm_head.weight",)))
    path = tmp_path / "gpt" / RUN_FILE_NAME
    write_run(path, seed=5, specs=specs, skipped=GPT_SKIPPED)
    return path


def expected_skipped() -> dict[str, str]:
    """What the run file should record: the capture's list, and ``tiny`` (too few eigenvalues)."""
    return {**GPT_SKIPPED, "tiny": "3 eigenvalues < min_evals=8"}


def test_skipped_parameters_grouped_by_reason(gpt_like_run: Path, capsys) -> None:
    code, out, err = summary(capsys, gpt_like_run)
    assert code == 0 and err == ""
    lines = out.splitlines()
    skipped = expected_skipped()
    start = lines.index(f"{len(skipped)} parameters not analyzed (summary --all lists every name):")
    by_reason: dict[str, list[str]] = {}
    for name, reason in skipped.items():
        by_reason.setdefault(reason, []).append(name)
    groups = lines[start + 1 : start + 1 + len(by_reason)]
    # the most frequent reason first, each with its count and its first names
    ones = by_reason[ONE_D]
    more = len(ones) - NAMES_SHOWN
    assert groups[0].split(None, 1) == [
        str(len(ones)),
        f"{ONE_D}: {', '.join(ones[:NAMES_SHOWN])}, ... ({more} more)",
    ]
    for line in groups[1:]:
        count, rest = line.split(None, 1)
        reason, names = rest.rsplit(": ", 1)
        assert by_reason[reason] == names.split(", ") and int(count) == len(by_reason[reason])
    assert all(len(line) <= 120 for line in lines[start:])  # one short line per reason
    assert lines[start + 1 + len(by_reason) :] == [
        "Tied parameters (one tensor under several names, analyzed under the first):",
        "  wte.weight = lm_head.weight",
    ]


def test_all_lists_every_skipped_name(gpt_like_run: Path, capsys) -> None:
    code, out, _ = summary(capsys, gpt_like_run, "--all")
    assert code == 0 and "all lists" not in out
    tail = out[out.index("parameters not analyzed:") :]
    listed = re.findall(r"[\w.]+(?=,|\n)", tail.split("Tied parameters")[0])
    assert sorted(set(listed) & set(expected_skipped())) == sorted(expected_skipped())


def test_reader_gives_the_recorded_lists(gpt_like_run: Path) -> None:
    with open_run(gpt_like_run) as run:
        assert run.skipped_parameters == expected_skipped()
        assert run.parameter_aliases == {"wte.weight": ["lm_head.weight"]}


def test_run_files_without_the_attributes_still_summarize(gpt_like_run: Path, capsys) -> None:
    """Runs written before the lists were recorded: the table alone, and empty lists."""
    with h5py.File(gpt_like_run, "a") as file:
        del file.attrs["skipped_parameters"]
        del file.attrs["parameter_aliases"]
    with open_run(gpt_like_run) as run:
        assert run.skipped_parameters == {} and run.parameter_aliases == {}
    code, out, err = summary(capsys, gpt_like_run)
    assert code == 0 and err == ""
    assert "not analyzed" not in out and "Tied" not in out
    assert out.splitlines()[-1].startswith("wte.weight ")


def test_a_layer_without_analyzed_rows_is_summarized_with_empty_cells(tmp_path: Path, capsys) -> None:
    """A layer the file has but no snapshot analyzed (its rows lost, or a change layer before its
    first reference) is a row of empty cells, not a crash."""
    from run_files import analyze, random_weights

    path = tmp_path / RUN_FILE_NAME
    writer = open_writer(path)
    arrays = random_weights(0)
    writer.append_weights(arrays)
    row = writer.append_index(0, 0, "captured")
    writer.record_analysis(row, [spectrum for spectrum in analyze(arrays) if spectrum.name == "fc"])
    writer.close()
    assert main(["summary", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    conv = next(line for line in lines if line.startswith("conv "))
    assert "nan" in conv.lower() or "-" in conv


def test_snapshots_without_spectra_are_listed_with_their_reason_and_epochs(tmp_path: Path, capsys) -> None:
    path = tmp_path / RUN_FILE_NAME
    rng = np.random.default_rng(3)
    writer = open_writer(path, parameters=SPECS, weights_dtype=None)
    budget = "skipped by max_overhead=0.03: about 1.25 s per snapshot"
    try:
        for epoch in range(5):
            if epoch in (1, 2, 4):
                writer.append_index(epoch, 10 * epoch, "dropped", budget)
                continue
            arrays = {spec.name: rng.standard_normal(spec.shape) for spec in SPECS}
            append_snapshot(writer, epoch, 10 * epoch, arrays, specs=SPECS)
        writer.append_index(5, 50, "failed", "LinAlgError: SVD did not converge")
    finally:
        writer.close()
    code, out, err = summary(capsys, path)
    assert code == 0 and err == ""
    header = next(line.split() for line in out.splitlines() if line.startswith("layer"))
    assert header[3:5] == ["alpha@0", "alpha@3"]  # the analyzed epochs only
    assert "4 snapshots without spectra:" in out
    assert f"  3 dropped ({budget}): epochs 1, 2, 4" in out
    assert "  1 failed (LinAlgError: SVD did not converge): epoch 5" in out
    complete = tmp_path / "complete" / RUN_FILE_NAME
    complete.parent.mkdir()
    write_run(complete, seed=4)
    assert "without spectra" not in summary(capsys, complete)[1]
