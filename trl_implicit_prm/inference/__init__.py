"""Inference: any implicit-PRM checkpoint to per-step rewards (:class:`ProcessRewardComputer`, :class:`StepRewards`).

Modules, one idea each: `computer` (the scorer), `step_rewards` (the result), `cache` (reference log-probs
shared across computers), `encoding` (tokenization with step spans, truncation policy), `batching` (length-sorted,
token-budget batches), `loading` (paths, adapters and references), `explicit` (explicit-PRM checkpoints,
scored through the same API), `assemble` (log-probs to `StepRewards`), `incremental` and `kv` (growing prefixes
scored with the policy's and reference's KV caches). Per-token log-probs come from
:mod:`trl_implicit_prm.logps`, the module the trainers use too.
"""

from .cache import ReferenceCache
from .computer import ProcessRewardComputer
from .encoding import EncodedResponse, ResponseTooLongError
from .explicit import ExplicitPRMComputer
from .step_rewards import StepRewards

__all__ = [
    "EncodedResponse",
    "ExplicitPRMComputer",
    "ProcessRewardComputer",
    "ReferenceCache",
    "ResponseTooLongError",
    "StepRewards",
]
