"""The demo's step-supervised baselines: step-level CE on the true labels, and explicit PRMs trained on
Math-Shepherd-style Monte-Carlo labels and on the true labels; with the generated-token cost of each PRM's data.

Cost accounting (generated tokens, counted where they are sampled, EOS included):

- an implicit PRM trained on outcome labels needs the rollouts only;
- a PRM trained on true step labels needs the rollouts it trains on (the first `step_samples_per_problem` of
  each problem; for the explicit one, the MC PRM's rollouts and those of the new problems that bring it to
  `explicit_true_problems`), plus labels no real setting has (an oracle);
- the explicit PRM on MC labels needs its rollouts (the first `explicit_samples_per_problem` of each of the
  first `mc_problems` problems) plus `N` completions from every step prefix but the last (:mod:`.mc_labels`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from trl_implicit_prm.demo.formats import to_stepwise
from trl_implicit_prm.demo.mc_labels import mc_step_labels
from trl_implicit_prm.demo.task import Problem, Solution

__all__ = ["LABELS", "NAMES", "data_costs", "oracle_problem_counts", "train_baselines"]

# Report names and the labels each PRM was trained on, by the pipeline's key.
NAMES = {
    "ce": "implicit PRM (CE)",
    "dpo": "implicit PRM (DPO)",
    "step_kto": "step-supervised (StepKTO)",
    "step_ce": "step-supervised (step CE)",
    "explicit_mc": "explicit PRM (MC labels)",
    "explicit_true": "explicit PRM (true labels)",
}
LABELS = {
    "reference (no training)": "none",
    NAMES["ce"]: "outcome",
    NAMES["dpo"]: "outcome",
    NAMES["step_kto"]: "true steps (oracle)",
    NAMES["step_ce"]: "true steps (oracle)",
    NAMES["explicit_mc"]: "MC steps",
    NAMES["explicit_true"]: "true steps (oracle)",
}


def oracle_problem_counts(cfg: Any, n_train: int) -> tuple[int, int]:
    """How many problems the explicit PRM on true labels shares with the MC PRM (its first ones, of `n_train`
    training problems) and how many new ones bring it to `cfg.explicit_true_problems` (none without
    `cfg.train_explicit`).

    Example:

    ```python
    >>> from types import SimpleNamespace
    >>> cfg = SimpleNamespace(train_explicit=True, mc_problems=1000, explicit_true_problems=4000)
    >>> oracle_problem_counts(cfg, 1000), oracle_problem_counts(cfg, 600)
    ((1000, 3000), (600, 3400))

    ```
    """
    if not cfg.train_explicit:
        return 0, 0
    shared = min(cfg.explicit_true_problems, cfg.mc_problems, n_train)
    return shared, cfg.explicit_true_problems - shared


def _mc_items(
    train_pairs: Sequence[tuple[Problem, Sequence[Solution]]], n_problems: int
) -> list[tuple[Problem, Solution]]:
    """The rollouts the MC labels are made for: those of the first `n_problems` training problems (of the
    explicit PRMs' rollouts, `train_pairs`) that have a true step label too (so the explicit PRM on true
    labels trains on the very same rollouts).
    """
    return [(p, s) for p, sols in train_pairs[:n_problems] for s in sols if s.first_error is not None]


def train_baselines(
    cfg: Any,
    ref_dir: Path,
    policy: Any,
    tokenizer: Any,
    train_pairs: Sequence[tuple[Problem, Sequence[Solution]]],
    stepwise: list[dict[str, Any]],
    run_stage: Callable[[str, Callable[[], Any]], Any],
    train_prm: Callable[[str, Path, list[dict], Path, Any], Path],
    out: Path,
    oracle_problems: Sequence[Problem] = (),
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Train the enabled baselines (`cfg.train_step_ce`; `cfg.train_explicit`, on the rollouts of `train_pairs`,
    the oracle also on new rollouts of `oracle_problems`); returns their checkpoint directories by key and the
    report's facts about the MC labels (`mc`) and the oracle's data (`explicit_true`).
    """
    dirs: dict[str, Path] = {}
    info: dict[str, Any] = {}
    if cfg.train_step_ce:
        dirs["step_ce"] = run_stage(
            "4b step-supervised PRM, step CE (true step labels)",
            lambda: train_prm("step_ce", ref_dir, stepwise, out / "models" / "step_ce", cfg),
        )
    if not cfg.train_explicit:
        return dirs, info
    items = _mc_items(train_pairs, cfg.mc_problems)
    mc = run_stage(
        f"4c MC step labels ({cfg.mc_samples} completions per step prefix)",
        lambda: mc_step_labels(
            policy, tokenizer, items, cfg.mc_samples, temperature=cfg.temperature, seed=cfg.seed + 2,
            progress=cfg.progress,
        ),
    )  # fmt: skip
    truth = [to_stepwise(p, s) for p, s in items]
    mc_rows = mc.hard if cfg.mc_label == "hard" else mc.soft
    explicit_cfg = replace(cfg, learning_rate=cfg.explicit_learning_rate, prm_epochs=cfg.explicit_epochs)
    dirs["explicit_mc"] = run_stage(
        f"4d explicit PRM ({cfg.mc_label} MC labels)",
        lambda: train_prm("explicit", ref_dir, mc_rows, out / "models" / "explicit_mc", explicit_cfg),
    )
    n_oracle = sum(oracle_problem_counts(cfg, len(train_pairs)))
    dirs["explicit_true"], info["explicit_true"] = run_stage(
        f"4e explicit PRM (true step labels, {n_oracle} problems)",
        lambda: _train_oracle(
            cfg, (policy, tokenizer), train_pairs, oracle_problems, train_prm, (ref_dir, out), explicit_cfg
        ),
    )
    info["mc"] = _mc_facts(cfg, train_pairs, items, mc, [row["labels"] for row in truth])
    return dirs, info


def _mc_facts(
    cfg: Any, train_pairs: Sequence, items: Sequence, mc: Any, truth: list[list[bool]]
) -> dict[str, Any]:
    """The report's facts about the MC labels; `problems` is replaced by `rollout_tokens` in `data_costs`."""
    return {
        "problems": [p for p, _ in train_pairs[: cfg.mc_problems]],
        "n_rollouts": len(items),
        "n_problems": min(cfg.mc_problems, len(train_pairs)),
        "completions_per_step": cfg.mc_samples,
        "label": cfg.mc_label,
        "n_completions": mc.n_completions,
        "n_generated_tokens": mc.n_generated_tokens,
        "hard_label_agreement_with_truth": mc.agreement(truth),
        "hard_label_confusion": mc.confusion(truth),
        "rollout_tokens": None,  # filled by data_costs, from these problems
    }


def _train_oracle(
    cfg: Any,
    model: tuple[Any, Any],
    train_pairs: Sequence[tuple[Problem, Sequence[Solution]]],
    new_problems: Sequence[Problem],
    train_prm: Callable[[str, Path, list[dict], Path, Any], Path],
    dirs: tuple[Path, Path],
    explicit_cfg: Any,
) -> tuple[Path, dict[str, Any]]:
    """The explicit PRM on true labels: the MC PRM's rollouts (of its first `explicit_true_problems` problems
    when fewer), then `explicit_samples_per_problem` new rollouts of each of `new_problems`, every generated
    token counted. Returns its checkpoint and the report's facts about its data.
    """
    from trl_implicit_prm.demo.policy import sample_solutions
    from trl_implicit_prm.demo.rows import first_rollouts

    policy, tokenizer = model
    new_tokens: list[int] = []
    new_rollouts = sample_solutions(
        policy, tokenizer, list(new_problems), cfg.explicit_samples_per_problem, temperature=cfg.temperature,
        seed=cfg.seed + 3, progress=cfg.progress, token_counts=new_tokens,
    ) if new_problems else []  # fmt: skip
    shared = train_pairs[: oracle_problem_counts(cfg, len(train_pairs))[0]]
    pairs = [*shared, *first_rollouts(list(new_problems), new_rollouts)]
    rows = [to_stepwise(p, s) for p, s in _mc_items(pairs, len(pairs))]
    ref_dir, out = dirs
    path = train_prm("explicit", ref_dir, rows, out / "models" / "explicit_true", explicit_cfg)
    return path, {
        "problems": [p for p, _ in shared],
        "n_problems": len(pairs),
        "n_new_problems": len(new_problems),
        "n_rows": len(rows),
        "new_rollout_tokens": sum(new_tokens),
    }


def data_costs(
    keys: Sequence[str],
    problems: Sequence[Problem],
    rollout_tokens: Sequence[int],
    info: dict[str, Any],
    step_samples: int | None = None,
    explicit_samples: int | None = None,
) -> dict[str, int]:
    """Generated tokens needed to make each PRM's training data, by report name (see the module docstring).

    `rollout_tokens` holds the tokens of every training rollout, problem-major over `problems` (as sampled,
    unusable samples included: they were paid for). The PRMs on outcome labels pay for every rollout; the
    step-supervised ones for the first `step_samples` rollouts of each problem (all when None), the ones they
    train on; the MC PRM for the first `explicit_samples` of each of its problems plus its completions, the
    explicit PRM on true labels for the first `explicit_samples` of each of its training problems plus its new
    rollouts; the untrained reference for nothing. `info["mc"]["problems"]` and
    `info["explicit_true"]["problems"]` are consumed (replaced by the token counts).
    """
    per = len(rollout_tokens) // max(1, len(problems))

    def first(n: int | None) -> list[int]:  # tokens of the first n rollouts of each problem
        used = per if n is None else min(per, n)
        return [sum(rollout_tokens[i * per : i * per + used]) for i in range(len(problems))]

    step_cost, all_cost = sum(first(step_samples)), sum(rollout_tokens)
    costs = {"reference (no training)": 0}
    for key in keys:
        costs[NAMES[key]] = step_cost if key in ("step_kto", "step_ce") else all_cost
    per_problem = first(explicit_samples)

    def of(used: Sequence[Problem]) -> int:  # tokens of the first `explicit_samples` rollouts of these
        ids = {id(p) for p in used}
        return sum(t for p, t in zip(problems, per_problem, strict=True) if id(p) in ids)

    if "explicit_mc" in keys:
        info["mc"]["rollout_tokens"] = of(info["mc"].pop("problems"))
        costs[NAMES["explicit_mc"]] = info["mc"]["rollout_tokens"] + info["mc"]["n_generated_tokens"]
    if "explicit_true" in keys:
        oracle = info["explicit_true"]
        oracle["rollout_tokens"] = of(oracle.pop("problems"))
        costs[NAMES["explicit_true"]] = oracle["rollout_tokens"] + oracle["new_rollout_tokens"]
    return costs
