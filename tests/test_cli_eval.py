"""`trl-implicit-prm eval-steps` and `eval-bon` end to end on a tiny checkpoint."""

from __future__ import annotations

import json

import pytest
from helpers import STEP_RECORDS as RECORDS
from helpers import eval_steps_argv, library_step_rewards
from helpers import write_jsonl as _write

from trl_implicit_prm.cli import main
from trl_implicit_prm.evaluation import evaluate_process_errors, file_sha256
from trl_implicit_prm.inference import ProcessRewardComputer


def test_eval_steps_reports_skipped_lines_and_matches_the_library(tiny_dir, tmp_path, capsys):
    val = _write(tmp_path / "val.jsonl", RECORDS)
    test = _write(
        tmp_path / "test.jsonl",
        [
            *RECORDS[::-1],
            {"problem": "x", "steps": ["a"], "label": 5},  # line 5: label out of range
            {"problem": "x", "steps": "not a list", "label": -1},  # line 6: steps not a list
            "{not json",  # line 7
        ],
    )
    out = tmp_path / "steps.json"
    args = eval_steps_argv(tiny_dir, [val, test], out, "--plot", str(tmp_path / "f1.png"))
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "oracle threshold" in printed and "skipped rows 3" in printed
    result = json.loads(out.read_text())
    assert result["skipped"]["count"] == 3
    assert [(r["file"], r["line"]) for r in result["skipped"]["rows"]] == [
        (str(test), 5),
        (str(test), 6),
        (str(test), 7),
    ]
    assert [f["sha256"] for f in result["data_files"]] == [file_sha256(val), file_sha256(test)]
    assert result["model"] == str(tiny_dir / "llama")
    # The figures are those of the library functions on the same scores.
    scores = library_step_rewards(tiny_dir, RECORDS)
    tuned = evaluate_process_errors(RECORDS, scores)
    assert result["results"]["splits"]["val"]["f1"] == pytest.approx(tuned.f1)
    assert result["threshold"] == pytest.approx(tuned.threshold)
    held_out = evaluate_process_errors(RECORDS[::-1], scores[::-1], threshold=tuned.threshold)
    assert result["results"]["splits"]["test"]["f1"] == pytest.approx(held_out.f1)
    assert (tmp_path / "f1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_bon_scores_each_candidate_and_writes_curve(tiny_dir, tmp_path, capsys):
    problems = [
        {
            "problem": "2+3?\n",
            "reference": "5",
            "candidates": [
                {"response": ["2+3=5", "The answer is \\boxed{5}."]},
                {"response": "2+3=6\n\nThe answer is \\boxed{6}."},
                {"response": ["2+3=5", "So \\boxed{5}."]},
                {"response": ["2+3=4", "So \\boxed{4}."]},
            ],
        },
        {
            "problem": "1+1?\n",
            "answer": "2",
            "candidates": ["1+1=2\n\nThe answer is \\boxed{2}.", "1+1=3\n\nThe answer is \\boxed{3}."],
        },
        {"problem": "no reference", "candidates": ["x"]},  # line 3: missing reference answer
    ]
    data = _write(tmp_path / "cands.jsonl", problems)
    out = tmp_path / "bon.json"
    assert (
        main(
            [
                "eval-bon",
                "--model",
                str(tiny_dir / "gpt2"),
                "--ref-model",
                str(tiny_dir / "gpt2-ref"),
                "--data",
                str(data),
                "--output",
                str(out),
                "--plot",
                str(tmp_path / "bon.png"),
                "--aggregations",
                "min",
                "sum",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "prm:min" in printed and "weighted:sum" in printed and "majority" in printed
    result = json.loads(out.read_text())
    curve = result["results"]
    assert curve["ns"] == [1, 2, 4] and curve["n_problems"] == 2
    # pass@N: problem 1 has a correct first candidate; problem 2 too.
    assert curve["pass_at_n"] == [1.0, 1.0, 1.0]
    assert result["skipped"]["count"] == 1 and result["skipped"]["rows"][0]["line"] == 3
    assert (tmp_path / "bon.png").stat().st_size > 1000


def test_eval_commands_refuse_missing_files(tiny_dir, tmp_path, capsys):
    assert main(["eval-bon", "--model", str(tiny_dir / "gpt2"), "--data", str(tmp_path / "nope.jsonl")]) == 2
    assert (
        main(["eval-steps", "--model", str(tiny_dir / "gpt2"), "--data", str(tmp_path / "nope.jsonl")]) == 2
    )
    assert "no such file" in capsys.readouterr().err


def test_prm_scores_give_unscorable_candidates_minus_infinity(tiny_dir):
    from trl_implicit_prm.evaluation.prm_scores import scorable, score_candidates, score_process_records

    assert scorable("2+2=4") and scorable(["a", "b"]) and scorable([{"role": "assistant", "content": "x"}])
    assert not scorable("") and not scorable(["a", "  "]) and not scorable([])
    prc = ProcessRewardComputer.from_pretrained(tiny_dir / "qwen2", ref_model=tiny_dir / "qwen2-ref")
    problems = [
        {
            "problem": "2+2?\n",
            "candidates": [
                {"response": ["2+2=4", "So 4."]},
                {"response": ""},
                {"response": "2+2=5\n\nSo 5."},
            ],
        }
    ]
    scores = score_candidates(prc, problems, ["min", "sum"])
    alone = prc.score(["2+2?\n", "2+2?\n"], [["2+2=4", "So 4."], "2+2=5\n\nSo 5."])
    assert scores["min"][0][1] == float("-inf") and scores["sum"][0][1] == float("-inf")
    assert scores["min"][0][0] == pytest.approx(alone[0].aggregate("min"))
    assert scores["sum"][0][2] == pytest.approx(alone[1].outcome_reward)
    records = [
        {"problem": "2+2?\n", "steps": ["2+2=4", "So 4."], "label": -1},
        {"problem": "x\n", "steps": [], "label": -1},
    ]
    step = score_process_records(prc, records)
    assert step[0] == pytest.approx(alone[0].step_rewards) and step[1] == []
    sig = score_process_records(prc, records, how="q-sigmoid")
    assert all(0.0 < x < 1.0 for x in sig[0]) and sig[1] == []
