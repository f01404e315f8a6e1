"""`trl-implicit-prm convert`: public PRM datasets to the library's formats (JSONL out), reporting what was left out.

Sources (`--from`): `math-shepherd` (-> stepwise, or rollouts with `--to rollouts`), `prm800k` (-> stepwise;
`--neutral positive|negative` is required), `processbench` (-> evaluation records, or stepwise with
`--to stepwise`), `rollouts` (-> rollouts; `--prompt-column` etc. rename columns). The input is a JSONL, JSON,
Parquet or CSV file, or a `datasets` folder (`--split` for a DatasetDict).

Every left-out row is printed to stderr (the first 20) with its 0-based row index and the reason, and all of
them are written to `--dropped FILE` when given. Exit code 2 when the input cannot be read or nothing converts.

Example: `trl-implicit-prm convert --from prm800k --neutral positive phase2_train.jsonl prm800k_stepwise.jsonl`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "convert"
HELP = "convert Math-Shepherd, PRM800K, ProcessBench or rollouts files to stepwise / rollouts / record JSONL"

_DEFAULT_TO = {
    "math-shepherd": "stepwise",
    "prm800k": "stepwise",
    "processbench": "records",
    "rollouts": "rollouts",
}
_ALLOWED_TO = {
    "math-shepherd": ("stepwise", "rollouts"),
    "prm800k": ("stepwise",),
    "processbench": ("records", "stepwise"),
    "rollouts": ("rollouts",),
}
_MAX_REPORTED = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `convert` command's arguments to `parser`."""
    from trl_implicit_prm.data.converters import SOURCES

    parser.add_argument("--from", dest="source", required=True, choices=SOURCES, help="the source format")
    parser.add_argument(
        "input", type=Path, help="source file (.jsonl/.json/.parquet/.csv) or datasets folder"
    )
    parser.add_argument("output", type=Path, help="JSONL file to write")
    parser.add_argument(
        "--to",
        default=None,
        choices=["stepwise", "rollouts", "records"],
        help="output kind (default: stepwise; records for processbench; rollouts for rollouts)",
    )
    parser.add_argument(
        "--neutral",
        choices=["positive", "negative"],
        default=None,
        help="prm800k only, required: how to read a step rating of 0",
    )
    parser.add_argument("--split", default=None, help="split of a DatasetDict folder")
    parser.add_argument("--prompt-column", default="prompt", help="rollouts: column of the prompt")
    parser.add_argument(
        "--completions-column", default="completions", help="rollouts: column of the responses"
    )
    parser.add_argument(
        "--correctness-column", default="correctness", help="rollouts: column of the 0/1 labels"
    )
    parser.add_argument("--dropped", type=Path, default=None, help="also write every left-out row (JSONL)")


def run(args: argparse.Namespace) -> int:
    """Run the `convert` command; return the exit status."""
    from trl_implicit_prm.data import converters

    to = args.to or _DEFAULT_TO[args.source]
    if to not in _ALLOWED_TO[args.source]:
        print(
            f"--to {to}: {args.source} converts to {' or '.join(_ALLOWED_TO[args.source])}", file=sys.stderr
        )
        return 2
    if args.source == "prm800k" and args.neutral is None:
        print(
            "--neutral is required for prm800k: 'positive' (a rating of 0 is a correct step, as in Qwen's "
            "PRM800K baseline) or 'negative' (as in TRL's old converter)",
            file=sys.stderr,
        )
        return 2
    if args.source != "prm800k" and args.neutral is not None:
        print(f"--neutral applies to prm800k only, not {args.source}", file=sys.stderr)
        return 2
    try:
        rows = converters.read_source(args.input, split=args.split)
    except (OSError, ValueError) as err:
        print(f"cannot read {args.input}: {err}", file=sys.stderr)
        return 2
    if args.source == "math-shepherd":
        conversion = converters.convert_math_shepherd(rows, to=to)
    elif args.source == "prm800k":
        conversion = converters.convert_prm800k(rows, neutral=args.neutral)
    elif args.source == "processbench":
        conversion = converters.convert_processbench(rows, to=to)
    else:
        conversion = converters.convert_rollouts(
            rows,
            prompt_column=args.prompt_column,
            completions_column=args.completions_column,
            correctness_column=args.correctness_column,
        )
    for dropped in conversion.dropped[:_MAX_REPORTED]:
        print(f"{args.input}: row {dropped.row}: left out: {dropped.reason}", file=sys.stderr)
    if len(conversion.dropped) > _MAX_REPORTED:
        print(f"... and {len(conversion.dropped) - _MAX_REPORTED} more left-out rows", file=sys.stderr)
    if args.dropped is not None:
        converters.write_jsonl(args.dropped, [{"row": d.row, "reason": d.reason} for d in conversion.dropped])
    if not conversion.rows:
        print(f"{conversion.summary()}: nothing to write", file=sys.stderr)
        return 2
    converters.write_jsonl(args.output, conversion.rows)
    print(
        f"{conversion.summary()} -> {args.output}"
        + (f"; left-out rows: {args.dropped}" if args.dropped is not None else "")
    )
    return 0
