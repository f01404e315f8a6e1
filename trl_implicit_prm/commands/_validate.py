"""Row checks the subcommands run before loading a model: content (with the user's column names) and length.

Messages name the data as the user wrote it: the file and line, the row's own column names (`'steps', step 2`,
not `responses[2]`), and the flags as on the command line (`--max-length`, `--truncation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trl_implicit_prm.commands._models import Preflight
from trl_implicit_prm.data import DataFormatError, PromptTooLongError
from trl_implicit_prm.data.formats import check_completion, check_prompt
from trl_implicit_prm.inference import ResponseTooLongError
from trl_implicit_prm.inference.encoding import EncodedResponse, encode_response

__all__ = ["content_problem", "encode_checked", "print_skipped", "prompt_problem"]

_MAX_PRINTED = 10  # skipped rows printed with their reason, per file


def prompt_problem(prompt: Any, column: str) -> str | None:
    """What is wrong with a prompt (not a string or chat messages, a lone surrogate), or None."""
    try:
        check_prompt(prompt, column)
    except DataFormatError as err:
        return str(err)
    return None


def print_skipped(path: Any, rows: Sequence[Any]) -> None:
    """Print how many rows of `path` were left out, their lines, and the first reasons."""
    if not rows:
        return
    lines = ", ".join(str(row.line) for row in rows[:20]) + (", ..." if len(rows) > 20 else "")
    print(f"{path}: skipped {len(rows)} row(s), line(s) {lines}")
    for row in rows[:_MAX_PRINTED]:
        print(f"  {path}:{row.line}: {row.reason}")
    if len(rows) > _MAX_PRINTED:
        print(f"  ... {len(rows) - _MAX_PRINTED} more (all listed under 'skipped' in the results JSON)")


def content_problem(prompt: Any, prompt_column: str, response: Any, response_column: str) -> str | None:
    """What is wrong with a prompt and a response (empty, whitespace-only steps, lone surrogates), or None."""
    try:
        check_prompt(prompt, prompt_column)
        check_completion(response, response_column)
    except DataFormatError as err:
        return str(err)
    return None


def _too_long(err: ResponseTooLongError, pre: Preflight, truncation_flag: bool) -> str:
    if isinstance(err.__cause__, PromptTooLongError):
        return (
            f"the prompt alone takes {err.num_tokens} tokens, which leaves no room for the response within "
            f"{pre.limit_text()}; raise --max-length or shorten the prompt"
        )
    fix = "pass --truncation to score the part that fits (flagged 'truncated'), " if truncation_flag else ""
    return (
        f"prompt + response take {err.num_tokens} tokens, more than {pre.limit_text()}; {fix}raise "
        "--max-length or shorten the response"
    )


def encode_checked(
    pre: Preflight, prompt: Any, response: Any, *, truncation: bool, truncation_flag: bool = True
) -> tuple[EncodedResponse | None, str | None]:
    """Tokenize a row (already content-checked) as the computer will: `(encoded, None)` or `(None, problem)`.

    `truncation_flag` says whether the command has `--truncation` (then the message suggests it).
    """
    try:
        encoded = encode_response(
            pre.tokenizer,
            prompt,
            response,
            index=0,
            separator=pre.step_separator,
            max_length=pre.max_length,
            truncation=truncation,
        )
    except ResponseTooLongError as err:
        return None, _too_long(err, pre, truncation_flag)
    except DataFormatError as err:
        return None, str(err).removeprefix("responses[0]: ")
    return encoded, None
