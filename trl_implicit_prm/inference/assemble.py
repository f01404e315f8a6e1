"""From per-token log-probs to :class:`StepRewards`: the one assembly shared by every scoring path.

`ProcessRewardComputer` (one forward over each whole response) and `IncrementalScorer` (forwards over the new
tokens of growing prefixes, with KV caches) both end here, so the two give the same numbers by construction:
float32 per-token log-probs, float64 per-step sums (:func:`~trl_implicit_prm.rewards.step_logp_sums`),
`r^k = β·(Σ log πθ − Σ log πref)` (:func:`~trl_implicit_prm.rewards.implicit_step_rewards`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..rewards import implicit_step_rewards, step_logp_sums, step_q_values, token_rewards
from .encoding import EncodedResponse, decode_tokens
from .step_rewards import StepRewards

__all__ = ["assemble_step_rewards"]


def assemble_step_rewards(
    tokenizer: Any,
    rows: Sequence[EncodedResponse],
    policy: torch.Tensor,
    ref: torch.Tensor | None,
    step_index: torch.Tensor,
    completion_mask: torch.Tensor,
    beta: float,
) -> list[StepRewards]:
    """One :class:`StepRewards` per row from `[B, T]` float32 log-probs aligned with the padded `rows`.

    Values outside the completion (`step_index == -1`, `completion_mask == 0`) are ignored; `ref=None` is
    reference-free scoring.
    """
    most = max(len(r.steps) for r in rows)
    steps = implicit_step_rewards(
        step_logp_sums(policy, step_index, most),
        None if ref is None else step_logp_sums(ref, step_index, most),
        beta,
    )
    tok_rewards = token_rewards(policy.double(), None if ref is None else ref.double(), completion_mask, beta)
    q = step_q_values(steps)
    outcome = steps.sum(-1).tolist()
    texts = decode_tokens(tokenizer, [r.input_ids[r.prompt_length :] for r in rows])
    results = []
    for b, row in enumerate(rows):
        k, span = len(row.steps), slice(row.prompt_length, row.length)
        results.append(
            StepRewards(
                steps=list(row.steps),
                step_rewards=steps[b, :k].tolist(),
                q_values=q[b, :k].tolist(),
                token_rewards=tok_rewards[b, span].tolist(),
                tokens=texts[b],
                token_steps=step_index[b, span].tolist(),
                outcome_reward=outcome[b],
                truncated=row.truncated,
                num_truncated_steps=row.num_truncated_steps,
                unscored_steps=list(row.unscored_steps),
            )
        )
    return results
