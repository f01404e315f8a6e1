"""Time per RL step of `PRIMETrainer` against stock `GRPOTrainer` and against its floor, as ratios of one run.

Both trainers get the same rollouts through TRL's `rollout_func` (fixed texts: generation, the same for both,
would only add noise), the same model, data and batch. The floor is what PRIME must add to a GRPO step: one PRM
forward + backward + AdamW step and one PRM-reference forward on the same tokens, timed in a hand-written loop
(`completion_logps`, `ce_loss`), added to the GRPO step's median. Target: PRIME / floor <= 1.15.

`prm_update="after"` does exactly that work; `"before"` (PRIME's default) re-scores the batch with the updated
PRM, one more PRM forward than the floor, and is reported too. Contenders run in alternating blocks; ratios are
between medians of per-step times after warm-up. Usage: `python bench/rl.py [--quick]`; writes
bench/results/rl.json.
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
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch
from datasets import Dataset
from training import StepTimer  # the wall time of every optimizer step (bench/training.py)
from trl import GRPOConfig, GRPOTrainer

from trl_implicit_prm import PRIMEConfig, PRIMETrainer
from trl_implicit_prm.logps import completion_logps
from trl_implicit_prm.losses import ce_loss
from trl_implicit_prm.tiny import build_model, build_tokenizer

RESULTS = Path(__file__).parent / "results"


def completion_text(i: int, k: int, steps: int) -> str:
    parts = [
        f"Step {j + 1}: we add {i + j} and {k + 2 * j}, the total is {i + k + 3 * j}." for j in range(steps)
    ]
    return "\n\n".join([*parts, f"The answer is {i + k}."])


def make_rollout_func(steps: int):
    def rollouts(prompts: list[str], trainer) -> dict:
        tok = trainer.processing_class
        seen: dict[str, int] = {}
        ids = []
        for p in prompts:
            k = seen.get(p, 0)
            seen[p] = k + 1
            text = completion_text(int(p.split()[1].rstrip(":")), k, steps)
            ids.append(tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
        return {"prompt_ids": [tok(p)["input_ids"] for p in prompts], "completion_ids": ids, "logprobs": None}

    return rollouts


def verifier(completions: list[str], **kwargs) -> list[float]:
    return [float(i % 2) for i in range(len(completions))]


def trainer_for(kind: str, model_dir: str, tok, data: Dataset, args: argparse.Namespace):
    common = dict(
        output_dir=f"/tmp/bench-rl-{kind}",
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        num_generations=2,
        max_completion_length=1024,
        learning_rate=1e-5,
        logging_steps=10_000,
        disable_tqdm=True,
        seed=0,
    )
    rollout = make_rollout_func(args.reasoning_steps)
    if kind == "grpo":
        config = GRPOConfig(**common)
        return GRPOTrainer(
            model_dir, verifier, args=config, train_dataset=data, processing_class=tok, rollout_func=rollout
        )
    update = kind.removeprefix("prime-")
    config = PRIMEConfig(**common, prm_update=update, accuracy_lower_bound=0.0, accuracy_upper_bound=1.0)
    return PRIMETrainer(
        model_dir, verifier, args=config, train_dataset=data, processing_class=tok, rollout_func=rollout
    )


def floor_extra_times(model_dir: str, tok, data: Dataset, args: argparse.Namespace) -> list[float]:
    """PRM forward + backward + AdamW step and PRM-reference forward on one batch of the same rollouts."""
    from transformers import AutoModelForCausalLM

    prm = AutoModelForCausalLM.from_pretrained(model_dir)
    ref = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompts = [row["prompt"] for row in data.select(range(args.batch // 2)) for _ in range(2)]

    class _Owner:
        processing_class = tok

    out = make_rollout_func(args.reasoning_steps)(prompts, _Owner())
    rows = [p + c for p, c in zip(out["prompt_ids"], out["completion_ids"], strict=True)]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_token_id)
    attn = torch.zeros_like(ids)
    cmask = torch.zeros_like(ids)
    for i, (p, row) in enumerate(zip(out["prompt_ids"], rows, strict=True)):
        ids[i, : len(row)], attn[i, : len(row)], cmask[i, len(p) : len(row)] = torch.tensor(row), 1, 1
    labels = torch.tensor([float(i % 2) for i in range(len(rows))])
    opt = torch.optim.AdamW(prm.parameters(), lr=1e-6)
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        with torch.no_grad():
            ref_logps = completion_logps(ref, ids, attn, cmask)
        logps = completion_logps(prm, ids, attn, cmask)
        ce_loss(0.05 * (logps.double() - ref_logps.double()).sum(-1), labels).mean().backward()
        torch.nn.utils.clip_grad_norm_(prm.parameters(), 10.0)
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smaller model and fewer steps (smoke run)")
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--batch", type=int, default=8, help="completions per step (4 prompts × 2)")
    p.add_argument("--steps", type=int, default=8, help="steps per block")
    p.add_argument("--blocks", type=int, default=3, help="alternating blocks per contender")
    p.add_argument("--reasoning-steps", type=int, default=6, help="reasoning steps per completion")
    args = p.parse_args()
    if args.quick:
        args.hidden, args.layers, args.steps, args.blocks, args.batch = 64, 2, 4, 1, 4
    torch.set_num_threads(2)
    warmup = 2
    tok = build_tokenizer(vocab_size=2000)
    model_dir = "/tmp/bench-rl-model"
    build_model("llama", tok, hidden_size=args.hidden, num_layers=args.layers).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data = Dataset.from_list(
        [{"prompt": f"Problem {i}: add the numbers.\n"} for i in range(4 * args.batch * args.steps)]
    )
    kinds = ["grpo", "prime-after", "prime-before"]
    times: dict[str, list[float]] = {k: [] for k in [*kinds, "floor_extra"]}
    for _ in range(args.blocks):
        for kind in kinds:
            timer = StepTimer()
            trainer = trainer_for(kind, model_dir, tok, data, args)
            trainer.add_callback(timer)
            trainer.train()
            times[kind].extend(timer.times[warmup:])
        times["floor_extra"].extend(floor_extra_times(model_dir, tok, data, args)[warmup:])
    med = {k: statistics.median(v) for k, v in times.items()}
    floor = med["grpo"] + med["floor_extra"]
    result = {
        "config": vars(args),
        "median_step_seconds": med,
        "floor_seconds": floor,
        "prime_after_over_floor": med["prime-after"] / floor,
        "prime_before_over_floor": med["prime-before"] / floor,
        "prime_after_over_grpo": med["prime-after"] / med["grpo"],
        "prime_before_over_grpo": med["prime-before"] / med["grpo"],
        "target": "prime_after_over_floor <= 1.15",
        "threads": torch.get_num_threads(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rl.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
