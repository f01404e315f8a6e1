"""ImplicitPRMCollator: exact tensors on hand-built examples."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from trl_implicit_prm.data import ImplicitPRMCollator, tokenize_dataset

PAD = 9


def _unpaired():
    return [
        {
            "input_ids": [1, 2, 3, 4],
            "completion_mask": [0, 1, 1, 1],
            "step_index": [-1, 0, 0, 1],
            "num_steps": 2,
            "num_truncated_steps": 0,
            "label": True,
            "prompt": "ignored",
        },
        {
            "input_ids": [1, 5],
            "completion_mask": [0, 1],
            "step_index": [-1, 0],
            "num_steps": 1,
            "num_truncated_steps": 0,
            "label": 0.25,
        },
    ]


def test_unpaired_right_padding_exact():
    batch = ImplicitPRMCollator(pad_token_id=PAD)(_unpaired())
    assert sorted(batch) == [
        "attention_mask",
        "completion_mask",
        "input_ids",
        "label",
        "num_steps",
        "step_index",
    ]
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4], [1, 5, PAD, PAD]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["completion_mask"].tolist() == [[0, 1, 1, 1], [0, 1, 0, 0]]
    assert batch["step_index"].tolist() == [[-1, 0, 0, 1], [-1, 0, -1, -1]]
    assert batch["num_steps"].tolist() == [2, 1]
    assert batch["label"].tolist() == [1.0, 0.25]
    for key in ("input_ids", "attention_mask", "completion_mask", "step_index", "num_steps"):
        assert batch[key].dtype == torch.long
    assert batch["label"].dtype == torch.float32


def test_left_padding_and_multiple():
    batch = ImplicitPRMCollator(pad_token_id=PAD, padding_side="left", pad_to_multiple_of=3)(_unpaired())
    assert batch["input_ids"].tolist() == [[PAD, PAD, 1, 2, 3, 4], [PAD, PAD, PAD, PAD, 1, 5]]
    assert batch["attention_mask"].tolist() == [[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1]]
    assert batch["completion_mask"].tolist() == [[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 1]]
    assert batch["step_index"].tolist() == [[-1, -1, -1, 0, 0, 1], [-1, -1, -1, -1, -1, 0]]
    right = ImplicitPRMCollator(pad_token_id=PAD, pad_to_multiple_of=4)(_unpaired())
    assert right["input_ids"].shape == (2, 4)
    assert ImplicitPRMCollator(pad_token_id=PAD, pad_to_multiple_of=8)(_unpaired())["input_ids"].shape == (
        2,
        8,
    )


def _paired():
    return [
        {
            "chosen_input_ids": [1, 2, 3],
            "chosen_completion_mask": [0, 1, 1],
            "chosen_step_index": [-1, 0, 1],
            "chosen_num_steps": 2,
            "rejected_input_ids": [1, 4],
            "rejected_completion_mask": [0, 1],
            "rejected_step_index": [-1, 0],
            "rejected_num_steps": 1,
            "ref_chosen_step_logps": [-1.0, -0.5],
            "ref_rejected_step_logps": [-2.5],
        },
        {
            "chosen_input_ids": [1, 6],
            "chosen_completion_mask": [0, 1],
            "chosen_step_index": [-1, 0],
            "chosen_num_steps": 1,
            "rejected_input_ids": [1, 7, 8, 8],
            "rejected_completion_mask": [0, 1, 1, 1],
            "rejected_step_index": [-1, 0, 1, 2],
            "rejected_num_steps": 3,
            "ref_chosen_step_logps": [-3.0],
            "ref_rejected_step_logps": [-1.0, -1.0, -2.0],
        },
    ]


def test_paired_stacks_chosen_then_rejected():
    batch = ImplicitPRMCollator(pad_token_id=PAD)(_paired())
    assert sorted(batch) == [
        "attention_mask",
        "completion_mask",
        "input_ids",
        "num_steps",
        "ref_step_logps",
        "step_index",
    ]
    assert batch["input_ids"].tolist() == [[1, 2, 3, PAD], [1, 6, PAD, PAD], [1, 4, PAD, PAD], [1, 7, 8, 8]]
    assert batch["step_index"].tolist() == [[-1, 0, 1, -1], [-1, 0, -1, -1], [-1, 0, -1, -1], [-1, 0, 1, 2]]
    assert batch["num_steps"].tolist() == [2, 1, 1, 3]
    assert batch["ref_step_logps"].tolist() == [
        [-1.0, -0.5, 0.0],
        [-3.0, 0.0, 0.0],
        [-2.5, 0.0, 0.0],
        [-1.0, -1.0, -2.0],
    ]
    assert batch["ref_step_logps"].dtype == torch.float64  # the rewards dtype policy: float64 sums


def test_stepwise_labels_and_mask():
    examples = [
        {
            "input_ids": [1, 2, 3],
            "completion_mask": [0, 1, 1],
            "step_index": [-1, 0, 1],
            "num_steps": 2,
            "label": 0.0,
            "step_labels": [1.0, 0.0],
            "ref_step_logps": [-0.25, -0.75],
        },
        {
            "input_ids": [1, 4, 5, 6],
            "completion_mask": [0, 1, 1, 1],
            "step_index": [-1, 0, 1, 2],
            "num_steps": 3,
            "label": 1.0,
            "step_labels": [True, True, True],
            "ref_step_logps": [-1.0, -0.5, -0.5],
        },
    ]
    batch = ImplicitPRMCollator(pad_token_id=PAD)(examples)
    assert batch["step_labels"].tolist() == [[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    assert batch["step_label_mask"].tolist() == [[True, True, False], [True, True, True]]
    assert batch["step_label_mask"].dtype == torch.bool and batch["step_labels"].dtype == torch.float32
    assert batch["ref_step_logps"].tolist() == [[-0.25, -0.75, 0.0], [-1.0, -0.5, -0.5]]
    assert batch["label"].tolist() == [0.0, 1.0]


def test_errors():
    collate = ImplicitPRMCollator(pad_token_id=PAD)
    with pytest.raises(ValueError, match=r"\['ref_logps'\]: per-response reference log-prob sums"):
        collate([{**_unpaired()[0], "ref_logps": -1.0}])  # was passed through and silently ignored
    with pytest.raises(ValueError, match="ref_chosen_step_logps and ref_rejected_step_logps"):
        collate([{**_paired()[0], "ref_chosen_logps": -1.5, "ref_rejected_logps": -2.5}])
    with pytest.raises(ValueError, match="examples mix kinds: example 0 is unpaired, example 1 is paired"):
        collate([_unpaired()[0], _paired()[0]])
    with pytest.raises(ValueError, match=r"example 0 has none of the keys 'input_ids'.*tokenize_dataset"):
        collate([{"prompt": "p", "completion": "c"}])
    bad = dict(_paired()[1])
    del bad["rejected_step_index"]
    with pytest.raises(
        ValueError, match=r"example 1 \(paired\) lacks the key\(s\) \['rejected_step_index'\]"
    ):
        collate([_paired()[0], bad])
    with pytest.raises(ValueError, match=r"example 0 \(stepwise\) lacks the key\(s\) \['step_labels'\]"):
        ImplicitPRMCollator(pad_token_id=PAD, kind="stepwise")(_unpaired())
    with pytest.raises(ValueError, match=r"row 1: 'step_index' has 3 entries but 'input_ids' has 2"):
        collate([_unpaired()[0], {**_unpaired()[1], "step_index": [-1, 0, 0]}])
    with pytest.raises(
        ValueError, match="key 'label' is present in some examples but missing from example 1"
    ):
        collate([_unpaired()[0], {k: v for k, v in _unpaired()[1].items() if k != "label"}])
    with pytest.raises(ValueError, match="padding_side"):
        ImplicitPRMCollator(pad_token_id=PAD, padding_side="middle")


def test_collates_tokenized_dataset_rows(tokenizer):
    ds = Dataset.from_dict({"prompt": ["2+3=", "Q"], "completion": ["Add.\n\n5.", "x"], "label": [1, 0]})
    rows = list(tokenize_dataset(ds, tokenizer).with_format("numpy"))
    batch = ImplicitPRMCollator(pad_token_id=tokenizer.pad_token_id)(rows)
    assert batch["input_ids"].dtype == torch.long
    assert batch["num_steps"].tolist() == [2, 1]
    n = len(rows[0]["input_ids"])
    assert batch["step_index"][0, :n].tolist() == rows[0]["step_index"].tolist()
    assert batch["completion_mask"].sum(1).tolist() == [int(r["completion_mask"].sum()) for r in rows]
