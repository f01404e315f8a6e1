"""`ImplicitPRMCollator`: pads tokenized paired, unpaired or stepwise examples into a batch of tensors."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["ImplicitPRMCollator"]

_TOKEN_KEYS = ("input_ids", "completion_mask", "step_index")
_KINDS = ("paired", "unpaired", "stepwise")


def _kind_of(example: Mapping[str, Any]) -> str | None:
    if "chosen_input_ids" in example or "rejected_input_ids" in example:
        return "paired"
    if "step_labels" in example:
        return "stepwise"
    if "input_ids" in example:
        return "unpaired"
    return None


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

    Precomputed reference log-probabilities are passed through: `ref_logps` [B] (paired: `ref_chosen_logps` and
    `ref_rejected_logps` concatenated to [2B]) and `ref_step_logps` [B, K] padded with 0 (paired:
    `ref_chosen_step_logps` and `ref_rejected_step_logps`). Other keys are ignored. The kind is detected from the
    keys when `kind` is None.

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
        if self.kind is not None and self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS} or None, got {self.kind!r}")

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        kind = self.kind or self._detect(examples)
        if kind == "paired":
            rows = [self._side(ex, i, "chosen_") for i, ex in enumerate(examples)]
            rows += [self._side(ex, i, "rejected_") for i, ex in enumerate(examples)]
        else:
            required = _TOKEN_KEYS + (("step_labels",) if kind == "stepwise" else ())
            for i, ex in enumerate(examples):
                self._require(ex, i, required, kind)
            rows = examples
        batch = self._pad_tokens(rows)
        num_steps = batch["num_steps"].tolist()
        step_lists = {}
        if kind == "paired":
            ref = [_optional(examples, "ref_chosen_logps"), _optional(examples, "ref_rejected_logps")]
            ref_steps = [
                _optional(examples, "ref_chosen_step_logps"),
                _optional(examples, "ref_rejected_step_logps"),
            ]
            if (ref[0] is None) != (ref[1] is None) or (ref_steps[0] is None) != (ref_steps[1] is None):
                raise ValueError("reference log-probs must be given for both chosen and rejected responses")
            ref_logps = None if ref[0] is None else ref[0] + ref[1]
            if ref_steps[0] is not None:
                step_lists["ref_step_logps"] = ref_steps[0] + ref_steps[1]
        else:
            ref_logps = _optional(examples, "ref_logps")
            labels = _optional(examples, "label")
            if labels is not None:
                batch["label"] = torch.tensor([float(y) for y in labels], dtype=torch.float32)
            if kind == "stepwise":
                step_lists["step_labels"] = [ex["step_labels"] for ex in examples]
            ref_step = _optional(examples, "ref_step_logps")
            if ref_step is not None:
                step_lists["ref_step_logps"] = ref_step
        if ref_logps is not None:
            batch["ref_logps"] = torch.tensor([float(x) for x in ref_logps], dtype=torch.float32)
        if step_lists:
            width = max([*num_steps, *(len(v) for lists in step_lists.values() for v in lists)])
            for key, lists in step_lists.items():
                values = torch.zeros(len(lists), width, dtype=torch.float32)
                mask = torch.zeros(len(lists), width, dtype=torch.bool)
                for i, v in enumerate(lists):
                    values[i, : len(v)] = torch.as_tensor(v, dtype=torch.float32)
                    mask[i, : len(v)] = True
                batch[key] = values
                if key == "step_labels":
                    batch["step_label_mask"] = mask
        return batch

    def _detect(self, examples: Sequence[Mapping[str, Any]]) -> str:
        kinds = [_kind_of(ex) for ex in examples]
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
        self._require(example, i, [prefix + k for k in _TOKEN_KEYS], "paired")
        row = {k: example[prefix + k] for k in _TOKEN_KEYS}
        if prefix + "num_steps" in example:
            row["num_steps"] = example[prefix + "num_steps"]
        return row

    def _pad_tokens(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        seqs = {k: [torch.as_tensor(row[k], dtype=torch.long) for row in rows] for k in _TOKEN_KEYS}
        lengths = [len(x) for x in seqs["input_ids"]]
        for k in ("completion_mask", "step_index"):
            for i, x in enumerate(seqs[k]):
                if len(x) != lengths[i]:
                    raise ValueError(f"row {i}: {k!r} has {len(x)} entries but 'input_ids' has {lengths[i]}")
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = math.ceil(width / self.pad_to_multiple_of) * self.pad_to_multiple_of
        pads = {"input_ids": self.pad_token_id, "completion_mask": 0, "step_index": -1}
        batch = {k: torch.full((len(rows), width), pads[k], dtype=torch.long) for k in _TOKEN_KEYS}
        batch["attention_mask"] = torch.zeros(len(rows), width, dtype=torch.long)
        seqs["attention_mask"] = [torch.ones(n, dtype=torch.long) for n in lengths]
        for k, values in batch.items():
            for i, x in enumerate(seqs[k]):
                if self.padding_side == "right":
                    values[i, : len(x)] = x
                else:
                    values[i, width - len(x) :] = x
        batch["num_steps"] = torch.tensor(
            [
                int(row["num_steps"])
                if "num_steps" in row
                else int(max(seqs["step_index"][i].max().item() + 1, 0))
                for i, row in enumerate(rows)
            ],
            dtype=torch.long,
        )
        return {
            k: batch[k] for k in ("input_ids", "attention_mask", "completion_mask", "step_index", "num_steps")
        }
