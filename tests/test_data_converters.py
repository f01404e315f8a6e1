"""Converters from Math-Shepherd, PRM800K, ProcessBench and rollouts files, on small files in each source format.

The fixture rows follow the datasets' published schemas (Math-Shepherd `input`/`label` with ` ки` tags,
PRM800K phase-1/phase-2 `question`/`label.steps[].completions[]`, ProcessBench `id`/`generator`/`problem`/
`steps`/`final_answer_correct`/`label`), including the awkward cases.
"""

from __future__ import annotations

import json

import pytest
from datasets import Dataset, DatasetDict

from trl_implicit_prm.cli import main
from trl_implicit_prm.data import (
    convert_math_shepherd,
    convert_prm800k,
    convert_processbench,
    convert_rollouts,
    read_source,
    validate_dataset,
)

Q1 = "Janet has 3 ducks. Each lays 2 eggs a day. How many eggs a day?"
Q2 = "What is 2 + 3 * 4?"
MATH_SHEPHERD = [
    {  # a correct solution
        "input": f"{Q1} Step 1: Each duck lays 2 eggs. ки\nStep 2: 3 * 2 = 6. The answer is: 6 ки",
        "label": f"{Q1} Step 1: Each duck lays 2 eggs. +\nStep 2: 3 * 2 = 6. The answer is: 6 +",
        "task": "GSM8K",
    },
    {  # same question, wrong at step 2; '+' inside the text must not be read as a mark
        "input": f"{Q1} Step 1: 3 + 2 = 5 eggs. ки\nStep 2: The answer is: 5 ки",
        "label": f"{Q1} Step 1: 3 + 2 = 5 eggs. -\nStep 2: The answer is: 5 -",
        "task": "GSM8K",
    },
    {  # annotation error: 'input' has 3 tags, 'label' marks 2 steps
        "input": f"{Q2} Step 1: 3 * 4 = 12. ки\nStep 2: 2 + 12 = 14. ки\nStep 3: The answer is: 14 ки",
        "label": f"{Q2} Step 1: 3 * 4 = 12. +\nStep 2: 2 + 12 = 14.\nStep 3: The answer is: 14 +",
        "task": "MATH",
    },
    {  # a second question, one step wrong in the middle
        "input": f"{Q2} Step 1: 2 + 3 = 5. ки\nStep 2: 5 * 4 = 20. ки\nStep 3: The answer is: 20 ки",
        "label": f"{Q2} Step 1: 2 + 3 = 5. -\nStep 2: 5 * 4 = 20. -\nStep 3: The answer is: 20 -",
        "task": "MATH",
    },
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_math_shepherd_to_stepwise_every_field_and_the_mismatched_row_reported():
    out = convert_math_shepherd(MATH_SHEPHERD)
    assert out.rows == [
        {
            "prompt": Q1,
            "completions": ["Step 1: Each duck lays 2 eggs.", "Step 2: 3 * 2 = 6. The answer is: 6"],
            "labels": [True, True],
        },
        {
            "prompt": Q1,
            "completions": ["Step 1: 3 + 2 = 5 eggs.", "Step 2: The answer is: 5"],
            "labels": [False, False],
        },
        {
            "prompt": Q2,
            "completions": ["Step 1: 2 + 3 = 5.", "Step 2: 5 * 4 = 20.", "Step 3: The answer is: 20"],
            "labels": [False, False, False],
        },
    ]
    assert [d.row for d in out.dropped] == [2]
    reason = out.dropped[0].reason
    assert "annotation error" in reason and "3 step tags" in reason and "step 2" in reason
    assert out.n_input == 4 and "3 of 4 rows converted" in out.summary()
    assert validate_dataset(Dataset.from_list(out.rows)) == "stepwise"


def test_math_shepherd_to_rollouts_groups_by_question_outcome_is_last_label():
    out = convert_math_shepherd(MATH_SHEPHERD, to="rollouts")
    assert out.rows == [
        {
            "prompt": Q1,
            "completions": [
                ["Step 1: Each duck lays 2 eggs.", "Step 2: 3 * 2 = 6. The answer is: 6"],
                ["Step 1: 3 + 2 = 5 eggs.", "Step 2: The answer is: 5"],
            ],
            "correctness": [True, False],
        },
        {
            "prompt": Q2,
            "completions": [["Step 1: 2 + 3 = 5.", "Step 2: 5 * 4 = 20.", "Step 3: The answer is: 20"]],
            "correctness": [False],
        },
    ]
    assert [d.row for d in out.dropped] == [2]
    assert validate_dataset(Dataset.from_list(out.rows)) == "rollouts"


def test_math_shepherd_rows_without_step_one_or_with_trailing_text_are_reported():
    rows = [
        {"input": "Q? First: x ки", "label": "Q? First: x +"},
        {"input": "Q? Step 1: x ки\nleft over", "label": "Q? Step 1: x +\nleft over"},
        {"input": "Q? Step 1: x", "label": "Q? Step 1: x"},
        {"input": 3, "label": "x"},
    ]
    out = convert_math_shepherd(rows)
    assert out.rows == []
    reasons = [d.reason for d in out.dropped]
    assert "no 'Step 1:'" in reasons[0]
    assert "text after the last step tag" in reasons[1]
    assert "no step tag" in reasons[2]
    assert "must be strings" in reasons[3]


def _prm_step(completions, chosen=None, human=None):
    return {"completions": completions, "human_completion": human, "chosen_completion": chosen}


def _c(text, rating):
    return {"text": text, "rating": rating, "flagged": False}


PRM800K = [
    {  # phase 2, a neutral step then a correct one: finish_reason solution
        "labeler": "a",
        "timestamp": "2022-07-17T16:56:51",
        "generation": 9,
        "is_quality_control_question": False,
        "is_initial_screening_question": False,
        "question": {
            "problem": "How many vertical asymptotes does y = 2/(x^2+x-6) have?",
            "ground_truth_answer": "2",
        },
        "label": {
            "steps": [
                _prm_step([_c("Let's factor the denominator.", 0)], chosen=0),
                _prm_step([_c("x^2+x-6 = (x+3)(x-2), so there are 2 asymptotes.", 1)], chosen=0),
                _prm_step([_c("# Answer\n\n2", 1)], chosen=0),
            ],
            "total_time": 1000,
            "finish_reason": "solution",
        },
    },
    {  # phase 2, the labeller stopped at a wrong step (no chosen completion): found_error
        "question": {"problem": "What is 7 * 8?", "ground_truth_answer": "56"},
        "label": {
            "steps": [
                _prm_step([_c("7 * 8 = 54.", -1)]),
            ],
            "finish_reason": "found_error",
        },
    },
    {  # finish_reason other than solution / found_error: left out
        "question": {"problem": "Hard problem", "ground_truth_answer": "?"},
        "label": {"steps": [_prm_step([_c("I do not know.", 0)], chosen=0)], "finish_reason": "give_up"},
    },
    {  # phase 1: several rated alternatives per step, a chosen one, then a human-written step
        "question": {"problem": "Solve x + 1 = 3.", "ground_truth_answer": "2"},
        "label": {
            "steps": [
                _prm_step([_c("x = 4.", -1), _c("Subtract 1 from both sides.", 1), _c("Hmm.", 0)], chosen=1),
                _prm_step([_c("x = 1.", -1)], human={"text": "So x = 2.", "rating": None, "source": "human"}),
            ],
            "finish_reason": "solution",
        },
    },
    {  # a step rated null: left out
        "question": {"problem": "p", "ground_truth_answer": "1"},
        "label": {"steps": [_prm_step([_c("s", None)], chosen=0)], "finish_reason": "solution"},
    },
]


@pytest.mark.parametrize("neutral, expected", [("positive", True), ("negative", False)])
def test_prm800k_to_stepwise_neutral_is_the_callers_choice(neutral, expected):
    out = convert_prm800k(PRM800K, neutral=neutral)
    assert out.rows == [
        {
            "prompt": "How many vertical asymptotes does y = 2/(x^2+x-6) have?",
            "completions": [
                "Let's factor the denominator.",
                "x^2+x-6 = (x+3)(x-2), so there are 2 asymptotes.",
                "# Answer\n\n2",
            ],
            "labels": [expected, True, True],
            "partial": False,
        },
        # the labeller stopped at the wrong step; the solution went on: no EOS after it when tokenized
        {"prompt": "What is 7 * 8?", "completions": ["7 * 8 = 54."], "labels": [False], "partial": True},
        {
            "prompt": "Solve x + 1 = 3.",
            "completions": ["Subtract 1 from both sides.", "So x = 2."],
            "labels": [True, True],
            "partial": False,
        },
    ]
    assert [d.row for d in out.dropped] == [2, 4]
    assert "finish_reason is 'give_up'" in out.dropped[0].reason
    assert "rating must be -1, 0 or 1, got None" in out.dropped[1].reason


def test_prm800k_requires_the_neutral_choice(tmp_path, capsys):
    with pytest.raises(ValueError, match="neutral must be"):
        convert_prm800k(PRM800K, neutral=None)
    source = _jsonl(tmp_path / "phase2_train.jsonl", PRM800K)
    assert main(["convert", "--from", "prm800k", str(source), str(tmp_path / "out.jsonl")]) == 2
    assert "--neutral is required" in capsys.readouterr().err


PROCESSBENCH = [
    {
        "id": "gsm8k-0",
        "generator": "Qwen2-7B-Instruct",
        "problem": "2 + 3 * 4?",
        "steps": ["3 * 4 = 12.", "2 + 12 = 15.", "The answer is 15."],
        "final_answer_correct": False,
        "label": 1,
    },
    {
        "id": "gsm8k-1",
        "generator": "Llama-3.1-8B-Instruct",
        "problem": "1 + 1?",
        "steps": ["1 + 1 = 2.", "The answer is 2."],
        "final_answer_correct": True,
        "label": -1,
    },
    {
        "id": "gsm8k-2",
        "generator": "Qwen2-7B-Instruct",
        "problem": "5 - 2?",
        "steps": ["5 - 2 = 4.", "The answer is 4."],
        "final_answer_correct": False,
        "label": 0,
    },
    {
        "id": "gsm8k-3",
        "generator": "g",
        "problem": "p",
        "steps": ["a"],
        "final_answer_correct": False,
        "label": 1,
    },
    {
        "id": "gsm8k-4",
        "generator": "g",
        "problem": "p",
        "steps": ["a"],
        "final_answer_correct": False,
        "label": -1,
    },
]


def test_processbench_to_records_and_to_stepwise():
    records = convert_processbench(PROCESSBENCH)
    assert records.rows == PROCESSBENCH[:3]
    assert [d.row for d in records.dropped] == [3, 4]
    assert "'label' must be -1 or a step index in [0, 1), got 1" in records.dropped[0].reason
    assert "final_answer_correct is false" in records.dropped[1].reason
    stepwise = convert_processbench(PROCESSBENCH, to="stepwise")
    assert stepwise.rows == [
        {
            "prompt": "2 + 3 * 4?",
            "completions": ["3 * 4 = 12.", "2 + 12 = 15.", "The answer is 15."],
            "labels": [True, False, False],
            "id": "gsm8k-0",
        },
        {
            "prompt": "1 + 1?",
            "completions": ["1 + 1 = 2.", "The answer is 2."],
            "labels": [True, True],
            "id": "gsm8k-1",
        },
        {
            "prompt": "5 - 2?",
            "completions": ["5 - 2 = 4.", "The answer is 4."],
            "labels": [False, False],
            "id": "gsm8k-2",
        },
    ]
    assert validate_dataset(Dataset.from_list(stepwise.rows)) == "stepwise"


ROLLOUTS = [
    {"question": "2 + 3?", "responses": ["5.", "6."], "correct": [1, 0], "extra": "kept out"},
    {"question": "4 * 4?", "responses": ["16.", "16!", "20."], "correct": [1, 1, 0], "extra": "x"},
    {"question": "9 - 1?", "responses": ["8.", ""], "correct": [1, 0], "extra": "x"},  # an empty response
]


@pytest.mark.parametrize("kind", ["jsonl", "json", "parquet", "datasets"])
def test_rollouts_files_in_every_container(tmp_path, kind):
    if kind == "jsonl":
        path = _jsonl(tmp_path / "r.jsonl", ROLLOUTS)
    elif kind == "json":
        path = tmp_path / "r.json"
        path.write_text(json.dumps(ROLLOUTS))
    elif kind == "parquet":
        path = tmp_path / "r.parquet"
        Dataset.from_list(ROLLOUTS).to_parquet(str(path))
    else:
        path = tmp_path / "r_ds"
        DatasetDict({"train": Dataset.from_list(ROLLOUTS)}).save_to_disk(str(path))
    rows = read_source(path, split="train" if kind == "datasets" else None)
    out = convert_rollouts(
        rows, prompt_column="question", completions_column="responses", correctness_column="correct"
    )
    assert out.rows == [
        {"prompt": "2 + 3?", "completions": ["5.", "6."], "correctness": [1.0, 0.0]},
        {"prompt": "4 * 4?", "completions": ["16.", "16!", "20."], "correctness": [1.0, 1.0, 0.0]},
    ]
    assert [d.row for d in out.dropped] == [2]
    assert "completions" in out.dropped[0].reason
    assert convert_rollouts(rows).dropped[0].reason.startswith("missing column(s) ['prompt', 'completions'")


def test_read_source_datasetdict_needs_a_split(tmp_path):
    path = tmp_path / "ds"
    DatasetDict({"train": Dataset.from_list(ROLLOUTS)}).save_to_disk(str(path))
    with pytest.raises(ValueError, match=r"holds the splits \['train'\]: pass split="):
        read_source(path)


def test_convert_command_writes_rows_and_the_dropped_report(tmp_path, capsys):
    source = _jsonl(tmp_path / "math_shepherd.jsonl", MATH_SHEPHERD)
    out, dropped = tmp_path / "out.jsonl", tmp_path / "dropped.jsonl"
    assert main(["convert", "--from", "math-shepherd", str(source), str(out), "--dropped", str(dropped)]) == 0
    captured = capsys.readouterr()
    assert f"{source}: row 2: left out: annotation error" in captured.err
    assert "3 of 4 rows converted" in captured.out
    assert [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == (
        convert_math_shepherd(MATH_SHEPHERD).rows
    )
    assert [json.loads(line)["row"] for line in dropped.read_text().splitlines()] == [2]
    assert (
        main(
            [
                "convert",
                "--from",
                "prm800k",
                "--neutral",
                "negative",
                str(_jsonl(tmp_path / "p.jsonl", PRM800K)),
                str(tmp_path / "p_out.jsonl"),
            ]
        )
        == 0
    )
    assert main(["convert", "--from", "processbench", "--to", "rollouts", str(source), str(out)]) == 2
    assert "processbench converts to records or stepwise" in capsys.readouterr().err
