"""Math-Shepherd-style step labels by Monte-Carlo completion, and what they cost in generated tokens.

For a rollout with steps `s_1 … s_K` and each step `k < K`, `N` completions are sampled from the reference
policy after the prefix `s_1 … s_k` (Wang et al., 2024, "Math-Shepherd", https://huggingface.co/papers/2312.08935):

    soft label of step k = (number of completions reaching the correct final answer) / N
    hard label of step k = 1 if any completion reaches it, else 0

The last step needs no completion: its label is the rollout's own outcome. Every token the policy generates
for the labels is counted (`n_generated_tokens`); the rollouts' own tokens are counted where they are sampled.
This is the data-generation cost the paper compares (its Math-Shepherd reimplementation: 38.8× the FLOPs of the
CE implicit PRM).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trl_implicit_prm.demo.grading import grade
from trl_implicit_prm.demo.policy import generate_texts
from trl_implicit_prm.demo.task import STEP_SEPARATOR, Problem, Solution, format_prompt

__all__ = ["MCLabels", "mc_labels_from_outcomes", "mc_step_labels", "step_prefixes"]


@dataclass
class MCLabels:
    """Stepwise rows labelled by Monte-Carlo completion (`soft` and `hard`), and their cost."""

    soft: list[dict[str, Any]]
    hard: list[dict[str, Any]]
    n_completions: int
    n_generated_tokens: int

    def agreement(self, truth: Sequence[Sequence[bool]]) -> float:
        """Fraction of steps whose hard label equals the true step label (`truth`, one list per row)."""
        pairs = [
            (h, t)
            for row, labels in zip(self.hard, truth, strict=True)
            for h, t in zip(row["labels"], labels, strict=True)
        ]
        return sum(h == t for h, t in pairs) / max(1, len(pairs))

    def confusion(self, truth: Sequence[Sequence[bool]]) -> dict[str, int]:
        """Counts of (true label, hard MC label) over all steps, keys `"true=T,mc=M"` with T, M in {0, 1}."""
        counts = {f"true={t},mc={m}": 0 for t in (0, 1) for m in (0, 1)}
        for row, labels in zip(self.hard, truth, strict=True):
            for h, t in zip(row["labels"], labels, strict=True):
                counts[f"true={int(t)},mc={int(h)}"] += 1
        return counts


def step_prefixes(problem: Problem, solution: Solution) -> list[str]:
    """The texts the policy continues for steps `0 … K−2`: the prompt and the steps so far, joined by the
    separator; the policy writes the next separator itself (as it did when sampling the rollout, so no BPE
    boundary differs from what it was trained on).

    Example:

    ```python
    >>> from trl_implicit_prm.demo.task import Problem, reference_solution
    >>> p = Problem(3, (("+", 4), ("*", 2)))
    >>> step_prefixes(p, reference_solution(p)) == [p.prompt + reference_solution(p).steps[0]]
    True

    ```
    """
    steps = solution.steps
    return [format_prompt(problem) + STEP_SEPARATOR.join(steps[: k + 1]) for k in range(len(steps) - 1)]


def mc_labels_from_outcomes(
    solution: Solution, outcomes: Sequence[Sequence[bool]]
) -> tuple[list[float], list[bool]]:
    """(soft, hard) labels of a rollout's steps from the graded completions of each prefix (`outcomes[k]`, one
    list of N booleans per step but the last) and the rollout's own outcome for the last step.

    Example:

    ```python
    >>> s = Solution(["a", "b", "c"], "7", is_correct=False)
    >>> mc_labels_from_outcomes(s, [[True, False, True, True], [False, False, False, False]])
    ([0.75, 0.0, 0.0], [True, False, False])

    ```
    """
    if len(outcomes) != len(solution.steps) - 1:
        raise ValueError(
            f"expected outcomes for {len(solution.steps) - 1} step prefixes, got {len(outcomes)}"
        )
    soft = [sum(o) / len(o) for o in outcomes] + [float(solution.is_correct)]
    return soft, [x > 0 for x in soft]


def mc_step_labels(
    model: Any,
    tokenizer: Any,
    items: Sequence[tuple[Problem, Solution]],
    n: int,
    *,
    temperature: float = 1.0,
    seed: int = 0,
    progress: bool = True,
) -> MCLabels:
    """Label every step of each (problem, rollout) by `n` completions from `model` after each step prefix."""
    if n < 1:
        raise ValueError(f"n (completions per step) must be >= 1, got {n}")
    prefixes = [(i, text) for i, (p, s) in enumerate(items) for text in step_prefixes(p, s)]
    prompts = [text for _, text in prefixes for _ in range(n)]
    texts, counts = generate_texts(
        model,
        tokenizer,
        prompts,
        temperature=temperature,
        seed=seed,
        progress=progress,
        desc=f"MC labels: {n} completions per step prefix",
    )
    graded: list[list[list[bool]]] = [[] for _ in items]
    for j, (i, text) in enumerate(prefixes):
        problem = items[i][0]
        done = text[len(format_prompt(problem)) :]
        graded[i].append([grade(problem, done + t) for t in texts[j * n : (j + 1) * n]])
    soft_rows, hard_rows = [], []
    for (problem, solution), outcomes in zip(items, graded, strict=True):
        soft, hard = mc_labels_from_outcomes(solution, outcomes)
        row = {"prompt": format_prompt(problem), "completions": list(solution.steps)}
        soft_rows.append({**row, "labels": soft})
        hard_rows.append({**row, "labels": hard})
    return MCLabels(soft_rows, hard_rows, len(prompts), sum(counts))
