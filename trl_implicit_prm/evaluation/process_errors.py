"""Step-error localization, ProcessBench protocol: where does a PRM say the first mistake is?

A record has `problem`, `steps` (list of str) and `label`: the index of the earliest wrong step, or -1 if
every step is correct. Given one score per step (e.g. the implicit step rewards), the PRM predicts the
first step whose score is STRICTLY below a threshold τ (a score equal to τ is not below it), or -1 if
there is none. Reported: accuracy on erroneous records (prediction == label), accuracy on correct records
(prediction == -1), and F1, their harmonic mean (0 when both are 0).

τ is tuned on one split and reused on the others (:func:`evaluate_splits`). A result whose τ was tuned on
the very records it reports is optimistic; it carries ``oracle=True`` and says "oracle threshold".

Malformed records (steps not a list of strings, label not an integer in [-1, len(steps)), or a non -1
label on a record without steps) are skipped and counted in ``n_skipped``; a scores list whose length
differs from its record's number of steps, or a non-finite score, is a caller bug and raises ValueError.

Tuning is a sweep, not a grid search: prediction == label holds for τ in one half-open interval
per record (see :func:`tune_threshold`), so all candidate thresholds are scored with binary searches,
O(M log M) for M step scores.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

import numpy as np

__all__ = [
    "ProcessErrorResult",
    "evaluate_process_errors",
    "evaluate_splits",
    "f1_threshold_curve",
    "first_error_prediction",
    "tune_threshold",
]

logger = logging.getLogger(__name__)

ORACLE_NOTE = "oracle threshold (tuned on the records it reports: optimistic)"


def first_error_prediction(step_scores: Sequence[float], threshold: float) -> int:
    """Index of the first step whose score is strictly below `threshold`, or -1 if there is none.

    A score exactly equal to the threshold is not below it. No steps -> -1.

    Example:

    ```python
    >>> first_error_prediction([0.3, 0.1, -0.2, -0.5], threshold=0.0)
    2
    >>> first_error_prediction([0.3, 0.0], threshold=0.0)
    -1

    ```
    """
    for index, score in enumerate(step_scores):
        if score < threshold:
            return index
    return -1


def _f1(correct_err: int, correct_corr: int, n_err: int, n_corr: int) -> float:
    """Harmonic mean of the two accuracies, from integer counts (NaN if a group is empty, 0 if both are 0).

    Written as 2·ce·cc / (ce·nc + cc·ne) so that equal rationals give bit-identical floats (exact ties).
    """
    if n_err == 0 or n_corr == 0:
        return math.nan
    denominator = correct_err * n_corr + correct_corr * n_err
    return 2.0 * correct_err * correct_corr / denominator if denominator else 0.0


def _accuracy(correct: int, total: int) -> float:
    return correct / total if total else math.nan


@dataclass(frozen=True)
class ProcessErrorResult:
    """Step-error localization metrics at one threshold.

    Accuracies and F1 are fractions in [0, 1] (NaN for an empty group; F1 is NaN if either group is empty).
    `predictions[i]` is the predicted first-error index of record i, None for a skipped record;
    `skipped` lists `(record index, reason)`. `oracle` is True when `threshold` was tuned on these records.
    """

    acc_erroneous: float
    acc_correct: float
    f1: float
    threshold: float
    n_erroneous: int
    n_correct: int
    n_skipped: int
    oracle: bool
    predictions: list[int | None] = field(default_factory=list, repr=False)
    skipped: list[tuple[int, str]] = field(default_factory=list, repr=False)

    def describe(self) -> str:
        """One line for logs and reports, e.g. `F1 66.7 | erroneous 50.0 (n=2) | correct 100.0 (n=1) | τ=0.5`."""
        kind = ORACLE_NOTE if self.oracle else "given threshold"
        skipped = f" | {self.n_skipped} skipped" if self.n_skipped else ""
        return (
            f"F1 {100 * self.f1:.1f} | erroneous {100 * self.acc_erroneous:.1f} (n={self.n_erroneous}) | "
            f"correct {100 * self.acc_correct:.1f} (n={self.n_correct}) | τ={self.threshold:.6g}, {kind}{skipped}"
        )

    def to_dict(self, *, include_predictions: bool = False) -> dict[str, Any]:
        """JSON-ready dict; `threshold_kind` spells out whether the threshold is an oracle one."""
        out: dict[str, Any] = {
            "f1": self.f1,
            "acc_erroneous": self.acc_erroneous,
            "acc_correct": self.acc_correct,
            "threshold": self.threshold,
            "oracle": self.oracle,
            "threshold_kind": ORACLE_NOTE if self.oracle else "given threshold",
            "n_erroneous": self.n_erroneous,
            "n_correct": self.n_correct,
            "n_skipped": self.n_skipped,
            "skipped": [{"index": index, "reason": reason} for index, reason in self.skipped],
        }
        if include_predictions:
            out["predictions"] = list(self.predictions)
        return out


@dataclass
class _Prepared:
    """Validated records, reduced to what the threshold sweep needs.

    Erroneous record with label L and prefix minima m: prediction == L  iff  m[L] < τ <= m[L-1] (m[-1] = +inf),
    an interval (lo, hi] that is empty when step L is not a new prefix minimum. Correct record: prediction
    == -1 iff τ <= min(scores) (+inf without steps).
    """

    labels: list[int | None]  # None for skipped records
    scores: list[list[float]]
    skipped: list[tuple[int, str]]
    n_err: int
    n_corr: int
    err_lo: np.ndarray  # sorted lower ends of the non-empty "correct" intervals of erroneous records
    err_hi: np.ndarray  # sorted upper ends of the same intervals
    corr_min: np.ndarray  # sorted minimum score of each correct record
    values: np.ndarray  # sorted distinct step scores of the valid records

    def counts(self, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Correct predictions on erroneous and on correct records at each threshold."""
        # (#lo < τ) − (#hi < τ) = #{lo < τ <= hi}, because lo < hi for every stored interval.
        correct_err = np.searchsorted(self.err_lo, thresholds, "left") - np.searchsorted(
            self.err_hi, thresholds, "left"
        )
        correct_corr = self.n_corr - np.searchsorted(self.corr_min, thresholds, "left")  # #{min >= τ}
        return correct_err, correct_corr

    def candidates(self) -> np.ndarray:
        """Midpoints between consecutive distinct scores, plus min − 1 and max + 1 (just [0.0] if no scores)."""
        values = self.values
        if values.size == 0:
            return np.array([0.0])
        lo, hi = values[:-1], values[1:]
        mid = _midpoints(lo, hi)
        return np.concatenate([[values[0] - 1.0], mid, [values[-1] + 1.0]])


def _midpoints(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    mid = lo + (hi - lo) / 2
    return np.where(mid > lo, mid, hi)  # adjacent floats: hi is still in (lo, hi]


def _label_problem(record: Any, n_steps: int) -> str | None:
    label = record.get("label")
    if isinstance(label, bool) or not isinstance(label, Integral):
        return f"label must be an integer, got {label!r}"
    if n_steps == 0 and label != -1:
        return f"record has no steps but label {label} (must be -1)"
    if not -1 <= label < n_steps:
        return f"label {label} out of range [-1, {n_steps - 1}] for {n_steps} steps"
    return None


def _prepare(records: Sequence[Mapping[str, Any]], scores: Sequence[Sequence[float]]) -> _Prepared:
    if len(records) != len(scores):
        raise ValueError(
            f"got {len(records)} records but {len(scores)} score lists: pass one list per record"
        )
    labels: list[int | None] = []
    clean_scores: list[list[float]] = []
    skipped: list[tuple[int, str]] = []
    err_lo, err_hi, corr_min, all_scores = [], [], [], []
    n_err = n_corr = 0
    for index, (record, record_scores) in enumerate(zip(records, scores, strict=True)):
        steps = record.get("steps") if isinstance(record, Mapping) else None
        if (
            not isinstance(steps, Sequence)
            or isinstance(steps, str)
            or not all(isinstance(s, str) for s in steps)
        ):
            skipped.append((index, "'steps' must be a list of strings"))
            labels.append(None)
            clean_scores.append([])
            continue
        values = [float(s) for s in record_scores]
        if len(values) != len(steps):
            raise ValueError(
                f"record {index}: {len(values)} scores for {len(steps)} steps (scores[{index}] needs one per step)"
            )
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"record {index}: step scores must be finite, got {values}")
        problem = _label_problem(record, len(steps))
        if problem is not None:
            skipped.append((index, problem))
            labels.append(None)
            clean_scores.append(values)
            continue
        label = int(record["label"])
        labels.append(label)
        clean_scores.append(values)
        all_scores.extend(values)
        prefix_min = list(itertools.accumulate(values, min))
        if label == -1:
            n_corr += 1
            corr_min.append(prefix_min[-1] if prefix_min else math.inf)
        else:
            n_err += 1
            lo = prefix_min[label]
            hi = prefix_min[label - 1] if label > 0 else math.inf
            if lo < hi:
                err_lo.append(lo)
                err_hi.append(hi)
    if skipped:
        logger.warning(
            "skipped %d malformed record(s) of %d, first: record %d: %s",
            len(skipped),
            len(records),
            *skipped[0],
        )
    return _Prepared(
        labels=labels,
        scores=clean_scores,
        skipped=skipped,
        n_err=n_err,
        n_corr=n_corr,
        err_lo=np.sort(np.asarray(err_lo, dtype=float)),
        err_hi=np.sort(np.asarray(err_hi, dtype=float)),
        corr_min=np.sort(np.asarray(corr_min, dtype=float)),
        values=np.unique(np.asarray(all_scores, dtype=float)),
    )


def _tune(prepared: _Prepared) -> float:
    if prepared.n_err == 0 or prepared.n_corr == 0:
        raise ValueError(
            f"cannot tune a threshold on {prepared.n_err} erroneous and {prepared.n_corr} correct records: "
            "F1 needs both kinds; pass threshold= instead"
        )
    candidates = prepared.candidates()
    correct_err, correct_corr = prepared.counts(candidates)
    ne, nc = prepared.n_err, prepared.n_corr
    denominator = correct_err * nc + correct_corr * ne
    f1 = np.where(denominator > 0, 2.0 * correct_err * correct_corr / np.maximum(denominator, 1), 0.0)
    is_best = f1 == f1.max()
    first = int(np.argmax(is_best))
    last = first
    while last + 1 < len(candidates) and is_best[last + 1]:
        last += 1
    if first == 0 or last == len(candidates) - 1:  # the best run is unbounded: keep its outer candidate
        return float(candidates[0] if first == 0 else candidates[-1])
    lo, hi = prepared.values[first - 1], prepared.values[last]  # the best run covers τ in (lo, hi]
    return float(_midpoints(np.array([lo]), np.array([hi]))[0])


def tune_threshold(records: Sequence[Mapping[str, Any]], scores: Sequence[Sequence[float]]) -> float:
    """The threshold τ that maximises F1 on these records.

    Candidates: the midpoints between consecutive distinct step scores, plus (min score − 1) and
    (max score + 1); every achievable prediction pattern is one of them, because predictions only change
    when τ crosses a score. F1 is piecewise constant in τ, so the optimum is a union of intervals.

    Tie rule: take the FIRST (lowest) maximal run of consecutive best candidates; it covers τ in
    (lo, hi] where lo, hi are the scores around it, and the result is its centre (lo + hi) / 2 (all τ in
    the run give the same predictions; the centre is the farthest from both edges). If that run reaches
    below the minimum score the result is min − 1; if it reaches above the maximum, max + 1.

    Cost: O(M log M) for M step scores (a sort, then binary searches over the candidates).
    Raises ValueError when there are no erroneous or no correct records (F1 undefined).

    Example:

    ```python
    >>> records = [{"steps": ["a", "b"], "label": 1}, {"steps": ["a", "b"], "label": -1}]
    >>> tune_threshold(records, [[0.9, 0.1], [0.8, 0.7]])  # best τ in (0.1, 0.7]: its centre
    0.4

    ```
    """
    return _tune(_prepare(records, scores))


def _result(prepared: _Prepared, threshold: float, oracle: bool) -> ProcessErrorResult:
    predictions: list[int | None] = []
    correct_err = correct_corr = 0
    for label, values in zip(prepared.labels, prepared.scores, strict=True):
        if label is None:
            predictions.append(None)
            continue
        prediction = first_error_prediction(values, threshold)
        predictions.append(prediction)
        if prediction == label:
            if label == -1:
                correct_corr += 1
            else:
                correct_err += 1
    ne, nc = prepared.n_err, prepared.n_corr
    return ProcessErrorResult(
        acc_erroneous=_accuracy(correct_err, ne),
        acc_correct=_accuracy(correct_corr, nc),
        f1=_f1(correct_err, correct_corr, ne, nc),
        threshold=float(threshold),
        n_erroneous=ne,
        n_correct=nc,
        n_skipped=len(prepared.skipped),
        oracle=oracle,
        predictions=predictions,
        skipped=list(prepared.skipped),
    )


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if math.isnan(threshold):
        raise ValueError("threshold must be a number, got NaN")
    return threshold


def evaluate_process_errors(
    records: Sequence[Mapping[str, Any]],
    scores: Sequence[Sequence[float]],
    threshold: float | None = None,
    *,
    tune: bool | None = None,
) -> ProcessErrorResult:
    """Step-error localization metrics of per-step scores on ProcessBench-format records.

    Args:
        records: mappings with `steps` (list of str) and `label` (earliest wrong step, or -1).
        scores: one list of floats per record, one float per step (e.g. implicit step rewards).
        threshold: τ; a step is flagged when its score < τ. None tunes τ on these records (oracle).
        tune: None (default) tunes iff `threshold` is None; True requires `threshold` None, False requires
            a threshold. It exists so that callers can say which one they mean.

    Returns:
        A :class:`ProcessErrorResult`; `oracle` is True iff τ was tuned here.

    Example:

    ```python
    >>> records = [
    ...     {"problem": "p", "steps": ["s1", "s2", "s3"], "label": 1},   # step 2 is the first wrong one
    ...     {"problem": "p", "steps": ["s1", "s2"], "label": -1},        # all correct
    ... ]
    >>> result = evaluate_process_errors(records, [[0.5, -0.4, 0.2], [0.3, 0.1]], threshold=0.0)
    >>> result.predictions, result.acc_erroneous, result.acc_correct, result.f1
    ([1, -1], 1.0, 1.0, 1.0)

    ```
    """
    if tune is None:
        tune = threshold is None
    if tune and threshold is not None:
        raise ValueError("pass either threshold=... or tune=True, not both")
    if not tune and threshold is None:
        raise ValueError("tune=False needs a threshold=...")
    prepared = _prepare(records, scores)
    if tune:
        return _result(prepared, _tune(prepared), oracle=True)
    return _result(prepared, _check_threshold(threshold), oracle=False)


def evaluate_splits(
    splits: Mapping[str, tuple[Sequence[Mapping[str, Any]], Sequence[Sequence[float]]]],
    tune_on: str | None = None,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Evaluate several splits with ONE threshold, tuned on split `tune_on` or given (e.g. from validation).

    Exactly one of `tune_on` and `threshold` must be given. The tuned split's own result is marked
    `oracle=True`.

    Returns:
        ``{"threshold": τ, "tuned_on": name or None, "splits": {name: ProcessErrorResult},
        "mean_f1": plain mean of the split F1s (all splits, the oracle one included),
        "mean_f1_held_out": the same without the tuned split (None if it is the only split)}``.

    Example:

    ```python
    >>> gsm = ([{"steps": ["a", "b"], "label": 1}, {"steps": ["a"], "label": -1}], [[0.9, 0.2], [0.6]])
    >>> math = ([{"steps": ["a", "b"], "label": 0}, {"steps": ["a"], "label": -1}], [[0.2, 0.1], [0.6]])
    >>> out = evaluate_splits({"gsm8k": gsm, "math": math}, tune_on="gsm8k")
    >>> out["threshold"], out["splits"]["gsm8k"].oracle, out["splits"]["math"].f1
    (0.4, True, 1.0)

    ```
    """
    if (tune_on is None) == (threshold is None):
        raise ValueError("pass exactly one of tune_on=<split name> and threshold=<float>")
    if tune_on is not None and tune_on not in splits:
        raise ValueError(f"tune_on={tune_on!r} is not one of the splits {sorted(splits)}")
    prepared = {name: _prepare(records, scores) for name, (records, scores) in splits.items()}
    tau = _tune(prepared[tune_on]) if tune_on is not None else _check_threshold(threshold)
    results = {name: _result(p, tau, oracle=name == tune_on) for name, p in prepared.items()}
    f1s = [r.f1 for r in results.values()]
    held_out = [r.f1 for name, r in results.items() if name != tune_on]
    return {
        "threshold": tau,
        "tuned_on": tune_on,
        "splits": results,
        "mean_f1": float(np.mean(f1s)) if f1s else math.nan,
        "mean_f1_held_out": float(np.mean(held_out)) if held_out else None,
    }


def f1_threshold_curve(
    records: Sequence[Mapping[str, Any]],
    scores: Sequence[Sequence[float]],
    thresholds: Sequence[float] | None = None,
) -> list[tuple[float, float, float, float]]:
    """`(τ, acc_erroneous, acc_correct, f1)` at each threshold (default: the tuning candidates), for plots.

    Example:

    ```python
    >>> records = [{"steps": ["a", "b"], "label": 1}, {"steps": ["a", "b"], "label": -1}]
    >>> f1_threshold_curve(records, [[0.9, 0.1], [0.8, 0.7]], thresholds=[0.0, 0.5, 0.85])
    [(0.0, 0.0, 1.0, 0.0), (0.5, 1.0, 1.0, 1.0), (0.85, 1.0, 0.0, 0.0)]

    ```
    """
    prepared = _prepare(records, scores)
    taus = (
        prepared.candidates() if thresholds is None else np.asarray([_check_threshold(t) for t in thresholds])
    )
    correct_err, correct_corr = prepared.counts(taus)
    ne, nc = prepared.n_err, prepared.n_corr
    return [
        (float(tau), _accuracy(int(ce), ne), _accuracy(int(cc), nc), _f1(int(ce), int(cc), ne, nc))
        for tau, ce, cc in zip(taus, correct_err, correct_corr, strict=True)
    ]
