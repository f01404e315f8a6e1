"""The advantage math of PRIME / PURE (`trl_implicit_prm.rl.advantages`) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from trl_implicit_prm.rl.advantages import (
    assign_credit,
    group_accuracy_mask,
    last_token_mask,
    leave_one_out,
    leave_one_out_scalar,
    min_form_rewards,
    place_at_last_token,
    place_step_rewards,
    prime_advantages,
    returns,
    select_groups,
    softmin_rewards,
    step_end_mask,
    whiten,
)


def close(a: torch.Tensor, b, tol: float = 1e-6) -> bool:
    return torch.allclose(a.double(), torch.as_tensor(b, dtype=torch.float64), atol=tol, rtol=0)


def test_leave_one_out_scalar_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0])
    assert close(leave_one_out_scalar(r, 2), [1, -1, -1, 1])
    # one group of 4: r_i − mean of the other three
    assert close(leave_one_out_scalar(r, 4), [2 / 3, -2 / 3, -2 / 3, 2 / 3])


def test_leave_one_out_dense_by_hand():
    # n = 3: factor 3/2; row means 2, 4 (one reward position), 0 (none); baseline (2 + 4 + 0) / 2 = 3
    r = torch.tensor([[1.0, 3.0], [4.0, 9.0], [7.0, 7.0]])
    m = torch.tensor([[1, 1], [1, 0], [0, 0]])
    assert close(leave_one_out(r, m, 3), [[-1.5, 1.5], [3.0, 0.0], [0.0, 0.0]])


def test_leave_one_out_dense_with_one_reward_per_row_is_the_scalar_form():
    outcome = torch.tensor([0.3, -1.0, 2.0, 0.5, 1.0, 1.0])
    mask = torch.tensor([[1, 1, 1, 0]] * 6)
    last = last_token_mask(mask)
    dense = leave_one_out(place_at_last_token(outcome, mask), last, 3)
    assert close(dense[:, 2], leave_one_out_scalar(outcome, 3))
    assert close(dense[:, [0, 1, 3]], torch.zeros(6, 3))


def test_bad_groups_are_refused():
    with pytest.raises(ValueError, match="group_size must be at least 2"):
        leave_one_out_scalar(torch.ones(4), 1)
    with pytest.raises(ValueError, match="do not split into groups"):
        leave_one_out(torch.ones(5, 2), torch.ones(5, 2), 2)


def test_step_placement_at_each_steps_last_token():
    step_index = torch.tensor([[-1, -1, 0, 0, 1, 1, 1, -1]])
    assert step_end_mask(step_index).nonzero()[:, 1].tolist() == [3, 6]
    placed = place_step_rewards(torch.tensor([[0.5, -2.0]]), step_index)
    assert close(placed, [[0, 0, 0, 0.5, 0, 0, -2.0, 0]])


def test_last_token_of_right_padded_rows():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]])
    assert last_token_mask(mask).tolist() == [[False, True, False], [False, False, True], [False] * 3]


def test_returns_are_reverse_cumulative_sums():
    assert close(returns(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1, 1, 0]])), [[3, 2, 0]])


def test_strict_min_returns_by_hand():
    m = torch.ones(1, 3, dtype=torch.bool)
    assert close(returns(min_form_rewards(torch.tensor([[0.5, -1.0, 2.0]]), m), m), [[-1, -1, 2]])
    # step placement: rewards at positions 1 and 3; tokens before a step end get that step's min return
    tokens = torch.tensor([[1, 1, 1, 1, 0]])
    at = torch.tensor([[0, 1, 0, 1, 0]])
    assert close(
        returns(min_form_rewards(torch.tensor([[0.0, 3.0, 0.0, 1.0, 0.0]]), at), tokens), [[1, 1, 1, 1, 0]]
    )
    assert close(
        returns(min_form_rewards(torch.tensor([[0.0, -2.0, 0.0, 1.0, 0.0]]), at), tokens), [[-2, -2, 1, 1, 0]]
    )


def test_softmin_by_hand():
    # T = 1: w = softmax(−1, −2) = (1, e^−1) / (1 + e^−1)
    w0 = 1 / (1 + math.exp(-1))
    out = softmin_rewards(torch.tensor([[1.0, 2.0]]), torch.ones(1, 2), 1.0)
    assert close(out, [[w0, 2 * (1 - w0)]])
    with pytest.raises(ValueError, match="temperature"):
        softmin_rewards(torch.ones(1, 2), torch.ones(1, 2), 0.0)


def test_softmin_tends_to_strict_min_as_temperature_goes_to_zero():
    torch.manual_seed(0)
    r = torch.randn(4, 6, dtype=torch.float64)
    m = torch.ones(4, 6, dtype=torch.bool)
    strict = returns(min_form_rewards(r, m), m)
    gaps = []
    for t in (1.0, 0.1, 0.01, 0.001):
        soft = returns(softmin_rewards(r, m, t), m)
        # the whole response's value, and every return up to the minimum's position, tend to the strict min
        upto = torch.arange(6).unsqueeze(0) <= r.argmin(dim=1, keepdim=True)
        gaps.append(float((soft - strict)[upto].abs().max()))
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-6 < gaps[0]
    assert close(returns(softmin_rewards(r, m, 1e-4), m)[:, 0], r.amin(dim=1))


def test_credit_assignment_dispatch():
    r, m = torch.tensor([[2.0, -1.0]]), torch.tensor([[1, 1]])
    assert close(assign_credit(r, m, "sum"), r)
    assert close(assign_credit(r, m, "min"), min_form_rewards(r, m))
    with pytest.raises(ValueError, match="credit_assignment must be one of"):
        assign_credit(r, m, "max")


def test_whitening_by_hand():
    out = whiten(torch.tensor([[1.0, 2.0, 3.0, 7.0]]), torch.tensor([[1, 1, 1, 0]]))
    assert close(out, [[-1, 0, 1, 0]], tol=1e-7)  # mean 2, unbiased variance 1
    assert close(whiten(torch.tensor([[5.0]]), torch.tensor([[1]])), [[0.0]])


def test_group_accuracy_filter():
    outcomes = torch.tensor([1.0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    keep = group_accuracy_mask(outcomes, 4, 0.2, 0.8)
    assert keep.tolist() == [False] * 4 + [True] * 4 + [False] * 4
    assert group_accuracy_mask(outcomes, 4, 0.0, 1.0).all()
    with pytest.raises(ValueError, match="accuracy bounds"):
        group_accuracy_mask(outcomes, 4, 0.9, 0.1)


def test_select_groups_enumerated():
    """Every keep pattern of 4 groups, every batch size: the first kept groups, topped up with the first dropped."""
    import itertools

    for pattern in itertools.product([False, True], repeat=4):
        kept = torch.tensor(pattern)
        for needed in range(1, 5):
            chosen, short = select_groups(kept, needed)
            kept_ids = [i for i in range(4) if pattern[i]]
            dropped_ids = [i for i in range(4) if not pattern[i]]
            expected = sorted(kept_ids[:needed] + dropped_ids[: max(0, needed - len(kept_ids))])
            assert chosen.tolist() == expected and short == max(0, needed - len(kept_ids))
    with pytest.raises(ValueError, match="needed must be between 1 and the 2 generated groups"):
        select_groups(torch.tensor([True, False]), 3)


def test_prime_advantages_by_hand():
    process = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    mask = torch.ones(2, 2, dtype=torch.long)
    outcomes = torch.tensor([1.0, 0.0])
    kw = {"process_coef": 1.0, "outcome_coef": 1.0}
    # process RLOO: means 1, 1, baseline 2 → [0, 0], [−2, 2]; outcome RLOO at the last token: +1, −1
    raw = prime_advantages(process, mask, outcomes, mask, 2, whiten_advantages=False, **kw)
    assert close(raw, [[1, 1], [-1, 1]])
    assert close(prime_advantages(process, mask, outcomes, mask, 2, **kw), [[0.5, 0.5], [-1.5, 0.5]])
    # strict min: r' = [0, 1], [−2, 2]; RLOO (baseline 0.5) → [−.5, 1.5], [−4.5, 3.5]; + outcome; returns
    pure = prime_advantages(
        process, mask, outcomes, mask, 2, credit_assignment="min", whiten_advantages=False, **kw
    )
    assert close(pure, [[2, 2.5], [-2, 2.5]])
    # a zero coefficient drops its source: outcome only is the scalar RLOO on every token
    only = prime_advantages(process, mask, outcomes, mask, 2, process_coef=0.0, whiten_advantages=False)
    assert close(only, [[5, 5], [-5, -5]])
