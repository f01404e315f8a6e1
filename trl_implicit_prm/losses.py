r"""Training objectives of implicit PRMs, as pure functions of implicit rewards.

Every function takes rewards that already include β (`r = β·Σ_t ρ_t`, see :mod:`trl_implicit_prm.rewards`)
and returns a per-example loss tensor; reduce with `.mean()` (the trainers do). Labels `l ∈ [0, 1]`.

| loss     | data     | formula                                                                     |
|----------|----------|-----------------------------------------------------------------------------|
| CE       | unpaired | `−[ l·log σ(r) + (1−l)·log σ(−r) ]` (soft labels allowed)                    |
| DPO      | paired   | `−log σ(r_w − r_l)`                                                         |
| NCA      | paired   | `−log σ(r_w) − ½·log σ(−r_w) − ½·log σ(−r_l)`                               |
| KTO      | unpaired | desirable `λ_D·(1 − σ(r − z0))`, undesirable `λ_U·(1 − σ(z0 − r))`          |
| step KTO | stepwise | KTO on each labelled step's reward `r^k` (or on `q` at the step's end)      |
| step CE  | stepwise | `−[ l_k·log σ(q_end(k)) + (1−l_k)·log σ(−q_end(k)) ]` per labelled step `k`   |

`z0` is KTO's reference point: `max(0, mean β·(log πθ − log πref))` over mismatched (x, y) pairs, detached
(:func:`kto_reference_point`; a batch without such a pair keeps the previous estimate). Paper: "Free Process
Rewards without Process Labels" (Yuan et al., 2024), §3 and §5.3; KTO: Ethayarajh et al., 2024; NCA: Chen et al.,
2024; DPO: Rafailov et al., 2023.

Example:

```python
>>> import torch
>>> from trl_implicit_prm.losses import ce_loss, dpo_loss
>>> ce_loss(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0]))
tensor([0.6931, 2.1269])
>>> dpo_loss(torch.tensor([1.0]), torch.tensor([1.0]))
tensor([0.6931])

```
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ce_loss",
    "dpo_loss",
    "kto_loss",
    "kto_reference_point",
    "nca_loss",
    "step_ce_loss",
    "step_kto_loss",
]


def ce_loss(rewards: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy on the implicit outcome reward: `−[l·log σ(r) + (1−l)·log σ(−r)]`, soft `l ∈ [0, 1]` allowed.

    The implicit PRM objective for unpaired and imbalanced data (paper Eq. 5); it needs no pair, so it trains
    with a single response per instruction.
    """
    labels = labels.to(rewards.dtype)
    return -(labels * F.logsigmoid(rewards) + (1.0 - labels) * F.logsigmoid(-rewards))


def dpo_loss(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """DPO: `−log σ(r_w − r_l)` for each (chosen, rejected) pair."""
    return -F.logsigmoid(chosen_rewards - rejected_rewards)


def nca_loss(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """NCA (pairwise form): `−log σ(r_w) − ½·log σ(−r_w) − ½·log σ(−r_l)`."""
    return (
        -F.logsigmoid(chosen_rewards)
        - 0.5 * F.logsigmoid(-chosen_rewards)
        - 0.5 * F.logsigmoid(-rejected_rewards)
    )


def kto_reference_point(
    mismatched_policy_logps: Tensor,
    mismatched_ref_logps: Tensor | None,
    beta: float,
    *,
    sum_over_processes: Callable[[Tensor], Tensor] | None = None,
) -> Tensor | None:
    """KTO's reference point `z0 = max(0, (1/P)·Σ_i β·(log πθ(y'_i|x_i) − log πref(y'_i|x_i)))`, detached.

    The sum runs over the `P` mismatched pairs `(x_i, y'_i)` (a prompt with another row's completion) of the
    batch on every process: pass `sum_over_processes`, an all-reduce sum, and the pair sum and count are summed
    across processes before the division and the clamp (the pooled mean; equal to the mean of the per-process
    means when every process has as many pairs). `mismatched_ref_logps=None` is reference-free.

    A batch may have no mismatched pair: a one-row batch on every process (the last batch with
    `dataloader_drop_last=False`) can only pair its row with itself, whose log-ratio is that row's own reward,
    not an estimate of the KL term. Pass no pair (empty tensors) then: with no pair on any process the result
    is None, and the caller decides (the trainers keep the latest estimate, from an earlier batch, and refuse
    when there is none).
    """
    ratios = (
        mismatched_policy_logps
        if mismatched_ref_logps is None
        else mismatched_policy_logps - mismatched_ref_logps
    )
    ratios = (beta * ratios).detach()
    stats = torch.stack(
        [ratios.double().sum(), ratios.new_tensor(float(ratios.numel()), dtype=torch.float64)]
    )
    if sum_over_processes is not None:
        stats = sum_over_processes(stats)
    if stats[1].item() == 0:
        return None
    return (stats[0] / stats[1]).clamp(min=0).to(ratios.dtype)


def kto_loss(
    rewards: Tensor,
    labels: Tensor,
    z0: Tensor | float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> Tensor:
    """KTO: desirable `λ_D·(1 − σ(r − z0))`, undesirable `λ_U·(1 − σ(z0 − r))`.

    Soft labels mix the two terms: `l·λ_D·(1 − σ(r − z0)) + (1 − l)·λ_U·(1 − σ(z0 − r))`; for `l ∈ {0, 1}` this
    is exactly KTO.
    """
    labels = labels.to(rewards.dtype)
    z0 = torch.as_tensor(z0, dtype=rewards.dtype, device=rewards.device)
    desirable = desirable_weight * (1.0 - torch.sigmoid(rewards - z0))
    undesirable = undesirable_weight * (1.0 - torch.sigmoid(z0 - rewards))
    return labels * desirable + (1.0 - labels) * undesirable


def _labelled(step_values: Tensor, step_labels: Tensor, step_mask: Tensor) -> tuple[Tensor, Tensor]:
    """The values and labels of the labelled steps (`step_mask` true), flattened; shapes must agree."""
    if step_values.shape != step_labels.shape or step_values.shape != step_mask.shape:
        raise ValueError(
            f"step values {tuple(step_values.shape)}, step_labels {tuple(step_labels.shape)} and "
            f"step_mask {tuple(step_mask.shape)} must have the same shape"
        )
    mask = step_mask.to(torch.bool)
    return step_values[mask], step_labels[mask]


def step_ce_loss(step_values: Tensor, step_labels: Tensor, step_mask: Tensor) -> Tensor:
    """Step-level CE (second stage on step labels): `−[l_k·log σ(v_k) + (1−l_k)·log σ(−v_k)]` per labelled step.

    `v_k` is normally the cumulative q-value at the end of step `k`, `q_end(k) = Σ_{j≤k} r^j` (pass
    :func:`~trl_implicit_prm.rewards.step_q_values` of the step rewards): by Proposition 3.1 `q` is the soft
    value of the prefix, so `σ(q_end(k))` is trained to be the probability that the prefix is still correct,
    the objective of the paper's released Stage-2 models. Soft labels allowed. Returns the flat vector of the
    labelled steps' losses (`step_mask` true): `.mean()` averages over the labelled steps of the batch.
    """
    values, labels = _labelled(step_values, step_labels, step_mask)
    return ce_loss(values, labels)


def step_kto_loss(
    step_rewards: Tensor,
    step_labels: Tensor,
    step_mask: Tensor,
    z0: Tensor | float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> Tensor:
    """Step-level KTO (second-stage training on step labels, paper §5.3), one loss per labelled step.

    The paper's exact formula did not survive; this library defines it as KTO applied to each labelled step
    `k` of the batch with that step's implicit reward (`r^k`, or the cumulative `q` at the step's end if the
    caller passes `step_q_values`) and the same reference point `z0`. Returns the flat vector of per-step
    losses of the labelled steps (`step_mask` true), so `.mean()` averages over labelled steps of the batch.
    """
    values, labels = _labelled(step_rewards, step_labels, step_mask)
    return kto_loss(values, labels, z0, desirable_weight, undesirable_weight)
