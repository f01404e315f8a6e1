"""Time per training step of the trainers against the work they must do, as ratios measured in one run.

(a) `CETrainer` against a minimal hand-written loop doing the same work on the same batch and model: policy
    forward + backward, reference forward without grad, CE loss, AdamW step. Target: ratio <= 1.2.
(b) `ImplicitPRMTrainer(loss_type="dpo")` against TRL's `DPOTrainer` on the same pairs. Target: <= 1.05.
(c) `CETrainer` with the compact log-prob head (`trl_implicit_prm.logps`, "compact") against its default, TRL's
    fused head: which one the trainers should use on CPU (informational, no target).

Machines are noisy, so each contender runs in alternating blocks and the ratio is taken between medians of
per-step times (after warm-up). Usage: `python bench/training.py [--quick]`; writes bench/results/training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from datasets import Dataset
from transformers import TrainerCallback

from trl_implicit_prm import CEConfig, CETrainer, ImplicitPRMConfig, ImplicitPRMTrainer
from trl_implicit_prm.logps import completion_logps
from trl_implicit_prm.losses import ce_loss
from trl_implicit_prm.tiny import build_model, build_tokenizer

RESULTS = Path(__file__).parent / "results"


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        """Start timing a step."""
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        """Record the step's wall time."""
        self.times.append(time.perf_counter() - self._start)


def make_rows(n: int, steps: int, seed: int = 0) -> list[tuple[str, str, str]]:
    g = torch.Generator().manual_seed(seed)
    words = ["Step", "we", "add", "the", "result", "is", "so", "then", "total", "answer"]
    rows = []
    for i in range(n):

        def text(shift: int) -> str:
            parts = []
            for k in range(steps):
                a, b = (int(x) for x in torch.randint(0, 999, (2,), generator=g))
                filler = " ".join(words[int(j)] for j in torch.randint(0, len(words), (6,), generator=g))
                parts.append(f"Step {k + 1}: {filler} {a} + {b} = {a + b + shift}.")
            return "\n\n".join(parts)

        rows.append((f"Problem {i}: compute the sums.\n", text(0), text(1)))
    return rows


def common_args(out: str, steps: int, batch: int) -> dict:
    return dict(
        output_dir=out,
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=1e-5,
        gradient_checkpointing=False,
        logging_steps=10_000,
        disable_tqdm=True,
        train_sampling_strategy="sequential",
        beta=0.05,
        dataloader_num_workers=0,
    )


def time_trainer(trainer) -> list[float]:
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    return timer.times


def hand_loop_times(model, ref, batch: dict, steps: int) -> list[float]:
    """The minimal loop: the work CETrainer does per step, without any of its machinery."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()
    times = []
    inputs = [batch[k] for k in ("input_ids", "attention_mask", "completion_mask")]
    for _ in range(steps):
        t = time.perf_counter()
        with torch.no_grad():
            ref_logps = completion_logps(ref, *inputs).sum(-1)
        logps = completion_logps(model, *inputs).sum(-1)
        loss = ce_loss(0.05 * (logps - ref_logps), batch["label"]).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as Trainer does (max_grad_norm=1.0)
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    return times


class CompactCETrainer(CETrainer):
    """CETrainer computing log-probs with the compact head instead of TRL's fused one."""

    _logps_method = "compact"


def median_after_warmup(times: list[float], warmup: int) -> float:
    return statistics.median(times[warmup:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smaller model and fewer steps (smoke run)")
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="steps per block")
    p.add_argument("--blocks", type=int, default=3, help="alternating blocks per contender")
    p.add_argument("--reasoning-steps", type=int, default=6, help="reasoning steps per response")
    args = p.parse_args()
    if args.quick:
        args.hidden, args.layers, args.steps, args.blocks, args.batch = 64, 2, 4, 2, 4
    torch.set_num_threads(2)
    warmup = 2
    tok = build_tokenizer(vocab_size=2000)
    rows = make_rows(args.batch * (args.steps + 1), args.reasoning_steps)
    unpaired = Dataset.from_list(
        [
            {"prompt": p, "completion": c if i % 2 else r, "label": float(i % 2)}
            for i, (p, c, r) in enumerate(rows)
        ]
    )
    paired = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in rows])
    paired_eos = Dataset.from_list(
        [{"prompt": p, "chosen": c + tok.eos_token, "rejected": r + tok.eos_token} for p, c, r in rows]
    )

    def model(seed=0):
        return build_model(
            "llama",
            tok,
            hidden_size=args.hidden,
            num_layers=args.layers,
            num_heads=max(4, args.hidden // 64),
            seed=seed,
        )

    from trl import DPOConfig, DPOTrainer

    # name: (trainer class, config class, dataset); each is timed once per block, in this order
    trainers = {
        "ce_trainer": (CETrainer, CEConfig, unpaired),
        "ce_trainer_compact": (CompactCETrainer, CEConfig, unpaired),
        "iprm_dpo": (ImplicitPRMTrainer, ImplicitPRMConfig, paired_eos),
        "trl_dpo": (DPOTrainer, DPOConfig, paired),
    }
    results: dict[str, list[float]] = {name: [] for name in [*trainers, "hand_loop"]}
    for block in range(args.blocks):
        print(f"block {block + 1}/{args.blocks}", flush=True)
        built = {}
        for name, (trainer_cls, config_cls, data) in trainers.items():
            built[name] = trainer_cls(
                model(),
                ref_model=model(1),
                processing_class=tok,
                train_dataset=data,
                args=config_cls(**common_args(f"/tmp/bench-{name}", args.steps, args.batch)),
            )
            results[name].append(median_after_warmup(time_trainer(built[name]), warmup))
        ce = built["ce_trainer"]
        batch = ce.data_collator([ce.train_dataset[i] for i in range(args.batch)])
        results["hand_loop"].append(
            median_after_warmup(hand_loop_times(model(), model(1), batch, args.steps), warmup)
        )

    med = {k: statistics.median(v) for k, v in results.items()}
    report = {
        "config": vars(args),
        "seconds_per_step": med,
        "per_block": results,
        "ratio_ce_trainer_vs_hand_loop": med["ce_trainer"] / med["hand_loop"],
        "ratio_iprm_dpo_vs_trl_dpo": med["iprm_dpo"] / med["trl_dpo"],
        "ratio_ce_compact_vs_fused": med["ce_trainer_compact"] / med["ce_trainer"],
        "targets": {"ratio_ce_trainer_vs_hand_loop": 1.2, "ratio_iprm_dpo_vs_trl_dpo": 1.05},
        "tokens_per_row": len(ce.train_dataset[0]["input_ids"]),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "training.json").write_text(json.dumps(report, indent=2))
    print(f"{'contender':<20}{'s/step':>10}")
    for k, v in med.items():
        print(f"{k:<20}{v:>10.4f}")
    for key, target in report["targets"].items():
        verdict = "ok" if report[key] <= target else "MISSED"
        print(f"{key}: {report[key]:.3f} (target <= {target}) {verdict}")
    print(
        f"ratio_ce_compact_vs_fused: {report['ratio_ce_compact_vs_fused']:.3f} (below 1: compact is faster)"
    )


if __name__ == "__main__":
    main()
