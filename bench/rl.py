"""Time per RL step of `PRIMETrainer` against stock `GRPOTrainer` and against its floor, as ratios of one run.

Both trainers get the same rollouts through TRL's `rollout_func` (fixed texts: generation, the same for both,
would only add noise), the same model, data and batch. The floor is what PRIME must add to a GRPO step: one PRM
forward + backward + AdamW step and one PRM-reference forward on the same tokens, timed in a hand-written loop
(`completion_logps`, `ce_loss`), added to the GRPO step. Target: PRIME / floor <= 1.15.

`prm_update="after"` does exactly that work; `"before"` (PRIME's default) re-scores the batch with the updated
PRM, one more PRM forward than the floor, and is reported against the same floor.

The machine is shared, so step times drift by several times within minutes. Every contender is built once; then,
block after block, each trains `--steps` steps, in an order rotated from block to block, so that the contenders
of one block ran within seconds of each other. Reported: every step time, per contender its median and minimum,
the ratios of those, and the ratio within each block (medians of the block's steps after the first, which
carries the dataloader's start); the headline ratio is the median of the per-block ratios. Each step is timed
twice: wall clock, and this process's CPU time, which on one torch thread (the default) counts the work done and
barely moves when other jobs share the cores; the CPU-time ratios are the headline. Gradient
checkpointing is off for every contender (GRPO's default turns it on, which would make the PRM's backward
recompute its forward: more than the floor's one forward + backward, and a memory choice rather than PRIME's
overhead). Usage: `python bench/rl.py [--quick]`; writes bench/results/rl.json.
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
from transformers import TrainerCallback
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
        gradient_checkpointing=False,
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


class CPUStepTimer(TrainerCallback):
    """The CPU time of this process for every optimizer step (`time.process_time`)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        """Start the step's CPU clock."""
        self._start = time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        """Record the step's CPU time."""
        self.times.append(time.process_time() - self._start)


class Floor:
    """PRM forward + backward + AdamW step and PRM-reference forward on one batch of the same rollouts."""

    def __init__(self, model_dir: str, tok, data: Dataset, args: argparse.Namespace):
        from transformers import AutoModelForCausalLM

        self.prm = AutoModelForCausalLM.from_pretrained(model_dir)
        self.ref = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        prompts = [row["prompt"] for row in data.select(range(args.batch // 2)) for _ in range(2)]

        class _Owner:
            processing_class = tok

        out = make_rollout_func(args.reasoning_steps)(prompts, _Owner())
        rows = [p + c for p, c in zip(out["prompt_ids"], out["completion_ids"], strict=True)]
        width = max(map(len, rows))
        self.ids = torch.full((len(rows), width), tok.pad_token_id)
        self.attn = torch.zeros_like(self.ids)
        self.cmask = torch.zeros_like(self.ids)
        for i, (p, row) in enumerate(zip(out["prompt_ids"], rows, strict=True)):
            self.ids[i, : len(row)], self.attn[i, : len(row)] = torch.tensor(row), 1
            self.cmask[i, len(p) : len(row)] = 1
        self.labels = torch.tensor([float(i % 2) for i in range(len(rows))])
        self.opt = torch.optim.AdamW(self.prm.parameters(), lr=1e-6)

    def times(self, steps: int) -> tuple[list[float], list[float]]:
        """Wall and CPU seconds of each of `steps` steps."""
        wall, cpu = [], []
        for _ in range(steps):
            t, c = time.perf_counter(), time.process_time()
            with torch.no_grad():
                ref_logps = completion_logps(self.ref, self.ids, self.attn, self.cmask)
            logps = completion_logps(self.prm, self.ids, self.attn, self.cmask)
            rewards = 0.05 * (logps.double() - ref_logps.double()).sum(-1)
            ce_loss(rewards, self.labels).mean().backward()
            torch.nn.utils.clip_grad_norm_(self.prm.parameters(), 10.0)
            self.opt.step()
            self.opt.zero_grad()
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        return wall, cpu


def run_blocks(contenders: dict, floor: Floor, args: argparse.Namespace) -> dict[str, list[dict]]:
    """Per block, every contender's wall and CPU step times (`--steps` each), in an order rotated per block."""
    names = [*contenders, "floor_extra"]
    out: dict[str, list[dict]] = {"wall": [], "cpu": []}
    for b in range(args.blocks):
        wall: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        for name in names[b % len(names) :] + names[: b % len(names)]:
            if name == "floor_extra":
                wall[name], cpu[name] = floor.times(args.steps)
                continue
            timers = StepTimer(), CPUStepTimer()
            trainer = contenders[name]
            for timer in timers:
                trainer.add_callback(timer)
            trainer.train()
            for timer in timers:
                trainer.remove_callback(timer)
            wall[name], cpu[name] = timers[0].times, timers[1].times
        out["wall"].append(wall)
        out["cpu"].append(cpu)
        print(json.dumps({"block": b, "cpu_median": {k: statistics.median(v[1:]) for k, v in cpu.items()}}))
    return out


def summarise(blocks: list[dict[str, list[float]]]) -> dict:
    """Medians and minima per contender (first step of each block left out) and the ratios to the floor."""

    def ratios(t: dict[str, float]) -> dict[str, float]:
        floor = t["grpo"] + t["floor_extra"]
        out = {f"{k.replace('-', '_')}_over_floor": t[k] / floor for k in ("prime-after", "prime-before")}
        out.update(
            {f"{k.replace('-', '_')}_over_grpo": t[k] / t["grpo"] for k in ("prime-after", "prime-before")}
        )
        return out

    pooled = {k: [x for blk in blocks for x in blk[k][1:]] for k in blocks[0]}
    median = {k: statistics.median(v) for k, v in pooled.items()}
    minimum = {k: min(v) for k, v in pooled.items()}
    per_block = [ratios({k: statistics.median(v[1:]) for k, v in blk.items()}) for blk in blocks]
    headline = {k: statistics.median(r[k] for r in per_block) for k in per_block[0]}
    return {
        "median_step_seconds": median,
        "min_step_seconds": minimum,
        "ratios_median_of_blocks": headline,
        "ratios_of_medians": ratios(median),
        "ratios_of_minima": ratios(minimum),
        "ratios_per_block": per_block,
        "step_seconds_per_block": blocks,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smaller model and fewer steps (smoke run)")
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--batch", type=int, default=8, help="completions per step (4 prompts × 2)")
    p.add_argument(
        "--steps", type=int, default=4, help="steps per contender and block (the first is left out)"
    )
    p.add_argument("--blocks", type=int, default=6, help="blocks (each runs every contender once)")
    p.add_argument("--reasoning-steps", type=int, default=6, help="reasoning steps per completion")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: CPU time is the work done, even on a busy machine)",
    )
    args = p.parse_args()
    if args.quick:
        args.hidden, args.layers, args.steps, args.blocks, args.batch = 64, 2, 3, 2, 4
    torch.set_num_threads(args.threads)
    tok = build_tokenizer(vocab_size=2000)
    model_dir = "/tmp/bench-rl-model"
    build_model("llama", tok, hidden_size=args.hidden, num_layers=args.layers).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data = Dataset.from_list(
        [{"prompt": f"Problem {i}: add the numbers.\n"} for i in range(4 * args.batch * args.steps)]
    )
    contenders = {
        k: trainer_for(k, model_dir, tok, data, args) for k in ("grpo", "prime-after", "prime-before")
    }
    load_before = os.getloadavg()
    times = run_blocks(contenders, Floor(model_dir, tok, data, args), args)
    result = {
        "config": vars(args),
        "cpu_seconds": summarise(times["cpu"]),
        "wall_seconds": summarise(times["wall"]),
        "target": "prime_*_over_floor <= 1.15 (cpu_seconds.ratios_median_of_blocks)",
        "threads": torch.get_num_threads(),
        "load_average_before_after": [load_before, os.getloadavg()],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rl.json").write_text(json.dumps(result, indent=2))
    for clock in ("cpu_seconds", "wall_seconds"):
        print(
            clock, json.dumps({k: result[clock][k] for k in ("ratios_median_of_blocks", "ratios_of_minima")})
        )


if __name__ == "__main__":
    main()
