"""Every relative link in README.md, docs/ and the recipes' READMEs, and every `docs/*.md` page a docstring cites,
points at a file that exists (anchors are checked against the target page's headings)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("recipes/**/*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CITED = re.compile(r"\b((?:docs|recipes)/[\w./-]+\.md)\b")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_anchor(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", page.read_text(encoding="utf-8"), re.M)}


def _relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)  # code blocks are not links
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in _relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


def test_pages_cited_in_docstrings_exist():
    missing = []
    for source in sorted(
        [*ROOT.glob("trl_implicit_prm/**/*.py"), *ROOT.glob("recipes/*.py"), *ROOT.glob("bench/*.py")]
    ):
        for cited in CITED.findall(source.read_text(encoding="utf-8")):
            if not (ROOT / cited).exists():
                missing.append(f"{source.relative_to(ROOT)}: {cited}")
    assert not missing, f"docstrings cite pages that do not exist: {missing}"


def test_the_checker_sees_links():
    """The link pattern finds links at all (a checker that matches nothing passes everything)."""
    assert len(_relative_links(ROOT / "README.md")) >= 3
    assert "docs/method.md" in CITED.findall((ROOT / "trl_implicit_prm" / "rewards.py").read_text())
