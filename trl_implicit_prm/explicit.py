r"""Explicit (discriminative) PRMs: a classifier read at the last token of every step.

The Math-Shepherd / PRM800K recipe (and TRL's former `PRMTrainer`): a token-classification head over
{incorrect, correct} on a language model; the label of step `k` sits on the last token of that step (the step
separator, which belongs to the step before it, or the last step's final token), every other position is
ignored. With `z = logit_correct − logit_incorrect` at that token,

    P(step k correct | x, steps ≤ k) = σ(z_k)            score of step k: the log-odds z_k
    loss (label l_k ∈ [0, 1])      = −[l_k·log σ(z_k) + (1−l_k)·log σ(−z_k)]

which is two-class cross-entropy (:func:`trl_implicit_prm.losses.ce_loss` on `z`). A one-logit head is read as
`z` directly. Step spans are the data layer's (`step_index`, see :mod:`trl_implicit_prm.data.tokenize`), so an
explicit PRM sees exactly the tokens an implicit one is scored on.

Example:

```python
>>> import torch
>>> step_index = torch.tensor([[-1, 0, 0, 1, 1, 1], [-1, -1, 0, 1, -1, -1]])
>>> step_end_positions(step_index, 2)
tensor([[2, 5],
        [2, 3]])
>>> logits = torch.zeros(2, 6, 2)
>>> logits[0, 2, 1], logits[0, 5, 0] = 2.0, 1.0
>>> step_log_odds(logits, step_index, 2)
tensor([[ 2., -1.],
        [ 0.,  0.]])

```
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["EXPLICIT_KIND", "IMPLICIT_KIND", "log_odds", "step_end_positions", "step_log_odds"]

# The `kind` recorded in implicit_prm.json; a checkpoint without it is implicit.
IMPLICIT_KIND, EXPLICIT_KIND = "implicit", "explicit"


def step_end_positions(step_index: Tensor, num_steps: int) -> Tensor:
    """Position of the last token of each step, `[B, K]` long; -1 for a step with no token in the row."""
    positions = torch.arange(step_index.size(1), device=step_index.device)
    steps = torch.arange(num_steps, device=step_index.device)
    owned = step_index.unsqueeze(-1) == steps  # [B, T, K]
    return torch.where(owned, positions[None, :, None], -1).amax(dim=1)


def log_odds(logits: Tensor) -> Tensor:
    """`logit_correct − logit_incorrect` of a two-class head (label 1 = correct), the logit of a one-class head."""
    if logits.size(-1) == 2:
        return logits[..., 1] - logits[..., 0]
    if logits.size(-1) == 1:
        return logits[..., 0]
    raise ValueError(
        f"an explicit PRM head has 1 or 2 outputs (incorrect, correct), got {logits.size(-1)}: build the model "
        "with num_labels=2"
    )


def step_log_odds(logits: Tensor, step_index: Tensor, num_steps: int) -> Tensor:
    """Log-odds `z_k` that step `k` is correct, read at its last token, `[B, K]` (0 for a missing step).

    `logits` is the token-classification output `[B, T, C]` (`C` = 1 or 2); `step_index` `[B, T]` holds the step
    of each completion token and -1 elsewhere.
    """
    ends = step_end_positions(step_index, num_steps)
    z = log_odds(logits)  # [B, T]
    picked = z.gather(1, ends.clamp(min=0))
    return torch.where(ends >= 0, picked, torch.zeros_like(picked))
