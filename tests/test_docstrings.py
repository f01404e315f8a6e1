"""Every `Example:` in the package's docstrings runs (doctest), on tiny models, in seconds."""

from __future__ import annotations

import contextlib
import doctest
import importlib
import io
import pkgutil

import pytest

import trl_implicit_prm


def _quiet_deepspeed_accelerator() -> None:
    """DeepSpeed prints "Setting accelerator to CPU" on stdout the first time it is asked; ask before the doctests."""
    try:
        from deepspeed.accelerator import get_accelerator
    except ImportError:
        return
    with contextlib.redirect_stdout(io.StringIO()):
        get_accelerator()


_quiet_deepspeed_accelerator()

MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(trl_implicit_prm.__path__, prefix="trl_implicit_prm.")
    if not name.endswith("__main__")
)


def test_the_walk_finds_the_package():
    assert {
        "trl_implicit_prm.rewards",
        "trl_implicit_prm.inference.computer",
        "trl_implicit_prm.trainers.ce",
    } <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(
        importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples failed"
