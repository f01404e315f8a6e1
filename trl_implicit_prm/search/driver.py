"""The shared driver of every search strategy: beams, one generation-and-scoring round, results.

A :class:`Beam` is a scored prefix (:class:`~trl_implicit_prm.inference.incremental.ScoredPrefix`) of one
problem. :meth:`SearchContext.grow` runs one round for any set of beams of any problems: one generator call for
all of them (each gets its next step, or the next `budget` tokens of it), then one incremental scoring call, so a
strategy only decides which beams to grow and which to keep. Token accounting is per problem: `generated` counts
the tokens the generator produced (pruned beams included), `scored` the tokens each PRM model forwarded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..evaluation.best_of_n import select_by_score
from ..rewards import AGGREGATIONS, aggregate_steps
from .generators import GeneratedStep, StepRequest

__all__ = [
    "Beam",
    "Candidate",
    "SearchContext",
    "SearchResult",
    "aggregate",
    "by_problem",
    "rank_score",
    "top_k",
]

RANKINGS = (*AGGREGATIONS, "q", "step")


def aggregate(step_rewards: Sequence[float], how: str) -> float:
    """One score from step rewards, with :func:`~trl_implicit_prm.rewards.aggregate_steps` (`min`, `last`, ...)."""
    values = torch.tensor([list(step_rewards)], dtype=torch.float64)
    return float(aggregate_steps(values, torch.ones_like(values, dtype=torch.bool), how)[0])


def rank_score(step_rewards: Sequence[float], how: str) -> float:
    """A prefix's ranking score: an aggregation, `"q"` (the q-value at its last token, `Σ_k r^k`) or `"step"`
    (the reward of its last, possibly partial, step).
    """
    if how == "q":
        return float(math.fsum(step_rewards))
    if how == "step":
        return float(step_rewards[-1]) if step_rewards else float("nan")
    return aggregate(step_rewards, how)


@dataclass(eq=False)
class Beam:
    """One prefix of one problem: `step_open` when its last step was stopped by a token budget, `finished` when
    the response ended, `tokens` generated along its path.
    """

    problem: int
    prefix: Any
    step_open: bool = False
    finished: bool = False
    tokens: int = 0

    @property
    def steps(self) -> tuple[str, ...]:
        """The candidate's steps."""
        return self.prefix.steps

    @property
    def step_rewards(self) -> list[float]:
        """The candidate's step rewards."""
        return self.prefix.step_rewards


@dataclass
class Candidate:
    """A response a search ended with: its steps, step rewards, score, and whether it ended with EOS."""

    steps: list[str]
    step_rewards: list[float]
    score: float
    finished: bool
    tokens: int


@dataclass
class SearchResult:
    """The outcome of a search on one problem: the candidates, the chosen one and the token counts.

    `trace` lists, for each round of a pruning strategy, the step tuples of the beams it kept;
    `peak_cache_bytes` is the most KV-cache memory the scorer has held at once so far (this search's problems and
    any earlier use of the same scorer, batch buffer included:
    :attr:`~trl_implicit_prm.inference.incremental.IncrementalScorer.peak_cache_bytes`).
    """

    prompt: Any
    method: str
    aggregation: str
    candidates: list[Candidate]
    best: int
    generated_tokens: int
    scored_tokens: int
    trace: list[list[tuple[str, ...]]] = field(default_factory=list)
    peak_cache_bytes: int = 0

    @property
    def best_candidate(self) -> Candidate:
        """The chosen candidate."""
        return self.candidates[self.best]

    def to_dict(self, separator: str = "\n\n") -> dict[str, Any]:
        """JSON-ready: the chosen answer (`response`, `steps`, `step_rewards`, `score`) and the token counts."""
        best = self.best_candidate
        return {
            "method": self.method,
            "aggregation": self.aggregation,
            "response": separator.join(best.steps),
            "steps": best.steps,
            "step_rewards": best.step_rewards,
            "score": best.score,
            "finished": best.finished,
            "num_candidates": len(self.candidates),
            "generated_tokens": self.generated_tokens,
            "scored_tokens": self.scored_tokens,
            "candidates": [
                {"steps": c.steps, "step_rewards": c.step_rewards, "score": c.score, "finished": c.finished}
                for c in self.candidates
            ],
        }


class SearchContext:
    """What the strategies share: the generator, the incremental scorer, the problems, per-problem counters."""

    def __init__(self, generator: Any, scorer: Any, prompts: Sequence[Any], max_steps: int) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {max_steps}")
        self.generator = generator
        self.scorer = scorer
        self.prompts = list(prompts)
        self.max_steps = max_steps
        self.generated = [0] * len(self.prompts)
        self.scored = [0] * len(self.prompts)
        self.empty_steps = [0] * len(self.prompts)
        self.traces: list[list[list[tuple[str, ...]]]] = [[] for _ in self.prompts]

    def roots(self) -> list[Beam]:
        """One root beam per problem (its prompt read by both PRM models once)."""
        prefixes = self.scorer.start(self.prompts)
        for i, p in enumerate(prefixes):
            self.scored[i] += p.new_tokens
        return [Beam(i, p) for i, p in enumerate(prefixes)]

    def is_done(self, beam: Beam) -> bool:
        """Ended with EOS, or reached `max_steps` complete steps."""
        return beam.finished or (not beam.step_open and len(beam.steps) >= self.max_steps)

    def grow(self, beams: Sequence[Beam], budget: int | None = None) -> list[Beam | None]:
        """One round: each beam's next step (or its next `budget` tokens), scored incrementally; the children in
        the order of `beams`. A child whose step came out empty is None (counted in `empty_steps`); children
        that are done (:meth:`is_done`) free their caches.
        """
        if not beams:
            return []
        requests = [
            StepRequest(
                b.prefix.prompt,
                b.steps[:-1] if b.step_open else b.steps,
                b.steps[-1] if b.step_open else "",
                budget,
            )
            for b in beams
        ]
        outputs = list(self.generator(requests))
        if len(outputs) != len(beams):
            raise ValueError(f"the generator returned {len(outputs)} steps for {len(beams)} requests")
        groups: dict[str, list[int]] = {"extend": [], "continue_step": []}
        for i, (beam, out) in enumerate(zip(beams, outputs, strict=True)):
            if not isinstance(out, GeneratedStep):
                raise TypeError(f"a generator must return GeneratedStep objects, got {type(out).__name__}")
            self.generated[beam.problem] += out.num_tokens
            if beam.step_open or (not out.text.strip() and out.finished and beam.steps):
                groups["continue_step"].append(i)  # an empty text after a full step just ends the response
            elif out.text.strip():
                groups["extend"].append(i)
            else:
                self.empty_steps[beam.problem] += 1
        children: list[Beam | None] = [None] * len(beams)
        for how, rows in groups.items():
            if rows:
                made = self._score([beams[i] for i in rows], [outputs[i] for i in rows], how)
                for i, child in zip(rows, made, strict=True):
                    children[i] = child
        return children

    def _score(self, beams: list[Beam], outputs: list[GeneratedStep], how: str) -> list[Beam]:
        prefixes = getattr(self.scorer, how)(
            [b.prefix for b in beams],
            [o.text for o in outputs],
            complete=[o.finished for o in outputs],
            step_open=[not (o.step_done or o.finished) for o in outputs],  # cut by a budget: no separator yet
        )
        children = []
        for beam, out, prefix in zip(beams, outputs, prefixes, strict=True):
            self.scored[beam.problem] += prefix.new_tokens
            child = Beam(
                beam.problem,
                prefix,
                prefix.step_open,
                out.finished,
                beam.tokens + out.num_tokens,
            )
            if self.is_done(child):
                prefix.release()
            children.append(child)
        return children

    def record(self, problem: int, kept: Sequence[Beam], dropped: Sequence[Beam] = ()) -> None:
        """Note the beams a pruning round kept (for `SearchResult.trace`), and free the caches of those it
        `dropped` at once (their rewards stay).
        """
        self.traces[problem].append([b.steps for b in kept])
        for b in dropped:
            b.prefix.release()

    def result(self, problem: int, beams: Sequence[Beam], method: str, aggregation: str) -> SearchResult:
        """The result of one problem: every beam with a step is a candidate, the best by `aggregation` among
        those that ended with EOS when there are any (:func:`choose`).
        """
        candidates = [
            Candidate(
                list(b.steps),
                list(b.step_rewards),
                aggregate(b.step_rewards, aggregation),
                b.finished,
                b.tokens,
            )
            for b in beams
            if b.steps
        ]
        if not candidates:
            raise RuntimeError(
                f"problem {problem}: the search ended without any candidate with a step (every generated step "
                f"was empty: {self.empty_steps[problem]} times); check the generator's prompt rendering"
            )
        best = choose(candidates)
        return SearchResult(
            self.prompts[problem],
            method,
            aggregation,
            candidates,
            best,
            self.generated[problem],
            self.scored[problem],
            self.traces[problem],
            self.scorer.peak_cache_bytes,
        )


def choose(candidates: Sequence[Candidate]) -> int:
    """Index of the best candidate by score (:func:`~trl_implicit_prm.evaluation.best_of_n.select_by_score`),
    among those that ended with EOS when there are any.
    """
    pool = [i for i, c in enumerate(candidates) if c.finished] or list(range(len(candidates)))
    return pool[select_by_score([candidates[i].score for i in pool])]


def top_k(beams: Sequence[Beam], k: int, how: str) -> list[Beam]:
    """The `k` best beams by :func:`rank_score` (ties: the earlier beam first)."""
    scores = [rank_score(b.step_rewards, how) for b in beams]
    order = sorted(range(len(beams)), key=lambda i: (-scores[i], i))
    return [beams[i] for i in order[:k]]


def by_problem(beams: Sequence[Beam | None], n_problems: int) -> list[list[Beam]]:
    """Beams grouped by problem, in order (None entries, dropped children, left out)."""
    out: list[list[Beam]] = [[] for _ in range(n_problems)]
    for b in beams:
        if b is not None:
            out[b.problem].append(b)
    return out
