"""The demo's search stage: accuracy against generated tokens for PRM-guided search on held-out problems.

The reference policy writes the steps and the implicit PRM (CE) guides the search, scoring every prefix
incrementally. Strategies and their budgets (mean tokens the policy generated per problem, pruned candidates
included):

- best-of-N (min) and weighted majority voting, on the first N of 16 independent samples (N = 4, 8, 16);
- step-level beam search with beam width 4 (n = 4, 8, 16 beams), DVTS (n = 4, 8: 1 and 2 subtrees of 4);
- early rejection: 16 candidates, all but the best 1/8 or 1/4 (by their q-value) stopped after 6 tokens.

Writes `search.png` and returns `{"methods": {name: {"budget_tokens": [...], "accuracy": [...]}}, ...}` for
report.json, with a `comparison` of beam search and early rejection against best-of-16 (`best_of_n`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from trl_implicit_prm.demo.grading import grade
from trl_implicit_prm.demo.task import STEP_SEPARATOR, Problem
from trl_implicit_prm.evaluation.best_of_n import weighted_majority_vote
from trl_implicit_prm.evaluation.plots import _figure, _save
from trl_implicit_prm.search import IncrementalScorer, SearchConfig, TransformersStepGenerator, run_search
from trl_implicit_prm.search.driver import choose

__all__ = ["run_search_stage"]

SIZES = (4, 8, 16)
MAX_STEP_TOKENS = 32
MAX_STEPS = 6  # the demo's solutions have n_terms - 1 = 3 steps
BEAM_SIZES = (4, 8, 16)
DVTS_SIZES = (4, 8)
EARLY_KEEP = (0.125, 0.25)


def _accuracy(problems: Sequence[Problem], chosen: Sequence[Any]) -> float:
    return sum(grade(p, steps) for p, steps in zip(problems, chosen, strict=True)) / len(problems)


def _answer(steps: Sequence[str]) -> str | None:
    from trl_implicit_prm.demo.grading import boxed_answer

    return boxed_answer(STEP_SEPARATOR.join(steps))


def _best_of_n_points(problems: Sequence[Problem], results: Sequence[Any]) -> dict[str, dict[str, list]]:
    """Best-of-N (min) and weighted voting on the first N of the independent candidates of each problem (the
    budget: the tokens those N generated).
    """
    points: dict[str, dict[str, list]] = {
        "best-of-N (min)": {"budget_tokens": [], "accuracy": []},
        "weighted vote": {"budget_tokens": [], "accuracy": []},
    }
    for n in SIZES:
        firsts = [r.candidates[:n] for r in results]
        tokens = sum(c.tokens for cands in firsts for c in cands) / len(problems)
        chosen = [cands[choose(cands)].steps for cands in firsts]
        voted = [
            weighted_majority_vote([_answer(c.steps) for c in cands], [c.score for c in cands])
            for cands in firsts
        ]
        for name, acc in (
            ("best-of-N (min)", _accuracy(problems, chosen)),
            (
                "weighted vote",
                sum(v is not None and v == p.answer for v, p in zip(voted, problems, strict=True))
                / len(problems),
            ),
        ):
            points[name]["budget_tokens"].append(tokens)
            points[name]["accuracy"].append(acc)
    return points


def _curve(problems, generator, prm, configs: Sequence[SearchConfig]) -> dict[str, list]:
    curve: dict[str, list] = {"budget_tokens": [], "accuracy": []}
    for config in configs:
        results = run_search([p.prompt for p in problems], generator, IncrementalScorer(prm), config)
        curve["budget_tokens"].append(sum(r.generated_tokens for r in results) / len(problems))
        curve["accuracy"].append(_accuracy(problems, [r.best_candidate.steps for r in results]))
    return curve


def _comparison(methods: dict[str, dict[str, list]]) -> dict[str, Any]:
    """Does beam search or early rejection reach best-of-N's accuracy (the largest N) with fewer tokens?"""
    bon = methods["best-of-N (min)"]
    target, cost = bon["accuracy"][-1], bon["budget_tokens"][-1]
    out: dict[str, Any] = {"best_of_n": max(SIZES), "best_of_n_accuracy": target, "best_of_n_tokens": cost}
    for name in ("beam search", "early rejection"):
        curve = methods[name]
        reaching = [t for t, a in zip(curve["budget_tokens"], curve["accuracy"], strict=True) if a >= target]
        out[name] = {
            "best_accuracy": max(curve["accuracy"]),
            "fewest_tokens_reaching_best_of_n": min(reaching) if reaching else None,
            "reaches_with_fewer_tokens": bool(reaching) and min(reaching) < cost,
        }
    return out


def _plot(methods: dict[str, dict[str, list]], path: Path) -> None:
    figure = _figure()
    ax = figure.add_subplot()
    for name, curve in methods.items():
        ax.plot(curve["budget_tokens"], [100 * a for a in curve["accuracy"]], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("generated tokens per problem (compute budget)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("PRM-guided search, implicit PRM (CE)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(figure, path)


def run_search_stage(
    policy: Any,
    tokenizer: Any,
    prm: Any,
    problems: Sequence[Problem],
    out: Path,
    *,
    temperature: float = 1.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Run every strategy on `problems`; write `out / "search.png"`; the numbers for report.json."""
    generator = TransformersStepGenerator(
        policy,
        tokenizer,
        separator=STEP_SEPARATOR,
        max_step_tokens=MAX_STEP_TOKENS,
        temperature=temperature,
        batch_size=256,
    )
    torch.manual_seed(seed)
    prompts = [p.prompt for p in problems]
    bon = run_search(
        prompts,
        generator,
        IncrementalScorer(prm),
        SearchConfig(method="bon", n=max(SIZES), max_steps=MAX_STEPS),
    )
    methods = _best_of_n_points(problems, bon)
    methods["beam search"] = _curve(
        problems,
        generator,
        prm,
        [SearchConfig(method="beam", n=n, beam_width=4, max_steps=MAX_STEPS) for n in BEAM_SIZES],
    )
    methods["DVTS"] = _curve(
        problems,
        generator,
        prm,
        [SearchConfig(method="dvts", n=n, beam_width=4, max_steps=MAX_STEPS) for n in DVTS_SIZES],
    )
    methods["early rejection"] = _curve(
        problems,
        generator,
        prm,
        [
            SearchConfig(method="early", n=16, reject_after_tokens=6, keep_fraction=k, max_steps=MAX_STEPS)
            for k in EARLY_KEEP
        ],
    )
    _plot(methods, out / "search.png")
    return {
        "methods": methods,
        "n_problems": len(problems),
        "prm": "implicit PRM (CE)",
        "comparison": _comparison(methods),
    }
