"""Size limits of the package's code: no module over 500 lines, no function (docstring included) over 60.

A long module or function is split into named stages; this test names each one over its limit.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "trl_implicit_prm"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_walk_finds_the_package():
    assert len(_modules()) > 40 and PACKAGE / "rewards.py" in _modules()


def test_no_module_over_500_lines():
    long = {}
    for path in _modules():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES:
            long[str(path.relative_to(PACKAGE.parent))] = n
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them into named parts): {long}"


def test_no_function_over_60_lines():
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}"] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them into named stages): {long}"
