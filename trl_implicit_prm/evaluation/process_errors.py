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

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

import numpy as np

from trl_implicit_prm.step_errors import (
    ThresholdSweep,
    accuracy,
    f1_from_counts,
    first_error_prediction,
)

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
    """Records after validation: labels (None for skipped records), scores, the skipped ones, and the sweep of
    the valid ones (:class:`~trl_implicit_prm.step_errors.ThresholdSweep`).
    """

    labels: list[int | None]  # None for skipped records
    scores: list[list[float]]
    skipped: list[tuple[int, str]]
    sweep: ThresholdSweep


def _label_problem(record: Any, n_steps: int) -> str | None:
    label = record.get("label")
    if isinstance(label, bool) or not isinstance(label, Integral):
        return f"label must be an integer, got {label!r}"
    if n_steps == 0 and label != -1:
        return f"record has no steps but label {label} (must be -1)"
    if not -1 <= label < n_steps:
        return f"label {label} out of range [-1, {n_steps - 1}] for {n_steps} steps"
    return None


def _record_problem(
    index: int, record: Any, record_scores: Sequence[float]
) -> tuple[list[float], str | None]:
    """A record's scores as floats, and why the record is skipped (None if it is valid); a caller bug (a score
    count that differs from the steps, a non-finite score) raises ValueError.
    """
    steps = record.get("steps") if isinstance(record, Mapping) else None
    if (
        not isinstance(steps, Sequence)
        or isinstance(steps, str)
        or not all(isinstance(s, str) for s in steps)
    ):
        return [], "'steps' must be a list of strings"
    values = [float(s) for s in record_scores]
    if len(values) != len(steps):
        raise ValueError(
            f"record {index}: {len(values)} scores for {len(steps)} steps (scores[{index}] needs one per step)"
        )
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"record {index}: step scores must be finite, got {values}")
    return values, _label_problem(record, len(steps))


def _prepare(records: Sequence[Mapping[str, Any]], scores: Sequence[Sequence[float]]) -> _Prepared:
    if len(records) != len(scores):
        raise ValueError(
            f"got {len(records)} records but {len(scores)} score lists: pass one list per record"
        )
    labels: list[int | None] = []
    clean_scores: list[list[float]] = []
    skipped: list[tuple[int, str]] = []
    for index, (record, record_scores) in enumerate(zip(records, scores, strict=True)):
        values, problem = _record_problem(index, record, record_scores)
        clean_scores.append(values)
        labels.append(None if problem is not None else int(record["label"]))
        if problem is not None:
            skipped.append((index, problem))
    if skipped:
        logger.warning(
            "skipped %d malformed record(s) of %d, first: record %d: %s",
            len(skipped),
            len(records),
            *skipped[0],
        )
    valid = [(label, values) for label, values in zip(labels, clean_scores, strict=True) if label is not None]
    sweep = ThresholdSweep.build([label for label, _ in valid], [values for _, values in valid])
    return _Prepared(labels=labels, scores=clean_scores, skipped=skipped, sweep=sweep)


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
    return _prepare(records, scores).sweep.tune()


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
    ne, nc = prepared.sweep.n_err, prepared.sweep.n_corr
    return ProcessErrorResult(
        acc_erroneous=accuracy(correct_err, ne),
        acc_correct=accuracy(correct_corr, nc),
        f1=f1_from_counts(correct_err, correct_corr, ne, nc),
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
        return _result(prepared, prepared.sweep.tune(), oracle=True)
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
    tau = prepared[tune_on].sweep.tune() if tune_on is not None else _check_threshold(threshold)
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
    sweep = _prepare(records, scores).sweep
    taus = sweep.candidates() if thresholds is None else np.asarray([_check_threshold(t) for t in thresholds])
    correct_err, correct_corr = sweep.counts(taus)
    ne, nc = sweep.n_err, sweep.n_corr
    return [
        (float(tau), accuracy(int(ce), ne), accuracy(int(cc), nc), f1_from_counts(int(ce), int(cc), ne, nc))
        for tau, ce, cc in zip(taus, correct_err, correct_corr, strict=True)
    ]
