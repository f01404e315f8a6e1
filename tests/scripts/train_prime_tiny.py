"""Two PRIME steps on a tiny model, per case; launched by tests/test_rl_distributed.py (one process, or accelerate).

The rollouts come from TRL's `rollout_func` hook and are fixed texts (two per prompt, one right and one wrong), so
that one process and two processes train on the same tokens; everything after generation (verifier, PRM
update under DeepSpeed, advantages gathered over processes, the policy loss) runs as in any PRIME run.

Cases (several run one after the other in one launch, each in `<output>/<case>/`):
- `full`: the policy is a full model;
- `lora`: the policy trains LoRA adapters (the PRM stays a full model);
- `resume`: as `full`, but saved at step 1 and resumed from that checkpoint (the PRM's weights and optimizer state
  come back from it), so its logs and PRM must equal those of `full`;
- `oversample`: `oversample_factor=2` with PRIME's bounds [0.2, 0.8]; the prompts with `i % 4` in (0, 1) get two
  right answers, so in each step the first two of the four drawn groups fail the filter and the two that fill the
  batch come from the second process's share of the generation (rows move between processes).
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


def answer(prompt: str) -> int:
    a, b = prompt.split(": ")[1].rstrip("?\n").split(" + ")
    return int(a) + int(b)


def _completion(prompt: str, k: int, easy: bool) -> str:
    """The k-th rollout of a prompt: even k right, odd k wrong (always right for the `easy` prompts of the
    `oversample` case); step counts differ between prompts."""
    a, b = prompt.split(": ")[1].rstrip("?\n").split(" + ")
    i = int(prompt[1 : prompt.index(":")])
    value = answer(prompt) + (0 if easy and i % 4 < 2 else k % 2)
    extra = "So we add.\n\n" * (len(prompt) % 3)
    return f"{extra}{a} + {b} = {value}.\n\nThe answer is {value}."


def fixed_rollouts(prompts: list[str], tok, completion) -> dict:
    """TRL's `rollout_func` output for fixed texts: `completion(prompt, k)` is the k-th rollout of a prompt in
    this call, encoded with EOS; no log-probs. Shared with tests/test_rl_oversample_resume.py."""
    seen: dict[str, int] = {}
    completions = []
    for p in prompts:
        completions.append(completion(p, seen.get(p, 0)))
        seen[p] = seen.get(p, 0) + 1
    return {
        "prompt_ids": [tok(p)["input_ids"] for p in prompts],
        "completion_ids": [
            tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in completions
        ],
        "logprobs": None,
    }


def rollouts(prompts: list[str], trainer: PRIMETrainer) -> dict:
    easy = trainer.args.oversample_factor > 1
    return fixed_rollouts(prompts, trainer.processing_class, lambda p, k: _completion(p, k, easy))


def verifier(prompts: list[str], completions: list[str], **kwargs) -> list[float]:
    return [float(c.endswith(f"is {answer(p)}.")) for p, c in zip(prompts, completions, strict=True)]


def _trainer(case: str, model: str, output: str, per_device_batch: int, **overrides) -> PRIMETrainer:
    fields = dict(
        output_dir=output,
        use_cpu=True,
        bf16=False,
        max_steps=2,
        learning_rate=1e-3,
        prm_learning_rate=1e-3,
        per_device_train_batch_size=per_device_batch,
        num_generations=2,
        max_completion_length=64,
        accuracy_lower_bound=0.2 if case == "oversample" else 0.0,
        accuracy_upper_bound=0.8 if case == "oversample" else 1.0,
        oversample_factor=2 if case == "oversample" else 1,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        shuffle_dataset=False,
        seed=0,
    )
    config = PRIMEConfig(**{**fields, **overrides})
    peft = None
    if case == "lora":
        from peft import LoraConfig

        peft = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    return PRIMETrainer(
        model,
        reward_funcs=verifier,
        args=config,
        train_dataset=Dataset.from_list([{"prompt": q} for q in PROMPTS]),
        rollout_func=rollouts,
        peft_config=peft,
    )


def train(case: str, model: str, output: str, per_device_batch: int) -> PRIMETrainer:
    if case == "resume":  # as `full`, saved at step 1, then resumed from that checkpoint for step 2
        whole = _trainer(
            case, model, f"{output}/whole", per_device_batch, save_strategy="steps", save_steps=1
        )
        whole.train()
        trainer = _trainer(case, model, output, per_device_batch)
        trainer.train(resume_from_checkpoint=f"{output}/whole/checkpoint-1")
    else:
        trainer = _trainer(case, model, output, per_device_batch)
        trainer.train()
    trainer.save_model(output)
    if trainer.is_world_process_zero():
        logs = [h for h in trainer.state.log_history if "prm/loss" in h]
        keys = ("loss", "prm/loss", "grad_norm", "prm/outcome_accuracy", "prm/pairwise_accuracy")
        keys += ("prime/groups_dropped", "prime/kept_fraction")
        with open(f"{output}/losses.json", "w") as f:
            json.dump(
                {
                    "logs": [{k: h[k] for k in keys if k in h} for h in logs],
                    "world_size": trainer.accelerator.num_processes,
                    "zero_stage": trainer.accelerator.state.deepspeed_plugin.zero_stage
                    if trainer.is_deepspeed_enabled
                    else None,
                    "peft": hasattr(trainer.model, "peft_config"),
                },
                f,
            )
    return trainer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--per-device-batch", type=int, default=2)
    p.add_argument("--cases", default="full", help="comma-separated: full, lora, resume, oversample")
    args = p.parse_args()
    trainer = None
    for case in args.cases.split(","):
        trainer = train(case, args.model, f"{args.output}/{case}", args.per_device_batch)
    end_distributed_run(trainer)


if __name__ == "__main__":
    main()
