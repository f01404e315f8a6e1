r"""Reward math of an implicit PRM, as pure tensor functions.

Notation (see docs/method.md): prompt `x`, completion tokens `y_1..y_T` split into `K` steps.

    token log-ratio   ρ_t  = log πθ(y_t | x, y_<t) − log πref(y_t | x, y_<t)
    token reward      β·ρ_t
    q-value           q_t  = β · Σ_{i≤t} ρ_i
    step reward       r^k  = β · Σ_{t∈S_k} ρ_t  = q_{end(k)} − q_{end(k−1)}
    outcome reward    r(y) = β · Σ_t ρ_t        = Σ_k r^k

This module is pure tensor math; per-token log-probs of a model come from :mod:`trl_implicit_prm.logps`.
All per-token tensors here are *aligned with `input_ids`*: position `t` holds the quantity of token `t`
(predicted from tokens `< t`), and is zero outside the completion. Steps are given by `step_index`, a
`[B, T]` long tensor holding the step of each completion token and `-1` elsewhere (the collator builds it).

In reference-free mode (paper §5.5.2) the reference is taken as uniform: pass `ref_logps=None` and
`ρ_t = log πθ(y_t)`; the constant dropped cancels whenever steps or responses are compared.

Example:

```python
>>> import torch
>>> from trl_implicit_prm.rewards import token_rewards, step_rewards, outcome_rewards
>>> policy = torch.tensor([[0.0, -1.0, -2.0, -0.5]])
>>> ref = torch.tensor([[0.0, -1.5, -1.0, -0.5]])
>>> mask = torch.tensor([[0, 1, 1, 1]])
>>> step_index = torch.tensor([[-1, 0, 1, 1]])
>>> tr = token_rewards(policy, ref, mask, beta=0.5)
>>> tr
tensor([[ 0.0000,  0.2500, -0.5000,  0.0000]])
>>> step_rewards(tr, step_index)
tensor([[ 0.2500, -0.5000]])
>>> outcome_rewards(tr)
tensor([-0.2500])

```
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "AGGREGATIONS",
    "aggregate_steps",
    "implicit_step_rewards",
    "outcome_rewards",
    "q_values",
    "step_logp_sums",
    "step_mask",
    "step_q_values",
    "step_rewards",
    "token_log_ratios",
    "token_rewards",
]

Aggregation = Literal["min", "sum", "mean", "last", "max"]
AGGREGATIONS: tuple[str, ...] = ("min", "sum", "mean", "last", "max")


def token_log_ratios(policy_logps: Tensor, ref_logps: Tensor | None, completion_mask: Tensor) -> Tensor:
    """`ρ_t = log πθ(y_t) − log πref(y_t)` on completion tokens, zero elsewhere; `ref_logps=None` is reference-free."""
    ratios = policy_logps if ref_logps is None else policy_logps - ref_logps.to(policy_logps.dtype)
    return ratios * completion_mask.to(ratios.dtype)


def token_rewards(
    policy_logps: Tensor, ref_logps: Tensor | None, completion_mask: Tensor, beta: float
) -> Tensor:
    """Token-level implicit rewards `β·ρ_t`, aligned with `input_ids`, zero outside the completion."""
    return beta * token_log_ratios(policy_logps, ref_logps, completion_mask)


def q_values(token_rewards: Tensor) -> Tensor:
    """Cumulative q-values `q_t = Σ_{i≤t} β·ρ_i` at every position (constant over prompt and padding)."""
    return token_rewards.cumsum(dim=-1)


def outcome_rewards(token_rewards: Tensor) -> Tensor:
    """Outcome rewards `r(y) = Σ_t β·ρ_t`, one per row."""
    return token_rewards.sum(dim=-1)


def step_rewards(token_rewards: Tensor, step_index: Tensor, num_steps: int | None = None) -> Tensor:
    """Step rewards `r^k = Σ_{t∈S_k} β·ρ_t` as a `[B, K]` tensor (zero for steps a row does not have).

    `step_index` is `[B, T]` with the step of each completion token and -1 elsewhere; `K` is `num_steps` or
    one more than the largest step index in the batch. Differentiable (a scatter-add).
    """
    if step_index.shape != token_rewards.shape:
        raise ValueError(
            f"step_index has shape {tuple(step_index.shape)}, expected that of token_rewards "
            f"{tuple(token_rewards.shape)}"
        )
    in_step = step_index >= 0
    k = int(step_index.max().item()) + 1 if num_steps is None else num_steps
    k = max(k, 1)
    out = token_rewards.new_zeros(token_rewards.size(0), k)
    return out.scatter_add(1, step_index.clamp(min=0), token_rewards * in_step.to(token_rewards.dtype))


def step_logp_sums(logps: Tensor, step_index: Tensor, num_steps: int | None = None) -> Tensor:
    """Per-step sums of per-token log-probs `Σ_{t∈S_k} log π(y_t)`, `[B, K]` float64.

    The dtype policy of every implicit reward: per-token log-probs are float32 (as the model gives them), every
    sum over tokens is taken in float64, so that a long response keeps every digit its float32 log-probs have and
    training metrics, precomputed reference log-probs and `ProcessRewardComputer` agree to the last bit that
    matters. Differentiable.
    """
    return step_rewards(logps.double(), step_index, num_steps)


def implicit_step_rewards(
    policy_step_logps: Tensor, ref_step_logps: Tensor | None, beta: float, mask: Tensor | None = None
) -> Tensor:
    """Implicit step rewards `r^k = β·(Σ_{t∈S_k} log πθ(y_t) − Σ_{t∈S_k} log πref(y_t))`, `[B, K]` float64.

    The one function from per-step log-prob sums (:func:`step_logp_sums`, or precomputed reference sums) to step
    rewards, used by the trainers and by `ProcessRewardComputer`. `ref_step_logps=None` is reference-free
    (`r^k = β·Σ log πθ`); steps outside `mask` (a row's missing steps) are zero.

    Example:

    ```python
    >>> import torch
    >>> implicit_step_rewards(torch.tensor([[-1.0, -3.0]]), torch.tensor([[-1.5, -2.0]]), beta=0.5)
    tensor([[ 0.2500, -0.5000]], dtype=torch.float64)

    ```
    """
    ratios = policy_step_logps.double()
    if ref_step_logps is not None:
        ratios = ratios - ref_step_logps.to(ratios.device, torch.float64)
    rewards = beta * ratios
    return rewards if mask is None else rewards * mask.to(rewards.dtype)


def step_mask(num_steps: Tensor, max_steps: int) -> Tensor:
    """Boolean `[B, max_steps]` mask of the steps each row has, from the per-row step counts."""
    return torch.arange(max_steps, device=num_steps.device).unsqueeze(0) < num_steps.unsqueeze(1)


def step_q_values(step_rewards: Tensor) -> Tensor:
    """Cumulative q-value at the end of each step, `q_{end(k)} = Σ_{j≤k} r^j`, `[B, K]`."""
    return step_rewards.cumsum(dim=-1)


def aggregate_steps(step_rewards: Tensor, mask: Tensor, how: Aggregation = "min") -> Tensor:
    """Aggregate each row's step rewards into one score: `min` (the paper's choice), `sum` (= outcome
    reward), `mean`, `last` (q-value at the last step; equals `sum` for a complete response) or `max`.

    Rows with no step get NaN for `min`, `max`, `mean` and `last`, and 0 for `sum`.
    """
    mask = mask.to(torch.bool)
    counts = mask.sum(dim=-1)
    if how == "sum":
        return (step_rewards * mask).sum(dim=-1)
    if how == "mean":
        return (step_rewards * mask).sum(dim=-1) / counts.clamp(min=1) + _nan_where_empty(
            counts, step_rewards
        )
    if how == "min":
        return step_rewards.masked_fill(~mask, float("inf")).amin(dim=-1) + _nan_where_empty(
            counts, step_rewards
        )
    if how == "max":
        return step_rewards.masked_fill(~mask, float("-inf")).amax(dim=-1) + _nan_where_empty(
            counts, step_rewards
        )
    if how == "last":
        q = step_q_values(step_rewards * mask)
        last = q.gather(1, (counts - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        return last + _nan_where_empty(counts, step_rewards)
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {how!r}")


def _nan_where_empty(counts: Tensor, like: Tensor) -> Tensor:
    return torch.where(
        counts == 0,
        torch.full_like(counts, float("nan"), dtype=like.dtype),
        torch.zeros_like(counts, dtype=like.dtype),
    )


def fit_steps(values: Tensor, num_steps: int) -> Tensor:
    """`values` `[B, K']` padded with zeros or cut on the step axis to `[B, num_steps]`.

    >>> fit_steps(torch.tensor([[1.0, 2.0]]), 3).tolist(), fit_steps(torch.tensor([[1.0, 2.0]]), 1).tolist()
    ([[1.0, 2.0, 0.0]], [[1.0]])
    """
    return torch.nn.functional.pad(values, (0, max(0, num_steps - values.size(1))))[:, :num_steps]
