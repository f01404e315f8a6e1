"""The official ProcessBench protocol: threshold tuned on gsm8k and applied to the other three subsets."""

from __future__ import annotations

import json

import pytest

from trl_implicit_prm.cli import main
from trl_implicit_prm.evaluation import evaluate_process_errors, tune_threshold
from trl_implicit_prm.evaluation.processbench import (
    SUBSETS,
    evaluate_processbench,
    load_processbench,
    markdown_table,
)
from trl_implicit_prm.inference import ProcessRewardComputer


def _record(subset, i, problem, steps, label):
    return {
        "id": f"{subset}-{i}",
        "generator": "Qwen2-7B-Instruct",
        "problem": problem,
        "steps": steps,
        "final_answer_correct": label == -1,
        "label": label,
    }


def _subset(name):
    rows = [
        ("2 + 3 * 2?", ["3 * 2 = 6.", "2 + 6 = 8. The answer is 8."], -1),
        ("2 + 3 * 2?", ["2 + 3 = 5.", "5 * 2 = 10. The answer is 10."], 0),
        ("4 - 1 + 5?", ["4 - 1 = 3.", "3 + 5 = 9. The answer is 9."], 1),
        ("4 - 1 + 5?", ["4 - 1 = 3.", "3 + 5 = 8. The answer is 8."], -1),
        (f"{name}: 7 * 3?", ["7 * 3 = 21.", "The answer is 21."], -1),
        (f"{name}: 9 - 4?", ["9 - 4 = 6.", "The answer is 6."], 0),
    ]
    return [_record(name, i, p, s, lab) for i, (p, s, lab) in enumerate(rows)]


# Hand-made scores: gsm8k's best threshold is the midpoint 0.25 of (0.2, 0.3].
SCORES = {
    "gsm8k": [[0.5, 0.4], [0.2, 0.9], [0.6, 0.1], [0.3, 0.7]],
    "math": [[0.5, 0.26], [0.1, 0.9], [0.6, 0.24], [0.9, 0.9]],
    "olympiadbench": [[0.1, 0.1], [0.05, 0.9], [0.9, 0.08], [0.1, 0.9]],
    "omnimath": [[0.9, 0.9], [0.0, 0.9], [0.9, 0.0], [0.9, 0.9]],
}
RECORDS = {name: _subset(name)[:4] for name in SUBSETS}


def test_threshold_is_tuned_on_gsm8k_and_applied_to_the_others():
    result = evaluate_processbench({n: (RECORDS[n], SCORES[n]) for n in SUBSETS})
    tau = tune_threshold(RECORDS["gsm8k"], SCORES["gsm8k"])
    assert tau == pytest.approx(0.25)
    assert result["threshold"] == tau and result["tuned_on"] == "gsm8k"
    for name in SUBSETS:
        expected = evaluate_process_errors(RECORDS[name], SCORES[name], threshold=tau)
        got = result["subsets"][name]
        assert got.threshold == tau
        assert (got.acc_erroneous, got.acc_correct) == (expected.acc_erroneous, expected.acc_correct)
        assert got.oracle == (name == "gsm8k")
    # math at τ=0.25: rec0 predicts -1 (ok), rec1 predicts 0 (ok), rec2 predicts 1 (ok), rec3 -1 (ok): F1 1.
    # olympiadbench: predictions 0, 0, 1, 0 -> erroneous 2/2, correct 0/2 -> F1 0 (its own best τ gives 1).
    # omnimath: -1 (ok), 0 (ok), 1 (ok), -1 (ok) -> 1.
    assert [result["subsets"][n].f1 for n in SUBSETS] == [1.0, 1.0, 0.0, 1.0]
    assert result["average_f1"] == pytest.approx(0.75)
    # Oracle rows: each subset's own tuned threshold, separate from the protocol's figures.
    for name in SUBSETS:
        own = evaluate_process_errors(RECORDS[name], SCORES[name])
        assert result["oracle"][name].threshold == own.threshold and result["oracle"][name].oracle
    assert result["oracle"]["olympiadbench"].f1 > result["subsets"]["olympiadbench"].f1
    table = markdown_table(result, model_name="tiny")
    lines = table.splitlines()
    assert lines[0] == "| Model | GSM8K | MATH | OlympiadBench | Omni-MATH | Avg. F1 |"
    assert lines[2] == "| tiny (τ=0.25, tuned on GSM8K) | 100.0 | 100.0 | 0.0 | 100.0 | 75.0 |"
    assert lines[3].startswith(
        "| tiny (oracle τ per subset: upper bound) | 100.0 | 100.0 | 100.0 | 100.0 | 100.0"
    )
    assert "| GSM8K | 0.25 (tuned here) |" in table and "| MATH | 0.25 |" in table
    assert "upper bound" in lines[-1]


def test_tuning_needs_gsm8k():
    with pytest.raises(ValueError, match="tunes the threshold on 'gsm8k'"):
        evaluate_processbench({"math": (RECORDS["math"], SCORES["math"])})
    fixed = evaluate_processbench({"math": (RECORDS["math"], SCORES["math"])}, threshold=0.25)
    assert fixed["tuned_on"] is None and fixed["subsets"]["math"].f1 == 1.0


def _write_subsets(folder):
    folder.mkdir()
    for name in SUBSETS:
        rows = _subset(name)
        rows.append({**rows[0], "id": f"{name}-bad", "label": 7})  # out of range: left out, reported
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_eval_processbench_command_on_a_four_subset_fixture(tiny_dir, tmp_path, capsys):
    data = _write_subsets(tmp_path / "processbench")
    out, md = tmp_path / "pb.json", tmp_path / "pb.md"
    model, ref = tiny_dir / "llama", tiny_dir / "llama-ref"
    assert (
        main(
            [
                "eval-processbench",
                "--model",
                str(model),
                "--ref-model",
                str(ref),
                "--data",
                str(data),
                "--output",
                str(out),
                "--markdown",
                str(md),
                "--model-name",
                "tiny",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "gsm8k: row 6: left out: 'label' must be -1 or a step index" in captured.err
    payload = json.loads(out.read_text())
    # Recompute the gsm8k threshold from the PRM's own step rewards.
    prc = ProcessRewardComputer.from_pretrained(model, ref_model=ref)
    records = {name: _subset(name) for name in SUBSETS}
    scores = {
        name: [r.step_rewards for r in prc.score([x["problem"] for x in recs], [x["steps"] for x in recs])]
        for name, recs in records.items()
    }
    tau = tune_threshold(records["gsm8k"], scores["gsm8k"])
    assert payload["threshold"] == pytest.approx(tau) and payload["results"]["tuned_on"] == "gsm8k"
    for name in ("math", "olympiadbench", "omnimath"):
        sub = payload["results"]["subsets"][name]
        assert sub["threshold"] == pytest.approx(tau) and sub["oracle"] is False
        expected = evaluate_process_errors(records[name], scores[name], threshold=tau)
        assert sub["predictions"] == expected.predictions
        assert payload["results"]["oracle"][name]["oracle"] is True
        assert payload["results"]["oracle"][name]["threshold"] == pytest.approx(
            evaluate_process_errors(records[name], scores[name]).threshold
        )
    assert payload["results"]["subsets"]["gsm8k"]["oracle"] is True
    assert [d["row"] for d in payload["results"]["dropped"]["omnimath"]] == [6]
    table = md.read_text()
    assert table in captured.out
    assert table.splitlines()[0] == "| Model | GSM8K | MATH | OlympiadBench | Omni-MATH | Avg. F1 |"
    assert "oracle τ per subset: upper bound" in table


def test_local_copy_needs_every_subset_file_and_the_hub_path_says_it_is_offline(tiny_dir, tmp_path, capsys):
    folder = tmp_path / "partial"
    folder.mkdir()
    (folder / "gsm8k.jsonl").write_text(json.dumps(_subset("gsm8k")[0]) + "\n")
    with pytest.raises(
        FileNotFoundError, match=r"no file for subset\(s\) \['math', 'olympiadbench', 'omnimath'\]"
    ):
        load_processbench(folder)
    with pytest.raises(ValueError, match="needs revision=<commit sha>"):
        load_processbench(None)
    args = ["eval-processbench", "--model", str(tiny_dir / "llama"), "--hub-revision", "0123abc"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE is set" in err and "Qwen/ProcessBench" in err and "--data" in err
