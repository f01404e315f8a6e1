"""`trl-implicit-prm score`: step rewards for every response of a JSONL file, with an optional HTML picture.

Input: one JSON object per line (blank lines are skipped) with

- `prompt`: a string, or a list of chat messages `[{"role": ..., "content": ...}, ...]`;
- exactly one of `response` (a string, split into steps on the separator) or `steps` (a list of step strings).

Other keys are copied to the output unchanged. Output: the input rows, in order, plus `step_rewards`,
`q_values`, `outcome_reward`, the aggregates `min`, `mean`, `max`, `last` (`sum` is `outcome_reward`),
`truncated` and `num_truncated_steps` (an input key of the same name is overwritten, with a warning).

Malformed rows are all reported with their line numbers and nothing is scored (exit code 2), unless
`--skip-invalid` is given: then they are left out of the output and counted.

Example: `trl-implicit-prm score --model ckpt/ --ref-model base/ --input rows.jsonl --output scored.jsonl
--html report.html`
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from trl_implicit_prm.commands._models import add_model_arguments, computer_from_args

NAME = "score"
HELP = "score responses step by step with an implicit PRM checkpoint (JSONL in, JSONL out, optional HTML)"

logger = logging.getLogger(__name__)

OUTPUT_KEYS = ("step_rewards", "q_values", "outcome_reward", "min", "mean", "max", "last", "truncated",
               "num_truncated_steps")
_MAX_REPORTED = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--input", required=True, type=Path, help="JSONL rows with 'prompt' and 'response' or 'steps'")
    parser.add_argument("--output", required=True, type=Path, help="JSONL file to write the scored rows to")
    parser.add_argument("--html", type=Path, default=None, help="also write an HTML page of the step rewards")
    parser.add_argument("--threshold", type=float, default=0.0,
                        help="in the HTML, mark the first step whose reward is below this (default 0)")
    parser.add_argument("--max-batch-tokens", type=int, default=None,
                        help="at most this many padded tokens per batch (default 16384)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="token limit per prompt + response (default: the model's context)")
    parser.add_argument("--truncation", action="store_true",
                        help="cut responses longer than --max-length (flagged 'truncated') instead of failing")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="leave malformed rows out (counted) instead of stopping")


def _row_problem(row: Any) -> str | None:
    """What is structurally wrong with a parsed row, or None."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    if "prompt" not in row:
        return f"missing 'prompt' (keys: {sorted(row)})"
    has_response, has_steps = "response" in row, "steps" in row
    if has_response == has_steps:
        found = "both" if has_response else "neither"
        return f"expected exactly one of 'response' (a string) or 'steps' (a list of strings), found {found}"
    if has_response and not isinstance(row["response"], str):
        return (f"'response' must be a string, got {type(row['response']).__name__}; put a list of steps under "
                "'steps'")
    if has_steps and not isinstance(row["steps"], list):
        return f"'steps' must be a list of strings, got {type(row['steps']).__name__}"
    return None


def read_rows(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """(line number, row) for every well-formed row, and one message per malformed line."""
    rows, errors = [], []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                errors.append(f"{path}:{line_no}: not valid JSON ({err})")
                continue
            problem = _row_problem(row)
            if problem:
                errors.append(f"{path}:{line_no}: {problem}")
            else:
                rows.append((line_no, row))
    return rows, errors


def _report(errors: list[str]) -> None:
    for message in errors[:_MAX_REPORTED]:
        print(message, file=sys.stderr)
    if len(errors) > _MAX_REPORTED:
        print(f"... and {len(errors) - _MAX_REPORTED} more malformed rows", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from ..data import DataFormatError
    from ..inference import ResponseTooLongError

    if not args.input.is_file():
        print(f"--input: {args.input} does not exist", file=sys.stderr)
        return 2
    rows, errors = read_rows(args.input)
    if errors and not args.skip_invalid:
        _report(errors)
        print(f"{len(errors)} malformed row(s) in {args.input}; nothing scored (use --skip-invalid to leave "
              "them out)", file=sys.stderr)
        return 2

    prc = computer_from_args(args, max_length=args.max_length, truncation=args.truncation,
                             max_batch_tokens=args.max_batch_tokens)
    encoded, kept = [], []
    for line_no, row in rows:
        response = row["response"] if "response" in row else row["steps"]
        try:
            encoded.append(prc.encode_one(row["prompt"], response, index=line_no))  # rendered as in training
            kept.append(row)
        except (DataFormatError, ResponseTooLongError) as err:
            errors.append(f"{args.input}:{line_no}: {err}")
    if errors:
        _report(errors)
        if not args.skip_invalid:
            print(f"{len(errors)} invalid row(s) in {args.input}; nothing scored (use --skip-invalid to leave "
                  "them out)", file=sys.stderr)
            return 2
        logger.warning("left out %d invalid row(s) of %s", len(errors), args.input)

    results = prc.score_encoded(encoded)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    overwritten: set[str] = set()
    with args.output.open("w", encoding="utf-8") as f:
        for row, result in zip(kept, results, strict=True):
            overwritten.update(k for k in OUTPUT_KEYS if k in row)
            aggregates = result.aggregates()
            row = {**row, "step_rewards": result.step_rewards, "q_values": result.q_values,
                   "outcome_reward": result.outcome_reward, "min": aggregates["min"], "mean": aggregates["mean"],
                   "max": aggregates["max"], "last": aggregates["last"], "truncated": result.truncated,
                   "num_truncated_steps": result.num_truncated_steps}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    if overwritten:
        logger.warning("input keys overwritten by the scores: %s", sorted(overwritten))
    if args.html is not None:
        from ..render import save_html

        save_html(results, args.html, prompts=[row["prompt"] for row in kept], threshold=args.threshold,
                  title=f"Step rewards of {args.model}")
    truncated = sum(r.truncated for r in results)
    print(f"scored {len(results)} response(s) -> {args.output}"
          + (f" ({truncated} truncated)" if truncated else "")
          + (f"; left out {len(errors)} invalid row(s)" if errors else "")
          + (f"; HTML: {args.html}" if args.html is not None else ""))
    return 0
