"""The demo task's rows in the library's public dataset formats, and JSONL writers.

Users see here what real data must look like: rollouts (`prompt`, `completions`, `correctness`), unpaired
(`prompt`, `completion`, `label`), paired (`prompt`, `chosen`, `rejected`), stepwise (`prompt`, `completions` =
steps, `labels` = per-step bools) and ProcessBench records (`problem`, `steps`, `label` = first wrong step or -1).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trl_implicit_prm.data import converters
from trl_implicit_prm.data.jsonl import read_json_rows
from trl_implicit_prm.demo.grading import grade
from trl_implicit_prm.demo.task import Problem, Solution, format_prompt

__all__ = [
    "EXPORT_FILES",
    "export_all",
    "read_jsonl",
    "to_paired",
    "to_processbench",
    "to_rollouts",
    "to_stepwise",
    "to_unpaired",
    "write_jsonl",
]


def _completion(item: Solution | str) -> str:
    return item.text if isinstance(item, Solution) else item


def to_rollouts(problem: Problem, solutions: Sequence[Solution | str]) -> dict[str, Any]:
    """Rollouts row: ``prompt``, ``completions`` (strings), ``correctness`` (outcome labels from :func:`grade`).

    Example:

    ```python
    >>> from trl_implicit_prm.demo.task import ArithmeticTask, Problem, corrupt, reference_solution
    >>> p = Problem(3, (("+", 4),))
    >>> to_rollouts(p, [reference_solution(p), "3+4=8. The answer is \\\\boxed{8}."])["correctness"]
    [True, False]

    ```
    """
    completions = [_completion(s) for s in solutions]
    return {
        "prompt": format_prompt(problem),
        "completions": completions,
        "correctness": [grade(problem, c) for c in completions],
    }


def to_unpaired(problem: Problem, solutions: Sequence[Solution | str]) -> list[dict[str, Any]]:
    """Unpaired rows (for CE / KTO): ``prompt``, ``completion``, ``label`` (outcome, bool)."""
    prompt = format_prompt(problem)
    return [
        {"prompt": prompt, "completion": c, "label": grade(problem, c)} for c in map(_completion, solutions)
    ]


def to_paired(
    problem: Problem, solutions: Sequence[Solution | str], max_pairs: int | None = None, seed: int = 0
) -> list[dict[str, Any]]:
    """Paired rows (for DPO / NCA): ``prompt``, ``chosen`` (correct), ``rejected`` (wrong), over every pair of
    DISTINCT correct and wrong completions, in order. With `max_pairs`, at most that many of them, drawn without
    replacement under `seed` (order kept). Outcome labels from :func:`grade`.
    """
    prompt = format_prompt(problem)
    texts = list(dict.fromkeys(map(_completion, solutions)))
    good = [t for t in texts if grade(problem, t)]
    bad = [t for t in texts if not grade(problem, t)]
    pairs = list(itertools.product(good, bad))
    if max_pairs is not None and len(pairs) > max_pairs:
        pairs = [pairs[i] for i in sorted(random.Random(seed).sample(range(len(pairs)), max_pairs))]
    return [{"prompt": prompt, "chosen": c, "rejected": r} for c, r in pairs]


def _step_labels(solution: Solution) -> list[bool]:
    k = solution.first_error
    if k is None or k == -1:
        return [True] * len(solution.steps)
    return [i < k for i in range(len(solution.steps))]


def to_stepwise(problem: Problem, solution: Solution, until_first_error: bool = False) -> dict[str, Any]:
    """Stepwise row (for StepKTO): ``prompt``, ``completions`` (step strings), ``labels`` (True before the
    first error, False from it on; all True for a correct solution), ``partial``. `until_first_error=True` ends
    the row at its first wrong step (the ProcessBench / PRM800K convention: a later step is not itself the
    error) and marks a row so cut ``partial``: its last step is trained on the tokens it is scored on inside the
    whole solution (followed by the separator, no EOS).

    Example:

    ```python
    >>> from trl_implicit_prm.demo.task import ArithmeticTask, Problem, corrupt, reference_solution
    >>> p = Problem(3, (("+", 4), ("*", 2), ("-", 5)))
    >>> to_stepwise(p, corrupt(p, step=1, rng=0))["labels"]
    [True, False, False]

    >>> row = to_stepwise(p, corrupt(p, step=1, rng=0), until_first_error=True)
    >>> row["labels"], row["partial"]
    ([True, False], True)

    ```
    """
    labels = _step_labels(solution)
    keep = labels.index(False) + 1 if until_first_error and False in labels else len(labels)
    return {
        "prompt": format_prompt(problem),
        "completions": list(solution.steps[:keep]),
        "labels": labels[:keep],
        "partial": keep < len(labels),
    }


def to_processbench(problem: Problem, solution: Solution) -> dict[str, Any]:
    """ProcessBench record: ``problem`` (the prompt string, as the PRM sees it), ``steps``, ``label`` (earliest
    wrong step, -1 if none). Raises ValueError for an incomplete solution (``first_error is None``).
    """
    if solution.first_error is None:
        raise ValueError("an incomplete solution (first_error=None) has no ProcessBench label")
    return {"problem": format_prompt(problem), "steps": list(solution.steps), "label": solution.first_error}


def write_jsonl(rows: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write `rows` as JSON lines (UTF-8, non-ASCII kept), creating parent directories; returns the path
    (:func:`trl_implicit_prm.data.converters.write_jsonl`, with the demo's argument order).
    """
    return converters.write_jsonl(path, list(rows))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file written by :func:`write_jsonl` (the package's strict reader, first bad line named)."""
    read = read_json_rows(path)
    if read.bad:
        raise ValueError(f"{path}:{read.bad[0].number}: {read.bad[0].reason}")
    return [row for _, row in read.rows]


EXPORT_FILES = {
    "rollouts": "rollouts.jsonl",
    "unpaired": "unpaired.jsonl",
    "paired": "paired.jsonl",
    "stepwise": "stepwise.jsonl",
    "processbench": "processbench.jsonl",
}


def export_all(
    out_dir: str | Path, problems_with_solutions: Iterable[tuple[Problem, Sequence[Solution]]]
) -> dict[str, Path]:
    """Write one JSONL file per public format under `out_dir` (names in ``EXPORT_FILES``): rollouts (one row
    per problem), unpaired and stepwise (one row per solution), paired (distinct correct x wrong), processbench
    (one record per solution with a label). Returns ``{format: path}``.

    Example:

    ```python
    >>> from trl_implicit_prm.demo.task import ArithmeticTask, Problem, corrupt, reference_solution
    >>> import tempfile
    >>> data = ArithmeticTask(seed=0).make_dataset(3, n_correct=1, n_wrong=2)
    >>> paths = export_all(tempfile.mkdtemp(), data)
    >>> sorted(paths), len(read_jsonl(paths["processbench"]))
    (['paired', 'processbench', 'rollouts', 'stepwise', 'unpaired'], 9)

    ```
    """
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in EXPORT_FILES}
    for problem, solutions in problems_with_solutions:
        rows["rollouts"].append(to_rollouts(problem, solutions))
        rows["unpaired"] += to_unpaired(problem, solutions)
        rows["paired"] += to_paired(problem, solutions)
        rows["stepwise"] += [to_stepwise(problem, s) for s in solutions]
        rows["processbench"] += [to_processbench(problem, s) for s in solutions if s.first_error is not None]
    out_dir = Path(out_dir)
    return {name: write_jsonl(rows[name], out_dir / fname) for name, fname in EXPORT_FILES.items()}
