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


def _layout() -> dict[str, set[str]]:
    """The README's Layout block: folder -> the file names it lists."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    listed: dict[str, set[str]] = {}
    folder = ""
    for line in block.splitlines():
        head = re.match(r"^((?:src/pgsl|bench)[\w/]*/)\s", line)
        if head:
            folder = head[1]
        if folder:
            listed.setdefault(folder, set()).update(re.findall(r"[\w.]+\.(?:py|proto|sh)\b", line))
    return listed


def test_the_readme_layout_lists_every_source_file_and_only_existing_ones() -> None:
    listed = _layout()
    folders = {"src/pgsl/", "bench/", *(f"src/pgsl/{d.name}/" for d in (ROOT / "src" / "pgsl").iterdir()
                                        if d.is_dir() and any(d.glob("*.py")))}
    assert set(listed) == folders
    generated = {"pgsl_pb2.py", "pgsl_pb2_grpc.py"}  # protoc's output beside pgsl.proto
    for folder, names in listed.items():
        present = {p.name for p in (ROOT / folder).iterdir()
                   if p.suffix in {".py", ".proto", ".sh"} and p.name != "__init__.py"} - generated
        assert names == present, (folder, sorted(names - present), sorted(present - names))
