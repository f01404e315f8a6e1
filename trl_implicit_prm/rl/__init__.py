"""Reinforcement learning with implicit process rewards: PRIME and PURE's min-form credit assignment on TRL's
`GRPOTrainer` (see docs/rl.md).
"""

from __future__ import annotations

from trl_implicit_prm.rl.config import PRIMEConfig
from trl_implicit_prm.rl.reward_func import ImplicitPRMReward
from trl_implicit_prm.rl.trainer import PRIMETrainer

__all__ = ["ImplicitPRMReward", "PRIMEConfig", "PRIMETrainer"]
