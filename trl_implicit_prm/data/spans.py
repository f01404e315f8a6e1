"""The vectorised core of tokenization with step spans: one batched fast-tokenizer call, then every token of the
batch assigned to the prompt or a step by the character where it ends (the rule is in :mod:`.tokenize`), with
truncation to `max_length` and one error per row that cannot be used.

Three stages: :func:`_assign_tokens` (tokens → steps), :func:`_truncate` (what `max_length` keeps, step counts),
:func:`_row_errors` (rows whose completion has no token, whose prompt fills `max_length`, whose completion has
nothing to be predicted from, or with a step that owns no token).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from .formats import DataFormatError, _where

_end_offset = itemgetter(1)


class PromptTooLongError(ValueError):
    """The prompt alone fills `max_length`, leaving no token for the completion."""

    def __init__(self, message: str, prompt_length: int, max_length: int):
        super().__init__(message)
        self.prompt_length = prompt_length
        self.max_length = max_length


@dataclass(frozen=True)
class Text:
    """A rendered row: the text to tokenize and its character boundaries [prompt end, end of step 0, ...]."""

    text: str
    add_special_tokens: bool
    bounds: list[int]
    column: str
    index: int | None


@dataclass
class Spans:
    """A tokenized batch: per row, the kept token ids, completion mask and step index, plus bookkeeping."""

    input_ids: list[np.ndarray]  # int32
    completion_mask: list[np.ndarray]  # int8
    step_index: list[np.ndarray]  # int32, -1 on prompt tokens
    num_steps: list[int]
    num_truncated: list[int]
    prompt_length: list[int]
    errors: list[Exception | None]


@dataclass
class _Tokens:
    """Every token of a batch, concatenated: its row, id and step (-1 in the prompt); per row, its length and
    first token, and how many step boundaries (prompt end included) it has.
    """

    lengths: np.ndarray
    start: np.ndarray
    row: np.ndarray
    ids: np.ndarray
    step: np.ndarray
    n_bounds: np.ndarray


@dataclass
class _Kept:
    """What `max_length` keeps of each row: tokens (`keep`, and the token mask `kept` or None), steps."""

    prompt_length: np.ndarray
    keep: np.ndarray
    too_long: np.ndarray
    ok: np.ndarray
    num_steps: np.ndarray
    num_truncated: np.ndarray
    distinct: np.ndarray
    kept: np.ndarray | None


def _tokenize_texts(tokenizer: Any, items: list[Text]) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
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


def _assign_tokens(items: list[Text], ids_lists: list[list[int]], offsets: list[Any]) -> _Tokens:
    """Assign every token of the batch to the prompt (-1) or a step, by the character where it ends."""
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
    step = (token_steps(ends + base[row], bounds) - first_bound[row]).astype(np.int32)  # the boundary rule
    return _Tokens(lengths, start, row, ids, step, n_bounds)


def _truncate(t: _Tokens, max_length: int | None) -> _Kept:
    """Tokens kept under `max_length`, steps kept and cut, and the distinct steps among the kept tokens."""
    n, total = len(t.lengths), len(t.ids)
    num_total = t.n_bounds - 1
    prompt_length = np.bincount(t.row[t.step < 0], minlength=n)
    keep = t.lengths.copy() if max_length is None else np.minimum(t.lengths, max_length)
    too_long = np.zeros(n, dtype=bool) if max_length is None else prompt_length >= max_length
    ok = prompt_length < keep
    last = np.minimum(t.start + np.maximum(keep, 1) - 1, max(total - 1, 0))
    num_steps = np.where(ok, t.step[last] + 1, 0)
    cut = keep < t.lengths
    nxt = np.where(cut, t.start + keep, last)
    partial = cut & ok & (t.step[nxt] == t.step[last])
    num_truncated = np.where(ok, num_total - num_steps + partial, 0)
    # Every kept step must own a token: count the distinct steps among kept tokens.
    kept = None if max_length is None else (np.arange(total) - t.start[t.row]) < keep[t.row]
    is_new = t.step >= 0
    is_new[1:] &= t.step[1:] != t.step[:-1]
    nonempty = t.start[t.lengths > 0]
    is_new[nonempty] = t.step[nonempty] >= 0
    distinct = np.bincount(t.row[is_new if kept is None else is_new & kept], minlength=n)
    return _Kept(prompt_length, keep, too_long, ok, num_steps, num_truncated, distinct, kept)


def _row_errors(items: list[Text], t: _Tokens, k: _Kept, max_length: int | None) -> list[Exception | None]:
    """One error per row that cannot be used (None for the others)."""
    errors: list[Exception | None] = [None] * len(items)
    # A completion token needs a token before it to be predicted from: with an empty prompt and a tokenizer
    # that adds no BOS (Qwen-style), the first completion token would silently be left out of the reward.
    unpredicted = (k.prompt_length == 0) & (t.lengths > 0)
    for i in np.flatnonzero(unpredicted):
        item = items[i]
        errors[i] = DataFormatError(
            f"{_where('prompt', item.index)}: no prompt token precedes the completion (the prompt renders to "
            f"{item.text[: item.bounds[0]]!r} and the tokenizer adds no BOS token), so the completion's first "
            "token has nothing to be predicted from and would be left out of the reward; give a non-empty prompt"
        )
    for i in np.flatnonzero((~k.ok | (k.distinct != k.num_steps)) & ~unpredicted):
        item = items[i]
        if not k.too_long[i] and not k.ok[i]:
            errors[i] = DataFormatError(
                f"{_where(item.column, item.index)}: the completion produced no token "
                f"(the tokenizer dropped all of its characters)"
            )
        elif k.too_long[i]:
            errors[i] = PromptTooLongError(
                f"{_where('prompt', item.index)}: the prompt takes {k.prompt_length[i]} tokens, which leaves no "
                f"room for the completion within max_length={max_length}",
                int(k.prompt_length[i]),
                int(max_length or 0),
            )
        else:
            owned = set(t.step[t.start[i] : t.start[i] + k.keep[i]].tolist())
            s = min(set(range(int(k.num_steps[i]))) - owned)
            b = item.bounds
            errors[i] = DataFormatError(
                f"{_where(item.column, item.index, step=s)}: {item.text[b[s] : b[s + 1]]!r} got no token of "
                f"its own: the tokenizer merged all of its characters into a token that ends in the next step "
                f"(for example when the next step starts with a newline). Strip leading whitespace from steps or "
                f"merge step {s} into its neighbour"
            )
    return errors


def encode_spans(tokenizer: Any, items: list[Text], max_length: int | None) -> Spans:
    """Tokenize a batch of rendered rows and assign every token to the prompt or a step, vectorised."""
    ids_lists, offsets = _tokenize_texts(tokenizer, items)
    t = _assign_tokens(items, ids_lists, offsets)
    k = _truncate(t, max_length)
    errors = _row_errors(items, t, k, max_length)
    ids, step = t.ids, t.step
    completion = (step >= 0).astype(np.int8)
    if k.kept is not None and not k.kept.all():
        ids, completion, step = ids[k.kept], completion[k.kept], step[k.kept]
    cuts = np.cumsum(k.keep)[:-1]
    return Spans(
        np.split(ids, cuts),
        np.split(completion, cuts),
        np.split(step, cuts),
        k.num_steps.tolist(),
        k.num_truncated.tolist(),
        k.prompt_length.tolist(),
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
