"""`StepRewards`: the per-step, per-token and outcome rewards of one scored response."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..rewards import AGGREGATIONS, aggregate_steps

__all__ = ["StepRewards"]


@dataclass
class StepRewards:
    """Implicit rewards of one response, step by step (see docs/method.md for the formulas).

    Fields:

    - `steps`: the scored steps' text, one per entry of `step_rewards`;
    - `step_rewards`: `r^k = β·Σ_{t∈S_k} ρ_t`, one per step;
    - `q_values`: `q` at the end of each step (the cumulative sum of `step_rewards`);
    - `token_rewards`, `tokens`, `token_steps`: `β·ρ_t`, the decoded text and the step of every scored
      completion token (for rendering);
    - `outcome_reward`: `r(y) = β·Σ_t ρ_t` (= the sum of the step rewards, = the last q-value);
    - `truncated`: whether the response was cut to fit `max_length` (only with `truncation=True`);
      `num_truncated_steps` counts the steps that lost tokens (a partly scored last step included) and
      `unscored_steps` holds the text of the steps that lost all their tokens.

    Example:

    ```python
    >>> r = StepRewards(steps=["a", "b"], step_rewards=[0.5, -0.25], q_values=[0.5, 0.25],
    ...                 token_rewards=[0.5, -0.25], tokens=["a", "b"], token_steps=[0, 1], outcome_reward=0.25)
    >>> r.aggregate("min"), r.aggregate("last"), r.first_below(0.0)
    (-0.25, 0.25, 1)

    ```
    """

    steps: list[str]
    step_rewards: list[float]
    q_values: list[float]
    token_rewards: list[float]
    tokens: list[str]
    token_steps: list[int]
    outcome_reward: float
    truncated: bool = False
    num_truncated_steps: int = 0
    unscored_steps: list[str] = field(default_factory=list)

    @property
    def num_steps(self) -> int:
        """Number of scored steps."""
        return len(self.step_rewards)

    def aggregate(self, how: str = "min") -> float:
        """One score for the response: `min` (the paper's choice), `sum`, `mean`, `last` or `max`.

        Same semantics as :func:`trl_implicit_prm.rewards.aggregate_steps`; NaN when no step was scored.
        """
        if how not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {how!r}")
        if not self.step_rewards:
            return 0.0 if how == "sum" else math.nan
        values = torch.tensor([self.step_rewards], dtype=torch.float64)
        return float(aggregate_steps(values, torch.ones_like(values, dtype=torch.bool), how)[0])

    def aggregates(self) -> dict[str, float]:
        """All aggregations at once, `{"min": ..., "sum": ..., "mean": ..., "last": ..., "max": ...}`."""
        return {how: self.aggregate(how) for how in AGGREGATIONS}

    def first_below(self, threshold: float = 0.0) -> int:
        """Index of the first step whose reward is strictly below `threshold` (a "first error?"), or -1."""
        return next((k for k, r in enumerate(self.step_rewards) if r < threshold), -1)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepRewards:
        """Rebuild a result from :meth:`to_dict`'s output (unknown keys are ignored)."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})

    def _repr_html_(self) -> str:
        from ..render import render_html

        return render_html([self], full_page=False)
