"""Evaluation of process reward models, from scores to numbers and plots (no model needed here).

- :mod:`.answers`: final-answer extraction and equivalence grading (`math-verify` when installed).
- :mod:`.process_errors`: step-error localization on ProcessBench-format records (F1, threshold tuning).
- :mod:`.best_of_n`: best-of-N selection, majority and weighted majority voting, accuracy-vs-N curves.
- :mod:`.records`: reading evaluation files with per-line validation, writing reproducible results JSON.
- :mod:`.plots`: PNG plots of both curves.

Everything takes scores (floats, lists of floats) and records, never models; getting step scores from a
checkpoint is :class:`~trl_implicit_prm.ProcessRewardComputer`'s job.
"""

from .answers import answer_key, answers_equivalent, extract_answer, math_verify_available, normalize_answer
from .best_of_n import best_of_n_curve, majority_vote, select_by_score, sigmoid, weighted_majority_vote
from .plots import plot_best_of_n, plot_f1_vs_threshold
from .process_errors import (
    ProcessErrorResult,
    evaluate_process_errors,
    evaluate_splits,
    f1_threshold_curve,
    first_error_prediction,
    tune_threshold,
)
from .records import (
    LoadedRecords,
    SkippedRow,
    file_sha256,
    read_bon_candidates,
    read_process_records,
    write_results_json,
)

__all__ = [
    "LoadedRecords",
    "ProcessErrorResult",
    "SkippedRow",
    "answer_key",
    "answers_equivalent",
    "best_of_n_curve",
    "evaluate_process_errors",
    "evaluate_splits",
    "extract_answer",
    "f1_threshold_curve",
    "file_sha256",
    "first_error_prediction",
    "majority_vote",
    "math_verify_available",
    "normalize_answer",
    "plot_best_of_n",
    "plot_f1_vs_threshold",
    "read_bon_candidates",
    "read_process_records",
    "select_by_score",
    "sigmoid",
    "tune_threshold",
    "weighted_majority_vote",
    "write_results_json",
]
