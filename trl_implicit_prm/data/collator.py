"""`ImplicitPRMCollator`: pads tokenized paired, unpaired or stepwise examples into a batch of tensors."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .columns import RESPONSE_SUMS, RESPONSE_SUMS_ADVICE, TOKEN_KEYS, TOKENIZED_KINDS, tokenized_kind

__all__ = ["ImplicitPRMCollator", "pad_token_rows"]


def _refuse_response_sums(examples: list[dict[str, Any]]) -> None:
    """A per-response reference sum cannot give step rewards; say what to pass instead of ignoring it."""
    found = sorted({key for ex in examples for key in RESPONSE_SUMS if key in ex})
    if found:
        raise ValueError(
            f"the examples hold {found}: per-response reference log-prob sums cannot give step rewards. "
            + RESPONSE_SUMS_ADVICE
        )


def _optional(rows: Sequence[Mapping[str, Any]], key: str) -> list[Any] | None:
    """The values of `key` in every row, or None when no row has it; an error when only some rows do."""
    have = [key in row for row in rows]
    if not any(have):
        return None
    if not all(have):
        raise ValueError(
            f"key {key!r} is present in some examples but missing from example {have.index(False)}"
        )
    return [row[key] for row in rows]


@dataclass
class ImplicitPRMCollator:
    """Pad the output of `tokenize_dataset` / `tokenize_example` into a batch.

    Output tensors (`B` examples, `T` the longest sequence, rounded up to `pad_to_multiple_of`, `K` the most
    steps in the batch):

    - unpaired: `input_ids`, `attention_mask`, `completion_mask`, `step_index` (padding -1) as [B, T] int64,
      `num_steps` [B] int64, `label` [B] float32 (when the examples carry one);
    - paired: the same keys over 2B rows, all chosen responses first then all rejected ones (TRL's DPO
      convention), without `label`;
    - stepwise: the unpaired keys plus `step_labels` [B, K] float32 (padding 0) and `step_label_mask` [B, K] bool.

    Precomputed per-step reference log-probabilities are passed through as `ref_step_logps` [B, K] float64,
    padded with 0 (paired: `ref_chosen_step_logps` and `ref_rejected_step_logps`); the trainers use them instead
    of a reference model. Per-response sums (`ref_logps`, `ref_chosen_logps`, `ref_rejected_logps`) are refused:
    they cannot give step rewards. Other keys are ignored. The kind is detected from the keys when `kind` is
    None.

    Example:

    ```python
    >>> collate = ImplicitPRMCollator(pad_token_id=0)
    >>> batch = collate([
    ...     {"input_ids": [5, 6, 7], "completion_mask": [0, 1, 1], "step_index": [-1, 0, 1], "num_steps": 2,
    ...      "label": 1.0},
    ...     {"input_ids": [5, 8], "completion_mask": [0, 1], "step_index": [-1, 0], "num_steps": 1, "label": 0.0},
    ... ])
    >>> batch["input_ids"].tolist(), batch["step_index"].tolist()
    ([[5, 6, 7], [5, 8, 0]], [[-1, 0, 1], [-1, 0, -1]])

    ```
    """

    pad_token_id: int
    padding_side: str = "right"
    pad_to_multiple_of: int | None = None
    kind: str | None = None

    def __post_init__(self) -> None:
        if self.padding_side not in ("left", "right"):
            raise ValueError(f'padding_side must be "left" or "right", got {self.padding_side!r}')
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(
                f"pad_to_multiple_of must be a positive integer or None, got {self.pad_to_multiple_of}"
            )
        if self.kind is not None and self.kind not in TOKENIZED_KINDS:
            raise ValueError(f"kind must be one of {TOKENIZED_KINDS} or None, got {self.kind!r}")

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad `examples` (tokenized rows of one kind) into a batch of tensors."""
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        kind = self.kind or self._detect(examples)
        if kind == "paired":
            rows = [self._side(ex, i, "chosen_") for i, ex in enumerate(examples)]
            rows += [self._side(ex, i, "rejected_") for i, ex in enumerate(examples)]
        else:
            required = TOKEN_KEYS + (("step_labels",) if kind == "stepwise" else ())
            for i, ex in enumerate(examples):
                self._require(ex, i, required, kind)
            rows = examples
        batch = self._pad_tokens(rows)
        num_steps = batch["num_steps"].tolist()
        step_lists = {}
        _refuse_response_sums(examples)
        if kind == "paired":
            ref_steps = [
                _optional(examples, "ref_chosen_step_logps"),
                _optional(examples, "ref_rejected_step_logps"),
            ]
            if (ref_steps[0] is None) != (ref_steps[1] is None):
                raise ValueError("reference log-probs must be given for both chosen and rejected responses")
            if ref_steps[0] is not None:
                step_lists["ref_step_logps"] = ref_steps[0] + ref_steps[1]
        else:
            labels = _optional(examples, "label")
            if labels is not None:
                batch["label"] = torch.tensor([float(y) for y in labels], dtype=torch.float32)
            if kind == "stepwise":
                step_lists["step_labels"] = [ex["step_labels"] for ex in examples]
            ref_step = _optional(examples, "ref_step_logps")
            if ref_step is not None:
                step_lists["ref_step_logps"] = ref_step
        if step_lists:
            width = max([*num_steps, *(len(v) for lists in step_lists.values() for v in lists)])
            for key, lists in step_lists.items():
                # Reference log-prob sums stay float64 (the rewards' dtype policy, see rewards.step_logp_sums).
                dtype = torch.float64 if key == "ref_step_logps" else torch.float32
                values = torch.zeros(len(lists), width, dtype=dtype)
                mask = torch.zeros(len(lists), width, dtype=torch.bool)
                for i, v in enumerate(lists):
                    values[i, : len(v)] = torch.as_tensor(v, dtype=dtype)
                    mask[i, : len(v)] = True
                batch[key] = values
                if key == "step_labels":
                    batch["step_label_mask"] = mask
        return batch

    def _detect(self, examples: Sequence[Mapping[str, Any]]) -> str:
        kinds = [tokenized_kind(ex) for ex in examples]
        if None in kinds:
            i = kinds.index(None)
            raise ValueError(
                f"example {i} has none of the keys 'input_ids' (unpaired/stepwise) or 'chosen_input_ids' "
                f"(paired); got keys {sorted(examples[i])}. Tokenize the dataset with tokenize_dataset first"
            )
        if len(set(kinds)) > 1:
            other = next(i for i, k in enumerate(kinds) if k != kinds[0])
            raise ValueError(
                f"examples mix kinds: example 0 is {kinds[0]}, example {other} is {kinds[other]}"
            )
        return kinds[0]  # type: ignore[return-value]

    @staticmethod
    def _require(example: Mapping[str, Any], i: int, keys: Sequence[str], kind: str) -> None:
        missing = [k for k in keys if k not in example]
        if missing:
            raise ValueError(f"example {i} ({kind}) lacks the key(s) {missing}; got keys {sorted(example)}")

    def _side(self, example: Mapping[str, Any], i: int, prefix: str) -> dict[str, Any]:
        self._require(example, i, [prefix + k for k in TOKEN_KEYS], "paired")
        row = {k: example[prefix + k] for k in TOKEN_KEYS}
        if prefix + "num_steps" in example:
            row["num_steps"] = example[prefix + "num_steps"]
        return row

    def _pad_tokens(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad_token_rows(
            [row["input_ids"] for row in rows],
            [row["step_index"] for row in rows],
            self.pad_token_id,
            completion_masks=[row["completion_mask"] for row in rows],
            padding_side=self.padding_side,
            pad_to_multiple_of=self.pad_to_multiple_of,
        )
        batch["num_steps"] = torch.tensor(
            [
                int(row["num_steps"])
                if "num_steps" in row
                else int(max(max(row["step_index"], default=-1) + 1, 0))
                for row in rows
            ],
            dtype=torch.long,
        )
        return batch


def pad_token_rows(
    input_ids: Sequence[Sequence[int]],
    step_index: Sequence[Sequence[int]],
    pad_token_id: int,
    *,
    completion_masks: Sequence[Sequence[int]] | None = None,
    padding_side: str = "right",
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """The one padder of token rows: `input_ids` (pad `pad_token_id`), `attention_mask`, `completion_mask` (pad 0)
    and `step_index` (pad -1) as `[B, T]` int64, for the trainers' collator, scoring and KTO's mismatched pairs.

    `completion_masks` defaults to `step_index >= 0` (every completion token belongs to a step).

    Example:

    ```python
    >>> batch = pad_token_rows([[5, 6, 7], [5, 8]], [[-1, 0, 1], [-1, 0]], pad_token_id=0, padding_side="left")
    >>> batch["input_ids"].tolist(), batch["attention_mask"].tolist(), batch["completion_mask"].tolist()
    ([[5, 6, 7], [0, 5, 8]], [[1, 1, 1], [0, 1, 1]], [[0, 1, 1], [0, 0, 1]])

    ```
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f'padding_side must be "left" or "right", got {padding_side!r}')
    lengths = [len(x) for x in input_ids]
    columns = {"step_index": step_index}
    if completion_masks is not None:
        columns["completion_mask"] = completion_masks
    for key, values in columns.items():
        for i, x in enumerate(values):
            if len(x) != lengths[i]:
                raise ValueError(f"row {i}: {key!r} has {len(x)} entries but 'input_ids' has {lengths[i]}")
    width = max(lengths)
    if pad_to_multiple_of:
        width = math.ceil(width / pad_to_multiple_of) * pad_to_multiple_of
    ids = np.full((len(lengths), width), pad_token_id, dtype=np.int64)
    steps = np.full((len(lengths), width), -1, dtype=np.int64)
    attn = np.zeros((len(lengths), width), dtype=np.int64)
    comp = np.zeros((len(lengths), width), dtype=np.int64) if completion_masks is not None else None
    for i, n in enumerate(lengths):
        span = slice(0, n) if padding_side == "right" else slice(width - n, width)
        ids[i, span] = input_ids[i]
        steps[i, span] = step_index[i]
        attn[i, span] = 1
        if comp is not None:
            comp[i, span] = completion_masks[i]
    step_tensor = torch.from_numpy(steps)
    return {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(attn),
        "completion_mask": torch.from_numpy(comp) if comp is not None else (step_tensor >= 0).long(),
        "step_index": step_tensor,
    }
