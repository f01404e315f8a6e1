"""Oversampling for PRIME's accuracy filter: the rows of an over-generated batch a step trains on, and taking them.

With `oversample_factor = k`, each generation draws `k` times the prompts the batch needs; after the verifier,
:func:`~trl_implicit_prm.rl.advantages.select_groups` picks the groups to keep and :func:`take_rows` moves those
rows (which may sit on any process) to the processes that train on them, in order.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["COMPLETION_KEYS", "PROMPT_KEYS", "group_rows", "take_rows"]

PROMPT_KEYS = ("prompt_ids", "prompt_mask")
COMPLETION_KEYS = (
    "completion_ids",
    "completion_mask",
    "old_per_token_logps",
    "ref_per_token_logps",
    "sampling_per_token_logps",
    "tool_mask",
    "importance_sampling_ratio",
)
RECOMPUTED = ("advantages", "num_items_in_batch")  # the caller computes these for the rows it keeps


def group_rows(groups: Tensor, group_size: int) -> Tensor:
    """The rows of groups `groups` when each group is `group_size` consecutive rows.

    Example:

    ```python
    >>> import torch
    >>> group_rows(torch.tensor([0, 2]), 3)
    tensor([0, 1, 2, 6, 7, 8])

    ```
    """
    offsets = torch.arange(group_size, device=groups.device)
    return (groups.unsqueeze(1) * group_size + offsets).reshape(-1)


def take_rows(output: dict[str, Any], rows: Tensor, accelerator: Any, pad_token_id: int) -> dict[str, Tensor]:
    """This process's share of the rows `rows` (indices into the batch gathered over processes) of a generation
    batch: each row tensor is padded across processes, gathered, indexed by `rows` and sliced to this process's
    `len(rows) / num_processes` rows; then the padding columns that none of its rows uses are dropped. The keys in
    `RECOMPUTED` are left out; any other key than those of TRL's text rollouts is refused.
    """
    unknown = sorted(set(output) - set(PROMPT_KEYS) - set(COMPLETION_KEYS) - set(RECOMPUTED))
    if unknown:
        raise ValueError(
            f"oversample_factor > 1 supports text rollouts only, but the generation batch also holds {unknown}; "
            "use oversample_factor=1 (filtered groups then stay in the batch with no loss)"
        )
    share = rows.numel() // accelerator.num_processes
    mine = rows[accelerator.process_index * share : (accelerator.process_index + 1) * share]
    out = {}
    for key, value in output.items():
        if key in RECOMPUTED or value is None:
            continue
        if accelerator.num_processes > 1:
            pad = pad_token_id if key.endswith("_ids") else 0
            value = accelerator.pad_across_processes(
                value, dim=1, pad_index=pad, pad_first=key in PROMPT_KEYS
            )
            value = accelerator.gather(value)
        out[key] = value[mine.to(value.device)]
    return _trim(out)


def _trim(out: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop the left prompt columns and right completion columns that are padding in every row."""
    used = out["prompt_mask"].bool().any(0)
    start = int(used.int().argmax()) if bool(used.any()) else 0
    width = out["completion_ids"].size(1)
    used = out["completion_mask"].bool().any(0)
    end = int(used.nonzero().max()) + 1 if bool(used.any()) else 1
    for key in PROMPT_KEYS:
        out[key] = out[key][:, start:]
    for key in COMPLETION_KEYS:
        if key in out and out[key].dim() == 2 and out[key].size(1) == width:
            out[key] = out[key][:, :end]
    return out
