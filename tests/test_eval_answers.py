"""Answer extraction and grading, with and without math-verify."""

from __future__ import annotations

import doctest
import importlib
import sys

import pytest

from trl_implicit_prm.evaluation import answer_key, answers_equivalent, extract_answer, normalize_answer
from trl_implicit_prm.evaluation import answers as answers_module

# Both grading modes: the plain normalised fallback, and math-verify where it is installed.
MODES = [
    False,
    pytest.param(
        True,
        marks=pytest.mark.skipif(not answers_module.math_verify_available(), reason="math-verify missing"),
    ),
]


@pytest.fixture
def fresh_math_verify_cache():
    answers_module._load_math_verify.cache_clear()
    yield
    answers_module._load_math_verify.cache_clear()


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"We get $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),  # nested braces kept whole
        (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),
        (r"First \boxed{1}, then \boxed{2}, finally \boxed{3}.", "3"),  # the last box wins
        (r"Result: \fbox{7}", "7"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not close the box
        (r"\boxed 5$ done", "5"),
        (r"ok \boxed{4} but then \boxed{\frac{1}{2}", "4"),  # unterminated last box (truncated) is ignored
        (r"\boxed{} The answer is 6.", "6"),  # an empty box is no answer
        ("The answer is 42.", "42"),
        ("so the final answer is $\\frac{3}{4}$.", r"\frac{3}{4}"),
        ("**Final Answer:** 7", "7"),
        ("The answer is 12. Then I checked it twice.", "12"),
        ("Step 1: 2 + 3 = 5\n\nStep 2: so x = -3/4.\n\n", "-3/4"),  # fallback: last number of the last line
        ("We know x-3 = 2", "2"),
        ("there are 1,000 apples", "1,000"),
        (r"hence \dfrac{2}{3}", r"\dfrac{2}{3}"),
        ("I am not sure.", None),
        ("", None),
        (None, None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "raw, normalized",
    [
        (r"\text{5 dollars}", "5"),
        (r"5\text{ cm}", "5"),
        ("12 square feet", "12"),
        (r"$90^\circ$", "90"),
        (r"90^{\circ}", "90"),
        (r"\left( 1, 2 \right)", "(1,2)"),
        (r"\!3\,000", "3000"),
        ("x = 1,000.", "1000"),
        (r"10\%", "10"),
        (r"\tfrac{1}{2}", r"\frac{1}{2}"),
        ("no solution", "nosolution"),
    ],
)
def test_normalize_answer(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_answer_key_groups_numbers():
    assert (
        answer_key(r"\frac{1}{2}")
        == answer_key("0.5")
        == answer_key("1/2")
        == answer_key(r"\dfrac12")
        == "1/2"
    )
    assert answer_key("-2") == "-2/1"
    assert answer_key(r"\sqrt{2}") == r"\sqrt{2}"
    assert answer_key(None) is None and answer_key("$$") is None


@pytest.mark.parametrize("use_math_verify", MODES)
@pytest.mark.parametrize(
    "pred, reference",
    [
        (r"\frac{1}{2}", "0.5"),
        (r"\dfrac{1}{2}", "1/2"),
        ("0.50", r"\frac{2}{4}"),
        ("5 cm", "5"),
        (r"\text{5 dollars}", "5"),
        (r"5\text{ cm}", "5"),
        (r"90^\circ", "90"),
        ("1,000", "1000"),
        ("x = 3", "3"),
        (r"\left(1,2\right)", "(1, 2)"),
        ("42.", "42"),
        ("-7", "-7.0"),
    ],
)
def test_equivalent_pairs(pred, reference, use_math_verify):
    assert answers_equivalent(pred, reference, use_math_verify=use_math_verify)


@pytest.mark.parametrize("use_math_verify", MODES)
@pytest.mark.parametrize(
    "pred, reference",
    [
        ("0.33", "1/3"),
        ("5", "6"),
        (None, "5"),
        ("5", None),
        ("", "5"),
        ("  ", " "),
        (r"\frac{1}{0}", "1"),
        ("A", "B"),
    ],
)
def test_not_equivalent_pairs(pred, reference, use_math_verify):
    assert not answers_equivalent(pred, reference, use_math_verify=use_math_verify)


def test_math_verify_catches_what_the_fallback_cannot():
    pytest.importorskip("math_verify")
    pred, reference = r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}"
    assert not answers_equivalent(pred, reference, use_math_verify=False)
    assert answers_equivalent(pred, reference)  # default: math-verify when importable
    assert answers_equivalent(r"\{2, 1\}", r"\{1, 2\}", use_math_verify=True)


def test_without_math_verify_installed(monkeypatch, fresh_math_verify_cache):
    monkeypatch.setitem(sys.modules, "math_verify", None)  # makes `import math_verify` raise ImportError
    assert not answers_module.math_verify_available()
    assert answers_equivalent(r"\frac{1}{2}", "0.5")  # the fallback alone
    assert not answers_equivalent(r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}")
    with pytest.raises(ImportError, match=r"trl-implicit-prm\[eval\]"):
        answers_equivalent(r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}", use_math_verify=True)


def test_math_verify_errors_fall_back_to_exact_match(monkeypatch, fresh_math_verify_cache):
    math_verify = pytest.importorskip("math_verify")

    def broken(*args, **kwargs):
        raise RuntimeError("sympy exploded")

    monkeypatch.setattr(math_verify, "verify", broken)
    assert not answers_equivalent(r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}", use_math_verify=True)
    assert answers_equivalent(r"\frac{1}{2}", "0.5", use_math_verify=True)  # decided before math-verify runs


@pytest.mark.parametrize("module", ["answers", "process_errors", "best_of_n", "records", "plots", "__init__"])
def test_docstring_examples_run(module):
    name = "trl_implicit_prm.evaluation" + ("" if module == "__init__" else f".{module}")
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
