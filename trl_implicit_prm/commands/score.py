"""`trl-implicit-prm score`: step rewards for every response of a JSONL file, with an optional HTML picture.

Input: one JSON object per line (blank lines are skipped) with

- `prompt`: a string, or a list of chat messages `[{"role": ..., "content": ...}, ...]`;
- exactly one of `response` (a string, split into steps on the separator) or `steps` (a list of step strings).

Other keys are copied to the output unchanged. Output: the input rows, in order, plus `step_rewards`,
`q_values`, `outcome_reward`, the aggregates `min`, `mean`, `max`, `last` (`sum` is `outcome_reward`),
`truncated` and `num_truncated_steps` (an input key of the same name is overwritten, with a warning).

Every row is checked before any model is loaded, and all bad rows are reported in one pass with their
`file:line` (exit code 2, nothing scored): lines that are not valid UTF-8 or JSON (`NaN`/`Infinity` included),
structural errors (missing or doubled keys, wrong types), content errors (an empty response, an empty or
whitespace-only step, a lone surrogate such as `"\\udcff"` anywhere in the row) and, with the tokenizer (loaded
first, without the weights), rows longer than `--max-length` when `--truncation` is not given. With
`--skip-invalid` they are left out of the output and counted instead.

The output is strict JSON: a non-finite score (NaN or infinity, e.g. from an overflow in low precision) is
written as null, and the rows holding one are counted in the summary and logged with their lines.

Example: `trl-implicit-prm score --model ckpt/ --ref-model base/ --input rows.jsonl --output scored.jsonl
--html report.html`
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from trl_implicit_prm.commands._errors import CommandError
from trl_implicit_prm.commands._models import (
    Preflight,
    add_model_arguments,
    computer_from_args,
    finite_float,
    positive_int,
    preflight,
)

NAME = "score"
HELP = "score responses step by step with an implicit PRM checkpoint (JSONL in, JSONL out, optional HTML)"

logger = logging.getLogger(__name__)

OUTPUT_KEYS = (
    "step_rewards",
    "q_values",
    "outcome_reward",
    "min",
    "mean",
    "max",
    "last",
    "truncated",
    "num_truncated_steps",
)
_MAX_REPORTED = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `score` command's arguments to `parser`."""
    add_model_arguments(parser)
    parser.add_argument(
        "--input", required=True, type=Path, help="JSONL rows with 'prompt' and 'response' or 'steps'"
    )
    parser.add_argument("--output", required=True, type=Path, help="JSONL file to write the scored rows to")
    parser.add_argument("--html", type=Path, default=None, help="also write an HTML page of the step rewards")
    parser.add_argument(
        "--threshold",
        type=finite_float,
        default=0.0,
        help="in the HTML, mark the first step whose reward is below this (default 0)",
    )
    parser.add_argument(
        "--max-batch-tokens",
        type=positive_int,
        default=None,
        help="at most this many padded tokens per batch (default 16384)",
    )
    parser.add_argument(
        "--max-length",
        type=positive_int,
        default=None,
        help="token limit per prompt + response (default: the model's context)",
    )
    parser.add_argument(
        "--truncation",
        action="store_true",
        help="cut responses longer than --max-length (flagged 'truncated') instead of failing",
    )
    parser.add_argument(
        "--skip-invalid", action="store_true", help="leave malformed rows out (counted) instead of stopping"
    )


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
        return (
            f"'response' must be a string, got {type(row['response']).__name__}; put a list of steps under "
            "'steps'"
        )
    if has_steps and not isinstance(row["steps"], list):
        return f"'steps' must be a list of strings, got {type(row['steps']).__name__}"
    return None


def read_rows(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """(line number, row) for every well-formed row, and one `file:line: problem` message per malformed line.

    Checked here: UTF-8, JSON, lone surrogates (any string in the row) and the structure (:func:`_row_problem`).
    """
    rows, errors, _ = _read_numbered(path)
    return rows, [message for _, message in errors]


def _read_numbered(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str]], str]:
    """Rows and `(number, message)` errors, and the prefix of a number ("" for a JSONL line, "item " for a
    JSON array).
    """
    from trl_implicit_prm.data.jsonl import read_json_rows

    read = read_json_rows(path)
    unit = "" if read.unit == "line" else "item "
    found = [(bad.number, None, bad.reason) for bad in read.bad]
    for number, row in read.rows:
        problem = _row_problem(row)
        found.append((number, None if problem else row, problem))
    rows, errors = [], []
    for number, row, problem in sorted(found, key=lambda item: item[0]):
        if problem:
            errors.append((number, f"{path}:{unit}{number}: {problem}"))
        else:
            rows.append((number, row))
    return rows, errors, unit


def _response_column(row: dict[str, Any]) -> str:
    return "response" if "response" in row else "steps"


def check_rows(
    path: Path, rows: list[tuple[int, dict[str, Any]]], pre: Preflight, truncation: bool, unit: str = ""
) -> tuple[list[tuple[int, dict[str, Any], Any]], list[tuple[int, str]]]:
    """Content and length checks of structurally valid rows: `(line, row, encoded)` of the good ones, and
    `(line, "file:line: problem")` of the bad ones.
    """
    from trl_implicit_prm.commands._validate import content_problem, encode_checked

    good, bad = [], []
    for line_no, row in rows:
        column = _response_column(row)
        problem = content_problem(row["prompt"], "prompt", row[column], column)
        encoded = None
        if problem is None:
            encoded, problem = encode_checked(pre, row["prompt"], row[column], truncation=truncation)
        if problem is None:
            good.append((line_no, row, encoded))
        else:
            bad.append((line_no, f"{path}:{unit}{line_no}: {problem}"))
    return good, bad


def _finite(value: Any) -> Any:
    """A float (or list of floats) with NaN/inf replaced by None."""
    if isinstance(value, list):
        return [None if isinstance(v, float) and not math.isfinite(v) else v for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _scored_row(row: dict[str, Any], result: Any) -> tuple[dict[str, Any], bool]:
    """The output row (strict JSON) and whether a non-finite score was written as null."""
    aggregates = result.aggregates()
    scores = {
        "step_rewards": list(result.step_rewards),
        "q_values": list(result.q_values),
        "outcome_reward": result.outcome_reward,
        "min": aggregates["min"],
        "mean": aggregates["mean"],
        "max": aggregates["max"],
        "last": aggregates["last"],
    }
    clean = {key: _finite(value) for key, value in scores.items()}
    return (
        {**row, **clean, "truncated": result.truncated, "num_truncated_steps": result.num_truncated_steps},
        clean != scores,
    )


def _report(errors: list[str]) -> None:
    for message in errors[:_MAX_REPORTED]:
        print(message, file=sys.stderr)
    if len(errors) > _MAX_REPORTED:
        print(f"... and {len(errors) - _MAX_REPORTED} more malformed rows", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run the `score` command; return the exit status."""
    if not args.input.is_file():
        raise CommandError(f"--input: {args.input} does not exist")
    rows, errors, unit = _read_numbered(args.input)
    pre = preflight(args)  # the tokenizer and length limit, no weights
    good, bad = check_rows(args.input, rows, pre, args.truncation, unit)
    errors = [message for _, message in sorted(errors + bad, key=lambda item: item[0])]
    if errors and not args.skip_invalid:
        _report(errors)
        print(
            f"{len(errors)} invalid row(s) in {args.input}; nothing scored (use --skip-invalid to leave "
            "them out)",
            file=sys.stderr,
        )
        return 2
    if errors:
        _report(errors)
        logger.warning("left out %d invalid row(s) of %s", len(errors), args.input)

    from ..inference.sharding import distributed_context

    ctx = distributed_context(args.device)  # several processes under `accelerate launch`: each scores a share
    if ctx.world_size > 1 and args.html is not None:
        raise CommandError(
            "--html needs every result in one process: score with `accelerate launch` without "
            "--html, then render a few rows in one process"
        )
    if ctx.world_size > 1 and args.device is None:
        args.device = ctx.device
    prc = computer_from_args(args, pre, truncation=args.truncation, max_batch_tokens=args.max_batch_tokens)
    if args.html is None:
        return _score_to_file(args, prc, [row for _, row, _ in good], [e for _, _, e in good], errors, ctx)
    return _score_in_one_process(args, prc, good, errors)


def _score_in_one_process(
    args: argparse.Namespace, prc: Any, good: list[tuple[int, dict[str, Any], Any]], errors: list[str]
) -> int:
    """Score every good row here, write the output in order, and the HTML page when asked."""
    results = prc.score_encoded([e for _, _, e in good])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    overwritten: set[str] = set()
    non_finite: list[int] = []
    with args.output.open("w", encoding="utf-8") as f:
        for (line_no, row, _), result in zip(good, results, strict=True):
            overwritten.update(k for k in OUTPUT_KEYS if k in row)
            out, nulled = _scored_row(row, result)
            if nulled:
                non_finite.append(line_no)
            f.write(json.dumps(out, ensure_ascii=False, allow_nan=False) + "\n")
    if overwritten:
        logger.warning("input keys overwritten by the scores: %s", sorted(overwritten))
    if non_finite:
        logger.warning(
            "%d row(s) of %s have non-finite scores, written as null: lines %s",
            len(non_finite),
            args.input,
            ", ".join(map(str, non_finite[:_MAX_REPORTED])),
        )
    if args.html is not None:
        from ..render import save_html

        save_html(
            results,
            args.html,
            prompts=[row["prompt"] for _, row, _ in good],
            threshold=args.threshold,
            title=f"Step rewards of {args.model}",
        )
    truncated = sum(r.truncated for r in results)
    print(
        f"scored {len(results)} response(s) -> {args.output}"
        + (f" ({truncated} truncated)" if truncated else "")
        + (f"; {len(non_finite)} with non-finite scores written as null" if non_finite else "")
        + (f"; left out {len(errors)} invalid row(s)" if errors else "")
        + (f"; HTML: {args.html}" if args.html is not None else "")
    )
    return 0


def _score_to_file(
    args: argparse.Namespace,
    prc: Any,
    kept: list[dict[str, Any]],
    encoded: list[Any],
    errors: list[str],
    ctx: Any,
) -> int:
    """Score with every process of `ctx` (see :mod:`trl_implicit_prm.inference.sharding`): resumable, in order."""
    from ..inference.sharding import run_manifest, score_to_file

    manifest = run_manifest(prc, args.input, model=str(args.model), skip_invalid=bool(args.skip_invalid))

    def serialize(i: int, result: Any) -> str:
        return json.dumps(_scored_row(kept[i], result)[0], ensure_ascii=False, allow_nan=False)

    counts = score_to_file(
        prc,
        encoded,
        args.output,
        serialize,
        manifest=manifest,
        ctx=ctx,
        show_progress=ctx.is_main and len(encoded) > 100,
    )
    if not ctx.is_main:
        return 0
    non_finite = _count_null_scores(args.output)  # every process's rows, resumed ones included
    if non_finite:
        logger.warning("%d row(s) of %s have non-finite scores, written as null", non_finite, args.output)
    overwritten = sorted({k for row in kept for k in OUTPUT_KEYS if k in row})
    if overwritten:
        logger.warning("input keys overwritten by the scores: %s", overwritten)
    truncated = sum(e.truncated for e in encoded)
    print(
        f"scored {counts['rows']} response(s) -> {args.output}"
        + (f" with {ctx.world_size} processes" if ctx.world_size > 1 else "")
        + (f" ({counts['resumed']} already done by an earlier run)" if counts["resumed"] else "")
        + (f" ({truncated} truncated)" if truncated else "")
        + (f"; {non_finite} with non-finite scores written as null" if non_finite else "")
        + (f"; left out {len(errors)} invalid row(s)" if errors else "")
    )
    return 0


def _count_null_scores(path: Path) -> int:
    """Rows of a scores file whose outcome reward is null (a non-finite score written as null)."""
    with path.open(encoding="utf-8") as handle:
        return sum(json.loads(line).get("outcome_reward", 0.0) is None for line in handle if line.strip())
