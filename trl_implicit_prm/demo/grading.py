"""Reading and grading the demo task's solutions: steps from text, final answers, the first wrong step."""

from __future__ import annotations

import re
from collections.abc import Sequence

from trl_implicit_prm.demo.task import STEP_SEPARATOR, Problem, Solution

_BOXED_RE = re.compile(r"\\boxed\{([^{}]*)\}")
_NUMBER_RE = re.compile(r"(?<!\d)-?\d+")
_EQUATION_RE = re.compile(r"^\s*([-+]?\d+)\s*([-+*])\s*([-+]?\d+)\s*=\s*([-+]?\d+)")

__all__ = ["boxed_answer", "grade", "locate_first_error", "parse_steps", "solution_from_text"]


def parse_steps(text: str, separator: str = STEP_SEPARATOR) -> list[str]:
    """Split a (sampled) completion into steps: split on `separator`, strip each, drop empty ones.

    Example:

    ```python
    >>> parse_steps("3+4=7\\n\\n 7*2=14 \\n")
    ['3+4=7', '7*2=14']

    ```
    """
    return [s.strip() for s in text.split(separator) if s.strip()]


def boxed_answer(text: str, allow_last_number: bool = False) -> str | None:
    """The content of the last ``\\boxed{...}`` in `text` (stripped); if there is none, the last integer when
    `allow_last_number`, else None.

    Example:

    ```python
    >>> boxed_answer("so \\\\boxed{3} then \\\\boxed{ 12 }."), boxed_answer("7*2=14")
    ('12', None)
    >>> boxed_answer("7*2=14", allow_last_number=True)
    '14'

    ```
    """
    boxed = _BOXED_RE.findall(text)
    if boxed:
        return boxed[-1].strip()
    if allow_last_number:
        numbers = _NUMBER_RE.findall(text)
        if numbers:
            return numbers[-1]
    return None


def _as_int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def grade(
    problem: Problem, response: str | Sequence[str] | Solution, allow_last_number: bool = False
) -> bool:
    """Outcome label: True iff the extracted final answer is the correct integer.

    `response` is a completion string, a list of steps (joined with :data:`STEP_SEPARATOR`) or a
    :class:`Solution`. The answer is the last ``\\boxed{...}``; by default a response without one is wrong (a
    truncated sample's last running total does not count), `allow_last_number` falls back to the last integer.
    Never raises on malformed text.

    Example:

    ```python
    >>> p = Problem(3, (("+", 4),))
    >>> grade(p, "3+4=7. The answer is \\\\boxed{7}."), grade(p, "\\\\boxed{seven}"), grade(p, "")
    (True, False, False)

    ```
    """
    if isinstance(response, Solution):
        text = response.text
    elif isinstance(response, str):
        text = response
    else:
        text = STEP_SEPARATOR.join(str(s) for s in response)
    pred = _as_int(boxed_answer(text, allow_last_number=allow_last_number))
    return pred is not None and pred == int(problem.answer)


def _step_is_right(problem: Problem, index: int, step: str) -> bool:
    match = _EQUATION_RE.match(step)
    if match is None:
        return False
    a, op, b, c = int(match[1]), match[2], int(match[3]), int(match[4])
    before = problem.start if index == 0 else problem.totals[index - 1]
    if (a, op, b, c) != (before, *problem.ops[index], problem.totals[index]):
        return False
    boxed = _BOXED_RE.findall(step)
    if index < len(problem.ops) - 1:
        return not boxed  # an answer given before the last operation is a wrong step
    return bool(boxed) and _as_int(boxed[-1]) == problem.totals[index]


def locate_first_error(problem: Problem, steps: Sequence[str]) -> int | None:
    """Index of the earliest wrong step of `steps` (e.g. a parsed model sample), by recomputing every step.

    Step ``i`` is right iff it starts with ``a op b = c`` where ``a`` is the correct running total, ``op b`` the
    problem's i-th operation and ``c`` the correct result (spacing and trailing text are free), and it states
    the answer (``\\boxed{c}``) iff it is the last operation. A step beyond the last operation is wrong.
    Returns -1 if all steps are right and complete, None if they are right but stop before the answer (no
    step is wrong, yet the solution is incomplete: not labellable in the ProcessBench protocol).

    Example:

    ```python
    >>> p = Problem(3, (("+", 4), ("*", 2), ("-", 5)))
    >>> locate_first_error(p, ["3+4=7", "7 * 2 = 14", "14-5=9. The answer is \\\\boxed{9}."])
    -1
    >>> locate_first_error(p, ["3+4=7", "7*2=15", "15-5=10. The answer is \\\\boxed{10}."])
    1
    >>> locate_first_error(p, ["3+4=7"]) is None
    True

    ```
    """
    for i, step in enumerate(steps):
        if i >= len(problem.ops) or not _step_is_right(problem, i, step):
            return i
    return -1 if len(steps) == len(problem.ops) else None


def solution_from_text(problem: Problem, text: str, separator: str = STEP_SEPARATOR) -> Solution:
    """Label a sampled completion: steps parsed, outcome graded, process truth from :func:`locate_first_error`.

    Example:

    ```python
    >>> p = Problem(3, (("+", 4), ("*", 2)))
    >>> s = solution_from_text(p, "3+4=8\\n8*2=14. The answer is \\\\boxed{14}.")
    >>> s.is_correct, s.first_error, s.final_answer
    (True, 0, '14')

    ```
    """
    steps = parse_steps(text, separator)
    return Solution(steps, boxed_answer(text), grade(problem, text), locate_first_error(problem, steps))


# --------------------------------------------------------------------------------------------------------------
# Writers to the library's public JSONL formats
