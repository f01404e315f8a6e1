"""Scores that evaluation needs from a PRM: per-step scores of ProcessBench records, aggregated candidate scores.

These take any object with a `score(prompts, responses)` method returning results with `step_rewards`,
`q_values` and `aggregate(how)` (a :class:`~trl_implicit_prm.inference.ProcessRewardComputer`), so the rest of
the evaluation package stays free of models. Problems are bare strings: when the scorer has a
`render_prompt(problem)` method (the computer does), they are rendered with it first, as training rendered its
prompts (the checkpoint's `prompt_format`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from .best_of_n import sigmoid

logger = logging.getLogger(__name__)

__all__ = ["scorable", "score_candidates", "score_process_records"]


def scorable(response: Any) -> bool:
    """Whether a response is a completion the data layer accepts (non-empty text, steps or assistant message)."""
    from trl_implicit_prm.data import DataFormatError
    from trl_implicit_prm.data.formats import check_completion

    try:
        check_completion(response, "response")
    except DataFormatError:
        return False
    return True


def _problems(prc: Any, problems: Sequence[Any]) -> list[Any]:
    render = getattr(prc, "render_prompt", None)
    return [render(p) for p in problems] if render is not None else list(problems)


def score_process_records(
    prc: Any, records: Sequence[dict[str, Any]], how: str = "step"
) -> list[list[float]]:
    """Per-step scores of each record's `steps`: step rewards (`how="step"`) or σ(q) at each step end
    (`how="q-sigmoid"`). Records without steps get no score (the protocol predicts -1 for them).
    """
    if how not in ("step", "q-sigmoid"):
        raise ValueError(f"how must be 'step' or 'q-sigmoid', got {how!r}")
    index = [i for i, r in enumerate(records) if r["steps"]]
    results = (
        prc.score(
            _problems(prc, [records[i]["problem"] for i in index]), [records[i]["steps"] for i in index]
        )
        if index
        else []
    )
    out: list[list[float]] = [[] for _ in records]
    for i, r in zip(index, results, strict=True):
        out[i] = list(r.step_rewards) if how == "step" else [sigmoid(q) for q in r.q_values]
    return out


def score_candidates(
    prc: Any, problems: Sequence[dict[str, Any]], aggregations: Sequence[str]
) -> dict[str, list]:
    """`{aggregation: per-problem lists of per-candidate scores}`, every candidate scored once.

    A candidate with nothing to score (empty text, an empty step) gets `-inf`: it is never selected and has no
    weight in voting; the count is logged.
    """
    flat = [(p["problem"], c["response"]) for p in problems for c in p["candidates"]]
    ok = [i for i, (_, r) in enumerate(flat) if scorable(r)]
    if len(ok) < len(flat):
        logger.warning(
            "%d of %d candidates have nothing to score (empty response or step): score -inf",
            len(flat) - len(ok),
            len(flat),
        )
    results = prc.score(_problems(prc, [flat[i][0] for i in ok]), [flat[i][1] for i in ok]) if ok else []
    by_index = dict(zip(ok, results, strict=True))
    out: dict[str, list] = {how: [] for how in aggregations}
    k = 0
    for p in problems:
        for how in aggregations:
            out[how].append(
                [
                    by_index[k + j].aggregate(how) if (k + j) in by_index else -math.inf
                    for j in range(len(p["candidates"]))
                ]
            )
        k += len(p["candidates"])
    return out
