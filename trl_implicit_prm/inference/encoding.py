"""Turning one prompt/response pair into token ids with step spans, for scoring.

Tokenization is the data layer's :func:`~trl_implicit_prm.data.tokenize_example` (one tokenization of the full
text, spans by character offsets): what a trainer scores is what inference scores. This module adds what
inference needs on top: errors that name the row, the truncation policy and the decoded token strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data import DataFormatError, PromptTooLongError, split_steps
from ..data.formats import check_completion, check_prompt
from ..data.tokenize import _join, encode_example, token_steps

__all__ = [
    "EncodedResponse",
    "ResponseTooLongError",
    "completion_step_index",
    "decode_tokens",
    "encode_response",
]


class ResponseTooLongError(ValueError):
    """A prompt + response does not fit in `max_length` tokens and truncation was not asked for."""

    def __init__(self, message: str, index: int, num_tokens: int | None, max_length: int):
        super().__init__(message)
        self.index = index
        self.num_tokens = num_tokens
        self.max_length = max_length


@dataclass
class EncodedResponse:
    """One tokenized response: ids, the step of every token (-1 on the prompt) and its step texts."""

    index: int
    input_ids: np.ndarray  # [T] int64
    step_index: np.ndarray  # [T] int64, -1 on prompt tokens
    prompt_length: int
    steps: list[str]  # the scored steps (each owns at least one token)
    unscored_steps: list[str]  # steps cut away entirely by truncation
    num_truncated_steps: int

    @property
    def length(self) -> int:
        """Number of tokens, prompt included."""
        return int(self.input_ids.shape[0])

    @property
    def truncated(self) -> bool:
        """Whether truncation cut at least one step."""
        return self.num_truncated_steps > 0


def encode_response(
    tokenizer: Any,
    prompt: Any,
    response: Any,
    *,
    index: int,
    separator: str,
    max_length: int | None,
    truncation: bool,
    append_eos: bool = False,
    partial: bool = False,
) -> EncodedResponse:
    """Tokenize `prompt` + `response` with step spans; errors name `prompts[index]` / `responses[index]`.

    A response that does not fit in `max_length` raises :class:`ResponseTooLongError` unless `truncation` is
    true, in which case the end is cut and the result records which steps lost tokens. `append_eos` appends
    the EOS token to a string or step-list response, in its last step (as the trainers do by default);
    `partial` (the steps begin a longer response) ends the last step with the separator instead.
    """
    check_prompt(prompt, "prompts", index)
    steps = check_completion(response, "responses", index, step_separator=separator)
    try:
        out = encode_example(tokenizer, prompt, response, steps, separator, max_length, append_eos, partial)
    except PromptTooLongError as err:
        raise ResponseTooLongError(
            f"prompts[{index}]: the prompt alone takes {err.prompt_length} tokens, which leaves no room for the "
            f"response within max_length={max_length}; raise max_length or shorten the prompt",
            index,
            err.prompt_length,
            err.max_length,
        ) from err
    except DataFormatError as err:
        raise DataFormatError(f"responses[{index}]: {err}") from err
    num_steps, lost = out["num_steps"], out["num_truncated_steps"]
    if lost and not truncation:
        _refuse_too_long(
            tokenizer, prompt, response, index, separator, max_length, (append_eos, partial), lost, steps
        )
    if not lost and num_steps != len(steps):
        raise RuntimeError(
            f"responses[{index}]: {len(steps)} steps but {num_steps} token spans (library bug)"
        )
    return EncodedResponse(
        index=index,
        input_ids=np.asarray(out["input_ids"], dtype=np.int64),
        step_index=np.asarray(out["step_index"], dtype=np.int64),
        prompt_length=int(out["prompt_length"]),
        steps=steps[:num_steps],
        unscored_steps=steps[num_steps:],
        num_truncated_steps=int(lost),
    )


def _refuse_too_long(
    tokenizer: Any,
    prompt: Any,
    response: Any,
    index: int,
    separator: str,
    max_length: int | None,
    ending: tuple[bool, bool],
    lost: int,
    steps: list[str],
) -> None:
    """Raise :class:`ResponseTooLongError` with the response's full length and the steps that would lose tokens
    (`ending`: `append_eos` and `partial`, as the response was encoded).
    """
    full = len(encode_example(tokenizer, prompt, response, steps, separator, None, *ending)["input_ids"])
    raise ResponseTooLongError(
        f"responses[{index}]: prompt + response take {full} tokens, more than max_length={max_length}; "
        f"{lost} of its {len(steps)} steps would lose tokens. Pass truncation=True to score the part that "
        "fits (the result is flagged `truncated` and lists the steps left out), raise max_length, or "
        "shorten the response",
        index,
        full,
        int(max_length or 0),
    )


def decode_tokens(tokenizer: Any, sequences: Sequence[Sequence[int]]) -> list[list[str]]:
    """The text of every token of every sequence, decoded in one batched call.

    A character split across byte-level tokens decodes to U+FFFD token by token; such runs are decoded
    together and their text is given to the run's last token (the others get ""), so the tokens of a
    sequence concatenate to its text.
    """
    flat = [[int(t)] for seq in sequences for t in seq]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        texts = backend.decode_batch(flat, skip_special_tokens=False)
    else:
        texts = [tokenizer.decode(ids, skip_special_tokens=False) for ids in flat]
    out: list[list[str]] = []
    pos = 0
    for seq in sequences:
        pieces = texts[pos : pos + len(seq)]
        pos += len(seq)
        if any("\ufffd" in p for p in pieces):
            pieces = _merge_split_characters(tokenizer, list(seq), list(pieces))
        out.append(list(pieces))
    return out


def _merge_split_characters(tokenizer: Any, ids: list[int], pieces: list[str], max_run: int = 4) -> list[str]:
    j = 0
    while j < len(pieces):
        if "\ufffd" not in pieces[j]:
            j += 1
            continue
        for end in range(j + 1, min(j + max_run, len(ids)) + 1):
            text = tokenizer.decode(ids[j:end], skip_special_tokens=False)
            if "\ufffd" not in text:
                pieces[j:end] = [""] * (end - j - 1) + [text]
                j = end
                break
        else:
            j += 1
    return pieces


def completion_step_index(pieces: Sequence[str], step_separator: str) -> np.ndarray:
    """The step of every token of a generated completion, from the tokens' decoded texts, `[T]` int64.

    For completions a policy generated (no re-tokenization: the scored ids are the generated ones). The text is
    the concatenation of `pieces` (one string per token, e.g. from :func:`decode_tokens`), split with
    :func:`split_steps`, and each token is assigned by :func:`~trl_implicit_prm.data.spans.token_steps`, the
    rule every tokenization here follows. Zero-width tokens before the first character belong to step 0; a
    whitespace-only completion is one step.

    Example:

    ```python
    >>> completion_step_index(["2 + 3", " = 5.", "\\n\\n", "The", " answer is 5."], "\\n\\n").tolist()
    [0, 0, 0, 1, 1]

    ```
    """
    text = "".join(pieces)
    steps = split_steps(text, step_separator) or [text]
    bounds = _join("", steps, step_separator, False, "completion", None).bounds
    ends = np.cumsum([len(p) for p in pieces], dtype=np.int64)
    return np.maximum(token_steps(ends, np.asarray(bounds)), 0)
