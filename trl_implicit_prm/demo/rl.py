"""The demo's RL stage: outcome-only GRPO, PRIME and min-form credit (PURE) from the demo's SFT policy.

Runs on a finished demo output directory (`models/reference`, the SFT policy; `models/ce`, the implicit PRM the
demo trained from outcome labels; `report.json`, the task settings). Every method trains the same number of steps
on the demo's rollout problems with the verifier "the boxed answer is right"; held-out accuracy (greedy, and pass@1
of sampled solutions) on the demo's test problems is measured every `eval_every` steps:

- `grpo`: TRL's stock `GRPOTrainer`, outcome reward only;
- `prime`: `PRIMETrainer` (token-level process rewards summed, PRM updated online before scoring);
- `pure_min`: `PRIMETrainer` with PURE's strict min-form credit on step rewards, same PRM update.

Both PRIME methods start their PRM from the demo's CE implicit PRM (trained from outcome labels only, reference: the
SFT policy), with its β. Results go to `rl.png`, `report.json` under `"rl"` and a section of `report.md`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import TrainerCallback

from trl_implicit_prm.demo.grading import grade
from trl_implicit_prm.demo.policy import greedy_accuracy, sample_solutions
from trl_implicit_prm.demo.task import ArithmeticTask, Problem
from trl_implicit_prm.modeling import load_tokenizer, read_metadata

__all__ = ["METHODS", "RLDemoConfig", "run_rl_demo"]

METHODS = ("grpo", "prime", "pure_min")


@dataclass
class RLDemoConfig:
    """Sizes and settings of the RL stage (defaults: a few minutes on 2 CPU cores)."""

    output_dir: str = "demo_output"
    seeds: list[int] = field(default_factory=lambda: [0])
    steps: int = 48
    eval_every: int = 24
    prompts_per_step: int = 8
    num_generations: int = 4
    learning_rate: float = 5e-5
    prm_learning_rate: float = 1e-4
    temperature: float = 1.0
    max_completion_length: int = 96
    n_eval_problems: int = 400
    eval_samples: int = 1
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    progress: bool = True


def _demo_problems(settings: dict[str, Any], n_held_out: int) -> tuple[list[Problem], list[Problem]]:
    """The demo's rollout problems (RL prompts), split exactly as `run_demo` did, and `n_held_out` held-out
    problems: the demo's test problems, then fresh ones drawn after every split of the demo (the draw is one
    sequence without repeats, so they differ from every problem the demo or the RL stage trained on).
    """
    task = ArithmeticTask(
        n_terms=settings["n_terms"],
        operators=settings["operators"],
        max_value=settings["max_value"],
        seed=settings["seed"],
    )
    names = ["n_sft_problems", "n_sft_eval_problems", "n_train_problems", "n_val_problems", "n_test_problems"]
    cuts = [settings[n] for n in [*names, "n_bon_problems"]]
    fresh = max(0, n_held_out - cuts[4])
    problems = task.make_problems(sum(cuts) + fresh, seed=settings["seed"])
    start = sum(cuts[:2])
    train = problems[start : start + cuts[2]]
    test_start = sum(cuts[:4])
    held_out = problems[test_start : test_start + cuts[4]] + problems[sum(cuts) :]
    return train, held_out[:n_held_out]


def _verifier(problems: list[Problem]):
    def correct(completions: list[str], problem_index: list[int], **kwargs: Any) -> list[float]:
        return [float(grade(problems[i], c)) for c, i in zip(completions, problem_index, strict=True)]

    return correct


class _HeldOutAccuracy(TrainerCallback):
    """Greedy accuracy and pass@1 of sampled solutions on held-out problems, every `every` steps and at step 0."""

    def __init__(self, tokenizer: Any, problems: list[Problem], cfg: RLDemoConfig, seed: int) -> None:
        self.tokenizer, self.problems, self.cfg, self.seed = tokenizer, problems, cfg, seed
        self.rows: list[dict[str, float]] = []

    def measure(self, model: Any, step: int) -> None:
        was_training, rng = model.training, torch.random.get_rng_state()  # sampling here reseeds torch
        greedy = greedy_accuracy(
            model, self.tokenizer, self.problems, max_new_tokens=self.cfg.max_completion_length
        )
        sampled = sample_solutions(
            model,
            self.tokenizer,
            self.problems,
            self.cfg.eval_samples,
            temperature=self.cfg.temperature,
            max_new_tokens=self.cfg.max_completion_length,
            seed=self.seed + 1,
            progress=False,
        )
        pass1 = sum(s.is_correct for sols in sampled for s in sols) / max(1, sum(map(len, sampled)))
        self.rows.append({"step": step, "greedy": greedy, "pass_at_1": pass1})
        model.train(was_training)
        torch.random.set_rng_state(rng)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.cfg.eval_every == 0 or state.global_step == state.max_steps:
            self.measure(model, state.global_step)


def _trainer(method: str, out: Path, cfg: RLDemoConfig, seed: int, rows: Dataset, verifier: Any, tok: Any):
    """The trainer of one method, from the demo's SFT policy."""
    from trl import GRPOConfig, GRPOTrainer

    from trl_implicit_prm.rl import PRIMEConfig, PRIMETrainer

    common = dict(
        output_dir=str(out / "rl" / f"{method}-seed{seed}"),
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant",
        logging_steps=1,
        seed=seed,
        disable_tqdm=not cfg.progress,
    )
    policy = str(out / "models" / "reference")
    if method == "grpo":
        return GRPOTrainer(
            policy, reward_funcs=verifier, args=GRPOConfig(**common), train_dataset=rows, processing_class=tok
        )
    prm_dir = out / "models" / "ce"
    prime = dict(
        prm_beta=read_metadata(prm_dir)["beta"],
        prm_learning_rate=cfg.prm_learning_rate,
        accuracy_lower_bound=0.0,
        accuracy_upper_bound=1.0,
        step_separator=read_metadata(prm_dir)["step_separator"],
    )
    if method == "pure_min":
        prime.update(credit_assignment="min", granularity="step")
    return PRIMETrainer(
        policy,
        reward_funcs=verifier,
        args=PRIMEConfig(**common, **prime),
        train_dataset=rows,
        processing_class=tok,
        prm_model=str(prm_dir),
        prm_ref_model=policy,
    )


def _run_method(method: str, out: Path, cfg: RLDemoConfig, seed: int, data: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(seed)
    trainer = _trainer(method, out, cfg, seed, data["rows"], data["verifier"], data["tokenizer"])
    probe = _HeldOutAccuracy(data["tokenizer"], data["test"], cfg, seed)
    probe.rows.append(data["start"])
    trainer.add_callback(probe)
    trainer.train()
    prm_accuracy = [
        h["prm/outcome_accuracy"] for h in trainer.state.log_history if "prm/outcome_accuracy" in h
    ]
    return {"curve": probe.rows, "prm_outcome_accuracy": prm_accuracy}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _summarise(runs: dict[str, dict[int, dict[str, Any]]], start: float) -> dict[str, Any]:
    """The report's `"rl"` entry: per method the seed-averaged greedy accuracy curve, plus every seed's numbers."""
    methods = {}
    for method, by_seed in runs.items():
        curves = [r["curve"] for r in by_seed.values()]
        steps = [row["step"] for row in curves[0]]
        accuracy = [_mean([c[i]["greedy"] for c in curves]) for i in range(len(steps))]
        prm = [r["prm_outcome_accuracy"] for r in by_seed.values()]
        methods[method] = {
            "steps": steps,
            "accuracy": accuracy,
            "pass_at_1": [_mean([c[i]["pass_at_1"] for c in curves]) for i in range(len(steps))],
            "final_accuracy": accuracy[-1],
            "prm_outcome_accuracy": [_mean(col) for col in zip(*prm, strict=True)] if prm[0] else [],
            "per_seed": {str(s): r for s, r in by_seed.items()},
        }
    return {"start_accuracy": start, "accuracy_is": "greedy, held-out test problems", "methods": methods}


def _plot(rl: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (method, m) in enumerate(rl["methods"].items()):
        color = f"C{i}"
        ax.plot(m["steps"], m["accuracy"], "-o", color=color, label=f"{method} (greedy)")
        ax.plot(m["steps"], m["pass_at_1"], "--", color=color, alpha=0.7, label=f"{method} (pass@1)")
    ax.set_xlabel("RL step")
    ax.set_ylabel("held-out accuracy")
    ax.set_title("RL from the SFT policy: GRPO vs implicit process rewards", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _markdown(rl: dict[str, Any], seeds: list[int]) -> str:
    lines = [
        "## RL from the SFT policy (`demo --rl`)",
        "",
        f"Held-out greedy accuracy, start {rl['start_accuracy']:.3f}; mean over seeds {seeds}.",
        "",
        "| method | final greedy accuracy | final pass@1 | per seed (greedy) |",
        "|---|---|---|---|",
    ]
    for method, m in rl["methods"].items():
        per_seed = ", ".join(f"{r['curve'][-1]['greedy']:.3f}" for r in m["per_seed"].values())
        lines.append(f"| {method} | {m['final_accuracy']:.3f} | {m['pass_at_1'][-1]:.3f} | {per_seed} |")
    return "\n".join([*lines, "", "![RL curves](rl.png)", ""])


def _write(out: Path, rl: dict[str, Any], seeds: list[int]) -> None:
    from trl_implicit_prm.evaluation.records import strict_json

    report_path = out / "report.json"
    report = json.loads(report_path.read_text())
    strict, nulled = strict_json(rl)
    if nulled:
        raise ValueError(f"the RL stage produced non-finite numbers: {nulled}")
    report["rl"] = strict
    tmp = report_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, allow_nan=False))
    os.replace(tmp, report_path)
    _plot(rl, out / "rl.png")
    md = out / "report.md"
    text = md.read_text() if md.is_file() else ""
    text = text.split("## RL from the SFT policy")[0].rstrip("\n")
    md.write_text(f"{text}\n\n{_markdown(rl, seeds)}")


def _check_prm(out: Path) -> None:
    """The PRIME methods start from the demo's CE PRM, whose reference must be the SFT policy they start from."""
    recorded = read_metadata(out / "models" / "ce").get("reference_model")
    if recorded is None or Path(recorded).resolve() != (out / "models" / "reference").resolve():
        raise ValueError(
            f"{out / 'models' / 'ce'} records the reference {recorded!r}, not {out / 'models' / 'reference'}: the "
            "RL stage scores with the CE PRM against the SFT policy, so the PRM must have been trained against it "
            "(was the demo output moved? re-run the demo there)"
        )


def run_rl_demo(cfg: RLDemoConfig) -> dict[str, Any]:
    """Run every method for every seed on the demo output in `cfg.output_dir`; returns the `"rl"` entry."""
    out = Path(cfg.output_dir)
    unknown = sorted(set(cfg.methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown RL methods {unknown}; choose among {list(METHODS)}")
    needed = [out / "report.json", out / "models" / "reference", out / "models" / "ce" / "implicit_prm.json"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"{out} is not a finished demo output (missing {missing}): run `trl-implicit-prm demo --output-dir "
            f"{out}` first, or `demo --rl` to run both"
        )
    settings = json.loads((out / "report.json").read_text())["config"]
    _check_prm(out)
    train, test = _demo_problems(settings, cfg.n_eval_problems)
    tok = load_tokenizer(out / "models" / "reference")
    rows = Dataset.from_list([{"prompt": p.prompt, "problem_index": i} for i, p in enumerate(train)])
    data = {"rows": rows, "verifier": _verifier(train), "tokenizer": tok, "test": test}
    runs: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in cfg.methods}
    start = None
    for seed in cfg.seeds:
        from transformers import AutoModelForCausalLM

        probe = _HeldOutAccuracy(tok, data["test"], cfg, seed)
        probe.measure(AutoModelForCausalLM.from_pretrained(out / "models" / "reference").eval(), 0)
        data["start"] = probe.rows[0]
        start = probe.rows[0]["greedy"]
        for method in cfg.methods:
            if cfg.progress:
                print(f"[demo --rl] {method}, seed {seed}: {cfg.steps} steps", flush=True)
            runs[method][seed] = _run_method(method, out, cfg, seed, data)
    rl = _summarise(runs, start) | {"config": asdict(cfg)}
    _write(out, rl, cfg.seeds)
    return rl
