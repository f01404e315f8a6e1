"""Early rejection: score partial responses after a token budget and stop the weak ones before they finish.

An implicit PRM scores any prefix, mid-step included (its q-value exists at every token, paper Prop. 3.1), so
candidates can be judged after their first `reject_after_tokens` tokens, as in "PRMs are partial reward models":
`n` candidates are generated up to that budget; those whose ranking score (`reject_by`: `"q"`, the q-value at
their last token; `"step"`, the reward of their current step; or an aggregation such as `"min"`) is below
`threshold` are dropped, then all but the best `keep_fraction` (at least one candidate of a problem survives
both rules); the survivors are completed
without further pruning, and the best by the aggregation is the answer. Dropped candidates' caches are freed.
"""

from __future__ import annotations

import math

from .driver import Beam, SearchContext, by_problem, rank_score, top_k

__all__ = ["early_rejection"]


def early_rejection(
    ctx: SearchContext,
    n: int,
    reject_after_tokens: int,
    keep_fraction: float,
    reject_by: str,
    threshold: float | None = None,
) -> list[list[Beam]]:
    """Run early rejection on every problem of `ctx`; the candidate beams of each problem."""
    if reject_after_tokens < 1:
        raise ValueError(f"reject_after_tokens must be a positive integer, got {reject_after_tokens}")
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    done: list[list[Beam]] = [[] for _ in ctx.prompts]
    growing = [b for root in ctx.roots() for b in [root] * n]
    # Phase 1: every candidate up to the token budget (rounds stop at step ends, so loop until it is spent).
    budgeted = []
    while growing:
        children = _round(ctx, growing, reject_after_tokens)
        growing = []
        for c in children:
            if ctx.is_done(c):
                done[c.problem].append(c)
            elif c.tokens >= reject_after_tokens:
                budgeted.append(c)
            else:
                growing.append(c)
    # Rejection.
    survivors = []
    for p, budget_beams in enumerate(by_problem(budgeted, len(ctx.prompts))):
        beams = budget_beams
        if threshold is not None:
            above = [b for b in beams if rank_score(b.step_rewards, reject_by) >= threshold]
            beams = above or top_k(beams, 1, reject_by)  # the best one survives even when all fall below
        kept = top_k(beams, max(1, math.ceil(keep_fraction * len(beams))), reject_by) if beams else []
        ctx.record(p, kept, [b for b in budget_beams if b not in kept])
        survivors.extend(kept)
    # Phase 2: complete the survivors.
    while survivors:
        children = [c for c in ctx.grow(survivors) if c is not None]
        survivors = []
        for c in children:
            (done[c.problem] if ctx.is_done(c) else survivors).append(c)
    return done


def _round(ctx: SearchContext, beams: list[Beam], budget: int) -> list[Beam]:
    """One round of phase 1: each beam's next tokens, at most what is left of its budget."""
    out = []
    for left in sorted({budget - b.tokens for b in beams}):
        group = [b for b in beams if budget - b.tokens == left]
        out.extend(c for c in ctx.grow(group, budget=left) if c is not None)
    return out
