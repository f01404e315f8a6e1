"""Benchmark incremental scoring (KV caches) in a 16-beam, 8-step search against re-scoring every prefix.

What is measured, in ONE run, with a Llama built from a config (hidden 512, 8 layers, 8 heads, MLP 1376,
vocabulary 32000, float32, random weights; no download) as policy and a second one as reference, on the device
given (`--device`, default CPU with `--threads` threads):

A beam search is replayed with a stand-in generator (random words, `--step-tokens` ± 4 tokens per step; the
policy writing steps is not what is measured): 16 beams, and at every step the 4 best by the min step reward are
kept and forked 4 times. At each step the 16 prefixes are scored three ways, in turn, on the same texts:

- `incremental`: :class:`IncrementalScorer.extend` (tokenizes each prefix, forwards only the new tokens of both
  models after their cached key/values, forks sharing their parent's cache);
- `rescore`: `ProcessRewardComputer.score(..., complete=False)` on every whole prefix (reference cache off), what a
  PRM without caches does at every step;
- `new_tokens_floor`: the forward of both models over the new tokens alone (same batch, no context, no past,
  the same log-prob head): the least any scorer can spend on them.

Reported per step: the three times and `incremental / new_tokens_floor` (target: <= 1.3) and
`rescore / incremental`, the KV-cache bytes the scorer holds after the prune (the 12 beams not kept are released)
and the tokens the kept beams need, counted by hand (:func:`_tokens_held`; times `kv_bytes_per_token` it must
equal the bytes held); overall: the total speed-up of incremental scoring over re-scoring (expected >= 3x at
8 steps), the largest difference between the two scorings' step rewards, the KV-cache peaks (`peak_cache_bytes`:
the scorer's, its batch buffer included; `peak_live_cache_bytes`: held by the live prefixes, parents and children,
right after an extension), what is held once the search is over (0) and the process peak RSS (CUDA: peak
allocated memory). Times are the best of `--repeats` replays.

Usage: `python bench/search.py` (a few minutes on 2 CPU cores) or `python bench/search.py --quick`.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scoring import SPECIALS, VOCAB, build_model, build_tokenizer

from trl_implicit_prm.inference import ProcessRewardComputer
from trl_implicit_prm.inference.kv import forward_new_tokens
from trl_implicit_prm.search import IncrementalScorer

RESULTS = Path(__file__).resolve().parent / "results" / "search.json"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _words(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(len(SPECIALS), VOCAB)}" for _ in range(n))


def _floor(prm: ProcessRewardComputer, texts: list[str]) -> None:
    """Both models over the new tokens alone: one batch, no past; all `n` tokens read (as the incremental scorer
    reads `n`: the parent's last token, whose logits score the first new one, and the new tokens but the last),
    the `n - 1` that have a token before them in the batch scored.
    """
    ids = [torch.tensor(prm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    with torch.inference_mode():
        for model in (prm.model, prm.ref_model):
            forward_new_tokens(model, [(None, 0)] * len(ids), ids, [x[1:] for x in ids], prm._pad_id)


def _tokens_held(kept) -> int:
    """Tokens whose keys/values the kept beams need, by hand: the distinct positions of their pasts (all tokens
    but the last: the token tree they share) plus one per beam but one, because an extension re-reads its parent's
    last token and keeps it in its own segment (no BPE merges here: one word, one token).
    """
    kept = list(kept)
    positions = {tuple(p.input_ids[:k]) for p in kept for k in range(1, len(p.input_ids))}
    return len(positions) + len(kept) - 1


def replay(prm: ProcessRewardComputer, args, seed: int) -> dict:
    """One replay of the search; per-step times of the three scorings, and the peaks."""
    rng = random.Random(seed)
    prompt = _words(rng, 32) + "\n"
    scorer = IncrementalScorer(prm)
    beams = scorer.start([prompt]) * args.beams
    steps, worst, peak_live, prefixes = [], 0.0, 0, []
    for _ in range(args.steps):
        texts = [_words(rng, rng.randint(args.step_tokens - 4, args.step_tokens + 4)) for _ in beams]
        _sync(args.device)
        t0 = time.perf_counter()
        prefixes = scorer.extend(beams, texts)
        _sync(args.device)
        t1 = time.perf_counter()
        full = prm.score([prompt] * len(beams), [list(p.steps) for p in prefixes], complete=False)
        _sync(args.device)
        t2 = time.perf_counter()
        _floor(prm, texts)
        _sync(args.device)
        t3 = time.perf_counter()
        worst = max(
            worst,
            max(
                abs(a - b)
                for p, f in zip(prefixes, full, strict=True)
                for a, b in zip(p.step_rewards, f.step_rewards, strict=True)
            ),
        )
        peak_live = max(peak_live, scorer.cache_bytes)  # parents and children alive
        order = sorted(range(len(prefixes)), key=lambda i: -min(prefixes[i].step_rewards))
        kept = order[: args.beams // args.width]
        for i in order[len(kept) :]:
            prefixes[i].release()  # pruned: its caches are freed at once
        beams = [prefixes[i] for i in kept for _ in range(args.width)]
        steps.append(
            {
                "incremental_s": t1 - t0,
                "rescore_s": t2 - t1,
                "new_tokens_floor_s": t3 - t2,
                "cache_bytes_after_prune": scorer.cache_bytes,
                "tokens_held_by_kept_beams": _tokens_held(prefixes[i] for i in kept),
            }
        )
    beams = prefixes = []  # the search is over: every cache should be freed
    return {
        "steps": steps,
        "max_abs_diff": worst,
        "peak_cache_bytes": scorer.peak_cache_bytes,
        "peak_live_cache_bytes": peak_live,
        "cache_bytes_at_end": scorer.cache_bytes,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small model, 1 repeat")
    parser.add_argument("--beams", type=int, default=16)
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--step-tokens", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--intermediate", type=int, default=1376)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.hidden, args.layers, args.intermediate, args.repeats = 128, 2, 344, 1
    torch.set_num_threads(args.threads)
    tok = build_tokenizer()
    policy, ref = build_model(0, args).to(args.device), build_model(1, args).to(args.device)
    prm = ProcessRewardComputer(policy, tok, ref_model=ref, reference_cache=False, beta=0.05)
    replay(prm, args, seed=123)  # warm-up
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    runs = [replay(prm, args, seed=7) for _ in range(args.repeats)]
    best = [
        {key: min(run["steps"][k][key] for run in runs) for key in runs[0]["steps"][0]}
        for k in range(args.steps)
    ]
    for row in best:
        row["incremental_over_floor"] = row["incremental_s"] / row["new_tokens_floor_s"]
        row["rescore_over_incremental"] = row["rescore_s"] / row["incremental_s"]
    total_inc, total_re = sum(r["incremental_s"] for r in best), sum(r["rescore_s"] for r in best)
    report = {
        "setup": {k: v for k, v in vars(args).items() if k != "output"}
        | {"torch": torch.__version__, "machine": platform.machine()},
        "per_step": best,
        "max_incremental_over_floor": max(r["incremental_over_floor"] for r in best),
        "total_speedup_over_rescoring": total_re / total_inc,
        "max_abs_step_reward_diff": max(run["max_abs_diff"] for run in runs),
        "peak_cache_bytes": max(run["peak_cache_bytes"] for run in runs),
        "peak_live_cache_bytes": max(run["peak_live_cache_bytes"] for run in runs),
        "cache_bytes_at_end": max(run["cache_bytes_at_end"] for run in runs),
        "kv_bytes_per_token": 2
        * args.layers
        * 2
        * policy.config.num_key_value_heads
        * policy.config.head_dim
        * 4,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if args.device.startswith("cuda"):
        report["cuda_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
    for k, row in enumerate(best):
        print(
            f"step {k + 1}: incremental {row['incremental_s'] * 1e3:7.1f} ms, floor {row['new_tokens_floor_s'] * 1e3:7.1f} "
            f"ms (x{row['incremental_over_floor']:.2f}), rescore {row['rescore_s'] * 1e3:7.1f} ms "
            f"(x{row['rescore_over_incremental']:.2f})"
        )
    print(
        f"total speed-up over re-scoring: x{report['total_speedup_over_rescoring']:.2f}; "
        f"max |diff| {report['max_abs_step_reward_diff']:.2e}; peak KV {report['peak_cache_bytes'] / 2**20:.1f} MiB "
        f"(batch buffers included; held by live prefixes: {report['peak_live_cache_bytes'] / 2**20:.1f} MiB, after "
        f"the last prune: {best[-1]['cache_bytes_after_prune'] / 2**20:.1f} MiB = "
        f"{best[-1]['tokens_held_by_kept_beams']} tokens needed by the kept beams x "
        f"{report['kv_bytes_per_token']} B)"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
