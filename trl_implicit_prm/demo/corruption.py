"""Wrong solutions of the demo task with a known first error: one injected error, propagated to the answer.

Example:

```python
>>> from trl_implicit_prm.demo.task import Problem
>>> bad = corrupt(Problem(3, (("+", 4), ("*", 2), ("-", 5))), step=0, rng=0, kinds=["operator"])
>>> bad.first_error, bad.error_kind, bad.is_correct
(0, 'operator', False)

```
"""

from __future__ import annotations

from collections.abc import Sequence

from trl_implicit_prm.demo.task import (
    _DELTAS,
    ERROR_KINDS,
    Problem,
    RngLike,
    Solution,
    _as_rng,
    _steps_from,
    format_step,
    reference_solution,
)

__all__ = ["corrupt", "corruptible_steps", "make_solutions"]


def _corruption_candidates(problem: Problem, step: int, kind: str) -> list[tuple[int, str, int, int]]:
    """Wrong versions ``(a, op, b, c)`` of step `step`, of one kind, whose propagation stays in range and
    changes the final answer.
    """
    before = problem.start if step == 0 else problem.totals[step - 1]
    op, b = problem.ops[step]
    correct = problem.totals[step]
    mod = problem.modulus
    raw: list[tuple[int, str, int, int]] = []
    if kind == "result":
        raw = [(before, op, b, correct + d if mod is None else (correct + d) % mod) for d in _DELTAS]
    elif kind == "operand":
        raw = [
            (before, op, b2, problem.apply(before, op, b2))
            for b2 in range(1, problem.max_operand + 1)
            if b2 != b
        ]
    elif kind == "operator":
        raw = [(before, op2, b, problem.apply(before, op2, b)) for op2 in problem.operators if op2 != op]
    elif kind == "copy":
        for d in _DELTAS:
            a2 = before + d if mod is None else (before + d) % mod
            raw.append((a2, op, b, problem.apply(a2, op, b)))
    else:
        raise ValueError(f"unknown error kind {kind!r}; known: {ERROR_KINDS}")
    out = []
    truth = problem.totals[-1]
    for a2, op2, b2, c2 in raw:
        if c2 == correct or not (problem.in_range(a2) and problem.in_range(c2)):
            continue
        total, ok = c2, True
        for op3, b3 in problem.ops[step + 1 :]:
            total = problem.apply(total, op3, b3)
            ok = ok and problem.in_range(total)
        if ok and total != truth and (a2, op2, b2, c2) not in out:
            out.append((a2, op2, b2, c2))
    return out


def corruptible_steps(problem: Problem, kinds: Sequence[str] = ERROR_KINDS) -> list[int]:
    """Steps at which :func:`corrupt` can inject an error of one of `kinds` (in practice: all of them)."""
    return [k for k in range(len(problem.ops)) if any(_corruption_candidates(problem, k, kd) for kd in kinds)]


def corrupt(problem: Problem, step: int, rng: RngLike = None, kinds: Sequence[str] = ERROR_KINDS) -> Solution:
    """A wrong solution whose earliest wrong step is exactly `step`.

    Steps before `step` are the reference ones. Step `step` gets one error, of a kind drawn uniformly among
    `kinds` that are possible here:

    - ``"result"``: right operation, result off by a small delta (±1, ±2, ±3, or ±10): ``7*2=15``;
    - ``"operand"``: a wrong operand copied from the prompt, computed correctly: ``7*3=21``;
    - ``"operator"``: another allowed operator, computed correctly: ``7+2=9``;
    - ``"copy"``: a wrong running total carried over, computed correctly: ``8*2=16``.

    All later steps are computed correctly from the wrong total, so the error propagates. Only errors that keep
    every shown value in range and change the final answer are drawn (an error can vanish, e.g. modulo 100
    after ``* 5``); raises ValueError if there is none at this step.

    Example:

    ```python
    >>> p = Problem(3, (("+", 4), ("*", 2), ("-", 5)))
    >>> bad = corrupt(p, step=1, rng=0, kinds=["result"])
    >>> bad.steps, bad.first_error, bad.final_answer
    (['3+4=7', '7*2=24', '24-5=19. The answer is \\\\boxed{19}.'], 1, '19')

    ```
    """
    if not 0 <= step < len(problem.ops):
        raise ValueError(f"step must be in [0, {len(problem.ops)}), got {step}")
    rng = _as_rng(rng)
    options = {kind: _corruption_candidates(problem, step, kind) for kind in kinds}
    possible = [kind for kind in kinds if options[kind]]
    if not possible:
        raise ValueError(
            f"no error of kinds {tuple(kinds)} changes the answer at step {step} of {problem.text!r}"
        )
    kind = rng.choice(possible)
    a, op, b, c = rng.choice(options[kind])
    reference = reference_solution(problem).steps
    steps = [*reference[:step], format_step(a, op, b, c, final=step == len(problem.ops) - 1)]
    steps, final = _steps_from(problem, step + 1, c, steps)
    return Solution(steps, str(final), False, step, kind)


def make_solutions(
    problem: Problem,
    n_correct: int,
    n_wrong: int,
    rng: RngLike = None,
    kinds: Sequence[str] = ERROR_KINDS,
) -> list[Solution]:
    """`n_correct` reference solutions and `n_wrong` corrupted ones, each at a step drawn uniformly among the
    corruptible steps (all steps for problems drawn by :class:`ArithmeticTask`), shuffled.

    Example:

    ```python
    >>> from trl_implicit_prm.demo.task import make_problems
    >>> sols = make_solutions(make_problems(1)[0], n_correct=2, n_wrong=3, rng=0)
    >>> sorted(s.is_correct for s in sols)
    [False, False, False, True, True]

    ```
    """
    rng = _as_rng(rng)
    out = [reference_solution(problem) for _ in range(n_correct)]
    if n_wrong > 0:
        steps = corruptible_steps(problem, kinds)
        if not steps:
            raise ValueError(f"no step of {problem.text!r} can be corrupted with kinds {tuple(kinds)}")
        out += [corrupt(problem, rng.choice(steps), rng, kinds) for _ in range(n_wrong)]
    rng.shuffle(out)
    return out
