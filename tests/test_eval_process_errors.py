"""Step-error localization (ProcessBench protocol): predictions, metrics, threshold tuning, splits, plot."""

from __future__ import annotations

import itertools
import math
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trl_implicit_prm.evaluation import (
    ProcessErrorResult,
    evaluate_process_errors,
    evaluate_splits,
    f1_threshold_curve,
    first_error_prediction,
    plot_f1_vs_threshold,
    tune_threshold,
)


def rec(n_steps: int, label: int) -> dict:
    return {"problem": "p", "steps": [f"step {i}" for i in range(n_steps)], "label": label}


# Hand-built split A. For each record, the τ range where its prediction is right (m = prefix minima):
#   R0 label 1,  [0.5, -0.2, 0.3]        m = [0.5, -0.2, -0.2]       right iff -0.2 < τ <= 0.5
#   R1 label 2,  [0.4, 0.1, -0.6, 0.2]   m = [0.4, 0.1, -0.6, -0.6]  right iff -0.6 < τ <= 0.1
#   R2 label 0,  [-0.1, 0.6]                                         right iff -0.1 < τ
#   R3 label -1, [0.3, 0.2]              min 0.2                     right iff τ <= 0.2
#   R4 label -1, [0.0, 0.7, -0.3]        min -0.3                    right iff τ <= -0.3
#   R5 label -1, no steps                                            always right
# n_erroneous = 3, n_correct = 3. Counts (ce, cc) and F1 = 2·a·b/(a+b), a = ce/3, b = cc/3, by region:
#   τ <= -0.6         (0, 3)  F1 0
#   (-0.6, -0.3]      (1, 3)  a=1/3 b=1    F1 = (2/3)/(4/3) = 0.5
#   (-0.3, -0.2]      (1, 2)  a=1/3 b=2/3  F1 = (4/9)/1 = 4/9
#   (-0.2, -0.1]      (2, 2)  F1 2/3
#   (-0.1, 0.1]       (3, 2)  a=1 b=2/3    F1 = (4/3)/(5/3) = 0.8   <- best, centre 0.0
#   (0.1, 0.2]        (2, 2)  F1 2/3
#   (0.2, 0.5]        (2, 1)  F1 4/9
#   τ > 0.5           (1, 1)  F1 1/3
RECORDS_A = [rec(3, 1), rec(4, 2), rec(2, 0), rec(2, -1), rec(3, -1), rec(0, -1)]
SCORES_A = [[0.5, -0.2, 0.3], [0.4, 0.1, -0.6, 0.2], [-0.1, 0.6], [0.3, 0.2], [0.0, 0.7, -0.3], []]


def test_first_error_prediction_is_strict():
    assert first_error_prediction([0.3, 0.1, -0.2, -0.5], 0.0) == 2
    assert first_error_prediction([0.3, 0.0, 0.1], 0.0) == -1  # a score equal to τ is not below it
    assert first_error_prediction([], 0.0) == -1
    assert first_error_prediction([-1.0], 0.0) == 0


def test_metrics_at_a_given_threshold():
    result = evaluate_process_errors(RECORDS_A, SCORES_A, threshold=0.0)
    # R4's first step scores exactly 0.0 = τ, not below it, so R4 is flagged at step 2 (-0.3): wrong.
    assert result.predictions == [1, 2, 0, -1, 2, -1]
    assert result.acc_erroneous == 1.0  # 3/3
    assert result.acc_correct == pytest.approx(2 / 3)
    assert result.f1 == pytest.approx(0.8)  # 2·1·(2/3) / (1 + 2/3)
    assert (result.n_erroneous, result.n_correct, result.n_skipped, result.oracle) == (3, 3, 0, False)
    assert "given threshold" in result.describe()
    # At τ = -0.25 (region (-0.3, -0.2]): only R1 right among erroneous, R3 and R5 among correct.
    low = evaluate_process_errors(RECORDS_A, SCORES_A, threshold=-0.25)
    assert low.predictions == [-1, 2, -1, -1, 2, -1]  # R0: -0.2 is not below -0.25
    assert (low.acc_erroneous, low.acc_correct, low.f1) == pytest.approx((1 / 3, 2 / 3, 4 / 9))


def test_f1_is_zero_when_both_accuracies_are_zero():
    # τ = 0.9: R0 (label 1) is flagged at step 0 (0.5 < 0.9), the correct record too.
    result = evaluate_process_errors([rec(2, 1), rec(1, -1)], [[0.5, 0.1], [0.3]], threshold=0.9)
    assert (result.acc_erroneous, result.acc_correct, result.f1) == (0.0, 0.0, 0.0)


def test_tuned_threshold_is_the_centre_of_the_best_region_and_marked_oracle():
    assert tune_threshold(RECORDS_A, SCORES_A) == pytest.approx(0.0)  # centre of (-0.1, 0.1]
    result = evaluate_process_errors(RECORDS_A, SCORES_A)
    assert result.oracle and result.threshold == pytest.approx(0.0) and result.f1 == pytest.approx(0.8)
    assert "oracle threshold" in result.describe()
    assert result.to_dict()["oracle"] is True and "oracle" in result.to_dict()["threshold_kind"]


def test_tie_rule_centre_of_first_best_run():
    # E label 1 [1.0, 0.0, 0.3]: m = [1, 0, 0], right iff 0 < τ <= 1 (0.3 changes nothing).
    # C1 [2.0]: τ <= 2.   C2 [0.5]: τ <= 0.5.   Distinct scores 0, 0.3, 0.5, 1, 2.
    # Candidates -1, 0.15, 0.4, 0.75, 1.5, 3 have F1 0, 1, 1, 2/3, 0, 0: best run {0.15, 0.4} = (0, 0.5].
    # Its centre is 0.25 (not the smallest best candidate 0.15).
    records, scores = [rec(3, 1), rec(1, -1), rec(1, -1)], [[1.0, 0.0, 0.3], [2.0], [0.5]]
    assert tune_threshold(records, scores) == pytest.approx(0.25)


def test_tie_rule_first_of_two_disjoint_best_runs():
    # E1 label 0 [0.0]: τ > 0.  C1 [1.0]: τ <= 1.  E2 label 0 [2.0]: τ > 2.  C2 [3.0]: τ <= 3.
    # (0, 1]: (ce, cc) = (1, 2) -> F1 2/3;  (1, 2]: (1, 1) -> 1/2;  (2, 3]: (2, 1) -> 2/3;  else 0.
    # Two best runs with identical F1 (4/6 both): the first wins, centre 0.5.
    records = [rec(1, 0), rec(1, -1), rec(1, 0), rec(1, -1)]
    assert tune_threshold(records, [[0.0], [1.0], [2.0], [3.0]]) == pytest.approx(0.5)


def test_tie_rule_unbounded_runs():
    # E label 0 [1.0] is right iff τ > 1; the correct record has no steps: always right.
    # Candidates 0.0 (min - 1) and 2.0 (max + 1): F1 0 and 1 -> the best run reaches above the max: 2.0.
    assert tune_threshold([rec(1, 0), rec(0, -1)], [[1.0], []]) == 2.0
    # E label 1 [0.0, 0.0]: step 1 is not a new prefix minimum, so the prediction is never 1: F1 is 0
    # everywhere, the first best run starts below the minimum: min - 1 = -1.0.
    assert tune_threshold([rec(2, 1), rec(1, -1)], [[0.0, 0.0], [1.0]]) == -1.0


def test_malformed_records_are_skipped_and_counted():
    records = [
        *RECORDS_A,
        rec(2, 5),  # label out of range
        rec(0, 1),  # no steps but a label
        {"problem": "p", "steps": ["a"], "label": "0"},  # label not an int
        {"problem": "p", "steps": "a", "label": -1},  # steps not a list
        {"problem": "p", "steps": ["a"], "label": True},  # bool is not a label
    ]
    scores = [*SCORES_A, [0.1, 0.2], [], [0.3], [0.4], [0.5]]
    result = evaluate_process_errors(records, scores, threshold=0.0)
    assert result.n_skipped == 5 and [index for index, _ in result.skipped] == [6, 7, 8, 9, 10]
    assert "out of range" in result.skipped[0][1] and "no steps" in result.skipped[1][1]
    assert result.predictions[6:] == [None] * 5
    assert (result.n_erroneous, result.n_correct, result.f1) == (3, 3, pytest.approx(0.8))  # unchanged
    assert "5 skipped" in result.describe()


def test_bad_scores_raise_naming_the_record():
    with pytest.raises(ValueError, match=r"record 1: 2 scores for 4 steps"):
        evaluate_process_errors(RECORDS_A[:2], [[0.5, -0.2, 0.3], [0.1, 0.2]], threshold=0.0)
    with pytest.raises(ValueError, match="6 records but 2 score lists"):
        evaluate_process_errors(RECORDS_A, SCORES_A[:2], threshold=0.0)
    with pytest.raises(ValueError, match="record 0: step scores must be finite"):
        evaluate_process_errors(RECORDS_A[:1], [[0.1, math.nan, 0.2]], threshold=0.0)


def test_argument_errors():
    with pytest.raises(ValueError, match="not both"):
        evaluate_process_errors(RECORDS_A, SCORES_A, threshold=0.0, tune=True)
    with pytest.raises(ValueError, match="needs a threshold"):
        evaluate_process_errors(RECORDS_A, SCORES_A, tune=False)
    with pytest.raises(ValueError, match="0 correct records"):
        tune_threshold([rec(1, 0)], [[0.3]])
    with pytest.raises(ValueError, match="NaN"):
        evaluate_process_errors(RECORDS_A, SCORES_A, threshold=math.nan)


def test_empty_group_gives_nan_not_a_crash():
    result = evaluate_process_errors([rec(1, -1)], [[0.3]], threshold=0.0)
    assert math.isnan(result.acc_erroneous) and math.isnan(result.f1) and result.acc_correct == 1.0


def test_evaluate_splits_reuses_the_tuned_threshold():
    # Split B at τ = 0 (tuned on A):
    #   label 0 [-0.5, 0.2] -> 0 right;  label 1 [0.3, 0.1] -> -1 wrong;
    #   label -1 [0.4, -0.1] -> 1 wrong;  label -1 [0.2] -> -1 right.   acc 1/2, 1/2 -> F1 0.5.
    split_b = ([rec(2, 0), rec(2, 1), rec(2, -1), rec(1, -1)], [[-0.5, 0.2], [0.3, 0.1], [0.4, -0.1], [0.2]])
    out = evaluate_splits({"A": (RECORDS_A, SCORES_A), "B": split_b}, tune_on="A")
    assert out["threshold"] == pytest.approx(0.0) and out["tuned_on"] == "A"
    a, b = out["splits"]["A"], out["splits"]["B"]
    assert isinstance(a, ProcessErrorResult) and a.oracle and not b.oracle
    assert a.f1 == pytest.approx(0.8) and b.f1 == pytest.approx(0.5)
    assert b.predictions == [0, -1, 1, -1]
    assert out["mean_f1"] == pytest.approx(0.65) and out["mean_f1_held_out"] == pytest.approx(0.5)

    given = evaluate_splits({"A": (RECORDS_A, SCORES_A), "B": split_b}, tune_on=None, threshold=-0.25)
    assert given["tuned_on"] is None and not any(r.oracle for r in given["splits"].values())
    assert given["splits"]["A"].f1 == pytest.approx(4 / 9) and given["mean_f1_held_out"] == given["mean_f1"]
    with pytest.raises(ValueError, match="exactly one"):
        evaluate_splits({"A": (RECORDS_A, SCORES_A)}, tune_on="A", threshold=0.0)
    with pytest.raises(ValueError, match="not one of the splits"):
        evaluate_splits({"A": (RECORDS_A, SCORES_A)}, tune_on="C")


def test_f1_threshold_curve_by_hand():
    rows = f1_threshold_curve(RECORDS_A, SCORES_A, [-0.7, -0.25, 0.0, 0.3, 1.0])
    expected = [
        (-0.7, 0.0, 1.0, 0.0),
        (-0.25, 1 / 3, 2 / 3, 4 / 9),
        (0.0, 1.0, 2 / 3, 0.8),
        (0.3, 2 / 3, 1 / 3, 4 / 9),
        (1.0, 1 / 3, 1 / 3, 1 / 3),
    ]
    assert rows == [pytest.approx(row) for row in expected]
    default = f1_threshold_curve(RECORDS_A, SCORES_A)  # 12 distinct scores -> 11 midpoints + 2 outer
    assert len(default) == 13 and max(row[3] for row in default) == pytest.approx(0.8)


record_and_scores = st.integers(0, 5).flatmap(
    lambda k: st.tuples(
        st.integers(-1, k - 1),
        st.lists(st.sampled_from([-1.0, -0.5, 0.0, 0.25, 0.5, 1.0]), min_size=k, max_size=k),
    )
)


@settings(max_examples=60, deadline=None)
@given(st.lists(record_and_scores, min_size=2, max_size=12))
def test_sweep_matches_brute_force(pairs):
    records = [rec(len(scores), label) for label, scores in pairs]
    scores = [s for _, s in pairs]
    labels = [label for label, _ in pairs]
    if -1 not in labels or all(label == -1 for label in labels):
        with pytest.raises(ValueError):
            tune_threshold(records, scores)
        return
    values = sorted({s for row in scores for s in row}) or [0.0]
    grid = [values[0] - 1, *[(a + b) / 2 for a, b in itertools.pairwise(values)], values[-1] + 1]
    brute = [evaluate_process_errors(records, scores, threshold=t) for t in grid]
    best = max(r.f1 for r in brute)
    tuned = evaluate_process_errors(records, scores)
    assert tuned.f1 == pytest.approx(best)
    curve = f1_threshold_curve(records, scores, grid)
    for (tau, acc_err, acc_corr, f1), result in zip(curve, brute, strict=True):
        assert (acc_err, acc_corr, f1) == pytest.approx((result.acc_erroneous, result.acc_correct, result.f1))
        assert tau == result.threshold


def test_tuning_is_fast():
    rng = random.Random(0)
    records, scores = [], []
    for _ in range(10_000):
        records.append(rec(10, rng.randrange(-1, 10)))
        scores.append([rng.gauss(0.0, 1.0) for _ in range(10)])
    start = time.perf_counter()
    tune_threshold(records, scores)
    assert time.perf_counter() - start < 2.0  # ~0.1 s measured; generous for a shared CPU


def test_plot_f1_vs_threshold(tmp_path):
    rows = f1_threshold_curve(RECORDS_A, SCORES_A)
    path = plot_f1_vs_threshold(rows, tmp_path / "plots" / "f1.png", chosen_threshold=0.0)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_trainer_step_metrics_equal_the_evaluation_module_on_the_same_scores():
    """The trainers' step metrics (step_errors.step_error_metrics) and evaluate_process_errors share one core."""
    from trl_implicit_prm.step_errors import step_error_metrics

    rng = random.Random(3)
    scores = [[rng.uniform(-1, 1) for _ in range(rng.randint(1, 5))] for _ in range(40)]
    labels = [rng.choice([-1, *range(len(s))]) for s in scores]
    records = [{"steps": ["s"] * len(s), "label": lab} for s, lab in zip(scores, labels, strict=True)]
    metrics = step_error_metrics(scores, labels)
    at_zero = evaluate_process_errors(records, scores, threshold=0.0)
    tuned = evaluate_process_errors(records, scores)
    assert metrics == {
        "steps/acc_erroneous": at_zero.acc_erroneous,
        "steps/acc_correct": at_zero.acc_correct,
        "steps/f1": at_zero.f1,
        "steps/f1_oracle_threshold": tuned.f1,
        "steps/oracle_threshold": tuned.threshold,
    }
    only_correct = step_error_metrics([[0.5], [-0.5]], [-1, -1])
    assert only_correct == {"steps/acc_correct": 0.5}  # no F1 without erroneous records, no NaN logged


def test_q_sigmoid_scores_do_not_overflow_on_very_negative_q(tokenizer):
    """The inline σ of prm_scores raised OverflowError below q = -709; it is the stable sigmoid now."""
    from trl_implicit_prm import ProcessRewardComputer
    from trl_implicit_prm.evaluation.prm_scores import score_process_records
    from trl_implicit_prm.tiny import build_model

    prc = ProcessRewardComputer(build_model("llama", tokenizer), tokenizer, reference_free=True, beta=1e6)
    records = [{"problem": "1 + 1 = ?\n", "steps": ["1 + 1 = 2.", "The answer is 2."], "label": -1}]
    (scores,) = score_process_records(prc, records, "q-sigmoid")
    assert prc.score_one(records[0]["problem"], records[0]["steps"]).q_values[-1] < -709
    assert scores[-1] == 0.0 and all(0.0 <= s <= 1.0 for s in scores)
