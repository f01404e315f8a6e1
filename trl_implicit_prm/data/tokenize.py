"""Tokenization with step spans: which token belongs to which step, found on the real tokenization.

The full text (rendered prompt + completion) is tokenized once by a fast tokenizer with character offsets, and
each token is assigned by the character where it ENDS:

- the completion's steps are joined with the separator, and the separator after step k belongs to step k (the
  last step has none);
- a token whose last character lies in the prompt is a prompt token (`step_index == -1`); special tokens the
  tokenizer adds have no characters (offsets `(0, 0)`) and take the position of the token before them: a BOS
  is a prompt token, an EOS appended by the tokenizer belongs to the last step;
- a token that straddles a boundary belongs to the step in which it ends, so BPE merges such as `".\\n\\n"` or
  `"\\n\\nStep"` never shift a span. In particular a token straddling the prompt/completion boundary (prompt
  `"... = "` followed by completion `"5..."` when the tokenizer merges `" 5"`) is a completion token of step 0:
  its log-probability is part of what the model is scored on;
- for an assistant-message completion, the characters the chat template puts around the assistant content
  (end-of-turn tokens) belong to the first/last step, so the outcome reward covers what a DPO trainer scores.

Prefixes are never re-tokenized: that drifts by a token whenever BPE merges across a boundary.

Every step must end up with at least one token, so that a response has exactly one step reward per step.
Whitespace-only steps are refused by validation (see :mod:`.formats`); in the rare case where a tokenizer still
merges all of a step's characters into a token that ends in the next step (a step `"."` followed by a step
starting with a newline, when `".\n\n"` is one token), a :class:`DataFormatError` names the row and the step.

Two shapes of the same code path: :func:`tokenize_example` (one row, lists) and :func:`tokenize_dataset`
(`datasets.map`, one batched tokenizer call and one vectorised span assignment per batch of rows).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

from datasets import Features

from .columns import COMPLETION_COLUMNS, SIDE_PREFIXES, output_features
from .formats import (
    FORMATS,
    OPTIONAL_COLUMNS,
    DataFormatError,
    _missing_columns_message,
    _where,
    check_completion,
    check_prompt,
    check_step_separator,
    detect_format,
    is_chat,
    validate_row,
)
from .spans import PromptTooLongError, Text, encode_spans, token_steps

__all__ = [
    "PromptTooLongError",
    "token_steps",
    "tokenize_dataset",
    "tokenize_example",
]

logger = logging.getLogger(__name__)


def _require_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"step spans need character offsets, which only fast tokenizers provide, but got "
            f"{type(tokenizer).__name__} (is_fast=False): load the tokenizer with "
            "AutoTokenizer.from_pretrained(..., use_fast=True) or pass a PreTrainedTokenizerFast"
        )


def _join(
    prompt_text: str,
    steps: Sequence[str],
    separator: str,
    add_special_tokens: bool,
    column: str,
    index: int | None,
) -> Text:
    bounds = [len(prompt_text)]
    pos = len(prompt_text)
    last = len(steps) - 1
    for k, step in enumerate(steps):
        pos += len(step) + (len(separator) if k < last else 0)
        bounds.append(pos)
    return Text(prompt_text + separator.join(steps), add_special_tokens, bounds, column, index)


def _eos_text(tokenizer: Any, append_eos: bool) -> str | None:
    """The EOS token's text to append to string completions, or None; an error when there is none to append."""
    if not append_eos:
        return None
    eos = getattr(tokenizer, "eos_token", None)
    if not eos:
        raise ValueError(
            f"append_eos=True appends the tokenizer's EOS token to string completions, but "
            f"{type(tokenizer).__name__} has no eos_token: set tokenizer.eos_token, or pass append_eos=False"
        )
    return eos


def _render(
    tokenizer: Any,
    prompt: Any,
    completion: Any,
    steps: list[str],
    separator: str,
    column: str,
    index: int | None,
    cache: dict[str, str],
    eos: str | None = None,
    partial: bool = False,
) -> Text:
    """Render one validated prompt/completion pair, whose `steps` validation gave, into text and step boundaries.

    `eos` (the EOS token's text) is appended to a string or step-list completion unless it already ends with
    it, as TRL's DPOTrainer/KTOTrainer do; it belongs to the last step. Assistant messages keep what the chat
    template renders. A `partial` completion (the first steps of a longer response) gets the step separator
    after its last step instead (unless it already ends with it), as that step has when the whole response is
    scored, and no EOS (nor, for an assistant message, the template's end of turn).
    """
    chat = is_chat(completion)
    steps = list(steps)
    if partial:
        if not steps[-1].endswith(separator):
            steps[-1] += separator
    elif eos is not None and not chat and not steps[-1].endswith(eos):
        steps[-1] += eos
    if isinstance(prompt, str):
        if chat:
            raise DataFormatError(
                f"{_where(column, index)}: an assistant-message completion needs a chat prompt "
                f"(a list of messages), but 'prompt' is a string; pass the completion as a string"
            )
        return _join(prompt, steps, separator, True, column, index)
    if not getattr(tokenizer, "chat_template", None):
        raise DataFormatError(
            f"{_where('prompt', index)}: the prompt is a list of chat messages but the tokenizer has no chat "
            "template; set `tokenizer.chat_template` (a Jinja template) or pass the prompt as a string"
        )
    messages = [dict(m) for m in prompt]
    key = repr(messages)
    prompt_text = cache.get(key)
    if prompt_text is None:
        prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        cache[key] = prompt_text
    if not chat:
        return _join(prompt_text, steps, separator, False, column, index)
    return _render_assistant(
        tokenizer, messages, prompt_text, dict(completion[0]), steps, separator, (column, index), partial
    )


def _render_assistant(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    prompt_text: str,
    message: dict[str, Any],
    steps: list[str],
    separator: str,
    where: tuple[str, int | None],
    partial: bool = False,
) -> Text:
    """An assistant-message completion (`steps`: its content's), rendered by the chat template: the template's
    text before the content joins the first step, its end-of-turn text the last one, except in a `partial`
    completion, which the whole response continues after the separator (no end of turn there).
    """
    column, index = where
    full = tokenizer.apply_chat_template([*messages, message], tokenize=False)
    if not full.startswith(prompt_text):
        raise DataFormatError(
            f"{_where(column, index)}: the chat template does not render the prompt with "
            "add_generation_prompt=True as a prefix of the conversation that includes the assistant message, "
            "so the completion's tokens cannot be located; pass the completion as a string instead"
        )
    rest, content = full[len(prompt_text) :], message["content"]
    at = 0 if rest.startswith(content) else rest.find(content)
    if at < 0:
        raise DataFormatError(
            f"{_where(column, index)}: the chat template changes the assistant content when rendering it, "
            "so its steps cannot be located; pass the completion as a string instead"
        )
    steps[0] = rest[:at] + steps[0]  # template text before the content: first step
    if not partial:
        steps[-1] += rest[at + len(content) :]  # end-of-turn text after it: last step
    return _join(prompt_text, steps, separator, False, column, index)


def _check_arguments(tokenizer: Any, max_length: int | None, step_separator: str) -> None:
    """A fast tokenizer, a positive `max_length` or None, a valid separator."""
    _require_fast(tokenizer)
    if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
        raise ValueError(f"max_length must be a positive integer or None, got {max_length!r}")
    check_step_separator(step_separator)


def tokenize_example(
    tokenizer: Any,
    prompt: str | list[dict[str, str]],
    completion: str | list[str] | list[dict[str, str]],
    *,
    step_separator: str = "\n\n",
    max_length: int | None = None,
    append_eos: bool = False,
    partial: bool = False,
) -> dict[str, Any]:
    """Tokenize one prompt/completion pair and find the token span of every step.

    Returns `input_ids`, `completion_mask` (1 on completion tokens), `step_index` (-1 on prompt tokens, k on
    tokens of step k), `num_steps` (steps that kept at least one token), `num_truncated_steps` (steps that
    lost tokens to truncation) and `prompt_length` (number of prompt tokens).

    A string prompt is tokenized with the tokenizer's special tokens (BOS); a chat prompt is rendered with
    `apply_chat_template(..., add_generation_prompt=True)` and tokenized without adding any. The completion
    is a string (split on `step_separator`) or a list of steps, appended as is to the prompt (no end-of-turn
    tokens), or an assistant message, rendered by the template (its end-of-turn tokens in the last step).
    `append_eos=True` appends the tokenizer's EOS token to a string or step-list completion (unless it already
    ends with it), in its last step, as TRL's DPOTrainer and KTOTrainer do; `partial=True` (the steps begin a
    longer response) ends the last step with the separator instead, as a stepwise row's `partial` column does.
    A prompt that leaves no token before the completion (an empty prompt without BOS) raises
    :class:`DataFormatError`. With `max_length`, the end of the completion is cut; :class:`PromptTooLongError`
    is raised when the prompt leaves no room. Invalid inputs raise :class:`DataFormatError`.

    Example:

    ```python
    >>> from trl_implicit_prm.tiny import build_tokenizer
    >>> tok = build_tokenizer(vocab_size=400)
    >>> out = tokenize_example(tok, "Q: 2+3?\\n", ["Add.", "5."])
    >>> out["num_steps"], max(out["step_index"]) + 1
    (2, 2)
    >>> out["step_index"][: out["prompt_length"]] == [-1] * out["prompt_length"]
    True

    ```
    """
    _check_arguments(tokenizer, max_length, step_separator)
    check_prompt(prompt, "prompt")
    steps = check_completion(completion, "completion", step_separator=step_separator)
    return encode_example(
        tokenizer, prompt, completion, steps, step_separator, max_length, append_eos, partial
    )


def encode_example(
    tokenizer: Any,
    prompt: Any,
    completion: Any,
    steps: list[str],
    step_separator: str,
    max_length: int | None,
    append_eos: bool,
    partial: bool = False,
) -> dict[str, Any]:
    """:func:`tokenize_example` on an already validated pair, with the `steps` validation returned (`partial`:
    the steps begin a longer response, so the last one ends with the separator and gets no EOS).
    """
    eos = _eos_text(tokenizer, append_eos)
    item = _render(tokenizer, prompt, completion, steps, step_separator, "completion", None, {}, eos, partial)
    spans = encode_spans(tokenizer, [item], max_length)
    if spans.errors[0] is not None:
        raise spans.errors[0]
    return {
        "input_ids": spans.input_ids[0].tolist(),
        "completion_mask": spans.completion_mask[0].tolist(),
        "step_index": spans.step_index[0].tolist(),
        "num_steps": spans.num_steps[0],
        "num_truncated_steps": spans.num_truncated[0],
        "prompt_length": spans.prompt_length[0],
    }


def tokenize_dataset(
    dataset: Any,
    tokenizer: Any,
    kind: str | None = None,
    *,
    step_separator: str = "\n\n",
    max_length: int | None = None,
    num_proc: int | None = None,
    batch_size: int = 1000,
    append_eos: bool = False,
) -> Any:
    """Validate and tokenize a paired, unpaired or stepwise `datasets.Dataset`, with step spans.

    Output columns (the format's columns are replaced, other columns are kept):

    - unpaired: `input_ids`, `completion_mask`, `step_index`, `num_steps`, `num_truncated_steps`, `label`;
    - paired: the same five token fields prefixed with `chosen_` and with `rejected_`;
    - stepwise: the unpaired fields plus `step_labels` (one per kept step; labels of steps truncated away are
      dropped, counted in `num_truncated_steps`); `label` is the minimum of all its step labels (the outcome). A
      row with `partial` true (read, not kept) ends with the step separator instead of EOS.

    `append_eos=True` appends EOS as :func:`tokenize_example` does; column types:
    :func:`~trl_implicit_prm.data.columns.output_features`. Rows whose prompt alone fills `max_length` are dropped
    and counted in a warning. Rollouts must first be converted (:func:`~trl_implicit_prm.data.rollouts_to_pairs`,
    :func:`~trl_implicit_prm.data.rollouts_to_unpaired`).

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from trl_implicit_prm.tiny import build_tokenizer
    >>> tok = build_tokenizer(vocab_size=400)
    >>> ds = Dataset.from_dict({"prompt": ["2+3="], "completion": ["Add.\\n\\n5."], "label": [True]})
    >>> out = tokenize_dataset(ds, tok)
    >>> out[0]["num_steps"], out[0]["label"]
    (2, 1.0)

    ```
    """
    _check_arguments(tokenizer, max_length, step_separator)
    kind = _checked_kind(dataset, kind)
    token_features = output_features(kind)
    known = (*FORMATS[kind], *OPTIONAL_COLUMNS.get(kind, ()), *token_features)
    extra = {c: f for c, f in dataset.features.items() if c not in known}
    eos = _eos_text(tokenizer, append_eos)
    settings = dict(tokenizer=tokenizer, kind=kind, step_separator=step_separator, max_length=max_length)
    result = dataset.map(
        partial(_tokenize_batch, **settings, eos=eos, extra=list(extra)),
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        num_proc=num_proc,
        remove_columns=dataset.column_names,
        features=Features({**extra, **token_features}),
        desc=f"Tokenizing {kind} rows",
    )
    _warn_dropped_and_truncated(result, len(dataset), kind, max_length)
    return result


def _checked_kind(dataset: Any, kind: str | None) -> str:
    """The dataset's format (detected when `kind` is None); rollouts and missing columns are refused."""
    if kind is None:
        kind = detect_format(dataset)
    if kind == "rollouts":
        raise DataFormatError(
            "rollouts (prompt, completions, correctness) are not tokenized directly: convert them first with "
            "rollouts_to_pairs(...) for ImplicitPRMTrainer or rollouts_to_unpaired(...) for CETrainer"
        )
    if kind not in FORMATS:
        raise ValueError(f"kind must be one of {list(FORMATS)}, got {kind!r}")
    if any(c not in dataset.column_names for c in FORMATS[kind]):
        raise DataFormatError(_missing_columns_message(list(dataset.column_names), kind))
    return kind


def _render_batch(
    batch: dict[str, list[Any]],
    indices: list[int],
    tokenizer: Any,
    kind: str,
    step_separator: str,
    eos: str | None,
) -> list[Any]:
    """Validate a batch's rows and render their completions, column by column (a `partial` row as such)."""
    cache: dict[str, str] = {}
    columns = [*FORMATS[kind], *(c for c in OPTIONAL_COLUMNS.get(kind, ()) if c in batch)]
    given = [{c: batch[c][i] for c in columns} for i in range(len(indices))]
    rows = [
        (validate_row(row, kind, index, step_separator=step_separator), bool(row.get("partial")))
        for row, index in zip(given, indices, strict=True)
    ]
    return [
        _render(
            tokenizer,
            batch["prompt"][i],
            batch[c][i],
            rows[i][0][c],
            step_separator,
            c,
            index,
            cache,
            eos,
            rows[i][1],
        )
        for c in COMPLETION_COLUMNS[kind]
        for i, index in enumerate(indices)
    ]


def _tokenize_batch(
    batch: dict[str, list[Any]],
    indices: list[int],
    *,
    tokenizer: Any,
    kind: str,
    step_separator: str,
    max_length: int | None,
    eos: str | None,
    extra: list[str],
) -> dict[str, list[Any]]:
    """One `datasets.map` batch: validate, render, encode; rows whose prompt fills `max_length` are dropped."""
    n = len(indices)
    items = _render_batch(batch, indices, tokenizer, kind, step_separator, eos)
    spans = encode_spans(tokenizer, items, max_length)
    dropped = set()
    for r, error in enumerate(spans.errors):
        if isinstance(error, PromptTooLongError):
            dropped.add(r % n)
        elif error is not None:
            raise error
    kept = [i for i in range(n) if i not in dropped] if dropped else range(n)

    def pick(values: list[Any], side: int = 0) -> list[Any]:
        values = values[side * n : (side + 1) * n]
        return [values[i] for i in kept] if dropped else values

    out: dict[str, list[Any]] = {}
    for side, prefix in enumerate(SIDE_PREFIXES[kind]):
        out[prefix + "input_ids"] = pick(spans.input_ids, side)
        out[prefix + "completion_mask"] = pick(spans.completion_mask, side)
        out[prefix + "step_index"] = pick(spans.step_index, side)
        out[prefix + "num_steps"] = pick(spans.num_steps, side)
        out[prefix + "num_truncated_steps"] = pick(spans.num_truncated, side)
    if kind == "unpaired":
        out["label"] = [float(y) for y in pick(batch["label"])]
    elif kind == "stepwise":
        labels = [[float(y) for y in row] for row in pick(batch["labels"])]
        out["label"] = [min(row) for row in labels]  # the outcome, from every step (truncated ones too)
        out["step_labels"] = [row[:k] for row, k in zip(labels, out["num_steps"], strict=True)]
    for c in extra:
        out[c] = pick(batch[c])
    return out


def _warn_dropped_and_truncated(result: Any, n_rows: int, kind: str, max_length: int | None) -> None:
    """Count, in warnings, the rows dropped (prompt over `max_length`) and the completions cut."""
    dropped = n_rows - len(result)
    if dropped:
        logger.warning(
            "dropped %d of %d rows whose prompt is longer than max_length=%s (no room left for the completion)",
            dropped,
            n_rows,
            max_length,
        )
    if max_length is None or not len(result):
        return
    for prefix in SIDE_PREFIXES[kind]:
        truncated = sum(1 for x in result[prefix + "num_truncated_steps"] if x)
        if truncated:
            logger.warning(
                "truncated the %scompletion of %d of %d rows to max_length=%d: a response-level label then "
                "applies to a response whose answer may be cut; raise max_length to keep whole responses",
                prefix,
                truncated,
                len(result),
                max_length,
            )
