"""Format detection and validation: every bad input names the column, the row, what was found and expected."""

from __future__ import annotations

import math

import numpy as np
import pytest
from datasets import Dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from trl_implicit_prm.data import DataFormatError, detect_format, split_steps, validate_dataset, validate_row

CHAT = [{"role": "user", "content": "What is 2+3?"}]
GOOD = {
    "paired": {"prompt": "2+3=", "chosen": "Add.\n\n5", "rejected": ["Sub.", "1"]},
    "unpaired": {"prompt": CHAT, "completion": [{"role": "assistant", "content": "5"}], "label": 0.7},
    "rollouts": {"prompt": "2+3=", "completions": [["5"], ["Add.", "5"]], "correctness": [1.0, 0.0]},
    "stepwise": {"prompt": CHAT, "completions": ["Add.", "5"], "labels": [True, False]},
}


@pytest.mark.parametrize("kind", list(GOOD))
def test_detect_and_validate_each_kind(kind):
    row = GOOD[kind]
    assert detect_format(row) == kind
    assert detect_format(list(row)) == kind
    assert detect_format({**row, "id": 3}) == kind  # extra columns are fine
    validate_row(row, kind, 0)
    assert validate_dataset(Dataset.from_list([row, row])) == kind
    assert validate_dataset([row], kind=kind) == kind


def test_rollouts_and_stepwise_are_told_apart_and_ambiguity_is_an_error():
    assert detect_format(["prompt", "completions", "correctness"]) == "rollouts"
    assert detect_format(["prompt", "completions", "labels"]) == "stepwise"
    with pytest.raises(DataFormatError, match=r"match several dataset formats \(rollouts, stepwise\).*kind="):
        detect_format(["prompt", "completions", "correctness", "labels"])


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        # 'labels' for 'label' and 'completion' for 'completions': both kinds are as close, both are suggested.
        (
            ["prompt", "completion", "labels"],
            [
                "unpaired (missing column 'label'; found 'labels', did you mean 'label'?)",
                "stepwise (missing column 'completions'; found 'completion', did you mean 'completions'?)",
            ],
        ),
        (
            ["prompt", "chosen", "rejectd"],
            ["paired (missing column 'rejected'; found 'rejectd', did you mean"],
        ),
        (["prompt", "chosen"], ["paired (missing column 'rejected')"]),
        (["question", "answer"], ["missing column 'prompt'"]),
    ],
)
def test_missing_or_misspelled_columns(columns, expected):
    with pytest.raises(DataFormatError) as info:
        detect_format(columns)
    message = str(info.value)
    for part in expected:
        assert part in message
    assert (
        "Accepted kinds and their columns: paired: prompt, chosen, rejected; unpaired: prompt, completion, label;"
        in (message)
    )


def test_missing_column_for_a_given_kind():
    with pytest.raises(DataFormatError, match=r"row 4: .*unpaired \(missing column 'label'; found 'labels'"):
        validate_row({"prompt": "p", "completion": "c", "labels": 1}, "unpaired", 4)
    ds = Dataset.from_dict({"prompt": ["p"], "completion": ["c"]})
    with pytest.raises(DataFormatError, match=r"missing column 'label'"):
        validate_dataset(ds, kind="unpaired")
    with pytest.raises(ValueError, match="kind must be one of"):
        validate_row(GOOD["paired"], "pairs")


@pytest.mark.parametrize(
    "label", [True, False, 0, 1, 0.0, 1.0, 0.25, np.float32(0.5), np.bool_(True), np.int64(1)]
)
def test_accepted_labels(label):
    validate_row({"prompt": "p", "completion": "c", "label": label}, "unpaired", 0)


@pytest.mark.parametrize(
    ("label", "found"),
    [
        ("yes", "'yes' (str)"),
        (1.5, "1.5 (float)"),
        (-0.1, "-0.1 (float)"),
        (2, "2 (int)"),
        (math.nan, "nan (float)"),
        (None, "None (NoneType)"),
        ([1], "[1] (list)"),
    ],
)
def test_rejected_labels(label, found):
    with pytest.raises(DataFormatError) as info:
        validate_row({"prompt": "p", "completion": "c", "label": label}, "unpaired", 3)
    assert str(info.value) == f"column 'label' row 3: expected bool, 0/1 or a float in [0, 1], got {found}"


def test_rejected_labels_inside_lists():
    row = {"prompt": "p", "completions": ["a", "b"], "correctness": [True, "no"]}
    with pytest.raises(
        DataFormatError, match=r"column 'correctness' row 5, item 1: expected bool, .* got 'no'"
    ):
        validate_row(row, "rollouts", 5)
    row = {"prompt": "p", "completions": ["a", "b"], "labels": [1, 7]}
    with pytest.raises(DataFormatError, match=r"column 'labels' row 0, item 1: .* got 7 \(int\)"):
        validate_row(row, "stepwise", 0)


def test_length_mismatches():
    with pytest.raises(DataFormatError) as info:
        validate_row({"prompt": "p", "completions": ["a", "b", "c"], "labels": [True, False]}, "stepwise", 2)
    assert str(info.value) == (
        "column 'labels' row 2: expected one label per step of 'completions' (3 steps), got 2 labels"
    )
    with pytest.raises(
        DataFormatError, match=r"column 'correctness' row 1: .*\(2 completions\), got 1 labels"
    ):
        validate_row({"prompt": "p", "completions": ["a", "b"], "correctness": [True]}, "rollouts", 1)


@pytest.mark.parametrize(
    ("row", "kind", "message"),
    [
        (
            {"prompt": "p", "completion": "", "label": 1},
            "unpaired",
            "column 'completion' row 0: expected a non-empty completion, got '' (empty string)",
        ),
        (
            {"prompt": "p", "completion": " \n\n ", "label": 1},
            "unpaired",
            "column 'completion' row 0: expected a non-empty completion, got ' \\n\\n ' (whitespace only)",
        ),
        (
            {"prompt": "p", "chosen": ["a", ""], "rejected": "b"},
            "paired",
            "column 'chosen' row 0, step 1: expected a step with a non-whitespace character, got '' (empty string)",
        ),
        (
            {"prompt": "p", "completions": ["a", " \n"], "labels": [1, 1]},
            "stepwise",
            "column 'completions' row 0, step 1: expected a step with a non-whitespace character, got ' \\n' "
            "(whitespace only)",
        ),
        (
            {"prompt": "p", "completions": ["a", ["b", "\n\n"]], "correctness": [1, 0]},
            "rollouts",
            "column 'completions' row 0, item 1, step 1: expected a step with a non-whitespace character",
        ),
        (
            {"prompt": "p", "completions": [], "labels": []},
            "stepwise",
            "column 'completions' row 0: expected a non-empty list of step strings, got [] (list)",
        ),
        (
            {"prompt": "p", "completion": 5, "label": 1},
            "unpaired",
            "column 'completion' row 0: expected a non-empty string, a list of step strings, or one assistant message",
        ),
        (
            {"prompt": "p", "completion": [{"role": "user", "content": "x"}], "label": 1},
            "unpaired",
            "column 'completion' row 0: expected one assistant message [{'role': 'assistant', 'content': str}], got",
        ),
        (
            {"prompt": "p", "completion": [{"role": "assistant", "content": ""}], "label": 1},
            "unpaired",
            "column 'completion' row 0: expected a non-empty assistant message content, got ''",
        ),
        (
            {"prompt": 3, "completion": "c", "label": 1},
            "unpaired",
            "column 'prompt' row 0: expected a string or a list of chat messages",
        ),
        (
            {"prompt": [{"role": "user"}], "completion": "c", "label": 1},
            "unpaired",
            "column 'prompt' row 0, message 0: expected {'role': str, 'content': str}, got {'role': 'user'} (dict)",
        ),
        (
            {"prompt": "p", "completions": "abc", "correctness": [1]},
            "rollouts",
            "column 'completions' row 0: expected a non-empty list of completions, got 'abc' (str)",
        ),
    ],
)
def test_bad_values_name_the_column(row, kind, message):
    with pytest.raises(DataFormatError) as info:
        validate_row(row, kind, 0)
    assert str(info.value).startswith(message)


def test_validate_dataset_reports_the_bad_row():
    rows = [{"prompt": "p", "completion": "c", "label": 1.0}] * 5
    rows[3] = {"prompt": "p", "completion": "c", "label": 1.2}
    with pytest.raises(DataFormatError, match=r"column 'label' row 3: "):
        validate_dataset(Dataset.from_list(rows), batch_size=2)
    with pytest.raises(DataFormatError, match=r"column 'label' row 3: "):
        validate_dataset(rows)


def test_step_separator_changes_what_is_empty():
    row = {"prompt": "p", "completion": "\n", "label": 1}
    with pytest.raises(DataFormatError, match="whitespace only"):
        validate_row(row, "unpaired", 0, step_separator="\n")
    with pytest.raises(ValueError, match="step_separator must be a non-empty string"):
        split_steps("abc", "")


def test_split_steps_examples():
    assert split_steps("A.\n\nB.") == ["A.", "B."]
    assert split_steps("A.\n\n\n\nB.\n\n") == ["A.\n\n", "B.\n\n"]
    assert split_steps("\n\n A.") == ["\n\n A."]
    assert split_steps("A. ки\nB. ки\n", " ки\n") == ["A.", "B. ки\n"]
    assert split_steps(" \n\n ") == []


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    text=st.text(alphabet=st.sampled_from(["a", " ", "\n", ".", "é", "к"]), max_size=20),
    sep=st.sampled_from(["\n\n", "\n", " ки\n", "."]),
)
def test_split_steps_keeps_the_text(text, sep):
    steps = split_steps(text, sep)
    assert all(step.strip() for step in steps)
    assert len(steps) == len([piece for piece in text.split(sep) if piece.strip()])
    if steps:  # [] when nothing but whitespace and separators
        assert sep.join(steps) == text


def test_partial_stepwise_row_is_tokenized_as_inside_the_whole_response(tokenizer):
    """A row cut at its first wrong step trains that step on the tokens a scorer reads for it in the whole
    response (separator after it, no EOS); before the `partial` column, it ended with EOS.
    """
    from trl_implicit_prm.data import tokenize_dataset, tokenize_example

    prompt, steps = "Q: 2+3*2?\n", ["2+3=6", "6*2=12. The answer is 12."]
    whole = tokenize_example(tokenizer, prompt, steps, step_separator="\n", append_eos=True)
    first_step = whole["step_index"].index(1)  # tokens through step 0, its separator included
    rows = [
        {"prompt": prompt, "completions": steps[:1], "labels": [False], "partial": True},
        {"prompt": prompt, "completions": steps[:1], "labels": [False], "partial": False},
    ]
    out = tokenize_dataset(Dataset.from_list(rows), tokenizer, step_separator="\n", append_eos=True)
    assert "partial" not in out.column_names
    assert out[0]["input_ids"] == whole["input_ids"][:first_step]
    assert out[0]["step_index"] == whole["step_index"][:first_step]
    assert (
        out[0]["input_ids"][-1] != tokenizer.eos_token_id
        and out[1]["input_ids"][-1] == tokenizer.eos_token_id
    )
    one = tokenize_example(tokenizer, prompt, steps[:1], step_separator="\n", append_eos=True, partial=True)
    assert one["input_ids"] == out[0]["input_ids"]  # the one-row path agrees
    # An assistant message cut the same way ends with the separator, not with the template's end of turn.
    chat = [{"role": "user", "content": prompt}]
    whole = tokenize_example(
        tokenizer, chat, [{"role": "assistant", "content": "\n".join(steps)}], step_separator="\n"
    )
    cut = tokenize_example(
        tokenizer, chat, [{"role": "assistant", "content": steps[0]}], step_separator="\n", partial=True
    )
    first_step = whole["step_index"].index(1)
    assert cut["input_ids"] == whole["input_ids"][:first_step]
    assert cut["step_index"] == whole["step_index"][:first_step]
    bad = [{**rows[0], "partial": "yes"}]
    with pytest.raises(DataFormatError, match=r"column 'partial' row 0: expected a bool"):
        tokenize_dataset(Dataset.from_list(bad), tokenizer, step_separator="\n")
    with pytest.raises(DataFormatError, match=r"column 'partial' row 0"):
        validate_dataset(Dataset.from_list(bad))
