r"""Final-answer extraction and equivalence grading for math responses.

Two functions matter: :func:`extract_answer` pulls the final answer out of a response, and
:func:`answers_equivalent` decides whether a predicted answer matches the reference. Grading uses the
`math-verify` package (extra ``[eval]``) when it is importable, on top of a plain normalised comparison that
always runs first and is the whole grader when `math-verify` is missing (or ``use_math_verify=False``).

Example:

```python
>>> from trl_implicit_prm.evaluation import answers_equivalent, extract_answer
>>> extract_answer(r"So $x = \boxed{\frac{1}{2}}$. Check: \boxed{\dfrac{1}{2}}")
'\\dfrac{1}{2}'
>>> answers_equivalent(r"\dfrac{1}{2}", "0.5", use_math_verify=False)
True

```
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from fractions import Fraction
from types import ModuleType

__all__ = [
    "answer_key",
    "answers_equivalent",
    "extract_answer",
    "math_verify_available",
    "normalize_answer",
]

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_ANSWER_PHRASE_RE = re.compile(r"\b(?:final\s+)?answer\s*(?:is\b|:)", re.IGNORECASE)
_NUMBER = r"(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)"
_FRAC = r"\\[dt]?frac\s*\{[^{}]*\}\s*\{[^{}]*\}"
# A number (optionally a fraction a/b) or a LaTeX \frac, with a minus sign unless it follows a word or ")".
_LAST_NUMBER_RE = re.compile(rf"(?:(?<![\w)])-)?(?:{_FRAC}|{_NUMBER}(?:\s*/\s*{_NUMBER})?)")


def _match_braces(text: str, open_pos: int) -> int | None:
    r"""Index of the `}` closing the `{` at `open_pos`, or None if unbalanced. `\{` and `\}` are skipped."""
    depth = 0
    i = open_pos
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2  # an escaped character (\{, \}, or the first letter of a command) never counts
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _boxed_contents(text: str) -> list[str]:
    """Contents of every complete `\boxed{...}` / `\fbox{...}` (also `\boxed 5`), in order of appearance."""
    found = []
    for match in _BOX_RE.finditer(text):
        start = match.end()
        while start < len(text) and text[start] == " ":
            start += 1
        if start < len(text) and text[start] == "{":
            end = _match_braces(text, start)
            if end is not None:
                found.append(text[start + 1 : end])
        elif start > match.end():  # `\boxed 5`: the next run of characters up to whitespace or `$`
            token = re.match(r"[^\s$]+", text[start:])
            if token:
                found.append(token.group(0))
    return found


def _clean_phrase_answer(text: str) -> str:
    text = text.strip()
    sentence_end = re.search(r"\.\s", text)  # "42. Because ..." -> "42."
    if sentence_end:
        text = text[: sentence_end.start() + 1]
    for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(left) and text.endswith(right):
            text = text[len(left) : -len(right)]
    return text.strip().strip("*").strip().rstrip(".").strip().strip("$").strip().rstrip(".").strip()


def extract_answer(text: str | None) -> str | None:
    r"""The final answer of a response, or None if none can be found.

    Rules, first that applies wins:

    1. The content of the LAST complete `\boxed{...}` or `\fbox{...}` (braces matched, so nested braces such
       as `\boxed{\frac{1}{2}}` are kept whole; `\{`/`\}` do not count; `\boxed 5` is accepted). An
       unterminated box (a truncated response) and an empty box are ignored.
    2. The text after the LAST "answer is" / "answer:" phrase (covers "The answer is X", "The final answer
       is X", "Final answer: X"; case-insensitive), up to the end of that line and cut after the first
       sentence end (". "); then stripped of `\(..\)`/`\[..\]`, markdown `*`, `$` and trailing periods.
    3. Fallback: in the last non-empty line, the last number or expression, where a number is an optional
       minus sign (not after a letter, digit or `)`), digits with optional `,ddd` groups and decimals
       (or `.5`), optionally followed by `/number` (a fraction `a/b`); an expression is a
       `\frac{..}{..}` (also `\dfrac`, `\tfrac`) with flat arguments. Returned as written (commas kept).

    Example:

    ```python
    >>> extract_answer(r"First \boxed{1}, then \boxed{\frac{3}{4}}.")
    '\\frac{3}{4}'
    >>> extract_answer("Thus the answer is 42.")
    '42'
    >>> extract_answer("2 + 3 = 5\n\nSo we get 12 apples.")
    '12'
    >>> extract_answer("I do not know.") is None
    True

    ```
    """
    if not text:
        return None
    for content in reversed(_boxed_contents(text)):
        if content.strip():
            return content.strip()
    phrases = list(_ANSWER_PHRASE_RE.finditer(text))
    if phrases:
        rest = text[phrases[-1].end() :].split("\n", 1)[0]
        answer = _clean_phrase_answer(rest)
        if answer:
            return answer
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    numbers = _LAST_NUMBER_RE.findall(lines[-1])
    return numbers[-1].strip() if numbers else None


# ---------------------------------------------------------------------------------------------------------
# Normalisation (the fallback grader, and the grouping key for votes)
# ---------------------------------------------------------------------------------------------------------

_TEXT_RE = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_UNITS = (
    "dollars|dollar|cents|cent|degrees|degree|percent|units|unit|"
    "centimeters|centimetres|centimeter|centimetre|millimeters|millimeter|kilometers|kilometer|"
    "meters|metres|meter|metre|cm|mm|km|m|inches|inch|feet|foot|ft|yards|yard|miles|mile|mph|"
    "hours|hour|hrs|hr|minutes|minute|mins|min|seconds|second|secs|sec|s|days|day|weeks|week|"
    "months|month|years|year|kilograms|kilogram|grams|gram|kg|g|pounds|pound|lbs|lb|ounces|ounce|oz|"
    "liters|litres|liter|litre|ml|l|points|point"
)
# A unit word (optionally "square"/"cubic", optionally squared/cubed) right after a number, at the end.
_UNIT_RE = re.compile(
    rf"^(?P<value>.*\d)\s*(?:(?:square|sq\.?|cubic)\s*)?(?:{_UNITS})(?:\^\{{?[23]\}}?|\^[23])?\.?$",
    re.IGNORECASE,
)
_SPACING_RE = re.compile(r"\\left(?![A-Za-z])|\\right(?![A-Za-z])|\\displaystyle|\\[!,;:]|\\quad|\\qquad|\\ ")
_DEGREE_RE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree")
_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_PLAIN_NUMBER_RE = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_FRAC_RE = re.compile(r"(-?)\\frac\{([^{}]+)\}\{([^{}]+)\}")
_FRAC_SHORT_RE = re.compile(r"(-?)\\frac(\d)(\d)")


def normalize_answer(answer: str) -> str:
    r"""Normalise an answer string for exact comparison (the grader used without `math-verify`).

    Steps: remove `$` (and `\$`), `\left`/`\right`, `\displaystyle`, LaTeX spacing (`\!`, `\,`, `\;`,
    `\:`, `\quad`); unwrap `\text{..}`/`\mathrm{..}`/`\mbox{..}`; drop degree marks (`^\circ`, `°`) and
    `%`/`\%`; `\dfrac`/`\tfrac` -> `\frac`; drop a unit word after a number at the end ("5 cm", "5
    dollars", "3 square feet"); drop a leading single-letter assignment ("x = 3" -> "3"); remove all
    whitespace, trailing periods, and thousands separators in plain numbers ("1,000" -> "1000").

    Example:

    ```python
    >>> normalize_answer(r"\text{5 dollars}"), normalize_answer(r"$90^\circ$"), normalize_answer("x = 1,000.")
    ('5', '90', '1000')

    ```
    """
    text = answer.strip().replace("\\$", "").replace("$", "")
    text = _SPACING_RE.sub(" ", text)
    previous = None
    while previous != text:
        previous, text = text, _TEXT_RE.sub(r"\1", text)
    text = _DEGREE_RE.sub("", text)
    text = text.replace("\\%", "").replace("%", "")
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = text.strip().rstrip(".").strip()
    unit = _UNIT_RE.match(text)
    if unit:
        text = unit.group("value")
    assignment = re.match(r"^[A-Za-z]\s*=\s*(.+)$", text)
    if assignment:
        text = assignment.group(1)
    text = re.sub(r"\s+", "", text).rstrip(".")
    if _THOUSANDS_RE.fullmatch(text):
        text = text.replace(",", "")
    return text


def _plain_fraction(text: str) -> Fraction | None:
    if _PLAIN_NUMBER_RE.fullmatch(text):
        try:
            return Fraction(text)
        except (ValueError, ZeroDivisionError):
            return None
    return None


def _to_fraction(normalized: str) -> Fraction | None:
    r"""The exact value of a normalised plain number, `a/b`, or `\frac{a}{b}` with numeric a, b; else None."""
    value = _plain_fraction(normalized)
    if value is not None:
        return value
    frac = _FRAC_RE.fullmatch(normalized) or _FRAC_SHORT_RE.fullmatch(normalized)
    if frac:
        sign, num, den = frac.groups()
    elif normalized.count("/") == 1:
        sign, (num, den) = "", normalized.split("/")
    else:
        return None
    num_value, den_value = _plain_fraction(num), _plain_fraction(den)
    if num_value is None or den_value is None or den_value == 0:
        return None
    value = num_value / den_value
    return -value if sign else value


def answer_key(answer: str | None) -> str | None:
    r"""A grouping key for votes: the normalised answer, with numbers written as a reduced fraction `p/q`.

    Two answers with the same key are equivalent; the converse need not hold (`\sqrt{2}/2` and
    `\frac{\sqrt{2}}{2}` get different keys). Keys are cheap and transitive, which pairwise `math-verify`
    calls are not.

    Example:

    ```python
    >>> answer_key(r"\frac{1}{2}") == answer_key("0.5") == answer_key("1/2") == "1/2"
    True

    ```
    """
    if answer is None:
        return None
    normalized = normalize_answer(answer)
    value = _to_fraction(normalized)
    if value is not None:
        return f"{value.numerator}/{value.denominator}"
    return normalized or None


def _fallback_equivalent(pred: str, reference: str) -> bool:
    norm_pred, norm_ref = normalize_answer(pred), normalize_answer(reference)
    if not norm_pred or not norm_ref:
        return False
    if norm_pred == norm_ref:
        return True
    value_pred, value_ref = _to_fraction(norm_pred), _to_fraction(norm_ref)
    return value_pred is not None and value_pred == value_ref


# ---------------------------------------------------------------------------------------------------------
# math-verify
# ---------------------------------------------------------------------------------------------------------


@functools.cache
def _load_math_verify() -> ModuleType | None:
    try:
        import math_verify
    except ImportError:
        return None
    return math_verify


def math_verify_available() -> bool:
    """Whether `math-verify` can be imported (it is imported on first use, not with this module)."""
    return _load_math_verify() is not None


def _math_verify_equivalent(math_verify: ModuleType, pred: str, reference: str) -> bool:
    # math-verify's own timeouts use signal.alarm, which only works in the main thread; elsewhere they are
    # disabled (math-verify then logs a one-time warning).
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    pairs = [(reference, pred)]
    normalized = (normalize_answer(reference), normalize_answer(pred))
    if normalized != pairs[0] and all(normalized):
        pairs.append(normalized)
    for gold_text, pred_text in pairs:
        try:
            gold = math_verify.parse(f"\\boxed{{{gold_text}}}", parsing_timeout=timeout)
            target = math_verify.parse(f"\\boxed{{{pred_text}}}", parsing_timeout=timeout)
            if gold and target and math_verify.verify(gold, target, timeout_seconds=timeout):
                return True
        except Exception:  # math-verify can raise on odd input: count it as "not equivalent"
            logger.debug("math-verify failed on %r vs %r", pred_text, gold_text, exc_info=True)
    return False


def answers_equivalent(
    pred: str | None, reference: str | None, *, use_math_verify: bool | None = None
) -> bool:
    r"""Whether a predicted final answer matches the reference answer.

    First the normalised comparison (see :func:`normalize_answer`): equal strings, or equal exact values
    for plain numbers, `a/b` and `\frac{a}{b}` (so `\frac{1}{2}` == `0.5`). If that says no and
    `math-verify` is used, both answers are wrapped in `\boxed{}`, parsed, and compared with
    `math_verify.verify(reference, pred)` (raw strings, then normalised ones); any exception it raises
    counts as "not equivalent". `None` or empty answers are never equivalent to anything.

    Args:
        pred: the predicted answer (e.g. from :func:`extract_answer`).
        reference: the reference answer.
        use_math_verify: None (default) uses `math-verify` when importable; False never uses it; True
            requires it (ImportError if missing).

    Example:

    ```python
    >>> answers_equivalent("5 cm", "5", use_math_verify=False)
    True
    >>> answers_equivalent(r"\frac{2}{3}", "0.67", use_math_verify=False)
    False

    ```
    """
    if pred is None or reference is None:
        return False
    pred, reference = str(pred).strip(), str(reference).strip()
    if not pred or not reference:
        return False
    if _fallback_equivalent(pred, reference):
        return True
    if use_math_verify is False:
        return False
    math_verify = _load_math_verify()
    if math_verify is None:
        if use_math_verify:
            raise ImportError(
                "use_math_verify=True but math-verify is not installed: pip install 'trl-implicit-prm[eval]'"
            )
        return False
    return _math_verify_equivalent(math_verify, pred, reference)
