"""Mismatched (prompt, completion) pairs of a batch, for KTO's reference point z0."""

from __future__ import annotations

import torch
from torch import Tensor


def mismatched_inputs(
    input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor, pad_token_id: int, shift: int = 1
) -> dict[str, Tensor]:
    """Row `i` becomes the prompt of row `i` followed by the completion of row `(i + shift) % B`, right-padded.

    KTO estimates its reference point `z0` from such pairs (the completion was not written for that prompt).
    The result has the trainer's batch keys, with the whole completion as one step (`step_index` 0).

    Example:

    ```python
    >>> import torch
    >>> ids = torch.tensor([[1, 2, 7, 8], [3, 9, 0, 0]])
    >>> attn = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    >>> comp = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 0]])
    >>> mismatched_inputs(ids, attn, comp, pad_token_id=0)["input_ids"]
    tensor([[1, 2, 9, 0],
            [3, 7, 8, 0]])

    ```
    """
    batch = input_ids.size(0)
    real = attention_mask.bool()
    prompts = [input_ids[i][real[i] & (completion_mask[i] == 0)] for i in range(batch)]
    completions = [input_ids[i][real[i] & (completion_mask[i] == 1)] for i in range(batch)]
    rows = [(prompts[i], completions[(i + shift) % batch]) for i in range(batch)]
    width = max(len(p) + len(c) for p, c in rows)
    ids = input_ids.new_full((batch, width), pad_token_id)
    attn = torch.zeros_like(ids)
    comp = torch.zeros_like(ids)
    for i, (p, c) in enumerate(rows):
        n_p, n = len(p), len(p) + len(c)
        ids[i, :n] = torch.cat([p, c])
        attn[i, :n] = 1
        comp[i, n_p:n] = 1
    step_index = torch.where(comp.bool(), 0, -1)
    return {"input_ids": ids, "attention_mask": attn, "completion_mask": comp, "step_index": step_index,
            "num_steps": torch.ones(batch, dtype=torch.long, device=ids.device)}
