"""The demo's step-supervised baselines: step-level CE on the true labels, and explicit PRMs trained on
Math-Shepherd-style Monte-Carlo labels and on the true labels; with the generated-token cost of each PRM's data.

Cost accounting (generated tokens, counted where they are sampled, EOS included):

- an implicit PRM trained on outcome labels needs the rollouts only;
- a PRM trained on true step labels needs the rollouts it trains on (the first `step_samples_per_problem` of
  each problem), plus labels no real setting has (an oracle);
- the explicit PRMs train on the first `explicit_samples_per_problem` rollouts of each of their problems: the
  first training problems, then new problems with rollouts of their own when `mc_problems` or
  `explicit_true_problems` asks for more (:func:`explicit_problem_counts`); they pay for those rollouts, new
  ones included, and the one on MC labels also for `N` completions from every step prefix but the last
  (:mod:`.mc_labels`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from trl_implicit_prm.demo.formats import to_stepwise
from trl_implicit_prm.demo.mc_labels import mc_step_labels
from trl_implicit_prm.demo.task import Problem, Solution

__all__ = ["LABELS", "NAMES", "data_costs", "explicit_problem_counts", "train_baselines"]

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


def explicit_problem_counts(cfg: Any, n_train: int) -> tuple[int, int]:
    """The explicit PRMs' problems: how many training problems come first (the first `cfg.mc_problems` of the
    `n_train`) and how many new ones follow, with rollouts of their own, so that the MC PRM gets `mc_problems`
    and the oracle `explicit_true_problems` (each trains on the first ones of that list; none without
    `cfg.train_explicit`).

    Example:

    ```python
    >>> from types import SimpleNamespace
    >>> cfg = SimpleNamespace(train_explicit=True, mc_problems=1000, explicit_true_problems=4000)
    >>> explicit_problem_counts(cfg, 1000), explicit_problem_counts(cfg, 600)
    ((1000, 3000), (600, 3400))
    >>> cfg.mc_problems = 4000  # the MC PRM on new problems too
    >>> explicit_problem_counts(cfg, 1000)
    (1000, 3000)

    ```
    """
    if not cfg.train_explicit:
        return 0, 0
    shared = min(cfg.mc_problems, n_train)
    return shared, max(cfg.mc_problems, cfg.explicit_true_problems) - shared


def _mc_items(pairs: Sequence[tuple[Problem, Sequence[Solution]]]) -> list[tuple[Problem, Solution]]:
    """The rollouts of `pairs` that have a true step label too (they give an answer or make an error), so that
    the explicit PRM on true labels can train on the very same rollouts as the MC one.
    """
    return [(p, s) for p, sols in pairs for s in sols if s.first_error is not None]


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
    new_problems: Sequence[Problem] = (),
    sft_problems: Sequence[Problem] = (),
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Train the enabled baselines (`cfg.train_step_ce`; `cfg.train_explicit`: the explicit PRMs, on the rollouts
    of `train_pairs` and on new rollouts of `new_problems`, see :func:`explicit_problem_counts`; a trained MC
    completer learns from `sft_problems`); returns their checkpoint directories by key and the report's facts
    about their data (`mc`, `explicit_true`).
    """
    if cfg.train_explicit and cfg.mc_completer != "policy" and not sft_problems:  # before any stage runs
        raise ValueError(
            f"mc_completer={cfg.mc_completer!r} needs the SFT problems to fine-tune the completer on"
        )
    dirs: dict[str, Path] = {}
    if cfg.train_step_ce:
        dirs["step_ce"] = run_stage(
            "4b step-supervised PRM, step CE (true step labels)",
            lambda: train_prm("step_ce", ref_dir, stepwise, out / "models" / "step_ce", cfg),
        )
    if not cfg.train_explicit:
        return dirs, {}
    new_pairs, new_tokens = run_stage(
        f"4c rollouts of {len(new_problems)} new problems for the explicit PRMs",
        lambda: _new_rollouts(cfg, policy, tokenizer, new_problems),
    ) if new_problems else ([], {})  # fmt: skip
    shared = explicit_problem_counts(cfg, len(train_pairs))[0]
    pairs = [*train_pairs[:shared], *new_pairs]
    mc_pairs, oracle_pairs = pairs[: cfg.mc_problems], pairs[: cfg.explicit_true_problems]
    items = _mc_items(mc_pairs)
    completer_data = (sft_problems, [p for p, _ in train_pairs[:100]], out)
    mc, completer_facts = _mc_stage(cfg, run_stage, (policy, tokenizer), items, len(mc_pairs), completer_data)
    explicit_cfg = replace(cfg, learning_rate=cfg.explicit_learning_rate, prm_epochs=cfg.explicit_epochs)
    dirs["explicit_mc"] = run_stage(
        f"4f explicit PRM ({cfg.mc_label} MC labels)",
        lambda: train_prm("explicit", ref_dir, {"hard": mc.hard, "soft": mc.soft}[cfg.mc_label],
                          out / "models" / "explicit_mc", explicit_cfg),
    )  # fmt: skip
    oracle_rows = [to_stepwise(p, s) for p, s in _mc_items(oracle_pairs)]
    dirs["explicit_true"] = run_stage(
        f"4g explicit PRM (true step labels, {len(oracle_pairs)} problems)",
        lambda: train_prm("explicit", ref_dir, oracle_rows, out / "models" / "explicit_true", explicit_cfg),
    )
    return dirs, {
        "mc": {
            **_data_facts(mc_pairs, new_tokens),
            **_mc_facts(cfg, items, mc),
            "completer": completer_facts,
        },
        "explicit_true": {**_data_facts(oracle_pairs, new_tokens), "n_rows": len(oracle_rows)},
    }


def _mc_stage(
    cfg: Any,
    run_stage: Callable[[str, Callable[[], Any]], Any],
    model: tuple[Any, Any],
    items: Sequence[tuple[Problem, Solution]],
    n_problems: int,
    completer_data: tuple[Sequence[Problem], Sequence[Problem], Path],
) -> tuple[Any, dict[str, Any]]:
    """Stages 4d-4e: the completer (the policy, or one trained on `completer_data`, see `_trained_completer`) and
    the MC labels of `items` (of `n_problems` problems); returns the labels and the completer's facts.
    """
    policy, tokenizer = model
    rows = "correct solutions" + (", continuations after errors" if cfg.mc_completer == "faithful" else "")
    completer, facts = (policy, {"kind": "policy"}) if cfg.mc_completer == "policy" else run_stage(
        f"4d MC completer (fine-tune on {rows}, {cfg.mc_completer_epochs} epochs)",
        lambda: _trained_completer(cfg, tokenizer, *completer_data),
    )  # fmt: skip
    mc = run_stage(
        f"4e MC step labels ({cfg.mc_samples} completions per step prefix, {n_problems} problems)",
        lambda: mc_step_labels(
            completer, tokenizer, items, cfg.mc_samples, temperature=cfg.temperature, seed=cfg.seed + 2,
            progress=cfg.progress,
        ),
    )  # fmt: skip
    return mc, facts


def _new_rollouts(
    cfg: Any, policy: Any, tokenizer: Any, problems: Sequence[Problem]
) -> tuple[list[tuple[Problem, list[Solution]]], dict[int, int]]:
    """`explicit_samples_per_problem` rollouts of each new problem from the reference policy (seed + 3): the
    usable ones by problem (none for a problem without any: it stays in the list, its tokens were paid for),
    and the tokens generated for each problem, by `id`.
    """
    from trl_implicit_prm.demo.policy import sample_solutions
    from trl_implicit_prm.demo.rows import usable

    n, counts = cfg.explicit_samples_per_problem, []
    rollouts = sample_solutions(
        policy, tokenizer, list(problems), n, temperature=cfg.temperature, seed=cfg.seed + 3,
        progress=cfg.progress, token_counts=counts,
    )  # fmt: skip
    pairs = [(p, [s for s in sols if usable(s)]) for p, sols in zip(problems, rollouts, strict=True)]
    return pairs, {id(p): sum(counts[i * n : (i + 1) * n]) for i, p in enumerate(problems)}


def _trained_completer(
    cfg: Any, tok: Any, sft_problems: Sequence[Problem], eval_problems: Sequence[Problem], out: Path
) -> tuple[Any, dict[str, Any]]:
    """Math-Shepherd's completer: a model of the reference's size, initialisation and tokenizer (`tok`), fine-tuned
    on the SFT problems' correct solutions for `cfg.mc_completer_epochs` epochs with no early stop (the
    reference's own SFT run, carried on past the point where it stopped), and with `cfg.mc_completer ==
    "faithful"` also on one continuation after an injected error per problem (`policy.continuation_rows`); saved
    to `out/models/completer`. Returns it and its facts for the report (greedy accuracy on `eval_problems`,
    training problems it never saw).
    """
    from trl_implicit_prm.demo.policy import finetune_on_solutions, greedy_accuracy, new_policy

    model = new_policy(cfg, tok)
    faithful = cfg.mc_completer == "faithful"
    finetune_on_solutions(
        model, tok, sft_problems, epochs=cfg.mc_completer_epochs, seed=cfg.seed, progress=cfg.progress,
        continue_after_errors=faithful, desc="fine-tuning the MC completer",
    )  # fmt: skip
    model.eval()
    model.save_pretrained(out / "models" / "completer")
    tok.save_pretrained(out / "models" / "completer")
    accuracy = greedy_accuracy(model, tok, eval_problems)
    return model, {"kind": cfg.mc_completer, "epochs": cfg.mc_completer_epochs, "greedy_accuracy": accuracy}


def _data_facts(
    pairs: Sequence[tuple[Problem, Sequence[Solution]]], new_tokens: dict[int, int]
) -> dict[str, Any]:
    """The report's facts about an explicit PRM's problems; `problems` (the training problems among them) is
    replaced by their `rollout_tokens` in `data_costs`.
    """
    new = [new_tokens[id(p)] for p, _ in pairs if id(p) in new_tokens]
    return {
        "problems": [p for p, _ in pairs if id(p) not in new_tokens],
        "n_problems": len(pairs),
        "n_new_problems": len(new),
        "new_rollout_tokens": sum(new),
    }


def _mc_facts(cfg: Any, items: Sequence[tuple[Problem, Solution]], mc: Any) -> dict[str, Any]:
    """The report's facts about the MC labels of `items`, and how they compare with the true labels."""
    truth = [to_stepwise(p, s)["labels"] for p, s in items]
    return {
        "n_rollouts": len(items),
        "completions_per_step": cfg.mc_samples,
        "label": cfg.mc_label,
        "n_completions": mc.n_completions,
        "n_generated_tokens": mc.n_generated_tokens,
        "hard_label_agreement_with_truth": mc.agreement(truth),
        "hard_label_confusion": mc.confusion(truth),
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
    train on; each explicit PRM for the first `explicit_samples` of each of its training problems plus the
    rollouts of its new problems (`new_rollout_tokens`), and the MC PRM also for its completions; the untrained
    reference for nothing. `info["mc"]["problems"]` and `info["explicit_true"]["problems"]` are consumed
    (replaced by `rollout_tokens`: all its rollouts' tokens).
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

    for key, facts in (("explicit_mc", "mc"), ("explicit_true", "explicit_true")):
        if key in keys:  # the rollouts of its training problems and of its new ones
            info[facts]["rollout_tokens"] = (
                of(info[facts].pop("problems")) + info[facts]["new_rollout_tokens"]
            )
            costs[NAMES[key]] = info[facts]["rollout_tokens"] + info[facts].get("n_generated_tokens", 0)
    return costs
