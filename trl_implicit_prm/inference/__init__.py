"""Inference: any implicit-PRM checkpoint to per-step rewards (:class:`ProcessRewardComputer`, :class:`StepRewards`).

Modules, one idea each: `computer` (the scorer), `step_rewards` (the result), `cache` (reference log-probs
shared across computers), `encoding` (tokenization with step spans, truncation policy), `batching` (length-sorted,
token-budget batches), `logps` (per-token log-probs), `loading` (paths, adapters and references).
"""

from .cache import ReferenceCache
from .computer import ProcessRewardComputer
from .encoding import EncodedResponse, ResponseTooLongError
from .step_rewards import StepRewards

__all__ = ["EncodedResponse", "ProcessRewardComputer", "ReferenceCache", "ResponseTooLongError", "StepRewards"]
