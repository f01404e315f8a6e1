"""`SearchConfig` and `run_search`: one entry point for every strategy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..rewards import AGGREGATIONS
from .beam import beam_search
from .best_of_n import best_of_n
from .driver import RANKINGS, SearchContext, SearchResult
from .dvts import dvts
from .early import early_rejection

__all__ = ["METHODS", "SearchConfig", "run_search"]

METHODS = ("bon", "beam", "dvts", "early")


@dataclass
class SearchConfig:
    """Settings of a PRM-guided search (see docs/search.md).

    Beam search and DVTS as in huggingface/search-and-learn (Beeching, Tunstall and Rush, 2024, "Scaling test-time
    compute with open models"; Snell et al., 2024, arXiv:2408.03314); early rejection as in "PRMs are partial
    reward models" (a candidate judged on its first tokens); the PRM is implicit (Yuan et al., 2024,
    arXiv:2412.01981), whose q-value exists at every token.

    Example:

    ```python
    >>> SearchConfig(method="beam", n=16, beam_width=4).n // 4
    4
    >>> SearchConfig(method="early", reject_by="step").keep_fraction
    0.25

    ```
    """

    method: str = field(default="beam", metadata={"help": f"Search strategy, one of {METHODS}."})
    n: int = field(
        default=16, metadata={"help": "Candidates (bon, early) or beams (beam, dvts) per problem."}
    )
    beam_width: int = field(
        default=4,
        metadata={
            "help": "beam: forks of each kept beam (n // beam_width kept); dvts: children per subtree."
        },
    )
    max_steps: int = field(default=8, metadata={"help": "Steps after which a candidate stops."})
    aggregation: str = field(
        default="min",
        metadata={"help": f"Step-reward aggregation for ranking and selection, one of {AGGREGATIONS}."},
    )
    reject_after_tokens: int = field(
        default=16, metadata={"help": "early: tokens generated per candidate before the rejection."}
    )
    keep_fraction: float = field(default=0.25, metadata={"help": "early: fraction of candidates kept."})
    reject_by: str = field(
        default="q",
        metadata={
            "help": "early: 'q' (q-value at the last token), 'step' (current step reward) or an aggregation."
        },
    )
    reject_threshold: float | None = field(
        default=None, metadata={"help": "early: also drop candidates whose score is below this value."}
    )

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.reject_by not in RANKINGS:
            raise ValueError(f"reject_by must be one of {RANKINGS}, got {self.reject_by!r}")
        for name in ("n", "beam_width", "max_steps", "reject_after_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.method in ("beam", "dvts") and self.n % self.beam_width:
            raise ValueError(
                f"n must be a multiple of beam_width, got n={self.n}, beam_width={self.beam_width}"
            )


def run_search(
    prompts: Sequence[Any], generator: Any, scorer: Any, config: SearchConfig | None = None
) -> list[SearchResult]:
    """Search every prompt with `generator` (a :class:`~trl_implicit_prm.search.StepGenerator`) guided by
    `scorer` (an :class:`~trl_implicit_prm.inference.incremental.IncrementalScorer`); one result per prompt.

    Example:

    ```python
    >>> from trl_implicit_prm import ProcessRewardComputer
    >>> from trl_implicit_prm.inference.incremental import IncrementalScorer
    >>> from trl_implicit_prm.search import GeneratedStep
    >>> from trl_implicit_prm.tiny import build_model, build_tokenizer
    >>> tok = build_tokenizer(vocab_size=400)
    >>> prm = ProcessRewardComputer(build_model("llama", tok), tok, reference_free=True)
    >>> def toy(requests):  # step k of every candidate is "k." and the response ends after two steps
    ...     return [GeneratedStep(f"{len(r.steps)}.", True, len(r.steps) == 1, 2) for r in requests]
    >>> out = run_search(["2+3=?\\n"], toy, IncrementalScorer(prm), SearchConfig(method="beam", n=4, beam_width=2))
    >>> out[0].best_candidate.steps, out[0].generated_tokens
    (['0.', '1.'], 16)

    ```
    """
    config = config or SearchConfig()
    ctx = SearchContext(generator, scorer, prompts, config.max_steps)
    c = config
    if c.method == "bon":
        beams = best_of_n(ctx, c.n)
    elif c.method == "beam":
        beams = beam_search(ctx, c.n, c.beam_width, c.aggregation)
    elif c.method == "dvts":
        beams = dvts(ctx, c.n, c.beam_width, c.aggregation)
    else:
        beams = early_rejection(
            ctx, c.n, c.reject_after_tokens, c.keep_fraction, c.reject_by, c.reject_threshold
        )
    return [ctx.result(p, b, c.method, c.aggregation) for p, b in enumerate(beams)]
