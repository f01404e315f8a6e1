"""Diverse verifier tree search (DVTS, as in search-and-learn): `n // beam_width` independent subtrees.

Each subtree holds one beam; every round it is forked `beam_width` times, each fork gets its next step, and the
best unfinished child by the aggregation becomes the subtree's beam (the others are dropped, with their caches).
Subtrees never compete with each other, which keeps the final candidates diverse. Children that end (EOS or
`max_steps`) are candidates; a subtree stops when no child is left growing.
"""

from __future__ import annotations

from .driver import Beam, SearchContext, top_k

__all__ = ["dvts"]


def dvts(ctx: SearchContext, n: int, beam_width: int, aggregation: str) -> list[list[Beam]]:
    """Run DVTS on every problem of `ctx`; the candidate beams of each problem."""
    if beam_width < 1 or n < beam_width or n % beam_width:
        raise ValueError(f"n must be a positive multiple of beam_width, got n={n}, beam_width={beam_width}")
    done: list[list[Beam]] = [[] for _ in ctx.prompts]
    subtrees = [beam for root in ctx.roots() for beam in [root] * (n // beam_width)]
    while subtrees:
        children = ctx.grow([b for b in subtrees for _ in range(beam_width)])
        survivors = []
        for t, tree in enumerate(subtrees):
            kids = [c for c in children[t * beam_width : (t + 1) * beam_width] if c is not None]
            done[tree.problem].extend(b for b in kids if ctx.is_done(b))
            growing = [b for b in kids if not ctx.is_done(b)]
            if growing:
                best = top_k(growing, 1, aggregation)
                ctx.record(tree.problem, best, [b for b in growing if b is not best[0]])
                survivors.extend(best)
        subtrees = survivors
    return done
