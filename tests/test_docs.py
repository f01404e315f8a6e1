"""The documentation cannot go stale: every Python block of README.md and docs/*.md runs, the configuration tables
of docs/trainers.md match the config dataclasses, and relative links point at files that exist.

A page's blocks run in order in one namespace (a later block may use an earlier block's names), in a temporary
working directory. Blocks that cannot run here are fenced ```` ```python no-run NAME ```` and must be listed in
NOT_RUN, so skipping one is a visible decision.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "recipes" / "README.md",
    REPO / "recipes" / "accelerate" / "README.md",
]
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```\s*$", re.DOTALL | re.MULTILINE)

# (page, name) of every block that is shown but not run, and why.
NOT_RUN = {
    ("README.md", "hub-checkpoint"): "loads Llama-3.1-8B-Instruct from the hub",
    ("inference.md", "hub-checkpoint"): "loads an 8B checkpoint from the hub",
    ("search.md", "vllm"): "needs vLLM and a GPU",
}


def _blocks(page: Path) -> list[tuple[str, str]]:
    """`(info, code)` of every ```python block: info is "" for a block that runs, "no-run NAME" otherwise."""
    return [(m.group(1).strip(), m.group(2)) for m in FENCE.finditer(page.read_text(encoding="utf-8"))]


def _rel(page: Path) -> str:
    return str(page.relative_to(REPO))


# Pages without a runnable Python block are not parametrised (prose or shell only), rather than skipped.
PAGES_WITH_CODE = [page for page in PAGES if any(not info for info, _ in _blocks(page))]


def test_most_pages_have_running_examples():
    assert len(PAGES_WITH_CODE) >= len(PAGES) - 4, [_rel(p) for p in PAGES if p not in PAGES_WITH_CODE]


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=_rel)
def test_python_examples_run(page, tmp_path, monkeypatch):
    blocks = [code for info, code in _blocks(page) if not info]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for i, code in enumerate(blocks):
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                exec(compile(code, f"{_rel(page)} block {i + 1}", "exec"), namespace)
            except Exception as err:
                raise AssertionError(f"{_rel(page)}, Python block {i + 1} failed:\n{code}") from err


def test_skipped_examples_are_few_and_named():
    found = {}
    for page in PAGES:
        for info, _ in _blocks(page):
            if info:
                kind, _, name = info.partition(" ")
                assert kind == "no-run" and name, f"{_rel(page)}: unknown fence ```python {info}"
                found[(page.name, name)] = True
    assert set(found) == set(NOT_RUN), "update NOT_RUN with the reason a block is not run"
    assert len(NOT_RUN) <= 4


def _config_tables():
    spec = importlib.util.spec_from_file_location("config_tables", REPO / "docs" / "config_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_trainers_md_tables_match_the_config_dataclasses():
    tables = _config_tables()
    text = tables.TRAINERS_MD.read_text(encoding="utf-8")
    names = [m.group(2) for m in tables.BLOCK.finditer(text)]
    assert names == [
        "ImplicitPRMBaseConfig",
        "ImplicitPRMConfig",
        "CEConfig",
        "StepKTOConfig",
        "ExplicitPRMConfig",
    ]
    assert tables.render(text) == text, "docs/trainers.md is stale: run `python docs/config_tables.py`"


def test_every_config_field_is_documented():
    from trl_implicit_prm.trainers import (
        CEConfig,
        ExplicitPRMConfig,
        ImplicitPRMBaseConfig,
        ImplicitPRMConfig,
        StepKTOConfig,
    )

    tables = _config_tables()
    text = tables.TRAINERS_MD.read_text(encoding="utf-8")
    for cls in (ImplicitPRMBaseConfig, ImplicitPRMConfig, CEConfig, StepKTOConfig, ExplicitPRMConfig):
        for field, _ in tables._own_fields(cls):
            assert field.metadata.get("help"), f"{cls.__name__}.{field.name} has no help string"
            assert f"| `{field.name}` |" in text


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_relative_links_exist(page):
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if "://" not in target and not target.startswith("mailto:"):
            assert (page.parent / target).exists(), f"{_rel(page)} links to missing {target}"
