"""The embedded demo: the paper's claim in miniature, on a CPU, with no download.

A PRM trained with response-level labels only finds the first wrong step. Stages (each a public-API call):

1. a tiny tokenizer and Llama-style model are built locally and fine-tuned on correct solutions: the reference
   policy (an instruct model in the paper);
2. N solutions per training problem are sampled from it and graded by their final answer: outcome labels only;
3. implicit PRMs are trained from those labels: `CETrainer` (unpaired) and `ImplicitPRMTrainer` (DPO, paired);
4. baselines: the reference alone (reference-free scoring, paper §5.5.2); PRMs trained on the true step labels
   (`StepKTOTrainer` with step-level KTO and with step-level CE), an oracle no real setting has; and explicit
   PRMs (`ExplicitPRMTrainer`) on Math-Shepherd-style Monte-Carlo step labels (:mod:`.mc_labels`) and on the
   true labels of the same rollouts (:mod:`.baselines`), with every generated token of each PRM's data counted;
5. held-out evaluation: step-error F1 in the ProcessBench protocol (threshold tuned on a validation split) and
   best-of-N accuracy of min-score selection, majority voting and weighted voting, against pass@1.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset

from trl_implicit_prm.demo import rows as demo_rows
from trl_implicit_prm.demo.baselines import NAMES, data_costs, explicit_problem_counts, train_baselines
from trl_implicit_prm.demo.formats import to_processbench
from trl_implicit_prm.demo.policy import finetune_on_solutions, new_policy, sample_solutions
from trl_implicit_prm.demo.task import (
    STEP_SEPARATOR,
    ArithmeticTask,
    Problem,
    Solution,
    tokenizer_corpus,
)

__all__ = ["DemoConfig", "run_demo"]


@dataclass
class DemoConfig:
    """Sizes and settings of the demo; the defaults fit the 6-minute budget on 2 CPU cores."""

    output_dir: str = "demo_output"
    seed: int = 0
    n_terms: int = 4
    operators: str = "+-*"
    max_value: int = 20
    # reference policy
    n_sft_problems: int = 2000
    sft_epochs: int = 20
    sft_stop_accuracy: float = 0.5
    n_sft_eval_problems: int = 100
    hidden_size: int = 96
    num_layers: int = 3
    vocab_size: int = 400
    # outcome-labelled rollouts
    n_train_problems: int = 1000
    # 16 rollouts per problem for the PRMs on outcome labels (with 8, CE missed F1 0.80 on seed 1 and with
    # 6 terms, docs/demo.md); DPO keeps at most `max_pairs_per_problem` distinct pairs of each problem, and the
    # step-supervised PRMs train on the first `step_samples_per_problem` rollouts of each (their time budget)
    samples_per_problem: int = 16
    max_pairs_per_problem: int = 6
    step_samples_per_problem: int = 8
    temperature: float = 1.0
    # PRM training. β = 1 rather than the library's 0.05: β sets how far the log-ratio must move for a
    # confident outcome reward (r = β·log-ratio); a ~0.5M-parameter model trained for seconds cannot move as
    # far as an 8B model trained for an epoch. The F1 threshold is tuned, so β does not favour any score.
    beta: float = 1.0
    learning_rate: float = 1e-4
    prm_epochs: float = 2.0
    batch_size: int = 32
    # CE's, DPO's and step CE's reference log-probs are computed once before training instead of at every step
    # (the same numbers up to float rounding: the reference is frozen; one reference forward per row, not per
    # epoch); StepKTO's mismatched-pair reference point cannot be precomputed
    precompute_ref_log_probs: bool = True
    train_dpo: bool = True
    train_step_kto: bool = True
    train_step_ce: bool = True
    # Math-Shepherd-style MC labels (demo/mc_labels.py) for an explicit PRM, and one on the true labels. Off in
    # `make demo`: the completer trains ~3 minutes, MC labelling of 4000 problems generates ~4.8M tokens (~5
    # minutes on one core) and the explicit PRMs train ~10 minutes each: over the demo's budget (docs/demo.md);
    # --set train_explicit=true
    train_explicit: bool = False
    # the explicit PRMs use the first `explicit_samples_per_problem` rollouts of each of their problems: the
    # MC PRM (and its MC labels) the first `mc_problems`, the oracle the first `explicit_true_problems` of the
    # same list, which holds the first training problems and then, when either asks for more, new problems
    # with rollouts of their own (baselines.explicit_problem_counts). A classifier head learns from one bit per
    # step; on seed 1, the one on true labels scored F1 54.6 with 8 rollouts per problem and 67.0 with 16
    # (docs/demo.md)
    explicit_samples_per_problem: int = 16
    # the MC PRM, like the oracle, needs 4000 problems (64000 rows). Math-Shepherd used 8 completions per step
    # prefix; with a completer that finishes right prefixes right, 1 and 2 label alike (97.6 and 97.7 % of seed
    # 2's steps right), and 2 on 4000 problems cost about what 8 cost on 1000 (docs/demo.md)
    mc_problems: int = 4000
    mc_samples: int = 2
    mc_label: str = "hard"
    # who writes the MC completions: "faithful" (a completer fine-tuned on the SFT problems for all
    # `mc_completer_epochs`, and taught to carry on from a wrong step instead of stepping around it:
    # policy.continuation_rows), "trained" (the same without the continuations) or "policy" (the reference policy
    # that wrote the rollouts, which solves half of the problems: its completions mislabel steps, docs/demo.md)
    mc_completer: str = "faithful"
    mc_completer_epochs: int = 20
    # the explicit PRM on true labels (an oracle: its labels cost nothing here) trains on the rollouts of this
    # many problems. A classifier head needs far more labelled steps than the implicit PRMs: on seed 2 it scored F1
    # 61.4 with 1000 problems and 84.0 with 4000, against the reference's 79.9 (docs/demo.md)
    explicit_true_problems: int = 4000
    explicit_learning_rate: float = 5e-4  # a fresh classifier head: more steps, higher rate than the PRMs
    explicit_epochs: float = 4.0
    # evaluation
    n_val_problems: int = 100
    n_test_problems: int = 200
    n_bon_problems: int = 100
    bon_n: int = 16
    html_examples: int = 6
    search_problems: int = 16  # PRM-guided search stage (demo/search_stage.py); 0 skips it
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        subsets = ("step_samples_per_problem", "explicit_samples_per_problem")
        counts = ("samples_per_problem", "max_pairs_per_problem", *subsets, "mc_problems", "mc_samples")
        counts = (*counts, "explicit_true_problems", "mc_completer_epochs")
        for name in counts:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DemoConfig.{name} must be a positive integer, got {value!r}")
        for name, kinds in (
            ("mc_label", ("hard", "soft")),
            ("mc_completer", ("policy", "trained", "faithful")),
        ):
            if getattr(self, name) not in kinds:
                known = ", ".join(map(repr, kinds[:-1])) + f" or {kinds[-1]!r}"
                raise ValueError(f"DemoConfig.{name} must be {known}, got {getattr(self, name)!r}")
        for name in subsets:
            if getattr(self, name) > self.samples_per_problem:
                raise ValueError(
                    f"DemoConfig.{name} ({getattr(self, name)}) must be at most samples_per_problem "
                    f"({self.samples_per_problem}): those PRMs train on the first rollouts of each problem"
                )

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """A reduced demo (for tests and a first look): smaller sets, fewer epochs."""
        small = dict(
            n_sft_problems=1000,
            n_train_problems=1000,
            samples_per_problem=8,
            explicit_samples_per_problem=8,
            batch_size=64,
            learning_rate=2e-4,
            train_dpo=False,
            train_step_kto=False,
            train_step_ce=False,
            train_explicit=True,  # tiny MC budget: the columns, costs and guards are exercised
            mc_problems=20,
            mc_samples=4,
            mc_completer_epochs=1,  # the faithful completer's path, in seconds
            explicit_true_problems=30,  # the MC PRM's 20 and 10 new ones: the oracle's own rollouts are exercised
            explicit_epochs=2.0,
            n_val_problems=80,
            n_test_problems=120,
            n_bon_problems=30,
            bon_n=8,
            html_examples=2,
            search_problems=0,
        )
        return cls(**{**small, **overrides})


class _Stages:
    """Times and announces each stage."""

    def __init__(self, progress: bool) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        if self.progress:
            print(f"[demo] {name} ...", flush=True)
        start = time.perf_counter()
        out = fn()
        self.seconds[name] = round(time.perf_counter() - start, 2)
        if self.progress:
            print(f"[demo] {name}: {self.seconds[name]:.1f}s", flush=True)
        return out


def _train_args(cls: type, out: Path, cfg: DemoConfig, **extra: Any) -> Any:
    return cls(
        output_dir=str(out),
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        gradient_checkpointing=False,
        per_device_train_batch_size=cfg.batch_size,
        num_train_epochs=cfg.prm_epochs,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant",
        **({"beta": cfg.beta} if "beta" in cls.__dataclass_fields__ else {}),
        seed=cfg.seed,
        logging_steps=10,
        step_separator=STEP_SEPARATOR,
        max_length=256,
        disable_tqdm=not cfg.progress,
        **extra,
    )


def _prm_trainer_and_args(kind: str, out: Path, cfg: DemoConfig) -> tuple[type, Any]:
    """The trainer class of a PRM kind and its training arguments."""
    from trl_implicit_prm import (
        CEConfig,
        CETrainer,
        ExplicitPRMConfig,
        ExplicitPRMTrainer,
        ImplicitPRMConfig,
        ImplicitPRMTrainer,
        StepKTOConfig,
        StepKTOTrainer,
    )

    # StepKTO's KTO reference point pairs each prompt with another row's completion at every step, so its
    # reference log-probs cannot be precomputed (the config refuses); the explicit PRM has no reference
    pre = {"precompute_ref_log_probs": cfg.precompute_ref_log_probs, "precompute_ref_batch_size": 256}
    trainer_cls, config_cls, extra = {
        "ce": (CETrainer, CEConfig, pre),
        "dpo": (ImplicitPRMTrainer, ImplicitPRMConfig, pre),
        "step_kto": (StepKTOTrainer, StepKTOConfig, {}),
        "step_ce": (StepKTOTrainer, StepKTOConfig, {"loss_type": "ce", **pre}),
        "explicit": (ExplicitPRMTrainer, ExplicitPRMConfig, {}),
    }[kind]
    return trainer_cls, _train_args(config_cls, out, cfg, **extra)


def _train_prm(kind: str, reference_dir: Path, rows: list[dict], out: Path, cfg: DemoConfig) -> Path:
    trainer_cls, args = _prm_trainer_and_args(kind, out, cfg)
    trainer = trainer_cls(str(reference_dir), args=args, train_dataset=Dataset.from_list(rows))
    trainer.train()
    trainer.save_model(str(out))
    return out


def _score_steps(prc: Any, items: list[tuple[Problem, Solution]]) -> list[Any]:
    return prc.score([p.prompt for p, _ in items], [s.steps for _, s in items])


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the whole pipeline and write report.json, report.md, bon.png and steps.html to `cfg.output_dir`."""
    from transformers import AutoModelForCausalLM

    from trl_implicit_prm.demo.report import write_report
    from trl_implicit_prm.modeling import load_tokenizer

    torch.manual_seed(cfg.seed)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages = _Stages(cfg.progress)
    rng = random.Random(cfg.seed)
    task = ArithmeticTask(
        n_terms=cfg.n_terms, operators=cfg.operators, max_value=cfg.max_value, seed=cfg.seed
    )
    sft_set, sft_eval_set, train_set, val_set, test_set, bon_set, new_set = _problem_splits(cfg, task)
    # 1. reference policy
    ref_dir = stages.run(
        "1 reference policy (fine-tune on correct solutions)",
        lambda: _reference_policy(cfg, task, sft_set, sft_eval_set, out),
    )
    policy = AutoModelForCausalLM.from_pretrained(ref_dir).eval()
    tok = load_tokenizer(ref_dir)
    # 2-4. outcome-labelled rollouts, PRMs trained on them, and the step-supervised baselines
    prm_dirs, extra = _rollouts_and_prms(
        cfg, stages, policy, tok, ref_dir, (train_set, new_set, sft_set), out
    )
    # 5. evaluation: the policy's own held-out solutions (first error located by recomputation), as in
    # ProcessBench, and solutions with an injected error.
    held_out = stages.run(
        "5a sample held-out solutions and best-of-N candidates",
        lambda: sample_solutions(
            policy, tok, [*val_set, *test_set, *bon_set], cfg.bon_n, temperature=cfg.temperature,
            seed=cfg.seed + 1, progress=cfg.progress,
        ),
    )  # fmt: skip
    eval_sets, bon_samples = demo_rows.evaluation_sets(val_set, test_set, held_out, rng)
    computers = _computers(ref_dir, prm_dirs, cfg)
    results = stages.run(
        "5b evaluate (step-error F1, best-of-N)",
        lambda: _evaluate(computers, eval_sets, bon_set, bon_samples),
    )
    results["extra"] = {"reference_policy": json.loads((ref_dir / "sft_history.json").read_text()), **extra}
    if cfg.search_problems:  # 6. PRM-guided search with the CE PRM
        results["extra"]["search"] = stages.run(
            "6 PRM-guided search (best-of-N, beam, DVTS, early rejection)",
            lambda: _search(cfg, policy, tok, computers, bon_set, out),
        )
    return write_report(out, cfg, results, eval_sets, stages.seconds)


def _rollouts_and_prms(
    cfg: DemoConfig,
    stages: _Stages,
    policy: Any,
    tok: Any,
    ref_dir: Path,
    problems: tuple[list, list, list],
    out: Path,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Stages 2-4: outcome-labelled rollouts (every generated token counted: the data's cost), the PRMs trained
    on them and the step-supervised baselines; returns the checkpoints by key and the report's entries about
    their data (rollout statistics, training rows, each PRM's data cost, the MC labels). `problems`: the
    training problems, the explicit PRMs' new ones and the SFT problems (for a trained MC completer).
    """
    train_set, new_set, sft_set = problems
    rollout_tokens: list[int] = []
    rollouts = stages.run(
        "2 sample and grade rollouts",
        lambda: sample_solutions(
            policy, tok, train_set, cfg.samples_per_problem, temperature=cfg.temperature, seed=cfg.seed,
            progress=cfg.progress, token_counts=rollout_tokens,
        ),
    )  # fmt: skip
    rollout_stats, rows = demo_rows.training_rows(train_set, rollouts, out, cfg)
    rollout_stats["n_generated_tokens"] = sum(rollout_tokens)
    prm_dirs = _train_prms(stages, ref_dir, rows, out, cfg)
    explicit_pairs = demo_rows.first_rollouts(train_set, rollouts, cfg.explicit_samples_per_problem)
    more_dirs, baseline_info = train_baselines(
        cfg, ref_dir, policy, tok, explicit_pairs, rows["stepwise"], stages.run, _train_prm, out,
        new_problems=new_set, sft_problems=sft_set,
    )  # fmt: skip
    prm_dirs.update(more_dirs)
    costs = data_costs(
        list(prm_dirs),
        train_set,
        rollout_tokens,
        baseline_info,
        step_samples=cfg.step_samples_per_problem,
        explicit_samples=cfg.explicit_samples_per_problem,
    )
    extra = {
        "rollouts": rollout_stats,
        "training_rows": {kind: len(r) for kind, r in rows.items()},
        "data_cost_tokens": costs,
        **baseline_info,
    }
    return prm_dirs, extra


def _problem_splits(cfg: DemoConfig, task: ArithmeticTask) -> list[list[Problem]]:
    """SFT, SFT evaluation, PRM training, validation, test and best-of-N problems, and the explicit PRMs' new
    ones (those beyond the training problems that `mc_problems` or `explicit_true_problems` asks for; none
    without `train_explicit`), disjoint. The new ones come last, so the other splits do not depend on them.
    """
    _, new = explicit_problem_counts(cfg, cfg.n_train_problems)
    cuts = [
        cfg.n_sft_problems,
        cfg.n_sft_eval_problems,
        cfg.n_train_problems,
        cfg.n_val_problems,
        cfg.n_test_problems,
        cfg.n_bon_problems,
        new,
    ]
    problems = task.make_problems(sum(cuts), seed=cfg.seed)
    splits, start = [], 0
    for n in cuts:
        splits.append(problems[start : start + n])
        start += n
    return splits


def _reference_policy(
    cfg: DemoConfig, task: ArithmeticTask, sft_set: list[Problem], sft_eval_set: list[Problem], out: Path
) -> Path:
    """Stage 1: a tiny model fine-tuned on correct solutions, saved with its tokenizer and SFT history."""
    from trl_implicit_prm.tiny import build_tokenizer

    tok = build_tokenizer(vocab_size=cfg.vocab_size, corpus=tokenizer_corpus(task, 2000, seed=cfg.seed))
    model = new_policy(cfg, tok)
    history = finetune_on_solutions(
        model,
        tok,
        sft_set,
        epochs=cfg.sft_epochs,
        seed=cfg.seed,
        progress=cfg.progress,
        stop_at_accuracy=cfg.sft_stop_accuracy,
        eval_problems=sft_eval_set,
    )
    path = out / "models" / "reference"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    (path / "sft_history.json").write_text(json.dumps(history))
    return path


def _train_prms(
    stages: _Stages, ref_dir: Path, rows: dict[str, list[dict[str, Any]]], out: Path, cfg: DemoConfig
) -> dict[str, Path]:
    """Stages 3-4: CE (and DPO) on outcome labels, StepKTO on the true step labels."""
    prm_dirs = {
        "ce": stages.run(
            "3a implicit PRM, CE (outcome labels)",
            lambda: _train_prm("ce", ref_dir, rows["unpaired"], out / "models" / "ce", cfg),
        )
    }
    if rows["paired"] and cfg.train_dpo:
        prm_dirs["dpo"] = stages.run(
            "3b implicit PRM, DPO (outcome labels)",
            lambda: _train_prm("dpo", ref_dir, rows["paired"], out / "models" / "dpo", cfg),
        )
    if cfg.train_step_kto:
        prm_dirs["step_kto"] = stages.run(
            "4a step-supervised PRM, StepKTO (true step labels)",
            lambda: _train_prm("step_kto", ref_dir, rows["step_kto"], out / "models" / "step_kto", cfg),
        )
    return prm_dirs


def _computers(ref_dir: Path, prm_dirs: dict[str, Path], cfg: DemoConfig) -> dict[str, Any]:
    """The scorers compared: the reference alone (reference-free) and every trained PRM."""
    from trl_implicit_prm.inference import ProcessRewardComputer

    computers = {
        "reference (no training)": ProcessRewardComputer.from_pretrained(
            ref_dir, reference_free=True, beta=cfg.beta, step_separator=STEP_SEPARATOR
        )
    }
    for key, path in prm_dirs.items():  # implicit or explicit: each checkpoint's metadata says which
        computers[NAMES[key]] = ProcessRewardComputer.from_pretrained(path, step_separator=STEP_SEPARATOR)
    return computers


def _evaluate(
    computers: dict[str, Any],
    eval_sets: dict[str, tuple[list[tuple[Problem, Solution]], list[tuple[Problem, Solution]]]],
    bon_set: list[Problem],
    bon_samples: list[list[Solution]],
) -> dict[str, Any]:
    """Stage 5b: step-error F1 (threshold tuned on validation) on each evaluation set, and best-of-N."""
    from trl_implicit_prm.evaluation import best_of_n_curve, evaluate_splits
    from trl_implicit_prm.evaluation.prm_scores import score_candidates, score_process_records

    results: dict[str, Any] = {"step_error": {}, "best_of_n": {}, "_scored_test": {}}
    bon_problems = [
        {
            "problem": p.prompt,
            "reference": p.answer,
            "candidates": [{"response": s.steps, "answer": s.final_answer} for s in sols],
        }
        for p, sols in zip(bon_set, bon_samples, strict=True)
    ]
    records = {
        set_name: ([to_processbench(p, s) for p, s in val], [to_processbench(p, s) for p, s in test])
        for set_name, (val, test) in eval_sets.items()
    }
    for name, prc in computers.items():
        results["step_error"][name] = {}
        for set_name, (val_records, test_records) in records.items():
            test_scored = _score_steps(prc, eval_sets[set_name][1])
            split = evaluate_splits(
                {
                    "validation": (val_records, score_process_records(prc, val_records)),
                    "test": (test_records, [r.step_rewards for r in test_scored]),
                },
                tune_on="validation",
            )
            results["step_error"][name][set_name] = {k: v.to_dict() for k, v in split["splits"].items()} | {
                "threshold": split["threshold"],
                "n_test_records": len(test_records),
            }
            results["_scored_test"].setdefault(set_name, {})[name] = test_scored
        results["best_of_n"][name] = best_of_n_curve(
            bon_problems, score_candidates(prc, bon_problems, ["min"])
        )
    return results


def _search(
    cfg: DemoConfig, policy: Any, tok: Any, computers: dict[str, Any], bon_set: list, out: Path
) -> Any:
    """Stage 6 (:mod:`trl_implicit_prm.demo.search_stage`): accuracy against generated tokens per strategy."""
    from trl_implicit_prm.demo.search_stage import run_search_stage

    prm = computers["implicit PRM (CE)"]
    return run_search_stage(policy, tok, prm, bon_set[: cfg.search_problems], out, seed=cfg.seed)
