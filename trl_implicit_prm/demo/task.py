"""The synthetic reasoning task of the embedded demo: chains of arithmetic evaluated left to right.

A problem is a start value followed by ``n_terms - 1`` operations on small integers, evaluated strictly LEFT TO
RIGHT (no operator precedence), which the prompt says. The reference solution has one step per operation,
each showing the running total, and the last step also states the answer in a ``\\boxed{}`` form::

    Compute left to right: 3+4*2-5
    3+4=7
    7*2=14
    14-5=9. The answer is \\boxed{9}.

The format is deliberately tiny and regular, so that a ~1M-parameter causal LM trained for a minute on CPU
learns it partially: the demo needs a policy that is right sometimes and wrong sometimes. Every step is
``a<op>b=c``; a tiny model must copy ``a`` from the previous line, copy ``<op>b`` from the prompt and look up
``c``. There are no spaces around operators: with the library's Llama-3-style pre-tokenizer a space before a
digit is a token of its own, so ``3 + 4 = 7`` costs 7 tokens where ``3+4=7`` costs 5 (a prompt + solution
with ``n_terms=6`` is 57 tokens instead of 72). Values stay in ``0..max_value`` (default 99: at most two digits, so at most one token per number with a
tokenizer trained on :func:`tokenizer_corpus`); operands that would leave that range are never drawn. With
``modulus=m`` every result is instead reduced modulo ``m`` (and the prompt says ``mod m``).

Because each step is checkable, the step truth of any solution is known: :func:`corrupt` injects one error at a
chosen step ``k`` (wrong result, wrong operand, wrong operator, or a wrong copy of the running total) and then
continues correctly from the wrong total, so the error propagates to a wrong final answer and the earliest
wrong step is exactly ``k``; :func:`locate_first_error` recomputes every step of an arbitrary (e.g. sampled)
solution. That gives ProcessBench-style records for evaluating step-error localisation, while training only
ever sees outcome labels from :func:`grade`.

Writers (:func:`to_rollouts`, :func:`to_unpaired`, :func:`to_paired`, :func:`to_stepwise`,
:func:`to_processbench`, :func:`export_all`) emit the library's public JSONL formats, so the demo's data doubles
as an example of what real data must look like.

Example:

```python
>>> from trl_implicit_prm.demo import ArithmeticTask, corrupt, format_prompt, grade, reference_solution
>>> task = ArithmeticTask(n_terms=4, seed=0)
>>> problem = task.make_problems(1)[0]
>>> good = reference_solution(problem)
>>> len(good.steps) == task.n_terms - 1 and grade(problem, good.text)
True
>>> bad = corrupt(problem, step=1, rng=0)
>>> bad.first_error, bad.is_correct, grade(problem, bad.text)
(1, False, False)
>>> format_prompt(problem).endswith("\\n")
True

```
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ERROR_KINDS",
    "STEP_SEPARATOR",
    "SUPPORTED_OPERATORS",
    "ArithmeticTask",
    "Problem",
    "Solution",
    "dataset_stats",
    "format_prompt",
    "format_step",
    "make_problems",
    "reference_solution",
    "tokenizer_corpus",
]

#: Separator between the steps of a demo solution. Pass it as ``step_separator`` to the trainers and to
#: ``ProcessRewardComputer`` when working with this task (the library default is ``"\n\n"``).
STEP_SEPARATOR = "\n"
#: Operators the task knows, in canonical order.
SUPPORTED_OPERATORS = "+-*"
#: Kinds of injected errors (see :func:`corrupt`).
ERROR_KINDS = ("result", "operand", "operator", "copy")

PROMPT_PREFIX = "Compute left to right"
ANSWER_TEMPLATE = "The answer is \\boxed{{{}}}."

# Offsets tried by the "result" and "copy" error kinds: small slips and a tens-digit slip.
_DELTAS = (1, -1, 2, -2, 3, -3, 10, -10)

RngLike = random.Random | int | None


def _as_rng(rng: RngLike) -> random.Random:
    """A `random.Random` from an instance (used as is), an integer seed, or None (seed 0)."""
    if isinstance(rng, random.Random):
        return rng
    return random.Random(0 if rng is None else rng)


def _apply(total: int, op: str, operand: int, modulus: int | None) -> int:
    if op == "+":
        value = total + operand
    elif op == "-":
        value = total - operand
    elif op == "*":
        value = total * operand
    else:
        raise ValueError(f"unsupported operator {op!r}; supported: {SUPPORTED_OPERATORS!r}")
    return value % modulus if modulus is not None else value


def _in_range(value: int, modulus: int | None, max_value: int | None) -> bool:
    if modulus is not None:
        return 0 <= value < modulus
    return max_value is None or 0 <= value <= max_value


def _normalize_operators(operators: str | Sequence[str]) -> str:
    chars = set("".join(operators).replace(",", "").replace(" ", ""))
    unknown = chars - set(SUPPORTED_OPERATORS)
    if unknown:
        raise ValueError(f"unsupported operators {sorted(unknown)}; supported: {SUPPORTED_OPERATORS!r}")
    if not chars:
        raise ValueError("at least one operator is required")
    return "".join(op for op in SUPPORTED_OPERATORS if op in chars)


@dataclass(frozen=True)
class Problem:
    """One arithmetic chain: `start`, then `ops` (pairs ``(operator, operand)``) applied left to right.

    `modulus`, `max_value`, `operators` and `max_operand` record the task the problem came from: they define
    the value range (``0..modulus-1`` when `modulus` is set, else ``0..max_value``; ``max_value=None`` means
    unbounded integers) and the alternatives :func:`corrupt` may draw from.

    Example:

    ```python
    >>> p = Problem(3, (("+", 4), ("*", 2), ("-", 5)))
    >>> p.text, p.totals, p.answer, p.n_terms
    ('3+4*2-5', (7, 14, 9), '9', 4)

    ```
    """

    start: int
    ops: tuple[tuple[str, int], ...]
    modulus: int | None = None
    max_value: int | None = 99
    operators: str = SUPPORTED_OPERATORS
    max_operand: int = 9

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple((str(op), int(b)) for op, b in self.ops))
        if not self.ops:
            raise ValueError("a problem needs at least one operation")
        for op, _ in self.ops:
            if op not in SUPPORTED_OPERATORS:
                raise ValueError(f"unsupported operator {op!r}; supported: {SUPPORTED_OPERATORS!r}")

    @property
    def n_terms(self) -> int:
        """Number of operands (start value included) = number of steps + 1."""
        return len(self.ops) + 1

    @property
    def text(self) -> str:
        """The expression, e.g. ``"3+4*2-5"`` (to be read left to right)."""
        return "".join([str(self.start), *(f"{op}{b}" for op, b in self.ops)])

    @property
    def prompt(self) -> str:
        """The prompt string, same as :func:`format_prompt`."""
        return format_prompt(self)

    @property
    def totals(self) -> tuple[int, ...]:
        """Running totals after each operation (the results of the reference steps)."""
        out, total = [], self.start
        for op, b in self.ops:
            total = self.apply(total, op, b)
            out.append(total)
        return tuple(out)

    @property
    def answer(self) -> str:
        """The correct final answer, as a string."""
        return str(self.totals[-1])

    def apply(self, total: int, op: str, operand: int) -> int:
        """One operation, reduced modulo `modulus` when set."""
        return _apply(total, op, operand, self.modulus)

    def in_range(self, value: int) -> bool:
        """Whether `value` is a value this task's solutions may show."""
        return _in_range(value, self.modulus, self.max_value)


@dataclass
class Solution:
    """A solution: `steps` (strings, without separators) and its labels.

    - `final_answer`: the extracted final answer (None if the text states none),
    - `is_correct`: the OUTCOME label, i.e. the final answer equals the truth (what training may use),
    - `first_error`: the PROCESS label, index of the earliest wrong step, -1 if every step is right, None if
      every step is right but the solution stops before giving the answer (e.g. a truncated sample),
    - `error_kind`: for injected errors, which of :data:`ERROR_KINDS`.
    """

    steps: list[str]
    final_answer: str | None
    is_correct: bool
    first_error: int | None = -1
    error_kind: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The completion text: steps joined with :data:`STEP_SEPARATOR`."""
        return STEP_SEPARATOR.join(self.steps)

    @property
    def process_correct(self) -> bool:
        """True iff every step is right and the answer is given (``first_error == -1``)."""
        return self.first_error == -1


@dataclass(frozen=True)
class ArithmeticTask:
    """Configuration and generator of problems.

    Args:
        n_terms: number of operands, start value included (so ``n_terms - 1`` steps); 3..8 is the useful range.
        operators: subset of ``"+-*"`` as a string (``"+-"``, ``"+,*"``) or a sequence of single characters.
        max_operand: operands (and the start value) are drawn from ``1..max_operand``.
        modulus: if set, every result is reduced modulo it; otherwise values are kept in ``0..max_value`` by
            drawing only operands that keep the running total in range.
        max_value: upper bound of every running total when `modulus` is None (None: unbounded).
        seed: default seed of :meth:`make_problems` and :meth:`make_dataset`.

    Example:

    ```python
    >>> task = ArithmeticTask(n_terms=3, operators="+*", seed=1)
    >>> [p.text for p in task.make_problems(3)] == [p.text for p in task.make_problems(3)]
    True
    >>> all(op in "+*" for p in task.make_problems(20) for op, _ in p.ops)
    True

    ```
    """

    n_terms: int = 4
    operators: str | Sequence[str] = SUPPORTED_OPERATORS
    max_operand: int = 9
    modulus: int | None = None
    max_value: int | None = 99
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "operators", _normalize_operators(self.operators))
        if self.n_terms < 2:
            raise ValueError(f"n_terms must be >= 2, got {self.n_terms}")
        if self.max_operand < 1:
            raise ValueError(f"max_operand must be >= 1, got {self.max_operand}")
        if self.modulus is not None and self.modulus < 2:
            raise ValueError(f"modulus must be >= 2, got {self.modulus}")
        if self.modulus is None and self.max_value is not None and self.max_value < self.max_operand:
            raise ValueError(f"max_value ({self.max_value}) must be >= max_operand ({self.max_operand})")

    def sample_problem(self, rng: RngLike = None) -> Problem:
        """Draw one problem. The start value is uniform in ``1..max_operand`` (``1..max_value`` with subtraction
        alone). The operator of each step is uniform among the allowed operators that have at least one operand
        keeping the total in range; the operand is uniform among those. Problems in which some step admits no
        answer-changing error (rare degenerate chains such as ``1-1*4*7 ...``, where the total sits at 0)
        are re-drawn, so that :func:`corrupt` works at every step of every generated problem.
        """
        rng = _as_rng(rng)
        operands = range(1, self.max_operand + 1)
        # Subtraction alone can only shrink the total: start higher so that the chain can go on.
        bounded_down = self.operators == "-" and self.modulus is None and self.max_value is not None
        start_max = self.max_value if bounded_down else self.max_operand
        for _ in range(10_000):
            start = rng.randint(1, start_max)
            total, ops = start, []
            for _ in range(self.n_terms - 1):
                valid = {
                    op: [
                        b
                        for b in operands
                        if _in_range(_apply(total, op, b, self.modulus), self.modulus, self.max_value)
                    ]
                    for op in self.operators
                }
                allowed = [op for op in self.operators if valid[op]]
                if not allowed:
                    break
                op = rng.choice(allowed)
                b = rng.choice(valid[op])
                ops.append((op, b))
                total = _apply(total, op, b, self.modulus)
            else:
                problem = Problem(
                    start, tuple(ops), self.modulus, self.max_value, self.operators, self.max_operand
                )
                if len(_corruption().corruptible_steps(problem)) == len(problem.ops):
                    return problem
        raise RuntimeError(f"could not draw a problem in range for {self}")

    def make_problems(self, n: int, seed: int | None = None, unique: bool = True) -> list[Problem]:
        """`n` problems drawn with ``random.Random(seed if given else self.seed)``; the same seed always
        gives the same list. With `unique`, no expression repeats (so slices of one list are disjoint splits).
        """
        rng = random.Random(self.seed if seed is None else seed)
        out: list[Problem] = []
        seen: set[str] = set()
        misses = 0
        while len(out) < n:
            problem = self.sample_problem(rng)
            if unique and problem.text in seen:
                misses += 1
                if misses > 100 * n + 1000:
                    raise ValueError(f"cannot draw {n} distinct problems for {self}")
                continue
            seen.add(problem.text)
            out.append(problem)
        return out

    def make_dataset(
        self,
        n: int,
        n_correct: int = 1,
        n_wrong: int = 1,
        seed: int | None = None,
        kinds: Sequence[str] = ERROR_KINDS,
    ) -> list[tuple[Problem, list[Solution]]]:
        """`n` problems, each with `n_correct` reference and `n_wrong` corrupted solutions (shuffled)."""
        seed = self.seed if seed is None else seed
        rng = random.Random(seed + 1_000_003)
        return [
            (p, _corruption().make_solutions(p, n_correct, n_wrong, rng, kinds=kinds))
            for p in self.make_problems(n, seed=seed)
        ]


def make_problems(n: int, seed: int = 0, **task_kwargs: Any) -> list[Problem]:
    """Shortcut for ``ArithmeticTask(seed=seed, **task_kwargs).make_problems(n)``.

    Example:

    ```python
    >>> [p.text for p in make_problems(2, seed=3, n_terms=3, operators="+")]
    ['4+6+2', '1+5+4']

    ```
    """
    return ArithmeticTask(seed=seed, **task_kwargs).make_problems(n)


def format_prompt(problem: Problem) -> str:
    """The prompt: ``"Compute left to right: 3+4*2-5\\n"`` (``"... left to right mod 100: ..."`` with a
    modulus). It ends with a newline so the completion starts on a fresh pre-token.

    Example:

    ```python
    >>> format_prompt(Problem(3, (("+", 4),)))
    'Compute left to right: 3+4\\n'

    ```
    """
    mod = f" mod {problem.modulus}" if problem.modulus is not None else ""
    return f"{PROMPT_PREFIX}{mod}: {problem.text}\n"


def format_step(a: int, op: str, b: int, c: int, final: bool = False) -> str:
    """One step, ``"7*2=14"``; the final step appends the answer: ``"14-5=9. The answer is \\boxed{9}."``.

    Example:

    ```python
    >>> format_step(14, "-", 5, 9, final=True)
    '14-5=9. The answer is \\\\boxed{9}.'

    ```
    """
    step = f"{a}{op}{b}={c}"
    return f"{step}. {ANSWER_TEMPLATE.format(c)}" if final else step


def _steps_from(problem: Problem, first: int, total: int, steps: list[str]) -> tuple[list[str], int]:
    """Append correct steps for operations ``first..`` starting from running total `total`."""
    last = len(problem.ops) - 1
    for i in range(first, len(problem.ops)):
        op, b = problem.ops[i]
        new = problem.apply(total, op, b)
        steps.append(format_step(total, op, b, new, final=i == last))
        total = new
    return steps, total


def reference_solution(problem: Problem) -> Solution:
    """The correct solution: one step per operation, each showing the running total, answer in the last step.

    Example:

    ```python
    >>> reference_solution(Problem(3, (("+", 4), ("*", 2), ("-", 5)))).steps
    ['3+4=7', '7*2=14', '14-5=9. The answer is \\\\boxed{9}.']

    ```
    """
    steps, final = _steps_from(problem, 0, problem.start, [])
    return Solution(steps, str(final), True, -1)


def tokenizer_corpus(
    task: ArithmeticTask | None = None, n: int = 2000, seed: int | None = None
) -> Iterator[str]:
    """Yield `n` texts ``prompt + solution`` (half correct, half with one injected error) to train the demo
    tokenizer on, e.g. ``build_tokenizer(vocab_size=400, corpus=tokenizer_corpus(task))``.

    Example:

    ```python
    >>> next(tokenizer_corpus(ArithmeticTask(n_terms=2, seed=0), n=1)).startswith("Compute left to right: ")
    True

    ```
    """
    task = task or ArithmeticTask()
    rng = random.Random((task.seed if seed is None else seed) + 7919)
    for i in range(n):
        problem = task.sample_problem(rng)
        solution = None
        if i % 2:
            steps = _corruption().corruptible_steps(problem)
            if steps:
                solution = _corruption().corrupt(problem, rng.choice(steps), rng)
        solution = solution or reference_solution(problem)
        yield format_prompt(problem) + solution.text


def dataset_stats(
    problems_with_solutions: Iterable[tuple[Problem, Sequence[Solution]]], tokenizer: Any = None
) -> dict[str, Any]:
    """Counts for reports: problems, solutions, fraction correct, first-error histogram, error kinds, and with a
    `tokenizer` the token length of prompt + completion (mean, max).
    """
    n_problems, sols, first, kinds, lengths = 0, 0, Counter(), Counter(), []
    correct = 0
    for problem, solutions in problems_with_solutions:
        n_problems += 1
        prompt = format_prompt(problem)
        for s in solutions:
            sols += 1
            correct += bool(s.is_correct)
            first[str(s.first_error)] += 1
            if s.error_kind:
                kinds[s.error_kind] += 1
            if tokenizer is not None:
                lengths.append(len(tokenizer(prompt + s.text)["input_ids"]))
    stats: dict[str, Any] = {
        "problems": n_problems,
        "solutions": sols,
        "fraction_correct": correct / sols if sols else 0.0,
        "first_error": dict(sorted(first.items())),
        "error_kinds": dict(sorted(kinds.items())),
    }
    if lengths:
        stats["tokens_mean"] = sum(lengths) / len(lengths)
        stats["tokens_max"] = max(lengths)
    return stats


_MOVED = ("corrupt", "corruptible_steps", "make_solutions")


def _corruption() -> Any:
    """:mod:`trl_implicit_prm.demo.corruption` (error injection), which imports this module."""
    from trl_implicit_prm.demo import corruption

    return corruption


def __getattr__(name: str) -> Any:
    """Error injection lives in :mod:`trl_implicit_prm.demo.corruption`; its names still import from here."""
    if name in _MOVED:
        return getattr(_corruption(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
