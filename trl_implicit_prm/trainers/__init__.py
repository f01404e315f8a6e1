"""The implicit-PRM trainers, the explicit-PRM baseline trainer, and their configurations."""

from trl_implicit_prm.trainers.ce import CETrainer
from trl_implicit_prm.trainers.config import (
    CEConfig,
    ExplicitPRMConfig,
    ImplicitPRMBaseConfig,
    ImplicitPRMConfig,
    StepDataConfig,
    StepKTOConfig,
)
from trl_implicit_prm.trainers.explicit import ExplicitPRMTrainer
from trl_implicit_prm.trainers.implicit_prm import ImplicitPRMTrainer
from trl_implicit_prm.trainers.step_kto import StepKTOTrainer

__all__ = [
    "CEConfig",
    "CETrainer",
    "ExplicitPRMConfig",
    "ExplicitPRMTrainer",
    "ImplicitPRMBaseConfig",
    "ImplicitPRMConfig",
    "ImplicitPRMTrainer",
    "StepDataConfig",
    "StepKTOConfig",
    "StepKTOTrainer",
]
