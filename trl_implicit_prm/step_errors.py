"""Step-error localization on labels and step scores: the pure core of the ProcessBench protocol.

A record's label is the index of its earliest wrong step, or -1 when every step is correct. Given one score per
step, the prediction is the first step whose score is STRICTLY below a threshold τ, or -1 (see
:func:`first_error_prediction`). Accuracy on erroneous records (prediction == label), accuracy on correct
records (prediction == -1), and F1, their harmonic mean (0 when both are 0, NaN when a group is empty).

Used by :mod:`trl_implicit_prm.evaluation.process_errors` (records read from files, validated) and by the
trainers' step-level evaluation (:func:`step_error_metrics`), so the two agree by construction.
The formulas are in docs/method.md.

    >>> metrics = step_error_metrics([[0.5, -0.4, 0.2], [0.3, 0.1]], [1, -1])
    >>> metrics["steps/acc_erroneous"], metrics["steps/acc_correct"], metrics["steps/f1"]
    (1.0, 1.0, 1.0)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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


def f1_from_counts(correct_err: int, correct_corr: int, n_err: int, n_corr: int) -> float:
    """Harmonic mean of the two accuracies, from integer counts (NaN if a group is empty, 0 if both are 0).

    Written as 2·ce·cc / (ce·nc + cc·ne) so that equal rationals give bit-identical floats (exact ties).
    """
    if n_err == 0 or n_corr == 0:
        return math.nan
    denominator = correct_err * n_corr + correct_corr * n_err
    return 2.0 * correct_err * correct_corr / denominator if denominator else 0.0


def accuracy(correct: int, total: int) -> float:
    """`correct / total`, NaN for an empty group."""
    return correct / total if total else math.nan


def midpoints(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Centres of the intervals (lo, hi]; for adjacent floats, hi (still inside the interval)."""
    mid = lo + (hi - lo) / 2
    return np.where(mid > lo, mid, hi)


@dataclass
class ThresholdSweep:
    """Valid records reduced to what a sweep over thresholds needs.

    Erroneous record with label L and prefix minima m: prediction == L  iff  m[L] < τ <= m[L-1] (m[-1] = +inf),
    an interval (lo, hi] that is empty when step L is not a new prefix minimum. Correct record: prediction
    == -1 iff τ <= min(scores) (+inf without steps).
    """

    n_err: int
    n_corr: int
    err_lo: np.ndarray  # sorted lower ends of the non-empty "correct" intervals of erroneous records
    err_hi: np.ndarray  # sorted upper ends of the same intervals
    corr_min: np.ndarray  # sorted minimum score of each correct record
    values: np.ndarray  # sorted distinct step scores of the valid records

    @classmethod
    def build(cls, labels: Sequence[int], scores: Sequence[Sequence[float]]) -> ThresholdSweep:
        """From valid labels (in [-1, len(steps))) and finite scores, one list per record."""
        err_lo, err_hi, corr_min, all_scores = [], [], [], []
        n_err = n_corr = 0
        for label, values in zip(labels, scores, strict=True):
            all_scores.extend(values)
            prefix_min = list(itertools.accumulate(values, min))
            if label == -1:
                n_corr += 1
                corr_min.append(prefix_min[-1] if prefix_min else math.inf)
                continue
            n_err += 1
            lo = prefix_min[label]
            hi = prefix_min[label - 1] if label > 0 else math.inf
            if lo < hi:
                err_lo.append(lo)
                err_hi.append(hi)
        return cls(
            n_err=n_err,
            n_corr=n_corr,
            err_lo=np.sort(np.asarray(err_lo, dtype=float)),
            err_hi=np.sort(np.asarray(err_hi, dtype=float)),
            corr_min=np.sort(np.asarray(corr_min, dtype=float)),
            values=np.unique(np.asarray(all_scores, dtype=float)),
        )

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
        mid = midpoints(values[:-1], values[1:])
        return np.concatenate([[values[0] - 1.0], mid, [values[-1] + 1.0]])

    def tune(self) -> float:
        """The F1-maximising threshold (tie rule: the centre of the first maximal run of best candidates)."""
        if self.n_err == 0 or self.n_corr == 0:
            raise ValueError(
                f"cannot tune a threshold on {self.n_err} erroneous and {self.n_corr} correct records: "
                "F1 needs both kinds; pass threshold= instead"
            )
        candidates = self.candidates()
        correct_err, correct_corr = self.counts(candidates)
        ne, nc = self.n_err, self.n_corr
        denominator = correct_err * nc + correct_corr * ne
        f1 = np.where(denominator > 0, 2.0 * correct_err * correct_corr / np.maximum(denominator, 1), 0.0)
        is_best = f1 == f1.max()
        first = int(np.argmax(is_best))
        last = first
        while last + 1 < len(candidates) and is_best[last + 1]:
            last += 1
        if first == 0 or last == len(candidates) - 1:  # the best run is unbounded: keep its outer candidate
            return float(candidates[0] if first == 0 else candidates[-1])
        lo, hi = self.values[first - 1], self.values[last]  # the best run covers τ in (lo, hi]
        return float(midpoints(np.array([lo]), np.array([hi]))[0])


def correct_counts(
    labels: Sequence[int], scores: Sequence[Sequence[float]], threshold: float
) -> tuple[int, int]:
    """Correct predictions at `threshold` on erroneous and on correct records (by :func:`first_error_prediction`)."""
    correct_err = correct_corr = 0
    for label, values in zip(labels, scores, strict=True):
        if first_error_prediction(values, threshold) == label:
            if label == -1:
                correct_corr += 1
            else:
                correct_err += 1
    return correct_err, correct_corr


def step_error_metrics(step_scores: Sequence[Sequence[float]], labels: Sequence[int]) -> dict[str, float]:
    """The trainers' step-level evaluation metrics: accuracies at threshold 0, and, when there are both erroneous
    and correct records, F1 at 0, the oracle threshold tuned on these records and its F1. Labels must be valid
    (in [-1, number of steps)) and scores finite; NaN values (an empty group) are left out.
    """
    for index, values in enumerate(step_scores):
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"record {index}: step scores must be finite, got {list(values)}")
    ne = sum(label != -1 for label in labels)
    nc = len(labels) - ne
    ce, cc = correct_counts(labels, step_scores, 0.0)
    out = {"steps/acc_erroneous": accuracy(ce, ne), "steps/acc_correct": accuracy(cc, nc)}
    if ne and nc:  # F1 and threshold tuning need both kinds of records
        tuned = ThresholdSweep.build(labels, step_scores).tune()
        te, tc = correct_counts(labels, step_scores, tuned)
        out.update(
            {
                "steps/f1": f1_from_counts(ce, cc, ne, nc),
                "steps/f1_oracle_threshold": f1_from_counts(te, tc, ne, nc),
                "steps/oracle_threshold": tuned,
            }
        )
    return {k: v for k, v in out.items() if v == v}
