"""`trl-implicit-prm eval-processbench`: the official ProcessBench protocol on the four subsets.

The threshold is tuned on gsm8k and applied to math, olympiadbench and omnimath (the benchmark's rule for a
scalar PRM); each subset's own best threshold is reported separately as an upper bound. Output: a Markdown
table shaped like the benchmark's (four subsets and the average), printed and optionally written with
`--markdown`, and a results JSON (`--output`).

Data: `--data FOLDER` (files gsm8k.jsonl, math.jsonl, olympiadbench.jsonl, omnimath.jsonl, or .json/.parquet,
or a `DatasetDict.save_to_disk` folder), or `--hub-revision SHA` to download `Qwen/ProcessBench` at that commit.

Example: `trl-implicit-prm eval-processbench --model ckpt/ --data processbench/ --output pb.json --markdown pb.md`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trl_implicit_prm.commands._models import add_model_arguments, add_score_argument, computer_from_args

NAME = "eval-processbench"
HELP = "ProcessBench F1 per subset, threshold tuned on gsm8k (the official protocol), Markdown table + JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `eval-processbench` command's arguments to `parser`."""
    add_model_arguments(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data", type=Path, default=None, help="local copy: a folder of the four subset files"
    )
    source.add_argument(
        "--hub-revision",
        default=None,
        help="download Qwen/ProcessBench from the Hub at this commit sha instead",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="use this threshold on every subset instead of tuning it on gsm8k",
    )
    add_score_argument(parser)
    parser.add_argument(
        "--model-name", default=None, help="name in the table's Model column (default: --model)"
    )
    parser.add_argument("--output", type=Path, default=Path("processbench.json"), help="results JSON")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the Markdown table here")


def run(args: argparse.Namespace) -> int:
    """Run the `eval-processbench` command; return the exit status."""
    from trl_implicit_prm.evaluation import write_results_json
    from trl_implicit_prm.evaluation.prm_scores import score_process_records
    from trl_implicit_prm.evaluation.processbench import (
        HUB_DATASET,
        evaluate_processbench,
        load_processbench,
        markdown_table,
        to_json,
    )

    try:
        records, dropped = load_processbench(args.data, revision=args.hub_revision)
    except (OSError, ValueError, ConnectionError) as err:
        print(f"cannot load ProcessBench: {err}", file=sys.stderr)
        return 2
    for subset, rows in dropped.items():
        for row in rows[:20]:
            print(f"{subset}: row {row.row}: left out: {row.reason}", file=sys.stderr)
    prc = computer_from_args(args)
    scored = {name: (recs, score_process_records(prc, recs, args.score)) for name, recs in records.items()}
    try:
        result = evaluate_processbench(scored, threshold=args.threshold)
    except ValueError as err:
        print(f"cannot evaluate: {err}", file=sys.stderr)
        return 2
    table = markdown_table(result, model_name=args.model_name or str(args.model))
    print(table, end="")
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table, encoding="utf-8")
    data_files = sorted(p for p in args.data.rglob("*") if p.is_file()) if args.data is not None else []
    payload = {
        **to_json(result),
        "score": args.score,
        "source": str(args.data) if args.data is not None else f"{HUB_DATASET}@{args.hub_revision}",
        "dropped": {
            name: [{"row": d.row, "reason": d.reason} for d in rows] for name, rows in dropped.items()
        },
    }
    write_results_json(
        args.output,
        payload,
        model=args.model,
        data_files=data_files,
        beta=prc.beta,
        aggregation=args.score,
        threshold=result["threshold"],
    )
    print(f"results written to {args.output}")
    return 0
