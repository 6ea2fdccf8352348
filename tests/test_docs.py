"""The docs live in the repository: no file points outside it, and every ``docs/design.md#anchor``
the code and docs cite names a heading of docs/design.md."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
SOURCES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md"),
           *(p for d in ("src", "bench", "examples", "scripts") for p in (ROOT / d).rglob("*")
             if p.suffix in {".py", ".md", ".toml", ".proto", ".sh"} and "egg-info" not in str(p))]
CITATION = re.compile(r"docs/design\.md#([a-z0-9-]+)")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors() -> set[str]:
    lines = (ROOT / "docs" / "design.md").read_text().splitlines()
    return {_anchor(line.lstrip("#")) for line in lines if line.startswith("#")}


def test_no_file_points_outside_the_repository() -> None:
    outside = [f"{p.relative_to(ROOT)}:{i}" for p in SOURCES
               for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
               if "../shared" in line or "DESIGN §" in line or "DESIGN.md" in line]
    assert not outside, outside


def test_every_design_citation_names_a_heading() -> None:
    anchors = _anchors()
    assert {"threat-model", "the-pgsl-pipeline", "data"} <= anchors  # the probe reads headings
    cited = {(str(p.relative_to(ROOT)), m) for p in SOURCES
             for m in CITATION.findall(p.read_text(errors="replace"))}
    assert len(cited) >= 10
    missing = sorted(c for c in cited if c[1] not in anchors)
    assert not missing, missing
    assert _anchor("What `pgsl predict` gives a MIAS model") == "what-pgsl-predict-gives-a-mias-model"
