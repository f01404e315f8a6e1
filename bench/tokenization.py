"""Benchmark: the cost of step spans on top of plain batched tokenization.

Both paths run through `datasets.Dataset.map(batched=True)` over the same synthetic multi-step texts (~300
tokens a row), back to back in one process, with the locally trained byte-level BPE test tokenizer:

- `plain`: `tokenizer(texts)` on the full texts (what any TRL preprocessing does);
- `plain+offsets`: the same call with `return_offsets_mapping=True`, offsets computed but not stored (what
  finding spans from offsets must at least pay);
- `tokenize_dataset`: validation, rendering, one offsets-returning tokenizer call per batch, the vectorised
  step-span assignment, and the output columns (`input_ids`, `completion_mask`, `step_index`, ...).

The target is `tokenize_dataset` time / `plain` time <= 1.5 (best wall-clock round of each; CPU time is
reported too, as the machine may be shared). Results go to `bench/results/tokenization.json`.

Usage: `python bench/tokenization.py [--rows 100000] [--batch-size 1000] [--repeats 3]`
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets
import tokenizers
import transformers
from datasets import Dataset

from trl_implicit_prm.data import tokenize_dataset
from trl_implicit_prm.tiny import build_tokenizer

WORDS = [
    "we",
    "add",
    "subtract",
    "multiply",
    "the",
    "result",
    "is",
    "so",
    "then",
    "next",
    "total",
    "carry",
    "digit",
    "number",
    "answer",
    "check",
    "ки",
    "шаг",
    "число",
    "結果",
    "é",
]


def synthetic_rows(n: int, seed: int) -> dict[str, list]:
    """Arithmetic word problems with 6-11 step solutions separated by blank lines (~300 tokens a row)."""
    rng = random.Random(seed)
    prompts, completions, labels = [], [], []
    for i in range(n):
        a, b = rng.randint(10, 9999), rng.randint(10, 9999)
        prompts.append(f"Problem {i}: what is {a} + {b}? Show your work step by step.\n")
        steps = []
        for k in range(rng.randint(5, 10)):
            x, y = rng.randint(0, 999), rng.randint(0, 999)
            filler = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 11)))
            steps.append(f"Step {k + 1}: {filler} {x} + {y} = {x + y}.")
        steps.append(f"The answer is {a + b}.")
        completions.append("\n\n".join(steps))
        labels.append(rng.random() < 0.5)
    return {"prompt": prompts, "completion": completions, "label": labels}


def without_offsets(encoding) -> dict:
    """The same columns as a plain tokenizer call: the offsets are computed, then dropped."""
    return {k: v for k, v in encoding.items() if k != "offset_mapping"}


def timed(fn):
    """Run `fn`; return its result, wall-clock seconds and this process's CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the three measurements; best kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).parent / "results" / "tokenization.json"
    )
    args = parser.parse_args()
    datasets.disable_progress_bars()

    tokenizer, build_s, _ = timed(build_tokenizer)
    data, gen_s, _ = timed(lambda: synthetic_rows(args.rows, args.seed))
    rows = Dataset.from_dict(data)
    texts = Dataset.from_dict(
        {"text": [p + c for p, c in zip(data["prompt"], data["completion"], strict=True)]}
    )
    print(f"built the tokenizer in {build_s:.1f}s, generated {args.rows} rows in {gen_s:.1f}s", flush=True)

    methods = {
        "plain": lambda ds: ds.map(
            lambda b: tokenizer(b["text"]), batched=True, batch_size=args.batch_size, remove_columns=["text"]
        ),
        "plain_offsets": lambda ds: ds.map(
            lambda b: without_offsets(tokenizer(b["text"], return_offsets_mapping=True)),
            batched=True,
            batch_size=args.batch_size,
            remove_columns=["text"],
        ),
        "tokenize_dataset": lambda ds: tokenize_dataset(ds, tokenizer, batch_size=args.batch_size),
    }
    inputs = {"plain": texts, "plain_offsets": texts, "tokenize_dataset": rows}

    # Warm-up on a slice (first-call costs), then rounds of the three measurements back to back. The machine
    # may be shared: the best round of each method is the one least disturbed by other processes.
    warm = min(args.rows, 2 * args.batch_size)
    for name, fn in methods.items():
        fn(inputs[name].select(range(warm)))
    walls: dict[str, list[float]] = {name: [] for name in methods}
    cpus: dict[str, list[float]] = {name: [] for name in methods}
    outputs = {}
    for r in range(args.repeats):
        for name, fn in methods.items():
            outputs[name], wall, cpu = timed(lambda fn=fn, name=name: fn(inputs[name]))
            walls[name].append(wall)
            cpus[name].append(cpu)
            print(f"round {r + 1}: {name:17s} {wall:7.2f}s wall {cpu:7.2f}s cpu", flush=True)

    # Same token ids from both paths (a sample of rows).
    base, ours = outputs["plain"], outputs["tokenize_dataset"]
    for i in range(0, args.rows, max(1, args.rows // 200)):
        assert ours[i]["input_ids"] == base[i]["input_ids"], f"row {i}: token ids differ"
    total_tokens = sum(len(x) for x in base["input_ids"])
    best = {name: min(walls[name]) for name in methods}
    best_cpu = {name: min(cpus[name]) for name in methods}
    results = {
        "rows": args.rows,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "mean_tokens_per_row": total_tokens / args.rows,
        **{
            name: {
                "best_wall_seconds": best[name],
                "best_cpu_seconds": best_cpu[name],
                "rows_per_s": args.rows / best[name],
                "tokens_per_s": total_tokens / best[name],
                "wall_seconds_per_round": walls[name],
                "cpu_seconds_per_round": cpus[name],
            }
            for name in methods
        },
        "ratio_vs_plain": best["tokenize_dataset"] / best["plain"],
        "ratio_vs_plain_cpu": best_cpu["tokenize_dataset"] / best_cpu["plain"],
        "ratio_vs_plain_offsets": best["tokenize_dataset"] / best["plain_offsets"],
        "target_ratio": 1.5,
        "meets_target": best["tokenize_dataset"] / best["plain"] <= 1.5,
        "environment": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average_1min_at_end": os.getloadavg()[0],
            "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM"),
            "tokenizers": tokenizers.__version__,
            "transformers": transformers.__version__,
            "datasets": datasets.__version__,
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"\n{args.rows} rows, {results['mean_tokens_per_row']:.0f} tokens/row on average, batch size "
        f"{args.batch_size}, best of {args.repeats} round(s)\n"
        f"  plain tokenizer(texts)        {results['plain']['rows_per_s']:9.0f} rows/s\n"
        f"  plain + offsets               {results['plain_offsets']['rows_per_s']:9.0f} rows/s\n"
        f"  tokenize_dataset (with spans) {results['tokenize_dataset']['rows_per_s']:9.0f} rows/s\n"
        f"  overhead ratio {results['ratio_vs_plain']:.2f} wall / {results['ratio_vs_plain_cpu']:.2f} cpu vs plain "
        f"(target <= 1.5: {'met' if results['meets_target'] else 'MISSED'}), "
        f"{results['ratio_vs_plain_offsets']:.2f} vs plain+offsets\n"
        f"  written to {args.output}"
    )


if __name__ == "__main__":
    main()
