"""Train a tiny implicit PRM for a few steps; launched by the distributed tests (single process or accelerate)."""

from __future__ import annotations

import argparse
import json

from datasets import Dataset
from transformers import TrainerCallback

from trl_implicit_prm import CEConfig, CETrainer, ImplicitPRMConfig, ImplicitPRMTrainer
from trl_implicit_prm.distributed import end_distributed_run

EVAL_ROWS = 5  # in per-device batches of 2: under 2 processes the second step pads with 3 duplicate rows


def rows(kind: str) -> list[dict]:
    out = []
    for i in range(16):
        a, b = i % 7 + 1, i % 5 + 2
        extra = "So we add.\n\n" * (i % 4)  # step counts differ between rows, and between processes
        good = f"{extra}{a} + {b} = {a + b}.\n\nThe answer is {a + b}."
        bad = f"{a} + {b} = {a + b + 1}.\n\nThe answer is {a + b + 1}."
        prompt = f"Q{i}: {a} + {b}?\n"
        if kind == "dpo":
            out.append({"prompt": prompt, "chosen": good, "rejected": bad})
        else:
            out.append({"prompt": prompt, "completion": good if i % 3 else bad, "label": float(i % 3 != 0)})
    return out


class _KillAfterSave(TrainerCallback):
    """Every process stops right after the checkpoint of step `step` is written: a run killed there."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise SystemExit(3)


class _StepCount(TrainerCallback):
    """Optimizer steps this launch ran (a resumed run starts at the checkpoint's step)."""

    def __init__(self) -> None:
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trainer", choices=["ce", "dpo"], required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--per-device-batch", type=int, default=2)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--precompute", action="store_true", help="precompute the reference log-probs")
    p.add_argument(
        "--eval",
        action="store_true",
        help="after saving, evaluate on the first 5 rows in per-device batches of 2 (CE only)",
    )
    p.add_argument(
        "--deepspeed-checkpoint", help="also write DeepSpeed's own (sharded) checkpoint to this folder"
    )
    p.add_argument("--save-steps", type=int, help="save a checkpoint every N steps")
    p.add_argument("--kill-after-save", type=int, help="exit with status 3 after the checkpoint of this step")
    p.add_argument("--resume-from", help="a checkpoint folder to resume training from")
    args = p.parse_args()
    common = dict(
        output_dir=args.output,
        use_cpu=True,
        bf16=False,
        max_steps=args.steps,
        learning_rate=1e-3,
        per_device_train_batch_size=args.per_device_batch,
        gradient_accumulation_steps=args.grad_accum,
        report_to=[],
        logging_steps=1,
        save_strategy="steps" if args.save_steps else "no",
        save_steps=args.save_steps or 500,
        gradient_checkpointing=False,
        train_sampling_strategy="sequential",
        seed=0,
        beta=0.1,
        precompute_ref_log_probs=args.precompute,
        per_device_eval_batch_size=2,
    )
    if args.trainer == "dpo":
        trainer = ImplicitPRMTrainer(
            args.model, args=ImplicitPRMConfig(**common), train_dataset=Dataset.from_list(rows("dpo"))
        )
    else:
        eval_dataset = Dataset.from_list(rows("ce")[:EVAL_ROWS]) if args.eval else None
        trainer = CETrainer(
            args.model,
            args=CEConfig(**common),
            train_dataset=Dataset.from_list(rows("ce")),
            eval_dataset=eval_dataset,
        )
    ref = getattr(trainer.ref_model, "module", trainer.ref_model)
    ref_sharded = ref is not None and all(hasattr(p, "ds_id") and p.numel() == 0 for p in ref.parameters())
    counter = _StepCount()
    trainer.add_callback(counter)
    if args.kill_after_save:
        trainer.add_callback(_KillAfterSave(args.kill_after_save))
    trainer.train(resume_from_checkpoint=args.resume_from)
    trainer.save_model(args.output)
    eval_metrics = trainer.evaluate() if args.eval else None
    if args.deepspeed_checkpoint:
        trainer.model_wrapped.save_checkpoint(args.deepspeed_checkpoint)  # what a save without weights leaves
    if trainer.is_world_process_zero():
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        with open(f"{args.output}/losses.json", "w") as f:
            json.dump(
                {
                    "losses": losses,
                    "world_size": trainer.accelerator.num_processes,
                    "deepspeed": trainer.is_deepspeed_enabled,
                    "zero_stage": trainer.accelerator.state.deepspeed_plugin.zero_stage
                    if trainer.is_deepspeed_enabled
                    else None,
                    "ref_sharded": ref_sharded,
                    "steps_run": counter.steps,
                    "eval": eval_metrics,
                },
                f,
            )
    end_distributed_run(trainer)  # barrier, teardown, and a multi-process run exits here (status 0)


if __name__ == "__main__":
    main()
