"""Checks on a CUDA device that the CPU test suite cannot make (run on a lent GPU machine; not a test).

1. Per-token log-probs: every backend of `trl_implicit_prm.logps` (fused, logits, compact) in float32 and bfloat16
   on the device against a float64 CPU computation; `method="auto"` must pick the fused head on CUDA.
2. `ProcessRewardComputer` on the device (float32 and bfloat16) against the same computer on the CPU.
3. `CETrainer` trains in bf16 on the device, saves, and the checkpoint scores on the CPU with finite rewards.
4. Scoring cost on a larger model: `score()` against a bare policy + reference forward over the same
   length-sorted, padded batches (wall time and peak memory, ratios measured in one run).

    python bench/gpu_check.py                 # on a CUDA machine
    python bench/gpu_check.py --device cpu --quick   # smoke run of the script itself

Prints one JSON object and writes it to bench/results/gpu_check.json (or --output).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from trl_implicit_prm import CEConfig, CETrainer, ProcessRewardComputer
from trl_implicit_prm.logps import completion_logps, resolve_logps_method
from trl_implicit_prm.tiny import build_model, build_tokenizer

RESULTS = Path(__file__).resolve().parent / "results"


def _rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b, e = rng.randint(1, 50), rng.randint(1, 50), rng.choice([0, 0, 1])
        steps = [f"{a} + {b} = {a + b + e}."] + [f"Check {k}: {a + b + e} - {b} = {a + e}." for k in range(3)]
        rows.append({"prompt": f"Q: {a} + {b}?\n", "completion": "\n\n".join(steps), "label": float(e == 0)})
    return rows


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batch(tok, rows: list[dict[str, Any]], device: torch.device) -> dict[str, torch.Tensor]:
    prompts = [tok(r["prompt"])["input_ids"] for r in rows]
    full = [tok(r["prompt"] + r["completion"])["input_ids"] for r in rows]
    width = max(map(len, full))
    ids = torch.full((len(rows), width), tok.pad_token_id)
    mask, completion = torch.zeros_like(ids), torch.zeros_like(ids)
    for i, (p, f) in enumerate(zip(prompts, full, strict=True)):
        ids[i, : len(f)] = torch.tensor(f)
        mask[i, : len(f)] = 1
        completion[i, len(p) : len(f)] = 1
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "completion_mask": completion.to(device),
    }


def check_logps(tok, device: torch.device, hidden: int, layers: int) -> dict[str, Any]:
    """Max |Δ| of each backend's completion log-probs against float64 on the CPU."""
    model = build_model("llama", tok, hidden_size=hidden, num_layers=layers, num_heads=8, seed=1)
    batch = _batch(tok, _rows(8, 0), torch.device("cpu"))
    with torch.no_grad():
        exact = completion_logps(model.double(), **batch, method="logits").double()
    out: dict[str, Any] = {"auto_method_on_device": resolve_logps_method(model, "auto", device)}
    on_device = {k: v.to(device) for k, v in batch.items()}
    for dtype in (torch.float32, torch.bfloat16):
        dev_model = build_model("llama", tok, hidden_size=hidden, num_layers=layers, num_heads=8, seed=1)
        dev_model = dev_model.to(device=device, dtype=dtype)
        for method in ("fused", "logits", "compact"):
            with torch.no_grad():
                got = completion_logps(dev_model, **on_device, method=method).double().cpu()
            diff = (got - exact).abs()[batch["completion_mask"].bool()].max().item()
            out[f"{method}_{str(dtype).removeprefix('torch.')}_max_abs_diff"] = diff
    return out


def check_computer(tok, device: torch.device, hidden: int, layers: int) -> dict[str, Any]:
    """Step rewards on the device against the CPU computer (float32)."""
    rows = _rows(32, 1)
    prompts, responses = [r["prompt"] for r in rows], [r["completion"] for r in rows]

    def rewards(dev: torch.device, dtype: torch.dtype) -> list[float]:
        policy = build_model("llama", tok, hidden_size=hidden, num_layers=layers, num_heads=8, seed=2)
        ref = build_model("llama", tok, hidden_size=hidden, num_layers=layers, num_heads=8, seed=3)
        prc = ProcessRewardComputer(
            policy.to(dev, dtype), tok, ref_model=ref.to(dev, dtype), beta=0.05, append_eos=True
        )
        scored = prc.score(prompts, responses, show_progress=False)
        return [x for s in scored for x in s.step_rewards]

    cpu = rewards(torch.device("cpu"), torch.float32)
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        got = rewards(device, dtype)
        out[f"step_rewards_{str(dtype).removeprefix('torch.')}_max_abs_diff_vs_cpu"] = max(
            abs(a - b) for a, b in zip(got, cpu, strict=True)
        )
    out["step_reward_scale"] = max(abs(x) for x in cpu)
    return out


def check_training(tok, device: torch.device, workdir: Path) -> dict[str, Any]:
    """CETrainer in bf16 on the device; the saved checkpoint scores on the CPU."""
    from datasets import Dataset

    base = workdir / "base"
    build_model("llama", tok, hidden_size=128, num_layers=2, num_heads=4, seed=4).save_pretrained(base)
    tok.save_pretrained(base)
    on_cuda = device.type == "cuda"
    args = CEConfig(
        output_dir=str(workdir / "run"),
        max_steps=20,
        learning_rate=1e-3,
        per_device_train_batch_size=16,
        beta=0.5,
        use_cpu=not on_cuda,
        bf16=on_cuda,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
    )
    trainer = CETrainer(
        str(base), args=args, train_dataset=Dataset.from_list(_rows(160, 2)), processing_class=tok
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    trainer.save_model(str(workdir / "prm"))
    prc = ProcessRewardComputer.from_pretrained(str(workdir / "prm"), device="cpu")
    scored = prc.score_one("Q: 2 + 3?\n", "2 + 3 = 5.\n\nCheck 0: 5 - 3 = 2.")
    return {
        "param_dtype_in_training": str(next(trainer.model.parameters()).dtype),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "saved_checkpoint_scores_on_cpu": scored.step_rewards,
        "finite": all(x == x and abs(x) != float("inf") for x in scored.step_rewards),
    }


def bench_scoring(tok, device: torch.device, hidden: int, layers: int, n: int, vocab: int) -> dict[str, Any]:
    """score() against a bare forward of both models over the same length-sorted batches."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    models = []
    for seed in (5, 6):
        model = build_model("llama", tok, hidden_size=hidden, num_layers=layers, num_heads=16, seed=seed)
        # a real model's vocabulary size (the ids stay below the tiny tokenizer's 600)
        model.resize_token_embeddings(vocab, mean_resizing=False)
        models.append(model.to(device, dtype))
    policy, ref = models
    rows = _rows(n, 3)
    prompts, responses = [r["prompt"] for r in rows], [r["completion"] for r in rows]
    batch_size = 64
    prc = ProcessRewardComputer(policy, tok, ref_model=ref, beta=0.05, batch_size=batch_size, append_eos=True)
    order = sorted(range(n), key=lambda i: len(prompts[i] + responses[i]))
    batches = [
        _batch(tok, [rows[i] for i in order[s : s + batch_size]], device) for s in range(0, n, batch_size)
    ]

    def bare() -> None:
        with torch.no_grad():
            for b in batches:
                for m in (policy, ref):
                    m(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False)

    def score() -> None:
        prc.score(prompts, responses, show_progress=False)

    out: dict[str, Any] = {
        "responses": n,
        "hidden": hidden,
        "layers": layers,
        "vocab": vocab,
        "dtype": str(dtype),
    }
    bare(), score()  # warm-up: kernel selection and the allocator's first growth are not timed
    for name, fn in (("bare", bare), ("score", score)):
        times, peaks = [], []
        for _ in range(3):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - start)
            if device.type == "cuda":
                peaks.append(torch.cuda.max_memory_allocated(device) / 2**30)
        out[f"{name}_seconds"] = sorted(times)[1]  # median of 3
        if peaks:
            out[f"{name}_peak_gib"] = max(peaks)
    out["time_ratio_score_over_bare"] = out["score_seconds"] / out["bare_seconds"]
    if device.type == "cuda":
        out["peak_ratio_score_over_bare"] = out["score_peak_gib"] / out["bare_peak_gib"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small models (a smoke run of the script)")
    parser.add_argument("--output", type=Path, default=RESULTS / "gpu_check.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    tok = build_tokenizer()
    small = (64, 2) if args.quick else (256, 4)
    big = (128, 2, 64, 4096) if args.quick else (2048, 16, 1024, 128256)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    import transformers
    import trl

    report["transformers"], report["trl"] = transformers.__version__, trl.__version__
    report["logps"] = check_logps(tok, device, *small)
    report["computer"] = check_computer(tok, device, *small)
    with tempfile.TemporaryDirectory() as tmp:
        report["training"] = check_training(tok, device, Path(tmp))
    report["scoring_bench"] = bench_scoring(tok, device, *big)
    text = json.dumps(report, indent=2)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
