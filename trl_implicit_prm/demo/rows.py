"""The demo's rows: training rows from graded rollouts (in the library's formats), and the held-out step-error
records (the policy's own solutions, and injected errors).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trl_implicit_prm.demo.corruption import corrupt
from trl_implicit_prm.demo.formats import export_all, to_paired, to_stepwise, to_unpaired
from trl_implicit_prm.demo.task import Problem, Solution, reference_solution

if TYPE_CHECKING:
    from trl_implicit_prm.demo.pipeline import DemoConfig

__all__ = [
    "evaluation_sets",
    "first_rollouts",
    "injected_records",
    "sampled_records",
    "training_rows",
    "usable",
]


def injected_records(problems: list[Problem], rng: random.Random) -> list[tuple[Problem, Solution]]:
    """Half correct reference solutions, half with one error injected at a uniformly drawn step."""
    out = []
    for i, p in enumerate(problems):
        if i % 2 == 0:
            out.append((p, reference_solution(p)))
        else:
            out.append((p, corrupt(p, step=rng.randrange(p.n_terms - 1), rng=rng)))
    return out


def sampled_records(problems: list[Problem], samples: list[list[Solution]]) -> list[tuple[Problem, Solution]]:
    """Per problem, its first fully correct sample and its first sample with a wrong step, when it has them."""
    out = []
    for p, sols in zip(problems, samples, strict=True):
        right = next((s for s in sols if s.first_error == -1 and s.steps), None)
        wrong = next(
            (s for s in sols if s.first_error is not None and s.first_error >= 0 and usable(s)), None
        )
        out.extend((p, s) for s in (right, wrong) if s is not None)
    return out


def evaluation_sets(
    val_set: list[Problem], test_set: list[Problem], held_out: list[list[Solution]], rng: random.Random
) -> tuple[dict[str, Any], list[list[Solution]]]:
    """The step-error sets (the policy's own solutions, and injected errors; validation and test), and the
    best-of-N candidates (the rest of the held-out samples).
    """
    n_val, n_test = len(val_set), len(test_set)
    val_samples, test_samples = held_out[:n_val], held_out[n_val : n_val + n_test]
    eval_sets = {
        "sampled": (sampled_records(val_set, val_samples), sampled_records(test_set, test_samples)),
        "injected": (injected_records(val_set, rng), injected_records(test_set, rng)),
    }
    return eval_sets, held_out[n_val + n_test :]


def usable(solution: Solution) -> bool:
    """A sample with text in every step (an empty step cannot be scored or labelled)."""
    return bool(solution.steps) and all(step.strip() for step in solution.steps)


def first_rollouts(
    problems: list[Problem], rollouts: list[list[Solution]], n: int | None = None
) -> list[tuple[Problem, list[Solution]]]:
    """The usable ones among the first `n` rollouts (all when None) of each problem, for the problems that have
    any.
    """
    pairs = [(p, [s for s in sols[:n] if usable(s)]) for p, sols in zip(problems, rollouts, strict=True)]
    return [(p, sols) for p, sols in pairs if sols]


def training_rows(
    train_set: list[Problem], rollouts: list[list[Solution]], out: Path, cfg: DemoConfig
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Stage 2's output: rollout statistics, the data files and the training rows.

    Unpaired rows take every usable rollout; paired rows at most `cfg.max_pairs_per_problem` distinct pairs per
    problem; stepwise rows (step CE) and StepKTO rows (which end at their first wrong step: a later step is not
    the error) the first `cfg.step_samples_per_problem` rollouts of each problem.
    """
    all_pairs = first_rollouts(train_set, rollouts)
    flat = [s for _, sols in all_pairs for s in sols]
    n_sampled = sum(len(s) for s in rollouts)
    n_dropped = n_sampled - len(flat)
    if cfg.progress and n_dropped:
        print(f"[demo] dropped {n_dropped} of {n_sampled} samples with an empty step or no text", flush=True)
    stats = {
        "n_sampled": n_sampled,
        "n_dropped_empty": n_dropped,
        "n_used": len(flat),
        "fraction_correct": sum(s.is_correct for s in flat) / max(1, len(flat)),
        "first_error_histogram": {
            str(k): sum(1 for s in flat if s.first_error == k)
            for k in sorted({s.first_error for s in flat}, key=lambda x: (x is None, x))
        },
    }
    export_all(out / "data", all_pairs)
    step_pairs = first_rollouts(train_set, rollouts, cfg.step_samples_per_problem)
    labelled = [(p, s) for p, sols in step_pairs for s in sols if s.first_error is not None]
    rows = {
        "unpaired": [row for p, sols in all_pairs for row in to_unpaired(p, sols)],
        "paired": [
            row
            for i, (p, sols) in enumerate(all_pairs)
            for row in to_paired(p, sols, cfg.max_pairs_per_problem, seed=cfg.seed * 100_003 + i)
        ],
        "stepwise": [to_stepwise(p, s) for p, s in labelled],
        "step_kto": [to_stepwise(p, s, True) for p, s in labelled],
    }
    return stats, rows
