"""Mismatched (prompt, completion) pairs of a batch, for KTO's reference point z0."""

from __future__ import annotations

import torch
from torch import Tensor

from trl_implicit_prm.data.collator import pad_token_rows


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
    tensor([[1, 2, 9],
            [3, 7, 8]])

    ```
    """
    batch = input_ids.size(0)
    real = attention_mask.bool()
    prompts = [input_ids[i][real[i] & (completion_mask[i] == 0)] for i in range(batch)]
    completions = [input_ids[i][real[i] & (completion_mask[i] == 1)] for i in range(batch)]
    rows = [(prompts[i], completions[(i + shift) % batch]) for i in range(batch)]
    out = pad_token_rows(
        [torch.cat([p, c]).tolist() for p, c in rows],
        [[-1] * len(p) + [0] * len(c) for p, c in rows],
        pad_token_id,
    )
    out = {k: v.to(input_ids.device) for k, v in out.items()}
    out["num_steps"] = torch.ones(batch, dtype=torch.long, device=input_ids.device)
    return out
