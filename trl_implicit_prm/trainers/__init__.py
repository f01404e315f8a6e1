"""The implicit-PRM trainers and their configurations."""

from trl_implicit_prm.trainers.ce import CETrainer
from trl_implicit_prm.trainers.config import CEConfig, ImplicitPRMBaseConfig, ImplicitPRMConfig, StepKTOConfig
from trl_implicit_prm.trainers.implicit_prm import ImplicitPRMTrainer
from trl_implicit_prm.trainers.step_kto import StepKTOTrainer

__all__ = [
    "CEConfig",
    "CETrainer",
    "ImplicitPRMBaseConfig",
    "ImplicitPRMConfig",
    "ImplicitPRMTrainer",
    "StepKTOConfig",
    "StepKTOTrainer",
]
