"""Batching for scoring: sort by length, pack under a token budget, pad on the right.

Sorting by decreasing length makes neighbours similar in length, so little of a batch is padding, and puts the
largest batch first (an out-of-memory error shows up at once, not after an hour). A batch holds as many rows as
fit `rows × longest ≤ max_tokens` (and at most `max_rows`): short responses travel in large batches, long ones
in small batches, at a roughly constant memory cost. A row longer than the budget gets a batch of its own.

When everything would fit in one budget, rows of very different lengths would still share a batch and pay for
padding; so a batch that already has `min_rows` rows is also closed when the next row is shorter than
`1 - pad_slack` times its longest (each row then carries at most `pad_slack` of padding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data.collator import pad_token_rows
from .encoding import EncodedResponse

__all__ = ["collate", "plan_batches"]


def plan_batches(
    lengths: Sequence[int],
    max_tokens: int,
    max_rows: int | None = None,
    pad_slack: float = 0.2,
    min_rows: int = 8,
) -> list[list[int]]:
    """Group row indices into batches of similar length under a padded-token budget.

    Example:

    ```python
    >>> plan_batches([3, 10, 4, 9, 2], max_tokens=20)
    [[1, 3], [2, 0, 4]]
    >>> plan_batches([3, 10, 4, 9, 2], max_tokens=100, max_rows=2)
    [[1, 3], [2, 0], [4]]
    >>> plan_batches([10, 10, 9, 5, 5, 4], max_tokens=1000, min_rows=2)
    [[0, 1, 2], [3, 4, 5]]

    ```
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive integer, got {max_tokens}")
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {max_rows}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        full = (len(current) + 1) * max(longest, lengths[i]) > max_tokens
        ragged = len(current) >= min_rows and lengths[i] < (1 - pad_slack) * longest
        if current and (full or ragged or (max_rows is not None and len(current) >= max_rows)):
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, lengths[i])
    if current:
        batches.append(current)
    return batches


def collate(rows: Sequence[EncodedResponse], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded `input_ids`, `attention_mask`, `completion_mask` and `step_index` (-1 off the completion)."""
    return pad_token_rows([r.input_ids for r in rows], [r.step_index for r in rows], pad_token_id)
