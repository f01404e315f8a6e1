"""Reward metrics as per-row sums and counts, so that batches and processes reduce to exact per-item means.

A trainer turns each batch into one row of statistics per example (:func:`group_row_stats`,
:func:`pair_row_stats`): sums and counts, never means. Rows can then be gathered (dropping the duplicates that
even batches add under several processes), summed over any number of batches, and turned into metrics once
(:func:`reward_metrics`): a mean over items is `Σ sums / Σ counts`, whatever the batch sizes were.

| kind  | items                                     | metrics (`rewards/...`)                                       |
|-------|-------------------------------------------|---------------------------------------------------------------|
| group | outcome rewards, or labelled step rewards | `positive`, `negative` (mean reward), `accuracies` (sign = label) |
| pair  | (chosen, rejected) pairs                  | `chosen`, `rejected`, `margins` (means), `accuracies` (chosen > rejected) |

Example:

```python
>>> import torch
>>> stats = group_row_stats(torch.tensor([0.5, -1.0, 2.0]), torch.tensor([True, True, False]))
>>> reward_metrics("group", stats.sum(0))
{'rewards/positive': -0.25, 'rewards/negative': 2.0, 'rewards/accuracies': 0.3333333333333333}

```
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["GROUP_STATS", "PAIR_STATS", "RowStats", "group_row_stats", "pair_row_stats", "reward_metrics"]

GROUP_STATS = ("positive_sum", "positive_count", "negative_sum", "negative_count", "correct", "count")
PAIR_STATS = ("chosen_sum", "rejected_sum", "wins", "count")


def group_row_stats(values: Tensor, positive: Tensor, valid: Tensor | None = None) -> Tensor:
    """Per-row sums `[B, 6]` (columns :data:`GROUP_STATS`, float64) of the items of each row.

    `values` is `[B]` (one outcome reward per row) or `[B, K]` (step rewards); `positive` (the label is
    positive) and `valid` (the item exists, e.g. the step is labelled; default all) have its shape. An item is
    correct when `(value > 0) == positive`.
    """
    if values.dim() == 1:
        values, positive = values.unsqueeze(1), positive.unsqueeze(1)
        valid = None if valid is None else valid.unsqueeze(1)
    valid = torch.ones_like(positive, dtype=torch.bool) if valid is None else valid.to(torch.bool)
    if values.shape != positive.shape or values.shape != valid.shape:
        raise ValueError(
            f"values {tuple(values.shape)}, positive {tuple(positive.shape)} and valid {tuple(valid.shape)} "
            "must have the same shape"
        )
    v = values.detach().double()
    pos, neg = positive.to(torch.bool) & valid, ~positive.to(torch.bool) & valid
    correct = ((v > 0) == positive.to(torch.bool)) & valid
    columns = [(v * pos).sum(1), pos.sum(1), (v * neg).sum(1), neg.sum(1), correct.sum(1), valid.sum(1)]
    return torch.stack([c.double() for c in columns], dim=1)


def pair_row_stats(chosen: Tensor, rejected: Tensor) -> Tensor:
    """Per-pair sums `[B, 4]` (columns :data:`PAIR_STATS`, float64) of `[B]` chosen and rejected rewards."""
    if chosen.shape != rejected.shape or chosen.dim() != 1:
        raise ValueError(
            f"chosen {tuple(chosen.shape)} and rejected {tuple(rejected.shape)} must both be [B]"
        )
    c, r = chosen.detach().double(), rejected.detach().double()
    return torch.stack([c, r, (c > r).double(), torch.ones_like(c)], dim=1)


def reward_metrics(kind: str, totals: Tensor, prefix: str = "rewards") -> dict[str, float]:
    """Per-item means from summed statistics `[S]` of `kind` (`"group"` or `"pair"`); a mean without items is
    left out (a set without negatives has no `rewards/negative`).
    """
    t = totals.double().tolist()
    if kind == "group":
        pos_sum, pos_n, neg_sum, neg_n, correct, n = t
        out = {"positive": (pos_sum, pos_n), "negative": (neg_sum, neg_n), "accuracies": (correct, n)}
    elif kind == "pair":
        chosen, rejected, wins, n = t
        out = {
            "chosen": (chosen, n),
            "rejected": (rejected, n),
            "accuracies": (wins, n),
            "margins": (chosen - rejected, n),
        }
    else:
        raise ValueError(f"kind must be 'group' or 'pair', got {kind!r}")
    return {f"{prefix}/{name}": s / c for name, (s, c) in out.items() if c > 0}


@dataclass
class RowStats:
    """One batch's per-example statistics: `sums` `[B, S]` (rows aligned with the batch's examples, so that
    `gather_for_metrics` can drop padded duplicates) of `kind` (`"group"` or `"pair"`), logged as `prefix/...`.
    """

    kind: str
    sums: Tensor
    prefix: str = "rewards"
