"""The README and docs/: every relative link resolves, images are small, the README stays short.

Links are checked as GitHub renders them: a path relative to the Markdown file, and an anchor
that must be the slug of a heading in the target file (GitHub's rule: lower case, punctuation
other than ``-`` and ``_`` dropped, spaces to ``-``, ``-1``, ``-2`` ... for repeated headings).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_LIMIT_BYTES = 15_000
IMAGE_LIMIT_BYTES = 300_000

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _prose(text: str) -> str:
    """The Markdown without fenced code blocks, where brackets are not links."""
    return _FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (see :func:`test_slugs_follow_githubs_rule`)."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, repeated headings numbered as GitHub does."""
    seen: dict[str, int] = {}
    result = set()
    for match in _HEADING.finditer(_prose(path.read_text(encoding="utf-8"))):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        result.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return result


def links(path: Path) -> list[str]:
    """Targets of the links and images in a Markdown file's prose (code excluded)."""
    prose = _INLINE_CODE.sub("", _prose(path.read_text(encoding="utf-8")))
    return _LINK.findall(prose)


def _relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file_and_heading_that_exist(document: Path) -> None:
    broken = []
    for target in filter(_relative, links(document)):
        file_part, _, anchor = target.partition("#")
        destination = (document.parent / file_part).resolve() if file_part else document
        if not destination.exists():
            broken.append(f"{target}: no file {destination}")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with anchor #{anchor} in {destination.name}")
    assert not broken, f"{document.name} has broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        # anchors GitHub gives these headings on its rendered pages
        ("Lightning: where the run goes", "lightning-where-the-run-goes"),
        ("`spectral-callbacks analyze`", "spectral-callbacks-analyze"),
        ("The run file (`spectra.h5`, format version 4)", "the-run-file-spectrah5-format-version-4"),
        ("Keras 3 (jax, torch or tensorflow)", "keras-3-jax-torch-or-tensorflow"),
        ("Which layers, and what the numbers mean", "which-layers-and-what-the-numbers-mean"),
    ],
)
def test_slugs_follow_githubs_rule(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_the_link_check_sees_a_broken_link_and_anchor(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [gone](missing.md) [bad](#nowhere)\n```\n[x](code.md)\n```\n")
    assert links(page) == ["#title", "missing.md", "#nowhere"]
    assert anchors(page) == {"title"}


def test_every_moved_document_is_linked_from_the_readme() -> None:
    linked = {target.partition("#")[0] for target in links(ROOT / "README.md")}
    missing = [f"docs/{p.name}" for p in DOCUMENTS[1:] if f"docs/{p.name}" not in linked]
    assert not missing, f"README.md links to none of: {missing}"


def test_readme_is_short() -> None:
    size = (ROOT / "README.md").stat().st_size
    assert size < README_LIMIT_BYTES, (
        f"README.md is {size} bytes, over {README_LIMIT_BYTES}: move details to docs/ and link them"
    )


def test_images_are_small() -> None:
    images = sorted((ROOT / "docs" / "images").glob("*"))
    assert images, "docs/images/ holds no image"
    large = {p.name: p.stat().st_size for p in images if p.stat().st_size >= IMAGE_LIMIT_BYTES}
    assert not large, f"images over {IMAGE_LIMIT_BYTES} bytes: {large}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_planning_history_in_user_documents(document: Path) -> None:
    """Users have no copy of the project's planning documents: cite the papers instead."""
    text = document.read_text(encoding="utf-8")
    found = re.findall(r"\bseeds? 0\d\d\b|\bsession \d|\bissue \d+", text, flags=re.IGNORECASE)
    assert not found, f"{document.name} refers to planning documents: {found}"
