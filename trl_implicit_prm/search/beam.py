"""Step-level beam search over an implicit PRM (as in search-and-learn).

Per problem, `n` beams grow one step per round. Of the unfinished children, the best `n // beam_width` by the
aggregation of their step rewards are kept and each is forked `beam_width` times for the next round (the forks
share its KV caches; the caches of the children not kept are freed at once). Children that end (EOS or
`max_steps`) are set aside; the search of a problem stops when `n` have ended or none is left. The answer is the
best ended candidate by the aggregation.
"""

from __future__ import annotations

from .driver import Beam, SearchContext, by_problem, top_k

__all__ = ["beam_search"]


def beam_search(ctx: SearchContext, n: int, beam_width: int, aggregation: str) -> list[list[Beam]]:
    """Run beam search on every problem of `ctx`; the candidate beams of each problem."""
    if beam_width < 1 or n < beam_width or n % beam_width:
        raise ValueError(f"n must be a positive multiple of beam_width, got n={n}, beam_width={beam_width}")
    keep = n // beam_width
    done: list[list[Beam]] = [[] for _ in ctx.prompts]
    active = [[root] * n for root in ctx.roots()]
    while any(active):
        children = by_problem(ctx.grow([b for beams in active for b in beams]), len(ctx.prompts))
        for p, kids in enumerate(children):
            done[p].extend(b for b in kids if ctx.is_done(b))
            growing = [b for b in kids if not ctx.is_done(b)]
            if len(done[p]) >= n or not growing:
                active[p] = []
                continue
            kept = top_k(growing, keep, aggregation)
            ctx.record(p, kept, [b for b in growing if b not in kept])
            active[p] = [b for b in kept for _ in range(beam_width)]
    return done
