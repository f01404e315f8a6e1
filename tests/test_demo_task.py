"""Tests of the demo's synthetic task (`trl_implicit_prm.demo.task`).

Step truth is checked with an independent re-implementation (`_check_steps` below: parse every step, recompute
it), not with the module's own `locate_first_error`, so that a bug shared by generator and checker cannot hide.
"""

from __future__ import annotations

import json
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trl_implicit_prm.demo import task as T
from trl_implicit_prm.demo.formats import (
    EXPORT_FILES,
    export_all,
    read_jsonl,
    to_paired,
    to_processbench,
    to_rollouts,
    to_stepwise,
    to_unpaired,
)
from trl_implicit_prm.demo.grading import (
    boxed_answer,
    grade,
    locate_first_error,
    parse_steps,
    solution_from_text,
)
from trl_implicit_prm.demo.task import (
    ERROR_KINDS,
    STEP_SEPARATOR,
    ArithmeticTask,
    Problem,
    Solution,
    corrupt,
    corruptible_steps,
    format_prompt,
    format_step,
    make_problems,
    make_solutions,
    reference_solution,
    tokenizer_corpus,
)

STEP_RE = re.compile(r"^(\d+)([-+*])(\d+)=(\d+)(\. The answer is \\boxed\{(\d+)\}\.)?$")
CONFIGS = [
    {},
    {"n_terms": 3},
    {"n_terms": 6},
    {"n_terms": 8},
    {"n_terms": 5, "operators": "+-"},
    {"n_terms": 5, "operators": "*"},
    {"n_terms": 5, "operators": "-"},
    {"n_terms": 6, "modulus": 100},
    {"n_terms": 5, "max_value": 20},
]


def _eval(a: int, op: str, b: int, modulus: int | None) -> int:
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    return value % modulus if modulus else value


def _parse(step: str) -> tuple[int, str, int, int, int | None]:
    m = STEP_RE.match(step)
    assert m is not None, f"malformed step {step!r}"
    boxed = int(m[6]) if m[6] is not None else None
    return int(m[1]), m[2], int(m[3]), int(m[4]), boxed


def _check_steps(problem: Problem, steps: list[str]) -> tuple[int, list[bool]]:
    """Independent truth: (earliest wrong step or -1, per-step 'internally consistent' flags).

    A step is right iff its left operand is the true running total, its operation is the problem's, its result
    is correct, and it boxes the result iff it is the last one. 'Consistent' means the step's arithmetic is right
    given its own left operand, and that left operand is the previous step's stated result.
    """
    assert len(steps) == len(problem.ops)
    total, first, consistent, prev_stated = problem.start, -1, [], problem.start
    for i, step in enumerate(steps):
        a, op, b, c, boxed = _parse(step)
        last = i == len(steps) - 1
        consistent.append(
            c == _eval(a, op, b, problem.modulus)
            and (boxed == c if last else boxed is None)
            and (i == 0 or a == prev_stated)
        )
        true_total = _eval(total, *problem.ops[i], problem.modulus)
        right = (a, op, b, c) == (total, *problem.ops[i], true_total) and (
            boxed == c if last else boxed is None
        )
        if not right and first == -1:
            first = i
        total, prev_stated = true_total, c
    return first, consistent


def _in_range(problem: Problem, value: int) -> bool:
    if problem.modulus:
        return 0 <= value < problem.modulus
    return 0 <= value <= problem.max_value


# ----------------------------------------------------------------------------------------------- evaluation


def test_left_to_right_by_hand():
    p = Problem(3, (("+", 4), ("*", 2), ("-", 5)))
    assert p.text == "3+4*2-5"
    assert p.totals == (7, 14, 9) and p.answer == "9" and p.n_terms == 4
    # precedence would give 2*3 + 4*2 = 14; left to right gives ((2*3)+4)*2 = 20
    q = Problem(2, (("*", 3), ("+", 4), ("*", 2)))
    assert q.totals == (6, 10, 20) and q.answer == "20"
    r = Problem(9, (("-", 9), ("+", 1), ("*", 9), ("-", 8)))
    assert r.totals == (0, 1, 9, 1)
    assert reference_solution(q).steps == ["2*3=6", "6+4=10", "10*2=20. The answer is \\boxed{20}."]
    prompt = format_prompt(q)
    assert prompt == "Compute left to right: 2*3+4*2\n" == q.prompt
    assert prompt.endswith("\n") and "left to right" in prompt


def test_modulus():
    p = Problem(9, (("*", 9), ("*", 9), ("-", 30)), modulus=100)
    assert p.totals == (81, 29, 99)
    assert "mod 100" in format_prompt(p)
    assert reference_solution(p).steps[1] == "81*9=29"
    problems = ArithmeticTask(n_terms=6, modulus=100, seed=3).make_problems(200)
    assert all(0 <= t < 100 for p in problems for t in p.totals)
    assert any(
        p.apply(p.totals[i - 1], *p.ops[i]) != _eval(p.totals[i - 1], *p.ops[i], None)
        for p in problems
        for i in range(1, len(p.ops))
    )  # some results really wrap


# ------------------------------------------------------------------------------------------ reference solutions


@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default"
)
def test_reference_solutions_are_right(config):
    task = ArithmeticTask(seed=5, **config)
    for p in task.make_problems(60):
        sol = reference_solution(p)
        assert len(sol.steps) == task.n_terms - 1 == len(p.ops)
        first, consistent = _check_steps(p, sol.steps)
        assert first == -1 and all(consistent)
        assert all(_in_range(p, v) for v in (p.start, *p.totals))
        assert sol.is_correct and sol.first_error == -1 and sol.process_correct
        assert sol.final_answer == p.answer == str(_parse(sol.steps[-1])[4])
        assert grade(p, sol.text) and grade(p, sol.steps) and grade(p, sol)
        assert locate_first_error(p, sol.steps) == -1
        assert parse_steps(sol.text) == sol.steps and STEP_SEPARATOR.join(sol.steps) == sol.text


def test_max_value_respected():
    for p in ArithmeticTask(n_terms=8, max_value=20, seed=0).make_problems(200):
        assert all(0 <= v <= 20 for v in (p.start, *p.totals))
        for k in range(len(p.ops)):
            for v in re.findall(r"\d+", corrupt(p, k, rng=k).text):
                assert 0 <= int(v) <= 20


# ---------------------------------------------------------------------------------------------- corruption


@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default"
)
def test_corruption_first_error_and_propagation(config):
    task = ArithmeticTask(seed=11, **config)
    rng = random.Random(0)
    for p in task.make_problems(40):
        assert corruptible_steps(p) == list(range(len(p.ops)))
        for k in range(len(p.ops)):
            bad = corrupt(p, step=k, rng=rng)
            first, consistent = _check_steps(p, bad.steps)
            assert first == k, (p.text, bad.steps)
            assert bad.steps[:k] == reference_solution(p).steps[:k]
            # every step after k is computed correctly from the previous (wrong) stated total
            assert all(consistent[k + 1 :]), bad.steps
            assert _parse(bad.steps[k])[3] != p.totals[k] or _parse(bad.steps[k])[:3] != (
                p.start if k == 0 else p.totals[k - 1],
                *p.ops[k],
            )
            stated = [_parse(s) for s in bad.steps]
            assert all(_in_range(p, v) for s in stated for v in (s[0], s[3]))
            assert bad.final_answer == str(stated[-1][3]) != p.answer
            assert not grade(p, bad.text) and not grade(p, bad.steps)
            assert bad.first_error == k and not bad.is_correct and bad.error_kind in ERROR_KINDS
            assert locate_first_error(p, bad.steps) == k


@pytest.mark.parametrize("kind", ERROR_KINDS)
def test_each_error_kind(kind):
    rng = random.Random(1)
    seen = 0
    for p in ArithmeticTask(n_terms=5, seed=2).make_problems(60):
        for k in range(len(p.ops)):
            try:
                bad = corrupt(p, k, rng, kinds=[kind])
            except ValueError:
                continue  # this kind is impossible here (e.g. every other operand leaves the range)
            seen += 1
            a, op, b, c, _ = _parse(bad.steps[k])
            before = p.start if k == 0 else p.totals[k - 1]
            right_op, right_b = p.ops[k]
            assert bad.error_kind == kind
            if kind == "result":
                assert (a, op, b) == (before, right_op, right_b) and c != p.totals[k]
                assert abs(c - p.totals[k]) in (1, 2, 3, 10)
            elif kind == "operand":
                assert (a, op) == (before, right_op) and b != right_b and c == _eval(a, op, b, None)
            elif kind == "operator":
                assert (a, b) == (before, right_b) and op != right_op and op in p.operators
                assert c == _eval(a, op, b, None)
            else:
                assert a != before and (op, b) == (right_op, right_b) and c == _eval(a, op, b, None)
    assert seen > 100


def test_vanishing_errors_are_never_drawn():
    # Multiplication by 0 erases every earlier error: step 0 cannot be corrupted, later steps can.
    p = Problem(3, (("+", 4), ("*", 0), ("+", 2)))
    with pytest.raises(ValueError, match="changes the answer"):
        corrupt(p, step=0, rng=0)
    assert corruptible_steps(p) == [1, 2]
    sols = make_solutions(p, 0, 50, rng=0)
    assert {s.first_error for s in sols} == {1, 2}
    assert all(s.final_answer != p.answer for s in sols)
    # Modulo 100, an error of +-10 before "*20" (or +-5, +-10 before "*20") vanishes: only the others are drawn.
    q = Problem(2, (("+", 3), ("*", 20), ("+", 1)), modulus=100, max_operand=20)
    for seed in range(200):
        bad = corrupt(q, step=0, rng=seed)
        assert bad.final_answer != q.answer and _check_steps(q, bad.steps)[0] == 0
    with pytest.raises(ValueError):
        corrupt(q, step=3, rng=0)


# ------------------------------------------------------------------------------------------ generation options


def test_determinism():
    a, b = ArithmeticTask(seed=1).make_problems(50), ArithmeticTask(seed=1).make_problems(50)
    assert a == b
    assert ArithmeticTask(seed=1).make_problems(50) != ArithmeticTask(seed=2).make_problems(50)
    assert make_problems(20, seed=4, n_terms=6) == ArithmeticTask(n_terms=6, seed=4).make_problems(20)
    assert ArithmeticTask(seed=1).make_problems(5, seed=9) == ArithmeticTask(seed=9).make_problems(5)
    d1 = ArithmeticTask(seed=3).make_dataset(20, n_correct=2, n_wrong=3)
    d2 = ArithmeticTask(seed=3).make_dataset(20, n_correct=2, n_wrong=3)
    assert [(p, [s.text for s in ss]) for p, ss in d1] == [(p, [s.text for s in ss]) for p, ss in d2]
    d3 = ArithmeticTask(seed=4).make_dataset(20, n_correct=2, n_wrong=3)
    assert [s.text for _, ss in d1 for s in ss] != [s.text for _, ss in d3 for s in ss]
    p = a[0]
    assert corrupt(p, 1, rng=7).steps == corrupt(p, 1, rng=7).steps
    assert {tuple(corrupt(p, 1, rng=s).steps) for s in range(20)} != {tuple(corrupt(p, 1, rng=0).steps)}
    assert list(tokenizer_corpus(ArithmeticTask(seed=2), n=30)) == list(
        tokenizer_corpus(ArithmeticTask(seed=2), n=30)
    )


@pytest.mark.parametrize("operators", ["+", "-", "*", "+-", "+*", "-*", "+-*", ["*", "+"], "*, -"])
def test_operators_respected(operators):
    task = ArithmeticTask(n_terms=5, operators=operators, seed=0)
    allowed = set("".join(operators)) - {",", " "}
    problems = task.make_problems(150)
    used = {op for p in problems for op, _ in p.ops}
    assert used == allowed
    for p in problems[:30]:
        for k in range(len(p.ops)):
            assert {_parse(s)[1] for s in corrupt(p, k, rng=k).steps} <= allowed


def test_operator_validation_and_normalisation():
    assert ArithmeticTask(operators="*+").operators == "+*" == ArithmeticTask(operators=["+", "*"]).operators
    for bad in ["/", "+/", "", "x"]:
        with pytest.raises(ValueError):
            ArithmeticTask(operators=bad)
    with pytest.raises(ValueError):
        ArithmeticTask(n_terms=1)


@pytest.mark.parametrize("n_terms", [2, 3, 4, 5, 6, 7, 8])
def test_n_terms_respected(n_terms):
    task = ArithmeticTask(n_terms=n_terms, seed=n_terms)
    for p, sols in task.make_dataset(20, n_correct=1, n_wrong=2):
        assert (
            p.n_terms == n_terms
            and len(p.text.replace("+", " ").replace("-", " ").replace("*", " ").split()) == n_terms
        )
        assert all(len(s.steps) == n_terms - 1 for s in sols)


def test_unique_problems_and_impossible_request():
    problems = ArithmeticTask(seed=0).make_problems(500)
    assert len({p.text for p in problems}) == 500
    # 3 start values x 3 operands = 9 distinct problems exist
    small = ArithmeticTask(n_terms=2, operators="+", max_operand=3, seed=0)
    assert len(small.make_problems(9)) == 9
    with pytest.raises(ValueError, match="distinct"):
        small.make_problems(10)
    assert len(small.make_problems(30, unique=False)) == 30


def test_make_solutions_mix():
    rng = random.Random(0)
    problems = ArithmeticTask(n_terms=5, seed=0).make_problems(100)
    firsts = []
    for p in problems:
        sols = make_solutions(p, 3, 5, rng)
        assert len(sols) == 8 and sum(s.is_correct for s in sols) == 3
        assert all(s.text == reference_solution(p).text for s in sols if s.is_correct)
        firsts += [s.first_error for s in sols if not s.is_correct]
    counts = [firsts.count(k) for k in range(4)]
    assert min(counts) > 0.7 * len(firsts) / 4, counts  # uniform over the 4 steps
    orders = {tuple(s.is_correct for s in make_solutions(problems[0], 3, 5, rng)) for _ in range(20)}
    assert len(orders) > 1  # shuffled


# ------------------------------------------------------------------------------------- grading and parsing


def test_grade_robust_to_garbage():
    p = Problem(3, (("+", 4), ("*", 2), ("-", 5)))  # answer 9
    assert grade(p, "14-5=9. The answer is \\boxed{9}.")
    assert grade(p, "\\boxed{ 9 }") and grade(p, "\\boxed{09}")
    assert grade(p, "\\boxed{3} then \\boxed{9}") and not grade(p, "\\boxed{9} then \\boxed{3}")
    for garbage in [
        "",
        " ",
        "\n\n",
        "9",
        "the answer is 9",
        "\\boxed{}",
        "\\boxed{nine}",
        "\\boxed{9",
        "boxed 9",
        "\\boxed{{9}}",
        "\\boxed{9.5}",
        "\\boxed{-9}",
        "\\boxed{9 9}",
        "<s></s>",
        "ки шаг 結果",
        "\x00\\boxed",
    ]:
        assert grade(p, garbage) is False, garbage
    assert grade(p, "\\boxed{9}</s> junk \x00")  # trailing junk after the answer does not matter
    assert not grade(p, "14-5=9")  # a truncated sample without a stated answer is wrong by default
    assert grade(p, "14-5=9", allow_last_number=True)
    assert not grade(p, "7*2=14", allow_last_number=True)
    assert not grade(p, "no numbers", allow_last_number=True)
    assert not grade(p, [])
    assert boxed_answer("a 7-2 b") is None and boxed_answer("a 7-2 b", allow_last_number=True) == "2"
    assert boxed_answer("x -3", allow_last_number=True) == "-3"


@settings(max_examples=60, deadline=None)
@given(st.text())
def test_grade_never_raises(text):
    p = Problem(3, (("+", 4),))
    assert grade(p, text) in (True, False)
    assert grade(p, text, allow_last_number=True) in (True, False)
    steps = parse_steps(text)
    assert all(s and s == s.strip() for s in steps)
    assert locate_first_error(p, steps) in (None, -1, *range(len(steps)))
    solution_from_text(p, text)


def test_parse_steps_and_locate_first_error_on_samples():
    p = Problem(3, (("+", 4), ("*", 2), ("-", 5)))
    ref = reference_solution(p)
    assert parse_steps(ref.text + "\n\n") == ref.steps
    assert parse_steps("a\n\n b \n", separator="\n\n") == ["a", "b"]
    assert locate_first_error(p, []) is None
    assert locate_first_error(p, ref.steps[:2]) is None  # right so far, but truncated
    assert locate_first_error(p, [*ref.steps, "9+0=9"]) == 3  # a step beyond the last operation
    assert locate_first_error(p, ["3 + 4 = 7", " 7 * 2 = 14", "14 - 5 = 9. The answer is \\boxed{9}."]) == -1
    assert (
        locate_first_error(p, ["3+4=7. The answer is \\boxed{7}.", *ref.steps[1:]]) == 0
    )  # premature answer
    assert locate_first_error(p, [*ref.steps[:2], "14-5=9."]) == 2  # no boxed answer
    assert locate_first_error(p, [*ref.steps[:2], "14-5=9. The answer is \\boxed{8}."]) == 2
    assert locate_first_error(p, ["garbage", *ref.steps[1:]]) == 0
    # right answer reached through a wrong step: outcome says correct, process says step 0
    s = solution_from_text(p, "3+4=8\n8*2=14\n14-5=9. The answer is \\boxed{9}.")
    assert s.is_correct and s.first_error == 0 and not s.process_correct
    s = solution_from_text(p, "3+4=7\n7*2=14")
    assert not s.is_correct and s.first_error is None and s.final_answer is None


# -------------------------------------------------------------------------------------------------- writers


def test_writers_round_trip(tmp_path):
    data = ArithmeticTask(n_terms=5, seed=8).make_dataset(12, n_correct=2, n_wrong=3)
    # add a sampled-like solution with the right answer but a wrong step, and a truncated one
    p0 = data[0][0]
    odd = [
        solution_from_text(
            p0, reference_solution(p0).text.replace(f"={p0.totals[0]}\n", f"={p0.totals[0] + 1}\n", 1)
        ),
        solution_from_text(p0, reference_solution(p0).steps[0]),
    ]
    data[0] = (p0, [*data[0][1], *odd])
    paths = export_all(tmp_path / "out", data)
    assert {k: v.name for k, v in paths.items()} == EXPORT_FILES
    for path in paths.values():  # plain JSON lines
        assert all(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())

    rollouts = read_jsonl(paths["rollouts"])
    assert len(rollouts) == 12
    for row, (p, sols) in zip(rollouts, data, strict=True):
        assert set(row) == {"prompt", "completions", "correctness"} and row["prompt"] == format_prompt(p)
        assert row["completions"] == [s.text for s in sols]
        assert row["correctness"] == [grade(p, s.text) for s in sols] == [s.is_correct for s in sols]
        assert all(isinstance(c, bool) for c in row["correctness"])

    unpaired = read_jsonl(paths["unpaired"])
    assert len(unpaired) == sum(len(s) for _, s in data)
    assert all(set(r) == {"prompt", "completion", "label"} and isinstance(r["label"], bool) for r in unpaired)

    paired = read_jsonl(paths["paired"])
    by_prompt = {format_prompt(p): p for p, _ in data}
    distinct = [
        (set(s.text for s in ss if s.is_correct), set(s.text for s in ss if not s.is_correct))
        for _, ss in data
    ]
    assert len(paired) == sum(len(good) * len(bad) for good, bad in distinct)
    assert (
        len(distinct[0][0]) == 2 and len(distinct[0][1]) >= 2
    )  # the odd ones: one more correct, one more wrong
    for r in paired:
        assert set(r) == {"prompt", "chosen", "rejected"}
        assert grade(by_prompt[r["prompt"]], r["chosen"]) and not grade(by_prompt[r["prompt"]], r["rejected"])
    assert len({(r["prompt"], r["chosen"], r["rejected"]) for r in paired}) == len(paired)

    stepwise = read_jsonl(paths["stepwise"])
    assert len(stepwise) == len(unpaired)
    for r in stepwise:
        assert set(r) == {"prompt", "completions", "labels", "partial"} and len(r["labels"]) == len(
            r["completions"]
        )
        assert r["partial"] is False  # whole solutions
        p = by_prompt[r["prompt"]]
        if len(r["completions"]) == len(p.ops):
            first, _ = _check_steps(p, r["completions"])
            assert r["labels"] == [first == -1 or i < first for i in range(len(p.ops))]
        else:  # the truncated sample: every step it has is right
            assert r["labels"] == [True]
    labels = [tuple(r["labels"]) for r in stepwise]
    assert (
        any(all(x) for x in labels)
        and any(not any(x) for x in labels)
        and any(x[0] and not x[-1] for x in labels)
    )

    bench = read_jsonl(paths["processbench"])
    assert len(bench) == len(unpaired) - 1  # the truncated sample has no label
    for r in bench:
        assert set(r) == {"problem", "steps", "label"} and r["problem"].endswith("\n")
        assert r["label"] == _check_steps(by_prompt[r["problem"]], r["steps"])[0]
    assert {r["label"] for r in bench} == {-1, 0, 1, 2, 3}


def test_converters_single():
    p = Problem(3, (("+", 4), ("*", 2), ("-", 5)))
    good, bad = reference_solution(p), corrupt(p, 1, rng=0)
    assert to_stepwise(p, good)["labels"] == [True, True, True]
    assert to_stepwise(p, bad)["labels"] == [True, False, False]
    assert to_stepwise(p, corrupt(p, 0, rng=0))["labels"] == [False, False, False]
    assert to_processbench(p, good)["label"] == -1 and to_processbench(p, bad)["label"] == 1
    with pytest.raises(ValueError):
        to_processbench(p, Solution(["3+4=7"], None, False, None))
    assert to_rollouts(p, [good, bad.text])["correctness"] == [True, False]
    assert [r["label"] for r in to_unpaired(p, [bad, good])] == [False, True]
    assert to_paired(p, [good, good, bad, bad]) == [
        {"prompt": format_prompt(p), "chosen": good.text, "rejected": bad.text}
    ]
    assert (
        to_paired(p, [good]) == [] and len(to_paired(p, [good, bad, corrupt(p, 2, rng=0)], max_pairs=1)) == 1
    )


def test_to_paired_cap_is_a_seeded_ordered_subset():
    """Old code kept the first `max_pairs` pairs: every pair of the first correct sample, none of the others."""
    p = Problem(3, (("+", 4), ("*", 2), ("-", 1)))
    wrong = [corrupt(p, k, rng=r) for k in range(3) for r in range(3)]
    right = [
        reference_solution(p),
        Solution([*reference_solution(p).steps[:-1], "14-1=13. Done: \\boxed{13}."], "13", True, -1),
    ]
    every = to_paired(p, right + wrong)
    assert len(every) == 2 * len({w.text for w in wrong})
    draws = [to_paired(p, right + wrong, max_pairs=4, seed=s) for s in range(8)]
    for rows in draws:
        assert len(rows) == 4 and rows == sorted(rows, key=every.index)
    assert draws[0] == to_paired(p, right + wrong, max_pairs=4, seed=0)
    assert len({tuple(r["rejected"] for r in rows) for rows in draws}) > 1
    assert any({r["chosen"] for r in rows} == {right[0].text, right[1].text} for rows in draws)


def test_tokenizer_corpus_and_token_budget():
    from trl_implicit_prm.tiny import build_tokenizer

    task = ArithmeticTask(n_terms=6, seed=0)
    texts = list(tokenizer_corpus(task, n=400))
    assert len(texts) == 400 and all(t.startswith("Compute left to right: ") for t in texts)
    assert any("\\boxed{" in t for t in texts)
    tok = build_tokenizer(vocab_size=400, corpus=texts)
    for p, sols in task.make_dataset(30, n_correct=1, n_wrong=1, seed=99):
        for s in sols:
            assert len(tok(format_prompt(p) + s.text)["input_ids"]) <= 80
    # every number of 0..99 is one token, so a step costs 6 tokens (a, op, b, "=", c, separator)
    assert len(tok("57*1=57\n", add_special_tokens=False)["input_ids"]) == 6


def test_dataset_stats():
    data = ArithmeticTask(seed=0).make_dataset(10, n_correct=1, n_wrong=3)
    stats = T.dataset_stats(data)
    assert stats["problems"] == 10 and stats["solutions"] == 40 and stats["fraction_correct"] == 0.25
    assert stats["first_error"]["-1"] == 10 and sum(stats["error_kinds"].values()) == 30


def test_generate_texts_returns_in_prompt_order(tiny_dir, tokenizer):
    """Prompts are generated in order of length; each text and token count must come back to its own prompt.

    Greedy decoding of each prompt alone (no padding) is the truth: a batch sorted by length but returned in
    that order (the bug this guards against) would give prompt 0 the text of the shortest prompt.
    """
    from transformers import AutoModelForCausalLM

    from trl_implicit_prm.demo.policy import generate_texts

    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "llama").eval()
    prompts = ["a much longer prompt than the others", "hi", "a middle one", "x", "two words"]
    alone = [
        generate_texts(model, tokenizer, [p], greedy=True, max_new_tokens=6, progress=False) for p in prompts
    ]
    texts, counts = generate_texts(
        model, tokenizer, prompts, greedy=True, max_new_tokens=6, batch_size=2, progress=False
    )
    assert texts == [t[0] for t, _ in alone] and counts == [c[0] for _, c in alone]
    assert len(set(texts)) > 1  # the prompts' continuations differ, so a permutation would be caught


def test_training_rows_caps_pairs_and_step_rollouts(tmp_path):
    """Unpaired rows take every usable rollout, paired rows at most `max_pairs_per_problem` per problem, and the
    step-supervised rows only the first `step_samples_per_problem` rollouts of each problem."""
    from trl_implicit_prm.demo.pipeline import DemoConfig
    from trl_implicit_prm.demo.rows import first_rollouts, training_rows

    problems = ArithmeticTask(n_terms=4, seed=0).make_problems(3, seed=0)
    empty = Solution(["", "x"], None, False, None)
    rollouts = [
        [corrupt(p, 1, rng=0), reference_solution(p), empty, corrupt(p, 0, rng=1), corrupt(p, 2, rng=2)]
        for p in problems
    ]
    cfg = DemoConfig(max_pairs_per_problem=2, step_samples_per_problem=3, progress=False)
    stats, rows = training_rows(problems, rollouts, tmp_path, cfg)
    step_pairs = first_rollouts(problems, rollouts, cfg.step_samples_per_problem)
    assert stats["n_sampled"] == 15 and stats["n_dropped_empty"] == 3 and len(rows["unpaired"]) == 12
    assert len(rows["paired"]) == 3 * 2  # 1 correct x 3 wrong per problem, capped at 2
    assert [[s.text for s in sols] for _, sols in step_pairs] == [[r[0].text, r[1].text] for r in rollouts]
    assert [r["labels"] for r in rows["stepwise"][:2]] == [[True, False, False], [True, True, True]]
    assert [r["labels"] for r in rows["step_kto"][:2]] == [[True, False], [True, True, True]]
    assert len(rows["stepwise"]) == len(rows["step_kto"]) == 3 * 2  # the first 3 rollouts, less the empty one
    # the explicit PRMs' rollouts: the first n of each problem, usable ones only
    assert [len(sols) for _, sols in first_rollouts(problems, rollouts, 5)] == [4, 4, 4]
    assert first_rollouts(problems, [[empty]] * 3, 1) == []


def test_continuation_rows_carry_on_from_the_wrong_step():
    """A faithful MC completer's extra rows: the context ends at an injected wrong step (before the last), the
    target computes every later step from the written wrong total, and only the target is trained on (it is
    tokenized apart, as the completer meets it at generation time)."""
    from trl_implicit_prm.demo.policy import continuation_rows
    from trl_implicit_prm.tiny import build_tokenizer

    task = ArithmeticTask(n_terms=5, max_value=20, seed=0)  # the demo's range
    tok = build_tokenizer(vocab_size=400, corpus=list(tokenizer_corpus(task, n=400)))
    problems = task.make_problems(150, seed=1)
    rows = continuation_rows(tok, problems, seed=3)
    assert len(rows) == len(problems)
    positions, beyond = set(), 0
    for p, (ids, n_context) in zip(problems, rows, strict=True):
        context = tok.decode(ids[:n_context], skip_special_tokens=True)
        target = tok.decode(ids[n_context:])
        assert ids[:n_context] == tok(context)["input_ids"] and target.endswith(tok.eos_token)
        assert context.startswith(p.prompt) and target.startswith(STEP_SEPARATOR)
        written = context[len(p.prompt) :].split(STEP_SEPARATOR)
        k = len(written) - 1
        assert locate_first_error(p, written) == k and k < len(p.ops) - 1
        positions.add(k)
        steps = written + target[1 : -len(tok.eos_token)].split(STEP_SEPARATOR)
        assert len(steps) == len(p.ops) and not grade(p, STEP_SEPARATOR.join(steps))
        total = int(written[-1].split("=")[1])
        for i in range(k + 1, len(p.ops)):  # every later step from the total as written
            op, b = p.ops[i]
            assert steps[i] == format_step(total, op, b, p.apply(total, op, b), final=i == len(p.ops) - 1)
            total = p.apply(total, op, b)
            beyond += not p.in_range(total)
    assert beyond > 0  # carried on out of the task's range, where the wrong total leads
    assert positions == {0, 1, 2}  # errors at every step that has a continuation
    assert continuation_rows(tok, [Problem(3, (("+", 4),))]) == []  # one operation: nothing to continue
