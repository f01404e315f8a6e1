"""Two PRIME steps on a tiny model; launched by tests/test_rl_distributed.py (one process, or accelerate).

The rollouts come from TRL's `rollout_func` hook and are fixed texts (two per prompt, one right and one wrong), so
that one process and two processes train on the same tokens; everything after generation (verifier, PRM
update under ZeRO-3, advantages gathered over processes, the policy loss) runs as in any PRIME run.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from datasets import Dataset

from trl_implicit_prm import PRIMEConfig, PRIMETrainer
from trl_implicit_prm.distributed import end_distributed_run

PROMPTS = [f"Q{i}: {i % 7 + 1} + {i % 5 + 2}?\n" for i in range(8)]


def _answer(prompt: str) -> int:
    a, b = prompt.split(": ")[1].rstrip("?\n").split(" + ")
    return int(a) + int(b)


def _completion(prompt: str, k: int) -> str:
    """The k-th rollout of a prompt: even k right, odd k wrong; step counts differ between prompts."""
    a, b = prompt.split(": ")[1].rstrip("?\n").split(" + ")
    value = _answer(prompt) + k % 2
    extra = "So we add.\n\n" * (len(prompt) % 3)
    return f"{extra}{a} + {b} = {value}.\n\nThe answer is {value}."


def rollouts(prompts: list[str], trainer: PRIMETrainer) -> dict:
    tok = trainer.processing_class
    seen: dict[str, int] = {}
    completions = []
    for p in prompts:
        completions.append(_completion(p, seen.get(p, 0)))
        seen[p] = seen.get(p, 0) + 1
    return {
        "prompt_ids": [tok(p)["input_ids"] for p in prompts],
        "completion_ids": [
            tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in completions
        ],
        "logprobs": None,
    }


def verifier(prompts: list[str], completions: list[str], **kwargs) -> list[float]:
    return [float(c.endswith(f"is {_answer(p)}.")) for p, c in zip(prompts, completions, strict=True)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--per-device-batch", type=int, default=2)
    args = p.parse_args()
    config = PRIMEConfig(
        output_dir=args.output,
        use_cpu=True,
        bf16=False,
        max_steps=2,
        learning_rate=1e-3,
        prm_learning_rate=1e-3,
        per_device_train_batch_size=args.per_device_batch,
        num_generations=2,
        max_completion_length=64,
        accuracy_lower_bound=0.0,
        accuracy_upper_bound=1.0,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        shuffle_dataset=False,
        seed=0,
    )
    trainer = PRIMETrainer(
        args.model,
        reward_funcs=verifier,
        args=config,
        train_dataset=Dataset.from_list([{"prompt": q} for q in PROMPTS]),
        rollout_func=rollouts,
    )
    trainer.train()
    trainer.save_model(args.output)
    if trainer.is_world_process_zero():
        logs = [h for h in trainer.state.log_history if "prm/loss" in h]
        keys = ("loss", "prm/loss", "grad_norm", "prm/outcome_accuracy", "prm/pairwise_accuracy")
        with open(f"{args.output}/losses.json", "w") as f:
            json.dump(
                {
                    "logs": [{k: h[k] for k in keys if k in h} for h in logs],
                    "world_size": trainer.accelerator.num_processes,
                    "zero_stage": trainer.accelerator.state.deepspeed_plugin.zero_stage
                    if trainer.is_deepspeed_enabled
                    else None,
                },
                f,
            )
    end_distributed_run(trainer)


if __name__ == "__main__":
    main()
