"""End-to-end best-of-N evaluation of 10,000 candidates on CPU: how much wall time is NOT model forward time.

The run is the `eval-bon` command's: read the candidates file, score every candidate once with policy and
reference, aggregate, grade answers, build the accuracy curve, write JSON and a plot. Model time is measured around
the computer's log-prob calls (backbone, LM head and log-softmax of policy and reference); everything else (file parsing,
tokenization, batching, reward arithmetic, answer extraction and grading, the curve) is overhead.
Target: overhead < 20% of wall time. Usage: `python bench/evaluation.py [--candidates 10000] [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from trl_implicit_prm.demo.task import ArithmeticTask, make_solutions, tokenizer_corpus
from trl_implicit_prm.tiny import build_model, build_tokenizer

RESULTS = Path(__file__).parent / "results"


class ForwardClock:
    """Accumulates wall time spent computing log-probs (backbone + LM head + log-softmax) of policy and reference."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, prc) -> None:
        """Wrap the computer's scoring calls with the timer."""
        inner = prc._logps

        def timed(model, tensors):
            start = time.perf_counter()
            out = inner(model, tensors)
            self.seconds += time.perf_counter() - start
            return out

        prc._logps = timed


def write_candidates(path: Path, n_candidates: int, per_problem: int, seed: int = 0) -> ArithmeticTask:
    task = ArithmeticTask(n_terms=6, max_value=20, seed=seed)
    rng = random.Random(seed)
    problems = task.make_problems(n_candidates // per_problem, seed=seed)
    with path.open("w") as f:
        for p in problems:
            n_right = rng.randint(0, per_problem)
            sols = make_solutions(p, n_right, per_problem - n_right, rng)
            row = {
                "problem": p.prompt,
                "reference": p.answer,
                "candidates": [{"response": s.steps} for s in sols],
            }
            f.write(json.dumps(row) + "\n")
    return task


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidates", type=int, default=10_000)
    p.add_argument("--per-problem", type=int, default=16)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="1,000 candidates and a smaller model")
    args = p.parse_args()
    if args.quick:
        args.candidates, args.hidden, args.layers = 1000, 64, 2
    torch.set_num_threads(2)
    from argparse import Namespace

    from trl_implicit_prm.commands import eval_bon

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "candidates.jsonl"
        task = write_candidates(data, args.candidates, args.per_problem)
        tok = build_tokenizer(vocab_size=400, corpus=tokenizer_corpus(task, 2000))
        for name, seed in (("policy", 0), ("ref", 1)):
            build_model(
                "llama", tok, hidden_size=args.hidden, num_layers=args.layers, seed=seed
            ).save_pretrained(root / name)
            tok.save_pretrained(root / name)
        cli = Namespace(
            model=str(root / "policy"),
            ref_model=str(root / "ref"),
            reference_free=None,
            beta=None,
            separator="\n",
            batch_size=None,
            dtype=None,
            device="cpu",
            data=data,
            aggregations=["min", "sum", "mean", "last"],
            ns=None,
            output=root / "out.json",
            plot=root / "bon.png",
        )
        clock = ForwardClock()
        original = eval_bon.computer_from_args

        def instrumented(namespace, **kw):
            prc = original(namespace, **kw)
            clock.wrap(prc)
            return prc

        eval_bon.computer_from_args = instrumented
        start = time.perf_counter()
        eval_bon.run(cli)
        wall = time.perf_counter() - start
        eval_bon.computer_from_args = original
    outside = 1.0 - clock.seconds / wall
    report = {
        "config": vars(args),
        "wall_seconds": wall,
        "forward_seconds": clock.seconds,
        "share_outside_forward": outside,
        "target": 0.20,
        "candidates_per_second": args.candidates / wall,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "evaluation.json").write_text(json.dumps(report, indent=2, default=str))
    print(
        f"{args.candidates} candidates: wall {wall:.1f}s, model forwards {clock.seconds:.1f}s, "
        f"outside {100 * outside:.1f}% (target < 20%) {'ok' if outside < 0.20 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
