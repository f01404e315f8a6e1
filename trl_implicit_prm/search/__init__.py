"""PRM-guided search at test time: best-of-N, step-level beam search, DVTS and early rejection.

Modules, one idea each: `driver` (beams, one generation-and-scoring round, results), `beam`, `dvts`, `early`,
`best_of_n` (the strategies), `generators` (the step-generator interface, transformers and text-completion
implementations), `run` (:class:`SearchConfig`, :func:`run_search`), `adapter` (search-and-learn's PRM
interface). Scoring is incremental (:class:`~trl_implicit_prm.inference.incremental.IncrementalScorer`): each
round forwards only the new tokens through the policy and the reference.
"""

from ..inference.incremental import IncrementalScorer, ScoredPrefix
from .adapter import SearchAndLearnPRM
from .driver import Candidate, SearchResult
from .generators import (
    GeneratedStep,
    StepGenerator,
    StepRequest,
    TextStepGenerator,
    TransformersStepGenerator,
)
from .run import METHODS, SearchConfig, run_search

__all__ = [
    "METHODS",
    "Candidate",
    "GeneratedStep",
    "IncrementalScorer",
    "ScoredPrefix",
    "SearchAndLearnPRM",
    "SearchConfig",
    "SearchResult",
    "StepGenerator",
    "StepRequest",
    "TextStepGenerator",
    "TransformersStepGenerator",
    "run_search",
]
