"""`trl-implicit-prm eval-bon`: best-of-N accuracy of PRM selection, majority and PRM-weighted majority voting.

The data file holds, per problem, N candidates and the reference answer (see
`trl_implicit_prm.evaluation.read_bon_candidates` for the schema). Every candidate is scored once; selection by
each aggregated PRM score (`--aggregations`), plain majority voting and weighted voting (weights σ(score)) are
evaluated at N = 1, 2, 4, ... using the first N candidates, with pass@N alongside.

Example: `trl-implicit-prm eval-bon --model ckpt/ --data candidates.jsonl --plot bon.png`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trl_implicit_prm.commands._models import add_model_arguments, computer_from_args
from trl_implicit_prm.evaluation.prm_scores import score_candidates
from trl_implicit_prm.rewards import AGGREGATIONS

NAME = "eval-bon"
HELP = "best-of-N accuracy of PRM selection and (weighted) majority voting on a candidates file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--data", required=True, type=Path, help="candidates JSONL/JSON file")
    parser.add_argument("--aggregations", nargs="+", default=["min", "sum", "mean", "last"], choices=AGGREGATIONS,
                        help="how step rewards become one score per candidate (default: min sum mean last)")
    parser.add_argument("--ns", nargs="+", type=int, default=None, help="values of N (default 1, 2, 4, ...)")
    parser.add_argument("--output", type=Path, default=Path("eval_bon.json"), help="results JSON")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of accuracy against N")
    parser.add_argument("--scores-file", type=Path, default=None,
                        help="write per-candidate scores here and resume from them after a kill (the default "
                             "under accelerate launch: <output>.candidate_scores.jsonl)")


def run(args: argparse.Namespace) -> int:
    from trl_implicit_prm.evaluation import (
        best_of_n_curve,
        plot_best_of_n,
        read_bon_candidates,
        write_results_json,
    )

    if not args.data.is_file():
        print(f"--data: no such file: {args.data}", file=sys.stderr)
        return 2
    loaded = read_bon_candidates(args.data)
    problems = list(loaded.records)
    if not problems:
        print(f"no valid problem in {args.data} ({loaded.n_skipped} rows skipped)", file=sys.stderr)
        return 2
    from trl_implicit_prm.inference.sharding import (
        distributed_context,
        run_manifest,
        score_candidates_to_file,
    )

    ctx = distributed_context(args.device)  # several processes under `accelerate launch`: candidates sharded
    if ctx.world_size > 1 and args.device is None:
        args.device = ctx.device
    prc = computer_from_args(args)
    if ctx.world_size > 1 or args.scores_file is not None:  # data-parallel and resumable
        scores_file = args.scores_file or args.output.with_name(args.output.name + ".candidate_scores.jsonl")
        scores = score_candidates_to_file(prc, problems, args.aggregations, scores_file, ctx=ctx,
                                          manifest=run_manifest(prc, args.data, model=str(args.model)))
        if not ctx.is_main:
            return 0
    else:
        scores = score_candidates(prc, problems, args.aggregations)
    curve = best_of_n_curve(problems, scores, ns=args.ns, step_separator=prc.step_separator)
    width = max(len(m) for m in curve["methods"]) + 2
    print(f"{'method':<{width}}" + "".join(f"{'N=' + str(n):>8}" for n in curve["ns"]))
    for method in curve["methods"]:
        print(f"{method:<{width}}" + "".join(f"{100 * a:>8.1f}" for a in curve["accuracy"][method]))
    print(f"{'pass@N':<{width}}" + "".join(f"{100 * a:>8.1f}" for a in curve["pass_at_n"]))
    print(f"pass@1 {100 * curve['pass_at_1']:.1f}; {curve['n_problems']} problems; skipped rows {loaded.n_skipped}")
    if args.plot is not None:
        plot_best_of_n(curve, args.plot, title=f"Best-of-N, {Path(args.model).name}")
    write_results_json(args.output, curve, model=args.model, data_files=[args.data], beta=prc.beta,
                       aggregation=",".join(args.aggregations), threshold=None, skipped=loaded.skipped)
    print(f"results written to {args.output}")
    return 0
