"""Best-of-N selection with a PRM, majority and weighted majority voting, and accuracy-vs-N curves.

Everything here takes already-aggregated PRM scores (one float per candidate, e.g. the `min` of the step
rewards); aggregation lives with :class:`~trl_implicit_prm.StepRewards`.

Answers are grouped for voting by :func:`~trl_implicit_prm.evaluation.answers.answer_key` (normalised
string, numbers as reduced fractions), so `0.5`, `1/2` and `\\frac{1}{2}` vote together; the group's
answer is the one written by its first candidate. Ties go to the group whose first candidate comes first.

Example:

```python
>>> from trl_implicit_prm.evaluation import majority_vote, select_by_score, weighted_majority_vote
>>> answers, scores = ["3", "5", "5", "3", "7"], [-3.0, 0.5, 0.5, -3.0, 2.0]
>>> majority_vote(answers), weighted_majority_vote(answers, scores), answers[select_by_score(scores)]
('3', '5', '7')

```
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from .answers import answer_key, answers_equivalent, extract_answer

__all__ = ["best_of_n_curve", "majority_vote", "select_by_score", "sigmoid", "weighted_majority_vote"]


def sigmoid(x: float) -> float:
    """Numerically stable logistic function (σ(+inf) = 1, σ(−inf) = 0)."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _check_scores(scores: Sequence[float], what: str = "scores") -> list[float]:
    values = [float(s) for s in scores]
    if any(math.isnan(v) for v in values):
        raise ValueError(f"{what} contain NaN: {values}")
    return values


def _plurality(keys: Sequence[Hashable | None], weights: Sequence[float]) -> int | None:
    """Index of the first candidate of the group with the largest total weight; None if every key is None.

    Groups are visited in order of first appearance, and only a strictly larger total replaces the leader,
    so ties go to the earliest group.
    """
    totals: dict[Hashable, float] = {}
    first: dict[Hashable, int] = {}
    for index, (key, weight) in enumerate(zip(keys, weights, strict=True)):
        if key is None:
            continue
        if key not in totals:
            totals[key], first[key] = 0.0, index
        totals[key] += weight
    best_key, best_total = None, -math.inf
    for key, total in totals.items():
        if total > best_total:
            best_key, best_total = key, total
    return None if best_key is None else first[best_key]


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """The most frequent answer (grouped by `answer_key`), as written by its first candidate.

    Ties go to the answer that appears first. None (no answer) never wins unless every answer is None,
    in which case the result is None. Raises ValueError on an empty list.

    Example:

    ```python
    >>> majority_vote(["2", None, "0.5", None, None, "1/2", "2"])  # "0.5" and "1/2" group; tie -> first
    '2'

    ```
    """
    if not answers:
        raise ValueError("majority_vote needs at least one answer")
    winner = _plurality([answer_key(a) for a in answers], [1.0] * len(answers))
    return None if winner is None else answers[winner]


def weighted_majority_vote(answers: Sequence[str | None], scores: Sequence[float]) -> str | None:
    """The answer with the largest total weight σ(score), as written by its first candidate.

    The weights pass scores through a sigmoid, so unlike ranking by score this depends on the scale of the
    scores: implicit PRM rewards are `β · log-ratio`, and β (0.05 by default) changes the vote. Ties (equal
    totals) go to the answer that appears first; None answers never win unless all are None.

    Example:

    ```python
    >>> weighted_majority_vote(["7", "9", "9"], [4.0, -2.0, -2.0])  # σ(4)=0.982 vs 2·σ(-2)=0.238
    '7'

    ```
    """
    if not answers:
        raise ValueError("weighted_majority_vote needs at least one answer")
    values = _check_scores(scores)
    if len(values) != len(answers):
        raise ValueError(f"got {len(answers)} answers but {len(values)} scores")
    winner = _plurality([answer_key(a) for a in answers], [sigmoid(v) for v in values])
    return None if winner is None else answers[winner]


def select_by_score(scores: Sequence[float]) -> int:
    """Index of the highest-scoring candidate (the first one on ties). Raises ValueError if empty or NaN.

    Example:

    ```python
    >>> select_by_score([0.1, 0.7, 0.7])
    1

    ```
    """
    values = _check_scores(scores)
    if not values:
        raise ValueError("select_by_score needs at least one score")
    return max(range(len(values)), key=lambda i: (values[i], -i))


# ---------------------------------------------------------------------------------------------------------
# Curves
# ---------------------------------------------------------------------------------------------------------


def _candidate_answer(candidate: Any, step_separator: str) -> str | None:
    if isinstance(candidate, str):
        return extract_answer(candidate)
    answer = candidate.get("answer")
    if answer is not None:
        return str(answer)
    response = candidate.get("response")
    if isinstance(response, list | tuple):
        response = step_separator.join(response)
    return extract_answer(response)


def _collect_scores(
    problems: Sequence[Mapping[str, Any]],
    scores: Mapping[str, Sequence[Sequence[float]]] | Sequence[Sequence[float]] | None,
) -> dict[str, list[list[float]]]:
    if scores is None:  # precomputed scores carried by the candidates: {"scores": {"min": .., "sum": ..}}
        names = None
        for problem in problems:
            for candidate in problem["candidates"]:
                found = candidate.get("scores") if isinstance(candidate, Mapping) else None
                keys = set(found) if isinstance(found, Mapping) else set()
                names = keys if names is None else names & keys
        if not names:
            return {}
        scores = {
            name: [[c["scores"][name] for c in problem["candidates"]] for problem in problems]
            for name in sorted(names)
        }
    elif not isinstance(scores, Mapping):
        scores = {"score": scores}
    out: dict[str, list[list[float]]] = {}
    for name, per_problem in scores.items():
        if len(per_problem) != len(problems):
            raise ValueError(f"scores[{name!r}] has {len(per_problem)} entries for {len(problems)} problems")
        out[name] = []
        for index, (problem, values) in enumerate(zip(problems, per_problem, strict=True)):
            n_candidates = len(problem["candidates"])
            if len(values) != n_candidates:
                raise ValueError(
                    f"scores[{name!r}][{index}] has {len(values)} scores for {n_candidates} candidates"
                )
            out[name].append(_check_scores(values, f"scores[{name!r}][{index}]"))
    return out


def _expand_methods(methods: Sequence[str], aggregations: Sequence[str]) -> list[str]:
    expanded: list[str] = []
    for method in methods:
        kind, _, aggregation = method.partition(":")
        if kind not in ("prm", "weighted", "majority"):
            raise ValueError(
                f"unknown method {method!r}: use 'majority', 'prm[:<aggregation>]', 'weighted[:<...>]'"
            )
        if kind == "majority":
            names = [method]
        elif not aggregations:
            raise ValueError(
                f"method {method!r} needs PRM scores: pass scores={{'min': ...}} or put 'scores' in the candidates"
            )
        elif aggregation:
            if aggregation not in aggregations:
                raise ValueError(
                    f"method {method!r}: no scores named {aggregation!r} (have {list(aggregations)})"
                )
            names = [method]
        else:
            names = [f"{kind}:{name}" for name in aggregations]
        expanded.extend(name for name in names if name not in expanded)
    return expanded


def best_of_n_curve(
    problems: Sequence[Mapping[str, Any]],
    scores: Mapping[str, Sequence[Sequence[float]]] | Sequence[Sequence[float]] | None = None,
    ns: Sequence[int] | None = None,
    methods: Sequence[str] = ("prm", "majority", "weighted"),
    *,
    use_math_verify: bool | None = None,
    step_separator: str = "\n\n",
) -> dict[str, Any]:
    """Accuracy against N of each selection method, using the FIRST N candidates of every problem.

    Args:
        problems: mappings with `reference` (the reference answer) and `candidates`: response strings or
            mappings with `response` (str or steps), optional `answer` (else extracted with `extract_answer`,
            steps joined with `step_separator`) and optional `scores` (used when `scores` is None).
        scores: `{aggregation name: per problem, per candidate float}` (a bare nested list is named "score");
            None: each candidate's `scores` mapping (the names present in every candidate), if any.
        ns: the values of N; default 1, 2, 4, ... up to the largest candidate count (powers of two only).
        methods: "majority"; "prm:<name>" (the top-scoring candidate); "weighted:<name>" (majority vote
            weighted by σ(score)); a bare "prm" / "weighted" means one method per score name.
        use_math_verify: passed to :func:`answers_equivalent`.
        step_separator: joins a step-list response into the text its answer is extracted from.

    A problem with fewer than N candidates uses all it has (`n_short[i]` counts them for `ns[i]`). Each distinct
    (answer, reference) pair is graded once; a None answer is wrong.

    Returns:
        ``{"ns", "methods", "accuracy": {method: [fraction correct at each N]}, "pass_at_n": [any of the first
        N correct], "pass_at_1": mean fraction of correct candidates (the expected accuracy of one sample),
        "n_short", "n_problems", "candidates_per_problem": {"min", "max"}, "no_answer_rate", "n_graded_pairs"}``.

    Example:

    ```python
    >>> problems = [
    ...     {"reference": "4", "candidates": [{"response": "", "answer": "5"}, {"response": "", "answer": "4"}]},
    ...     {"reference": "1", "candidates": ["The answer is 1.", "The answer is 2."]},
    ... ]
    >>> curve = best_of_n_curve(problems, {"min": [[0.1, 0.9], [0.3, 0.2]]}, methods=("prm",))
    >>> curve["ns"], curve["accuracy"]["prm:min"], curve["pass_at_n"], curve["pass_at_1"]
    ([1, 2], [0.5, 1.0], [0.5, 1.0], 0.5)

    ```
    """
    ns = _checked_problems_and_ns(problems, ns)
    score_sets = _collect_scores(problems, scores)
    tally = _Tally(ns, _expand_methods(methods, list(score_sets)), use_math_verify)
    for index, problem in enumerate(problems):
        answers = [_candidate_answer(c, step_separator) for c in problem["candidates"]]
        tally.add(answers, str(problem["reference"]), {name: v[index] for name, v in score_sets.items()})
    return tally.summary([len(p["candidates"]) for p in problems])


class _Tally:
    """Running counts of :func:`best_of_n_curve`: hits per method and N, pass@N, the summed fraction of correct
    candidates, and the (answer, reference) grades, each distinct pair graded once.
    """

    def __init__(self, ns: list[int], methods: list[str], use_math_verify: bool | None):
        self.ns, self.methods, self.use_math_verify = ns, methods, use_math_verify
        self.hits = {name: [0] * len(ns) for name in methods}
        self.pass_hits = [0] * len(ns)
        self.correct_fraction = 0.0
        self.n_candidates = self.n_unanswered = 0
        self.grades: dict[tuple[str, str], bool] = {}

    def summary(self, counts: list[int]) -> dict[str, Any]:
        """The curve, from the number of candidates of every problem."""
        n_problems = len(counts)
        return {
            "ns": self.ns,
            "methods": self.methods,
            "accuracy": {name: [h / n_problems for h in values] for name, values in self.hits.items()},
            "pass_at_n": [h / n_problems for h in self.pass_hits],
            "pass_at_1": self.correct_fraction / n_problems,
            "n_short": [sum(c < n for c in counts) for n in self.ns],
            "n_problems": n_problems,
            "candidates_per_problem": {"min": min(counts), "max": max(counts)},
            "no_answer_rate": self.n_unanswered / self.n_candidates,
            "n_graded_pairs": len(self.grades),
        }

    def grade(self, answer: str | None, reference: str) -> bool:
        if answer is None:
            return False
        pair = (answer, reference)
        if pair not in self.grades:
            self.grades[pair] = answers_equivalent(answer, reference, use_math_verify=self.use_math_verify)
        return self.grades[pair]

    def add(self, answers: list[str | None], reference: str, scores: Mapping[str, Sequence[float]]) -> None:
        """One problem: its candidates' answers and their scores per aggregation name."""
        keys = [answer_key(a) for a in answers]
        correct = [self.grade(a, reference) for a in answers]
        self.correct_fraction += sum(correct) / len(correct)
        self.n_candidates += len(answers)
        self.n_unanswered += sum(a is None for a in answers)
        for position, n in enumerate(self.ns):
            self.pass_hits[position] += any(correct[:n])
            for name in self.methods:
                chosen = _select(name, keys[:n], scores, n)
                self.hits[name][position] += chosen is not None and correct[chosen]


def _checked_problems_and_ns(problems: Sequence[Mapping[str, Any]], ns: Sequence[int] | None) -> list[int]:
    """Refuse problems without candidates or reference; the values of N (default 1, 2, 4, ... up to the most
    candidates), each >= 1.
    """
    if not problems:
        raise ValueError("best_of_n_curve needs at least one problem")
    for index, problem in enumerate(problems):
        if not problem.get("candidates"):
            raise ValueError(f"problem {index} has no candidates")
        if problem.get("reference") is None:
            raise ValueError(f"problem {index} has no 'reference' answer")
    most = max(len(p["candidates"]) for p in problems)
    if ns is None:
        ns = [2**k for k in range(most.bit_length()) if 2**k <= most]
    ns = [int(n) for n in ns]
    if any(n < 1 for n in ns):
        raise ValueError(f"every N must be >= 1, got {ns}")
    return ns


def _select(name: str, keys: list[Any], scores: Mapping[str, Sequence[float]], n: int) -> int | None:
    """The candidate that method `name` picks among the first `n` (answer keys `keys`, already cut to `n`)."""
    kind, _, aggregation = name.partition(":")
    if kind == "majority":
        return _plurality(keys, [1.0] * len(keys))
    if kind == "weighted":
        return _plurality(keys, [sigmoid(v) for v in scores[aggregation][:n]])
    return select_by_score(scores[aggregation][:n])
