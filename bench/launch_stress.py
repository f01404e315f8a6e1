"""Launch the training recipes many times on 2 CPU processes and count clean exits and loadable checkpoints.

Not a test: a stress run for the shutdown abort (a rank dying with SIGABRT at exit, "terminate called without an
active exception", after which torchrun kills the others) and for saves without weights. Each run is
`accelerate launch --num_processes 2` of a recipe (train_ce.py by default) with recipes/configs/tiny-cpu.yaml,
under recipes/accelerate/zero3.yaml (DeepSpeed ZeRO-3) or multi_gpu.yaml (DDP). A run passes when it exits 0
and its checkpoint loads in `ProcessRewardComputer.from_pretrained` and scores a row with finite rewards.

    python bench/launch_stress.py --runs 20                  # both kinds; the target is 20/20 for each
    python bench/launch_stress.py --runs 5 --kinds ddp

Writes bench/results/launch_stress-<time>.json (every run: exit code, signals of the ranks, seconds, whether the
checkpoint loads, the log tail of failures) and prints a table. Exit status 0 when every run passed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CONFIGS = {"zero3": "zero3.yaml", "ddp": "multi_gpu.yaml"}
RECIPES = {"ce": "train_ce.py", "dpo": "train_dpo.py"}
PROMPT, RESPONSE = "Q1: 2 + 3?\n", "2 + 3 = 5.\n\nSo 5.\n\nThe answer is 5."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_inputs(root: Path) -> tuple[Path, Path]:
    """A tiny model (trl_implicit_prm.tiny) and 8 rollouts of a correct and a wrong response."""
    from trl_implicit_prm.tiny import build_model, build_tokenizer

    model = root / "tiny-llama"
    tok = build_tokenizer()
    build_model("llama", tok, seed=0).save_pretrained(model)
    tok.save_pretrained(model)
    rows = []
    for i in range(8):
        a, b = i % 7 + 1, i % 5 + 2
        good = f"{a} + {b} = {a + b}.\n\nThe answer is {a + b}."
        bad = f"{a} + {b} = {a + b + 1}.\n\nThe answer is {a + b + 1}."
        rows.append(
            {"prompt": f"Q{i}: {a} + {b}?\n", "completions": [good, bad], "correctness": [True, False]}
        )
    data = root / "rollouts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model, data


def rank_exit_codes(log: str) -> list[int]:
    """Exit codes of the failed ranks as torchrun reports them (negative: killed by that signal)."""
    return [int(code) for code in re.findall(r"exitcode\s*:\s*(-?\d+)", log)]


def check_checkpoint(out: Path) -> str | None:
    """None when the checkpoint loads and scores a row with finite step rewards, else what went wrong."""
    from trl_implicit_prm import ProcessRewardComputer

    try:
        prm = ProcessRewardComputer.from_pretrained(str(out), device="cpu")
        result = prm.score_one(PROMPT, RESPONSE)
    except Exception as err:  # any failure is the finding to report
        return f"{type(err).__name__}: {err}"[:2000]
    if len(result.step_rewards) != 3 or not all(math.isfinite(r) for r in result.step_rewards):
        return f"unexpected step rewards {result.step_rewards}"
    return None


def one_run(kind: str, recipe: str, model: Path, data: Path, out: Path, timeout: float) -> dict[str, Any]:
    cmd = [
        str(Path(sys.executable).parent / "accelerate"),
        "launch",
        "--config_file",
        str(REPO / "recipes" / "accelerate" / CONFIGS[kind]),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--main_process_port",
        str(free_port()),
        str(REPO / "recipes" / RECIPES[recipe]),
        "--config",
        str(REPO / "recipes" / "configs" / "tiny-cpu.yaml"),
        "--model_name_or_path",
        str(model),
        "--dataset_name",
        str(data),
        "--output_dir",
        str(out),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "HF_DATASETS_CACHE": str(out.parent / "datasets-cache"),
    }
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        code, log = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        code, log = None, f"timed out after {timeout} s\n{err.stdout or ''}{err.stderr or ''}"
    seconds = time.perf_counter() - start
    load_error = check_checkpoint(out) if out.is_dir() else "no output directory"
    failed = code != 0 or load_error is not None
    return {
        "exit_code": code,
        "rank_exit_codes": rank_exit_codes(log),
        "aborted": "terminate called" in log or "SIGABRT" in log,
        "seconds": round(seconds, 1),
        "loads": load_error is None,
        "load_error": load_error,
        "log_tail": log[-3000:] if failed else None,
    }


def summarize(kind: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kind": kind,
        "runs": len(runs),
        "exit_0": sum(r["exit_code"] == 0 for r in runs),
        "aborted": sum(r["aborted"] for r in runs),
        "loadable": sum(r["loads"] for r in runs),
        "passed": sum(r["exit_code"] == 0 and r["loads"] for r in runs),
        "median_seconds": statistics.median(r["seconds"] for r in runs) if runs else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="launches per kind (default 20)")
    parser.add_argument("--kinds", nargs="+", choices=sorted(CONFIGS), default=["zero3", "ddp"])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="ce")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before a launch counts as hung")
    parser.add_argument(
        "--output", type=Path, help="JSON summary (default bench/results/launch_stress-TIME.json)"
    )
    parser.add_argument("--keep", type=Path, help="keep the checkpoints under this folder (default: deleted)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    work = Path(tempfile.mkdtemp(prefix="launch-stress-"))
    model, data = make_inputs(work)
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in args.kinds}
    for kind in args.kinds:
        for i in range(1, args.runs + 1):
            out = (args.keep or work) / f"{kind}-{i:03d}"
            out.parent.mkdir(parents=True, exist_ok=True)
            run = one_run(kind, args.recipe, model, data, out, args.timeout)
            results[kind].append(run)
            status = "ok" if run["exit_code"] == 0 and run["loads"] else "FAILED"
            print(
                f"[{kind} {i}/{args.runs}] exit {run['exit_code']} ranks {run['rank_exit_codes'] or '-'} "
                f"loads {'yes' if run['loads'] else 'no'} {run['seconds']:.0f} s {status}",
                flush=True,
            )
            if status == "FAILED":
                print(
                    "    "
                    + (run["load_error"] or "")
                    + "\n    "
                    + "\n    ".join((run["log_tail"] or "").splitlines()[-8:]),
                    flush=True,
                )
            if args.keep is None:
                shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)

    summary = [summarize(kind, runs) for kind, runs in results.items()]
    print(
        f"\n{'kind':<6} {'runs':>5} {'exit 0':>7} {'aborted':>8} {'loadable':>9} {'passed':>7} {'median s':>9}"
    )
    for s in summary:
        print(
            f"{s['kind']:<6} {s['runs']:>5} {s['exit_0']:>7} {s['aborted']:>8} {s['loadable']:>9} "
            f"{s['passed']:>7} {s['median_seconds']:>9.1f}"
        )
    path = args.output or RESULTS / f"launch_stress-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"recipe": args.recipe, "summary": summary, "runs": results}, indent=1))
    print(f"wrote {path}")
    return 0 if all(s["passed"] == s["runs"] for s in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
