"""`trl-implicit-prm demo`: the paper's claim in miniature, on a CPU, with no download."""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trl_implicit_prm.commands._errors import CommandError

NAME = "demo"
HELP = (
    "Train implicit PRMs from outcome labels on a synthetic reasoning task and show that they find the "
    "first wrong step (writes report.json, report.md, bon.png, steps.html)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `demo` command's arguments to `parser`."""
    parser.add_argument("--output-dir", default="demo_output", help="where the report and models go")
    parser.add_argument("--seed", type=int, default=0, help="seed of the task, sampling and training")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="run once per seed (into OUTPUT_DIR/seed-S) and aggregate: mean and spread of every number",
    )
    parser.add_argument(
        "--n-terms", type=int, default=4, help="operands per problem (3..8): steps = n_terms - 1"
    )
    parser.add_argument("--operators", default="+-*", help="operators the problems use, e.g. '+-*' or '+-'")
    parser.add_argument(
        "--quick", action="store_true", help="a reduced run (about a minute) for a first look"
    )
    parser.add_argument(
        "--rl", action="store_true", help="then the RL stage: GRPO vs PRIME vs min-form (rl.png)"
    )
    parser.add_argument(
        "--rl-only", action="store_true", help="only the RL stage, on an existing --output-dir"
    )
    parser.add_argument("--rl-seeds", type=int, nargs="+", default=[0], help="seeds of the RL stage")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="override any DemoConfig field, e.g. --set sft_epochs=4 bon_n=8",
    )


def _has_non_finite(value: object) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    return isinstance(value, list) and any(map(_has_non_finite, value))


def run(args: argparse.Namespace) -> int:
    """Run the `demo` command; return the exit status."""
    from trl_implicit_prm.demo.pipeline import DemoConfig, run_demo

    fields = {
        "output_dir": args.output_dir,
        "seed": args.seed,
        "n_terms": args.n_terms,
        "operators": args.operators,
    }
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in DemoConfig.__dataclass_fields__:
            raise SystemExit(f"--set: unknown DemoConfig field {key!r}")
        if value.strip().lstrip("+-").lower() in ("nan", "inf", "infinity"):
            raise CommandError(f"--set {item}: expected a finite number, got {value!r}")
        try:
            fields[key] = json.loads(value)  # numbers, booleans, lists
        except json.JSONDecodeError:
            fields[key] = value  # plain strings
        if _has_non_finite(fields[key]):
            raise CommandError(f"--set {item}: expected finite numbers, got {value!r}")
    make = DemoConfig.quick if args.quick else DemoConfig
    try:
        cfg = make(**fields)
    except ValueError as err:
        raise CommandError(str(err)) from None
    if args.seeds:
        if args.rl or args.rl_only:
            raise CommandError("--seeds runs the demo only: pass --rl or --rl-only without --seeds")
        return _run_seeds(make, fields, args.seeds)
    start = time.perf_counter()
    report = {"claims": True} if args.rl_only else run_demo(cfg)
    if args.rl or args.rl_only:
        from trl_implicit_prm.demo.rl import RLDemoConfig, run_rl_demo

        try:
            run_rl_demo(RLDemoConfig(output_dir=cfg.output_dir, seeds=args.rl_seeds, progress=cfg.progress))
        except FileNotFoundError as err:
            raise CommandError(str(err)) from None
    print()
    print((Path(cfg.output_dir) / "report.md").read_text())
    print(f"[demo] done in {time.perf_counter() - start:.0f}s; report in {cfg.output_dir}/")
    return 0 if report.get("claims") else 1


def _run_seeds(make: Callable[..., Any], fields: dict[str, Any], seeds: list[int]) -> int:
    """One run per seed under `output_dir/seed-S`, then the aggregate report in `output_dir`."""
    from trl_implicit_prm.demo.aggregate import aggregate_reports
    from trl_implicit_prm.demo.pipeline import run_demo

    out = Path(fields["output_dir"])
    reports = [run_demo(make(**{**fields, "seed": s, "output_dir": str(out / f"seed-{s}")})) for s in seeds]
    aggregate_reports(reports, out)
    print((out / "report.md").read_text())
    return 0 if all(r.get("claims") for r in reports) else 1
