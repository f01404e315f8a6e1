r"""Advantages from process and outcome rewards, as pure tensor functions (PRIME and PURE).

Rows are completions, grouped by prompt: the `n = group_size` completions of one prompt are consecutive rows (as
TRL's `GRPOTrainer` orders them). Every `[B, T]` tensor is aligned with the completion tokens; `mask` marks the
real completion tokens, `reward_mask` the positions that carry a reward of a source (every completion token for
token rewards, the last token of each step for step rewards, the last token for the outcome).

    leave-one-out (RLOO)   A_t = r_t · n/(n−1) − Σ_j mean_{s∈R_j} r_{j,s} / (n−1)     (t ∈ R_i, row i's group)
    scalar RLOO            A_i = r_i − mean_{j≠i} r_j
    strict min (PURE)      G_t = min_{t'≥t, t'∈R} r_{t'};  as rewards: r'_t = G_t − G_{next(t)}
    softmin (PURE)         w = softmax_{t∈R}(−r_t / T),  r*_t = w_t · r_t   (Σ_t r*_t → min_t r_t as T → 0)
    returns (γ = 1)        G_t = Σ_{t'≥t} r_{t'}
    whitening              (x − mean_mask x) / sqrt(var_mask x + 1e-8)    (unbiased variance)

PRIME (Cui et al., 2025, "Process Reinforcement through Implicit Rewards", https://arxiv.org/abs/2502.01456):
RLOO per source (process rewards and verifier outcome), weighted by a coefficient each, summed, returns, whitened.
PURE (Cheng et al., 2025, "Stop Summation: Min-Form Credit Assignment Is All Process Reward Model Needs for
Reasoning", https://arxiv.org/abs/2504.15275): the process rewards are first transformed so that their returns are
the minimum of the future rewards (strict) or its softmin approximation; the rest of the pipeline is the same.

Example:

```python
>>> import torch
>>> from trl_implicit_prm.rl.advantages import leave_one_out_scalar, min_form_rewards, returns
>>> leave_one_out_scalar(torch.tensor([1.0, 0.0, 0.0, 1.0]), group_size=2)
tensor([ 1., -1., -1.,  1.])
>>> r, m = torch.tensor([[0.5, -1.0, 2.0]]), torch.ones(1, 3, dtype=torch.bool)
>>> returns(min_form_rewards(r, m), m)
tensor([[-1., -1.,  2.]])

```
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "CREDIT_ASSIGNMENTS",
    "GRANULARITIES",
    "assign_credit",
    "group_accuracy_mask",
    "last_token_mask",
    "leave_one_out",
    "leave_one_out_scalar",
    "min_form_rewards",
    "place_at_last_token",
    "place_step_rewards",
    "prime_advantages",
    "returns",
    "select_groups",
    "softmin_rewards",
    "step_end_mask",
    "whiten",
]

CreditAssignment = Literal["sum", "min", "softmin"]
CREDIT_ASSIGNMENTS: tuple[str, ...] = ("sum", "min", "softmin")
GRANULARITIES: tuple[str, ...] = ("token", "step")


def _groups(num_rows: int, group_size: int) -> int:
    if group_size < 2:
        raise ValueError(f"group_size must be at least 2 for a leave-one-out baseline, got {group_size}")
    if num_rows % group_size:
        raise ValueError(f"{num_rows} rows do not split into groups of group_size={group_size}")
    return num_rows // group_size


def leave_one_out(rewards: Tensor, reward_mask: Tensor, group_size: int) -> Tensor:
    """Dense RLOO: `A_t = r_t·n/(n−1) − Σ_j mean_{s∈R_j} r_{j,s}/(n−1)` on `reward_mask`, zero elsewhere.

    The baseline is the sum over the group of each row's mean reward over its reward positions, divided by
    `n − 1` (PRIME's form; for one reward per row it is `r_i − mean_{j≠i} r_j`). A row without a reward
    position has mean 0.
    """
    groups = _groups(rewards.size(0), group_size)
    mask = reward_mask.to(rewards.dtype)
    means = (rewards * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    baseline = means.view(groups, group_size).sum(-1, keepdim=True) / (group_size - 1)
    baseline = baseline.expand(groups, group_size).reshape(-1, 1)
    return (rewards * group_size / (group_size - 1) - baseline) * mask


def leave_one_out_scalar(rewards: Tensor, group_size: int) -> Tensor:
    """Scalar RLOO: `A_i = r_i − mean_{j≠i} r_j` within each group of `group_size` consecutive rows."""
    grouped = rewards.view(_groups(rewards.size(0), group_size), group_size)
    others = (grouped.sum(-1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - others).reshape(-1)


def step_end_mask(step_index: Tensor) -> Tensor:
    """Boolean `[B, T]`: true at the last token of every step (`step_index` is -1 outside the completion)."""
    nxt = torch.cat([step_index[:, 1:], step_index.new_full((step_index.size(0), 1), -1)], dim=1)
    return (step_index >= 0) & (nxt != step_index)


def place_step_rewards(step_rewards: Tensor, step_index: Tensor) -> Tensor:
    """Step reward `r^k` placed at the last token of step `k` (PURE's placement), zero elsewhere; `[B, T]`."""
    ends = step_end_mask(step_index)
    picked = step_rewards.gather(1, step_index.clamp(min=0).clamp(max=step_rewards.size(1) - 1))
    return picked * ends.to(picked.dtype)


def last_token_mask(mask: Tensor) -> Tensor:
    """Boolean `[B, T]`: true at the last token of each row's `mask` (none for an empty row)."""
    m = mask.to(torch.bool)
    positions = torch.arange(m.size(1), device=m.device).expand_as(m)
    last = torch.where(m, positions, -1).amax(dim=1, keepdim=True)
    return m & (positions == last)


def place_at_last_token(values: Tensor, mask: Tensor) -> Tensor:
    """One value per row placed at the row's last `mask` token (the verifier's outcome), zero elsewhere."""
    return values.unsqueeze(1) * last_token_mask(mask).to(values.dtype)


def min_form_rewards(rewards: Tensor, reward_mask: Tensor) -> Tensor:
    """Rewards whose returns are strict minima: `r'_t = G_t − G_{next(t)}`, `G_t = min_{t'≥t, t'∈R} r_{t'}`.

    `next(t)` is the next reward position after `t` (with `G = 0` past the last one), so that
    `returns(r')_t = min_{t'≥t, t'∈R} r_{t'}` at every reward position `t`: PURE's strict min-form credit.
    """
    mask = reward_mask.to(torch.bool)
    inf = torch.finfo(rewards.dtype).max
    filled = rewards.masked_fill(~mask, inf)
    suffix_min = filled.flip(-1).cummin(-1).values.flip(-1)  # min over positions ≥ t
    suffix_min = suffix_min.masked_fill(suffix_min == inf, 0.0)
    following = torch.cat([suffix_min[:, 1:], suffix_min.new_zeros(suffix_min.size(0), 1)], dim=1)
    return ((suffix_min - following) * mask.to(rewards.dtype)).masked_fill(~mask, 0.0)


def softmin_rewards(rewards: Tensor, reward_mask: Tensor, temperature: float) -> Tensor:
    """PURE's softmin transform: `r*_t = w_t·r_t` with `w = softmax_{t∈R}(−r/T)` over each row's reward positions.

    As `T → 0` the weight concentrates on the smallest reward, so `Σ_t r*_t → min_t r_t`: the return at every
    position up to the minimum's equals the strict min-form return there.
    """
    if not temperature > 0:
        raise ValueError(f"softmin temperature must be > 0, got {temperature}")
    mask = reward_mask.to(torch.bool)
    weights = torch.softmax((-rewards / temperature).masked_fill(~mask, float("-inf")), dim=-1)
    weights = torch.nan_to_num(weights, nan=0.0)  # a row without reward positions: all weights -inf
    return (weights * rewards).masked_fill(~mask, 0.0)


def assign_credit(
    rewards: Tensor, reward_mask: Tensor, how: CreditAssignment = "sum", temperature: float = 0.1
) -> Tensor:
    """The process rewards to sum into returns: unchanged (`"sum"`, PRIME), :func:`min_form_rewards`
    (`"min"`, PURE strict) or :func:`softmin_rewards` (`"softmin"`, PURE with temperature `T`).
    """
    if how == "sum":
        return rewards * reward_mask.to(rewards.dtype)
    if how == "min":
        return min_form_rewards(rewards, reward_mask)
    if how == "softmin":
        return softmin_rewards(rewards, reward_mask, temperature)
    raise ValueError(f"credit_assignment must be one of {CREDIT_ASSIGNMENTS}, got {how!r}")


def returns(rewards: Tensor, mask: Tensor) -> Tensor:
    """Undiscounted returns `G_t = Σ_{t'≥t} r_{t'}` (γ = 1) on `mask`, zero elsewhere."""
    masked = rewards * mask.to(rewards.dtype)
    return masked.flip(-1).cumsum(-1).flip(-1) * mask.to(rewards.dtype)


def whiten(values: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """`(x − mean) / sqrt(var + eps)` over the `mask` entries of the whole batch (unbiased variance), zero elsewhere.

    With fewer than two entries (every completion masked out) there is no spread to divide by: zeros, which is
    also what such a batch contributes to the loss.
    """
    m = mask.to(values.dtype)
    count = m.sum()
    if count < 2:
        return torch.zeros_like(values)
    mean = (values * m).sum() / count
    var = (((values - mean) * m) ** 2).sum() / (count - 1)
    return (values - mean) * torch.rsqrt(var + eps) * m


def group_accuracy_mask(outcomes: Tensor, group_size: int, low: float, high: float) -> Tensor:
    """Rows whose group's mean outcome (accuracy) lies in `[low, high]`: PRIME's accuracy filter, `[B]` bool."""
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"accuracy bounds must satisfy 0 <= low <= high <= 1, got [{low}, {high}]")
    accuracy = outcomes.view(_groups(outcomes.size(0), group_size), group_size).mean(-1)
    keep = (accuracy >= low) & (accuracy <= high)
    return keep.repeat_interleave(group_size)


def select_groups(kept: Tensor, needed: int) -> tuple[Tensor, int]:
    """The `needed` groups a batch trains on, out of the generated groups (oversampling), given which passed the
    accuracy filter (`kept`, `[G]` bool): the first `needed` kept groups; when fewer passed, all kept groups and
    the first dropped ones to fill the batch (which the caller masks out). Returns the chosen group indices in
    their original order and the shortfall `max(0, needed − Σ kept)`.

    Example:

    ```python
    >>> import torch
    >>> select_groups(torch.tensor([False, True, True, False, True]), 2)
    (tensor([1, 2]), 0)
    >>> select_groups(torch.tensor([False, True, False, False]), 2)
    (tensor([0, 1]), 1)

    ```
    """
    if not 1 <= needed <= kept.numel():
        raise ValueError(f"needed must be between 1 and the {kept.numel()} generated groups, got {needed}")
    order = torch.argsort((~kept.bool()).to(torch.int8), stable=True)  # kept first, each in original order
    return order[:needed].sort().values, max(0, needed - int(kept.sum()))


def prime_advantages(
    process_rewards: Tensor,
    process_mask: Tensor,
    outcomes: Tensor,
    mask: Tensor,
    group_size: int,
    *,
    process_coef: float = 5.0,
    outcome_coef: float = 5.0,
    credit_assignment: CreditAssignment = "sum",
    temperature: float = 0.1,
    whiten_advantages: bool = True,
) -> Tensor:
    """PRIME/PURE advantages `[B, T]` from dense process rewards and one outcome per row.

        A = whiten( returns( c_p · RLOO(credit(r_process)) + c_o · RLOO(outcome at the last token) ) )

    `process_rewards` are placed already (every token, or each step's last token; `process_mask` marks them);
    `credit(·)` is :func:`assign_credit`; a coefficient of 0 drops its source.
    """
    total = torch.zeros_like(process_rewards)
    if process_coef:
        credited = assign_credit(process_rewards, process_mask, credit_assignment, temperature)
        total = total + process_coef * leave_one_out(credited, process_mask, group_size)
    if outcome_coef:
        last = last_token_mask(mask)
        placed = place_at_last_token(outcomes.to(process_rewards.dtype), mask)
        total = total + outcome_coef * leave_one_out(placed, last, group_size)
    out = returns(total, mask)
    return whiten(out, mask) if whiten_advantages else out
