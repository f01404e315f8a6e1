"""`trl-implicit-prm eval-bon`: best-of-N accuracy of PRM selection, majority and PRM-weighted majority voting.

The data file holds, per problem, N candidates and the reference answer (see
`trl_implicit_prm.evaluation.read_bon_candidates` for the schema). Every candidate is scored once; selection by
each aggregated PRM score (`--aggregations`), plain majority voting and weighted voting (weights σ(score)) are
evaluated at N = 1, 2, 4, ... using the first N candidates, with pass@N alongside.

The data is read and checked before the model is loaded. Malformed rows (invalid UTF-8 or JSON, schema
errors, a lone surrogate) and problems with a candidate longer than `--max-length` (unless `--truncation`)
are left out, counted with their line numbers, printed and recorded in the results JSON. A candidate with
nothing to score (an empty response or step) stays in its problem with the score -inf (never selected, no
vote weight): written as null in the JSON and counted under `non_finite`.

Example: `trl-implicit-prm eval-bon --model ckpt/ --data candidates.jsonl --plot bon.png`
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from trl_implicit_prm.commands._errors import CommandError
from trl_implicit_prm.commands._models import (
    Preflight,
    add_model_arguments,
    computer_from_args,
    positive_int,
    preflight,
)
from trl_implicit_prm.evaluation.prm_scores import score_candidates
from trl_implicit_prm.rewards import AGGREGATIONS

NAME = "eval-bon"
HELP = "best-of-N accuracy of PRM selection and (weighted) majority voting on a candidates file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `eval-bon` command's arguments to `parser`."""
    add_model_arguments(parser)
    parser.add_argument("--data", required=True, type=Path, help="candidates JSONL/JSON file")
    parser.add_argument(
        "--aggregations",
        nargs="+",
        default=["min", "sum", "mean", "last"],
        choices=AGGREGATIONS,
        help="how step rewards become one score per candidate (default: min sum mean last)",
    )
    parser.add_argument("--ns", nargs="+", type=int, default=None, help="values of N (default 1, 2, 4, ...)")
    parser.add_argument(
        "--max-length",
        type=positive_int,
        default=None,
        help="token limit per problem + candidate (default: the model's context)",
    )
    parser.add_argument(
        "--truncation",
        action="store_true",
        help="score the part of a too-long candidate that fits, instead of leaving its problem out (counted)",
    )
    parser.add_argument("--output", type=Path, default=Path("eval_bon.json"), help="results JSON")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of accuracy against N")
    parser.add_argument(
        "--scores-file",
        type=Path,
        default=None,
        help="write per-candidate scores here and resume from them after a kill (the default "
        "under accelerate launch: <output>.candidate_scores.jsonl)",
    )


def screen_problems(loaded: Any, pre: Preflight, truncation: bool) -> tuple[list[dict[str, Any]], list[Any]]:
    """The problems whose candidates all fit in the length limit (or `truncation`), and a :class:`SkippedRow`
    (with its line) for each other one. Candidates with nothing to score are kept (they score -inf).
    """
    from trl_implicit_prm.commands._validate import encode_checked, prompt_problem
    from trl_implicit_prm.evaluation import SkippedRow
    from trl_implicit_prm.evaluation.prm_scores import scorable

    kept, skipped = [], []
    for line, record in zip(loaded.lines, loaded.records, strict=True):
        problem = prompt_problem(record["problem"], "problem")
        for k, candidate in enumerate(record["candidates"]):
            if problem is not None:
                break
            if scorable(candidate["response"]):
                _, problem = encode_checked(
                    pre, record["problem"], candidate["response"], truncation=truncation
                )
                if problem is not None:
                    problem = f"candidate {k}: {problem}"
        if problem is None:
            kept.append(record)
        else:
            skipped.append(SkippedRow(line, problem))
    return kept, skipped


def _print_table(curve: dict[str, Any], n_skipped: int) -> None:
    """Accuracy (%) of every method at every N, pass@N, pass@1 and the counts."""
    width = max(len(m) for m in curve["methods"]) + 2
    print(f"{'method':<{width}}" + "".join(f"{'N=' + str(n):>8}" for n in curve["ns"]))
    for method in curve["methods"]:
        print(f"{method:<{width}}" + "".join(f"{100 * a:>8.1f}" for a in curve["accuracy"][method]))
    print(f"{'pass@N':<{width}}" + "".join(f"{100 * a:>8.1f}" for a in curve["pass_at_n"]))
    print(f"pass@1 {100 * curve['pass_at_1']:.1f}; {curve['n_problems']} problems; skipped rows {n_skipped}")


def run(args: argparse.Namespace) -> int:
    """Run the `eval-bon` command; return the exit status."""
    from trl_implicit_prm.commands._validate import print_skipped
    from trl_implicit_prm.evaluation import (
        best_of_n_curve,
        plot_best_of_n,
        read_bon_candidates,
        write_results_json,
    )

    if not args.data.is_file():
        raise CommandError(f"--data: no such file: {args.data}")
    loaded = read_bon_candidates(args.data)
    pre = preflight(args)  # tokenizer and length limit, no weights
    problems, too_long = screen_problems(loaded, pre, args.truncation)
    skipped = sorted([*loaded.skipped, *too_long], key=lambda row: row.line)
    print_skipped(args.data, skipped)
    if not problems:
        raise CommandError(f"no valid problem in {args.data} ({len(skipped)} rows skipped)")
    from trl_implicit_prm.inference.sharding import (
        distributed_context,
        run_manifest,
        score_candidates_to_file,
    )

    ctx = distributed_context(args.device)  # several processes under `accelerate launch`: candidates sharded
    if ctx.world_size > 1 and args.device is None:
        args.device = ctx.device
    prc = computer_from_args(args, pre, truncation=args.truncation)
    if ctx.world_size > 1 or args.scores_file is not None:  # data-parallel and resumable
        scores_file = args.scores_file or args.output.with_name(args.output.name + ".candidate_scores.jsonl")
        scores = score_candidates_to_file(
            prc,
            problems,
            args.aggregations,
            scores_file,
            ctx=ctx,
            manifest=run_manifest(prc, args.data, model=str(args.model)),
        )
        if not ctx.is_main:
            return 0
    else:
        scores = score_candidates(prc, problems, args.aggregations)
    curve = best_of_n_curve(problems, scores, ns=args.ns, step_separator=prc.step_separator)
    _print_table(curve, len(skipped))
    if args.plot is not None:
        plot_best_of_n(curve, args.plot, title=f"Best-of-N, {Path(args.model).name}")
    write_results_json(
        args.output,
        curve,
        model=args.model,
        data_files=[args.data],
        beta=prc.beta,
        aggregation=",".join(args.aggregations),
        threshold=None,
        skipped=skipped,
    )
    print(f"results written to {args.output}")
    return 0
