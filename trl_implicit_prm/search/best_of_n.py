"""Best-of-N through the search driver: `n` independent candidates, generated step by step, never pruned.

Selection is the evaluation package's (:func:`~trl_implicit_prm.evaluation.best_of_n.select_by_score` on the
aggregation, in :meth:`SearchContext.result`); weighted majority voting over the same candidates is
:func:`~trl_implicit_prm.evaluation.best_of_n.weighted_majority_vote` on their answers and scores. Scoring is
incremental, so its cost is one forward of each PRM model over every generated token.
"""

from __future__ import annotations

from .driver import Beam, SearchContext

__all__ = ["best_of_n"]


def best_of_n(ctx: SearchContext, n: int) -> list[list[Beam]]:
    """Generate `n` candidates per problem of `ctx` to the end; all of them, per problem."""
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    done: list[list[Beam]] = [[] for _ in ctx.prompts]
    growing = [b for root in ctx.roots() for b in [root] * n]
    while growing:
        children = [c for c in ctx.grow(growing) if c is not None]
        growing = []
        for c in children:
            (done[c.problem] if ctx.is_done(c) else growing).append(c)
    return done
