"""Best-of-N: selection by score, (weighted) majority voting, accuracy-vs-N curves and their plot."""

from __future__ import annotations

import math

import pytest

from trl_implicit_prm.evaluation import best_of_n as bon_module
from trl_implicit_prm.evaluation import (
    best_of_n_curve,
    majority_vote,
    plot_best_of_n,
    select_by_score,
    sigmoid,
    weighted_majority_vote,
)

# Four candidates with their step rewards. Aggregations (computed here with min/sum):
#   c0 "12"  [0.5, 0.5, -0.4]   min -0.4   sum 0.6   <- best sum
#   c1 "15"  [0.1, 0.1, 0.1]    min  0.1   sum 0.3   <- best min
#   c2 "18"  [0.2, 0.2, -0.2]   min -0.2   sum 0.2
#   c3 "18"  [0.2, 0.1, -0.3]   min -0.3   sum 0.0
# Weighted vote on min: "12" σ(-0.4) = 0.401; "15" σ(0.1) = 0.525; "18" σ(-0.2) + σ(-0.3) = 0.450 + 0.426
# = 0.876 <- wins.
ANSWERS = ["12", "15", "18", "18"]
STEP_REWARDS = [[0.5, 0.5, -0.4], [0.1, 0.1, 0.1], [0.2, 0.2, -0.2], [0.2, 0.1, -0.3]]


def test_min_sum_and_weighted_choose_different_answers():
    by_min = [min(r) for r in STEP_REWARDS]
    by_sum = [sum(r) for r in STEP_REWARDS]
    assert ANSWERS[select_by_score(by_min)] == "15"
    assert ANSWERS[select_by_score(by_sum)] == "12"
    assert weighted_majority_vote(ANSWERS, by_min) == "18"
    assert sigmoid(-0.2) + sigmoid(-0.3) == pytest.approx(0.8758, abs=1e-4)


def test_weighted_vote_depends_on_the_score_scale():
    # One confident candidate against two weak ones: σ(4) = 0.982 > 2·σ(-2) = 0.238 -> "7".
    assert weighted_majority_vote(["7", "9", "9"], [4.0, -2.0, -2.0]) == "7"
    assert majority_vote(["7", "9", "9"]) == "9"
    # The same ranking at β-scale 0.05×: σ(0.2) = 0.550 < 2·σ(-0.1) = 0.950 -> "9".
    assert weighted_majority_vote(["7", "9", "9"], [0.2, -0.1, -0.1]) == "9"


def test_majority_tie_breaking_and_none():
    assert majority_vote(["b", "a", "a", "b"]) == "b"  # 2-2 tie: "b" appears first
    assert majority_vote([None, None, "x"]) == "x"  # None never wins against an answer
    assert majority_vote([None, None]) is None
    # "0.5", "1/2" and \frac{1}{2} are one answer (3 votes), written as its first candidate wrote it.
    assert majority_vote(["3", "0.5", "3", "1/2", r"\frac{1}{2}"]) == "0.5"
    with pytest.raises(ValueError):
        majority_vote([])


def test_weighted_ties_and_argmax_ties():
    assert weighted_majority_vote(["a", "b"], [0.0, 0.0]) == "a"
    assert weighted_majority_vote([None, "b"], [5.0, -5.0]) == "b"
    assert select_by_score([1.0, 3.0, 3.0]) == 1
    assert select_by_score([-math.inf, -1.0]) == 1
    with pytest.raises(ValueError, match="NaN"):
        select_by_score([0.1, math.nan])
    with pytest.raises(ValueError, match="2 answers but 1 scores"):
        weighted_majority_vote(["a", "b"], [0.1])
    with pytest.raises(ValueError):
        select_by_score([])


def test_sigmoid_is_stable():
    assert sigmoid(0.0) == 0.5 and sigmoid(-1000.0) == 0.0 and sigmoid(1000.0) == 1.0
    assert sigmoid(-math.inf) == 0.0 and sigmoid(math.inf) == 1.0


# Three problems; P2 has only 3 candidates.
#   P0 ref "4":   answers 5, 4, 5, 4            correct F T F T   min [0.1, 0.3, -0.2, 0.4]
#   P1 ref "10":  answers 10, 12, 12, 12        correct T F F F   min [0.5, 0.2, 0.1, 0.0]
#   P2 ref "1/2": answers 0.5, 3, \frac12       correct T F T     min [-1.0, 2.0, 0.0]
# "sum" scores are the negated "min" scores.
PROBLEMS = [
    {
        "problem": "p0",
        "reference": "4",
        "candidates": [{"response": "", "answer": a} for a in ["5", "4", "5", "4"]],
    },
    {
        "problem": "p1",
        "reference": "10",
        "candidates": [{"response": "", "answer": a} for a in ["10", "12", "12", "12"]],
    },
    {
        "problem": "p2",
        "reference": "1/2",
        "candidates": [
            {"response": ["We halve 1.", r"So $\boxed{0.5}$."]},  # steps, joined with "\n\n"
            "The answer is 3.",  # a bare response string
            {"response": r"\boxed{\frac12}", "answer": None},
        ],
    },
]
MIN_SCORES = [[0.1, 0.3, -0.2, 0.4], [0.5, 0.2, 0.1, 0.0], [-1.0, 2.0, 0.0]]
SUM_SCORES = [[-s for s in row] for row in MIN_SCORES]


def test_best_of_n_curve_by_hand():
    curve = best_of_n_curve(
        PROBLEMS,
        {"min": MIN_SCORES, "sum": SUM_SCORES},
        methods=("prm", "majority", "weighted:min"),
        use_math_verify=False,
    )
    assert curve["ns"] == [1, 2, 4]  # powers of two up to the largest candidate count
    assert curve["methods"] == ["prm:min", "prm:sum", "majority", "weighted:min"]
    assert curve["n_short"] == [0, 0, 1]  # P2 has 3 < 4 candidates: evaluated on its 3
    third = 1 / 3
    # N=1: every method takes candidate 0: P0 wrong, P1 right, P2 right -> 2/3.
    # prm:min  N=2: P0 picks 4 (0.3) right, P1 10 right, P2 picks 3 (2.0) wrong -> 2/3
    #          N=4: P0 picks c3 "4" (0.4) right, P1 10 right, P2 "3" wrong -> 2/3
    assert curve["accuracy"]["prm:min"] == pytest.approx([2 * third, 2 * third, 2 * third])
    # prm:sum  N=2: P0 c0 "5" wrong, P1 c1 "12" wrong, P2 c0 "0.5" right -> 1/3
    #          N=4: P0 c2 "5" (0.2) wrong, P1 c3 "12" (0.0) wrong, P2 c0 right -> 1/3
    assert curve["accuracy"]["prm:sum"] == pytest.approx([2 * third, third, third])
    # majority N=2: P0 5-4 tie -> "5" wrong, P1 10-12 tie -> "10" right, P2 0.5-3 tie -> "0.5" right -> 2/3
    #          N=4: P0 2-2 tie -> "5" wrong, P1 "12" (3 votes) wrong, P2 {0.5, \frac12} 2 votes right -> 1/3
    assert curve["accuracy"]["majority"] == pytest.approx([2 * third, 2 * third, third])
    # weighted N=2: P0 σ(.1)=.525 < σ(.3)=.574 -> "4" right; P1 σ(.5) > σ(.2) -> "10" right;
    #               P2 σ(-1)=.269 < σ(2)=.881 -> "3" wrong -> 2/3
    #          N=4: P0 "5" .525+.450=.975 < "4" .574+.599=1.173 right; P1 "10" .622 < "12" .550+.525+.5 wrong;
    #               P2 "1/2" .269+.5=.769 < "3" .881 wrong -> 1/3
    assert curve["accuracy"]["weighted:min"] == pytest.approx([2 * third, 2 * third, third])
    # pass@N: N=1 P1, P2 -> 2/3; N=2 all three; N=4 all three.
    assert curve["pass_at_n"] == pytest.approx([2 * third, 1.0, 1.0])
    # pass@1 = mean fraction of correct candidates = (2/4 + 1/4 + 2/3) / 3.
    assert curve["pass_at_1"] == pytest.approx((0.5 + 0.25 + 2 / 3) / 3)
    assert curve["candidates_per_problem"] == {"min": 3, "max": 4} and curve["n_problems"] == 3
    assert curve["no_answer_rate"] == 0.0


def test_each_distinct_pair_is_graded_once(monkeypatch):
    calls = []
    original = bon_module.answers_equivalent

    def counting(pred, reference, *, use_math_verify=None):
        calls.append((pred, reference))
        return original(pred, reference, use_math_verify=False)

    monkeypatch.setattr(bon_module, "answers_equivalent", counting)
    curve = best_of_n_curve(PROBLEMS, {"min": MIN_SCORES}, ns=[1, 2, 3, 4])
    # Distinct (answer, reference) pairs: (5,4) (4,4) | (10,10) (12,10) | (0.5,1/2) (3,1/2) (\frac12,1/2).
    assert len(calls) == len(set(calls)) == 7 and curve["n_graded_pairs"] == 7
    assert curve["ns"] == [1, 2, 3, 4] and curve["n_short"] == [0, 0, 0, 1]


def test_scores_from_candidates_and_bare_lists():
    problems = [
        {
            "reference": "2",
            "candidates": [
                {"response": "1", "scores": {"min": 0.9}},
                {"response": "2", "scores": {"min": 0.1}},
            ],
        },
        {
            "reference": "3",
            "candidates": [
                {"response": "x", "scores": {"min": -1.0}},
                {"response": "3", "scores": {"min": 1.0}},
            ],
        },
    ]
    # The answer of "1" is extracted by the fallback (last number of the last line); "x" has no answer.
    curve = best_of_n_curve(problems, methods=("prm",), use_math_verify=False)
    assert curve["methods"] == ["prm:min"] and curve["accuracy"]["prm:min"] == [0.0, 0.5]
    assert curve["no_answer_rate"] == 0.25
    bare = best_of_n_curve(
        problems, [[0.9, 0.1], [-1.0, 1.0]], methods=("prm", "weighted"), use_math_verify=False
    )
    assert bare["methods"] == ["prm:score", "weighted:score"] and bare["accuracy"]["prm:score"] == [0.0, 0.5]


def test_curve_errors():
    with pytest.raises(ValueError, match="needs PRM scores"):
        best_of_n_curve(PROBLEMS, methods=("prm",))
    with pytest.raises(ValueError, match="unknown method"):
        best_of_n_curve(PROBLEMS, {"min": MIN_SCORES}, methods=("best",))
    with pytest.raises(ValueError, match="no scores named 'sum'"):
        best_of_n_curve(PROBLEMS, {"min": MIN_SCORES}, methods=("prm:sum",))
    with pytest.raises(ValueError, match=r"scores\['min'\]\[2\] has 2 scores for 3 candidates"):
        best_of_n_curve(PROBLEMS, {"min": [MIN_SCORES[0], MIN_SCORES[1], [0.0, 1.0]]})
    with pytest.raises(ValueError, match="problem 0 has no candidates"):
        best_of_n_curve([{"reference": "1", "candidates": []}], methods=("majority",))
    majority_only = best_of_n_curve(PROBLEMS, methods=("majority",), use_math_verify=False)
    assert majority_only["methods"] == ["majority"]


def test_plot_best_of_n(tmp_path):
    curve = best_of_n_curve(PROBLEMS, {"min": MIN_SCORES, "sum": SUM_SCORES}, use_math_verify=False)
    path = plot_best_of_n(curve, tmp_path / "bon.png", title="hand-built")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
