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
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
from datasets import Features, Value
from datasets import Sequence as ListOf

from .formats import (
    FORMATS,
    DataFormatError,
    _missing_columns_message,
    _where,
    check_completion,
    check_prompt,
    detect_format,
    is_chat,
    split_steps,
    validate_row,
)

__all__ = [
    "PromptTooLongError",
    "token_steps",
    "tokenize_dataset",
    "tokenize_example",
]

logger = logging.getLogger(__name__)

_end_offset = itemgetter(1)


class PromptTooLongError(ValueError):
    """The prompt alone fills `max_length`, leaving no token for the completion."""

    def __init__(self, message: str, prompt_length: int, max_length: int):
        super().__init__(message)
        self.prompt_length = prompt_length
        self.max_length = max_length


@dataclass(frozen=True)
class _Text:
    """A rendered row: the text to tokenize and its character boundaries [prompt end, end of step 0, ...]."""

    text: str
    add_special_tokens: bool
    bounds: list[int]
    column: str
    index: int | None


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
) -> _Text:
    bounds = [len(prompt_text)]
    pos = len(prompt_text)
    last = len(steps) - 1
    for k, step in enumerate(steps):
        pos += len(step) + (len(separator) if k < last else 0)
        bounds.append(pos)
    return _Text(prompt_text + separator.join(steps), add_special_tokens, bounds, column, index)


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
    separator: str,
    column: str,
    index: int | None,
    cache: dict[str, str],
    eos: str | None = None,
) -> _Text:
    """Render one (validated) prompt/completion pair into text and step boundaries.

    `eos` (the EOS token's text) is appended to a string or step-list completion unless it already ends with
    it, as TRL's DPOTrainer/KTOTrainer do; it belongs to the last step. Assistant messages keep what the chat
    template renders.
    """
    steps = (
        None
        if is_chat(completion)
        else (split_steps(completion, separator) if isinstance(completion, str) else list(completion))
    )
    if eos is not None and steps is not None and not steps[-1].endswith(eos):
        steps[-1] += eos
    if isinstance(prompt, str):
        if steps is None:
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
    if steps is not None:
        return _join(prompt_text, steps, separator, False, column, index)
    message = dict(completion[0])
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
    steps = split_steps(content, separator)
    steps[0] = rest[:at] + steps[0]  # template text before the content: first step
    steps[-1] += rest[at + len(content) :]  # end-of-turn text after it: last step
    return _join(prompt_text, steps, separator, False, column, index)


@dataclass
class _Spans:
    """A tokenized batch: per row, the kept token ids, completion mask and step index, plus bookkeeping."""

    input_ids: list[np.ndarray]  # int32
    completion_mask: list[np.ndarray]  # int8
    step_index: list[np.ndarray]  # int32, -1 on prompt tokens
    num_steps: list[int]
    num_truncated: list[int]
    prompt_length: list[int]
    errors: list[Exception | None]


def _tokenize_texts(
    tokenizer: Any, items: list[_Text]
) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    """One batched fast-tokenizer call per `add_special_tokens` value present in the batch."""
    n = len(items)
    ids: list[Any] = [None] * n
    offsets: list[Any] = [None] * n
    for special in (True, False):
        rows = [i for i, item in enumerate(items) if item.add_special_tokens is special]
        if not rows:
            continue
        enc = tokenizer(
            [items[i].text for i in rows],
            add_special_tokens=special,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        if len(rows) == n:
            return enc["input_ids"], enc["offset_mapping"]
        for j, i in enumerate(rows):
            ids[i], offsets[i] = enc["input_ids"][j], enc["offset_mapping"][j]
    return ids, offsets


def _encode(tokenizer: Any, items: list[_Text], max_length: int | None) -> _Spans:
    """Tokenize a batch of rendered rows and assign every token to the prompt or a step, vectorised."""
    ids_lists, offsets = _tokenize_texts(tokenizer, items)
    n = len(items)
    lengths = np.fromiter(map(len, ids_lists), dtype=np.int64, count=n)
    total = int(lengths.sum())
    start = np.zeros(n, dtype=np.int64)
    np.cumsum(lengths[:-1], out=start[1:])
    row = np.repeat(np.arange(n), lengths)
    ids = np.fromiter(chain.from_iterable(ids_lists), dtype=np.int32, count=total)
    ends = np.fromiter(map(_end_offset, chain.from_iterable(offsets)), dtype=np.int64, count=total)

    # Shift each row's character positions past the previous rows', so that a single searchsorted over the
    # concatenated boundaries of all rows assigns every token of the batch at once.
    text_len = np.fromiter((len(item.text) for item in items), dtype=np.int64, count=n)
    base = np.zeros(n, dtype=np.int64)
    np.cumsum(text_len[:-1] + 1, out=base[1:])
    n_bounds = np.fromiter((len(item.bounds) for item in items), dtype=np.int64, count=n)
    bounds = np.fromiter(
        chain.from_iterable(item.bounds for item in items), dtype=np.int64, count=int(n_bounds.sum())
    )
    bounds += np.repeat(base, n_bounds)
    first_bound = np.zeros(n, dtype=np.int64)
    np.cumsum(n_bounds[:-1], out=first_bound[1:])
    step = (token_steps(ends + base[row], bounds) - first_bound[row]).astype(np.int32)
    completion = (step >= 0).astype(np.int8)
    num_total = n_bounds - 1

    prompt_length = np.bincount(row[step < 0], minlength=n)
    keep = lengths.copy() if max_length is None else np.minimum(lengths, max_length)
    too_long = np.zeros(n, dtype=bool) if max_length is None else prompt_length >= max_length
    ok = prompt_length < keep
    last = np.minimum(start + np.maximum(keep, 1) - 1, max(total - 1, 0))
    num_steps = np.where(ok, step[last] + 1, 0)
    cut = keep < lengths
    nxt = np.where(cut, start + keep, last)
    partial = cut & ok & (step[nxt] == step[last])
    num_truncated = np.where(ok, num_total - num_steps + partial, 0)

    # Every kept step must own a token: count the distinct steps among kept tokens.
    kept = None if max_length is None else (np.arange(total) - start[row]) < keep[row]
    is_new = step >= 0
    is_new[1:] &= step[1:] != step[:-1]
    nonempty = start[lengths > 0]
    is_new[nonempty] = step[nonempty] >= 0
    distinct = np.bincount(row[is_new if kept is None else is_new & kept], minlength=n)

    errors: list[Exception | None] = [None] * n
    # A completion token needs a token before it to be predicted from: with an empty prompt and a tokenizer
    # that adds no BOS (Qwen-style), the first completion token would silently be left out of the reward.
    unpredicted = (prompt_length == 0) & (lengths > 0)
    for i in np.flatnonzero(unpredicted):
        item = items[i]
        errors[i] = DataFormatError(
            f"{_where('prompt', item.index)}: no prompt token precedes the completion (the prompt renders to "
            f"{item.text[: item.bounds[0]]!r} and the tokenizer adds no BOS token), so the completion's first "
            "token has nothing to be predicted from and would be left out of the reward; give a non-empty prompt"
        )
    for i in np.flatnonzero((~ok | (distinct != num_steps)) & ~unpredicted):
        item = items[i]
        if not too_long[i] and not ok[i]:
            errors[i] = DataFormatError(
                f"{_where(item.column, item.index)}: the completion produced no token "
                f"(the tokenizer dropped all of its characters)"
            )
            continue
        if too_long[i]:
            errors[i] = PromptTooLongError(
                f"{_where('prompt', item.index)}: the prompt takes {prompt_length[i]} tokens, which leaves no "
                f"room for the completion within max_length={max_length}",
                int(prompt_length[i]),
                int(max_length or 0),
            )
            continue
        owned = set(step[start[i] : start[i] + keep[i]].tolist())
        k = min(set(range(int(num_steps[i]))) - owned)
        b = item.bounds
        errors[i] = DataFormatError(
            f"{_where(item.column, item.index, step=k)}: {item.text[b[k] : b[k + 1]]!r} got no token of "
            f"its own: the tokenizer merged all of its characters into a token that ends in the next step (for "
            f"example when the next step starts with a newline). Strip leading whitespace from steps or merge "
            f"step {k} into its neighbour"
        )
    if kept is not None and not kept.all():
        ids, completion, step = ids[kept], completion[kept], step[kept]
    cuts = np.cumsum(keep)[:-1]
    return _Spans(
        np.split(ids, cuts),
        np.split(completion, cuts),
        np.split(step, cuts),
        num_steps.tolist(),
        num_truncated.tolist(),
        prompt_length.tolist(),
        errors,
    )


def token_steps(token_ends: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """The boundary rule: the step of each token from the character where it ends (-1: before `bounds[0]`).

    `bounds` are the character boundaries `[prompt end, end of step 0, end of step 1, ...]` (each step's
    separator belongs to it). A token ending at character `e` (exclusive) is in step `k` when
    `bounds[k] < e <= bounds[k+1]`, and in the prompt when `e <= bounds[0]`; a zero-width token (a special token
    the tokenizer adds) takes the position of the token before it.
    """
    pos = np.maximum.accumulate(np.asarray(token_ends, dtype=np.int64))
    return np.searchsorted(np.asarray(bounds, dtype=np.int64), pos, side="left") - 1


def _check_max_length(max_length: int | None) -> None:
    if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
        raise ValueError(f"max_length must be a positive integer or None, got {max_length!r}")


def tokenize_example(
    tokenizer: Any,
    prompt: str | list[dict[str, str]],
    completion: str | list[str] | list[dict[str, str]],
    *,
    step_separator: str = "\n\n",
    max_length: int | None = None,
    append_eos: bool = False,
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
    ends with it), in its last step, as TRL's DPOTrainer and KTOTrainer do. A prompt that leaves no token
    before the completion (an empty prompt without BOS) raises :class:`DataFormatError`. With `max_length`, the end of the completion is cut; :class:`PromptTooLongError` is raised when the prompt
    leaves no room. Invalid inputs raise :class:`DataFormatError`.

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
    _require_fast(tokenizer)
    _check_max_length(max_length)
    split_steps("", step_separator)  # validates the separator
    check_prompt(prompt, "prompt")
    check_completion(completion, "completion", step_separator=step_separator)
    eos = _eos_text(tokenizer, append_eos)
    item = _render(tokenizer, prompt, completion, step_separator, "completion", None, {}, eos)
    spans = _encode(tokenizer, [item], max_length)
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


_SIDES = {"paired": ("chosen_", "rejected_"), "unpaired": ("",), "stepwise": ("",)}


def _output_features(kind: str) -> Features:
    per_side = {
        "input_ids": ListOf(Value("int32")),
        "completion_mask": ListOf(Value("int8")),
        "step_index": ListOf(Value("int32")),
        "num_steps": Value("int32"),
        "num_truncated_steps": Value("int32"),
    }
    features = {prefix + name: feature for prefix in _SIDES[kind] for name, feature in per_side.items()}
    if kind == "unpaired":
        features["label"] = Value("float64")
    if kind == "stepwise":
        features["label"] = Value("float64")
        features["step_labels"] = ListOf(Value("float64"))
    return Features(features)


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
    - stepwise: the unpaired fields plus `step_labels` (one per kept step; labels of steps truncated away
      are dropped and counted in `num_truncated_steps`). `label` is the response's outcome, the
      minimum of all its step labels (1.0 when every step is correct).

    `append_eos=True` appends the EOS token to string and step-list completions (see :func:`tokenize_example`).

    Ids and step indices are stored as int32, `completion_mask` as int8, labels as float64 (exactly as given). Rows whose
    prompt alone fills `max_length` are dropped and counted in a warning. Rollouts must be converted first
    with :func:`~trl_implicit_prm.data.rollouts_to_pairs` or :func:`~trl_implicit_prm.data.rollouts_to_unpaired`.

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
    _require_fast(tokenizer)
    _check_max_length(max_length)
    split_steps("", step_separator)
    if kind is None:
        kind = detect_format(dataset)
    if kind == "rollouts":
        raise DataFormatError(
            "rollouts (prompt, completions, correctness) are not tokenized directly: convert them first with "
            "rollouts_to_pairs(...) for ImplicitPRMTrainer or rollouts_to_unpaired(...) for CETrainer"
        )
    if kind not in FORMATS:
        raise ValueError(f"kind must be one of {list(FORMATS)}, got {kind!r}")
    format_columns = FORMATS[kind]
    if any(c not in dataset.column_names for c in format_columns):
        raise DataFormatError(_missing_columns_message(list(dataset.column_names), kind))
    eos = _eos_text(tokenizer, append_eos)
    token_features = _output_features(kind)
    extra = {c: f for c, f in dataset.features.items() if c not in format_columns and c not in token_features}
    features = Features({**extra, **token_features})

    def tokenize_batch(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        n = len(indices)
        cache: dict[str, str] = {}
        for i, index in enumerate(indices):
            validate_row({c: batch[c][i] for c in format_columns}, kind, index, step_separator=step_separator)
        if kind == "paired":
            items = [
                _render(
                    tokenizer, batch["prompt"][i], batch[side][i], step_separator, side, index, cache, eos
                )
                for side in ("chosen", "rejected")
                for i, index in enumerate(indices)
            ]
        else:
            column = "completion" if kind == "unpaired" else "completions"
            items = [
                _render(
                    tokenizer, batch["prompt"][i], batch[column][i], step_separator, column, index, cache, eos
                )
                for i, index in enumerate(indices)
            ]
        spans = _encode(tokenizer, items, max_length)
        sides = _SIDES[kind]
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
        for side, prefix in enumerate(sides):
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

    result = dataset.map(
        tokenize_batch,
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        num_proc=num_proc,
        remove_columns=dataset.column_names,
        features=features,
        desc=f"Tokenizing {kind} rows",
    )
    dropped = len(dataset) - len(result)
    if dropped:
        logger.warning(
            "dropped %d of %d rows whose prompt is longer than max_length=%s (no room left for the completion)",
            dropped,
            len(dataset),
            max_length,
        )
    if max_length is not None and len(result):
        for prefix in _SIDES[kind]:
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
    return result
