"""trl-implicit-prm: implicit process reward models for TRL.

Train an outcome reward model on response-level correct/incorrect labels with the reward parameterised as
`r = β·log(πθ(y)/πref(y))`; the same log-ratio summed over a step's tokens is that step's reward
(Yuan et al., 2024, "Free Process Rewards without Process Labels", https://arxiv.org/abs/2412.01981).

Top-level names are imported lazily, so `import trl_implicit_prm` stays cheap.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("trl-implicit-prm")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+local"

_LAZY = {
    "ImplicitPRMConfig": "trl_implicit_prm.trainers",
    "ImplicitPRMTrainer": "trl_implicit_prm.trainers",
    "CEConfig": "trl_implicit_prm.trainers",
    "CETrainer": "trl_implicit_prm.trainers",
    "StepKTOConfig": "trl_implicit_prm.trainers",
    "StepKTOTrainer": "trl_implicit_prm.trainers",
    "ExplicitPRMConfig": "trl_implicit_prm.trainers",
    "ExplicitPRMTrainer": "trl_implicit_prm.trainers",
    "ImplicitPRMCollator": "trl_implicit_prm.data",
    "ProcessRewardComputer": "trl_implicit_prm.inference",
    "StepRewards": "trl_implicit_prm.inference",
    "PRIMEConfig": "trl_implicit_prm.rl",
    "PRIMETrainer": "trl_implicit_prm.rl",
    "ImplicitPRMReward": "trl_implicit_prm.rl",
}

__all__ = [  # noqa: RUF022 (grouped like the API contract)
    "ImplicitPRMConfig",
    "ImplicitPRMTrainer",
    "CEConfig",
    "CETrainer",
    "StepKTOConfig",
    "StepKTOTrainer",
    "ExplicitPRMConfig",
    "ExplicitPRMTrainer",
    "ImplicitPRMCollator",
    "ProcessRewardComputer",
    "StepRewards",
    "PRIMEConfig",
    "PRIMETrainer",
    "ImplicitPRMReward",
    "__version__",
]

if TYPE_CHECKING:
    from trl_implicit_prm.data import ImplicitPRMCollator
    from trl_implicit_prm.inference import ProcessRewardComputer, StepRewards
    from trl_implicit_prm.rl import ImplicitPRMReward, PRIMEConfig, PRIMETrainer
    from trl_implicit_prm.trainers import (
        CEConfig,
        CETrainer,
        ExplicitPRMConfig,
        ExplicitPRMTrainer,
        ImplicitPRMConfig,
        ImplicitPRMTrainer,
        StepKTOConfig,
        StepKTOTrainer,
    )


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trl_implicit_prm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
