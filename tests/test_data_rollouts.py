"""Rollouts -> pairs / unpaired rows, with counts worked out by hand."""

from __future__ import annotations

import logging

import pytest
from datasets import Dataset

from trl_implicit_prm.data import DataFormatError, rollouts_to_pairs, rollouts_to_unpaired

LOGGER = "trl_implicit_prm.data.rollouts"

# A: 2 correct (a1, a3), 2 incorrect (a2, a4)   -> 4 pairs, balanced per instruction: 4 rows
# B: 3 correct, 0 incorrect                       -> dropped (pairs, balance="instruction")
# C: 1 correct (0.7, soft), 2 incorrect (0.2, 0)  -> 2 pairs, balanced per instruction: 2 rows
# Over the dataset: 6 correct, 4 incorrect.
ROWS = [
    {"prompt": "A", "completions": ["a1", "a2", "a3", "a4"], "correctness": [1.0, 0.0, 1.0, 0.0]},
    {"prompt": "B", "completions": ["b1", "b2", "b3"], "correctness": [1.0, 1.0, 0.5]},
    {"prompt": "C", "completions": ["c1", "c2", "c3"], "correctness": [0.2, 0.7, 0.0]},
]


def test_pairs_by_hand(caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        pairs = rollouts_to_pairs(ROWS)
    assert isinstance(pairs, Dataset)
    assert list(zip(pairs["prompt"], pairs["chosen"], pairs["rejected"], strict=True)) == [
        ("A", "a1", "a2"),
        ("A", "a1", "a4"),
        ("A", "a3", "a2"),
        ("A", "a3", "a4"),
        ("C", "c2", "c1"),
        ("C", "c2", "c3"),
    ]
    assert (
        "dropped 1 of 3 instructions with only correct or only incorrect responses; built 6 pairs"
        in caplog.text
    )
    assert caplog.records[-1].levelno == logging.WARNING


def test_pairs_from_a_dataset_equal_pairs_from_rows():
    ds = Dataset.from_list(ROWS).add_column("extra", [1, 2, 3])
    assert rollouts_to_pairs(ds).to_list() == rollouts_to_pairs(ROWS).to_list()


def test_max_pairs_per_prompt_is_a_deterministic_subset():
    full = rollouts_to_pairs(ROWS).to_list()
    picks = {}
    for seed in range(6):
        sub = rollouts_to_pairs(ROWS, seed=seed, max_pairs_per_prompt=2).to_list()
        assert sub == rollouts_to_pairs(ROWS, seed=seed, max_pairs_per_prompt=2).to_list()
        assert len(sub) == 4 and all(row in full for row in sub)
        assert [row["prompt"] for row in sub] == ["A", "A", "C", "C"]
        assert sub == sorted(sub, key=full.index)  # order kept
        picks[seed] = tuple(row["chosen"] + row["rejected"] for row in sub)
    assert len(set(picks.values())) > 1  # the seed matters
    with pytest.raises(ValueError, match="max_pairs_per_prompt"):
        rollouts_to_pairs(ROWS, max_pairs_per_prompt=0)


def test_conversational_rollouts_are_carried_through():
    chat = [{"role": "user", "content": "2+3?"}]
    rows = [
        {
            "prompt": chat,
            "completions": [[{"role": "assistant", "content": "5"}], [{"role": "assistant", "content": "6"}]],
            "correctness": [True, False],
        }
    ]
    pair = rollouts_to_pairs(Dataset.from_list(rows))[0]
    assert pair["prompt"] == chat
    assert pair["chosen"] == [{"role": "assistant", "content": "5"}]
    assert rollouts_to_unpaired(rows)[1]["completion"] == [{"role": "assistant", "content": "6"}]


def test_unpaired_without_balance_keeps_everything_and_soft_labels():
    out = rollouts_to_unpaired(ROWS)
    assert out["completion"] == ["a1", "a2", "a3", "a4", "b1", "b2", "b3", "c1", "c2", "c3"]
    assert out["label"] == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.5, 0.2, 0.7, 0.0]
    assert out["prompt"][4:7] == ["B", "B", "B"]


def test_unpaired_balanced_over_the_dataset(caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        out = rollouts_to_unpaired(ROWS, balance="dataset", seed=1)
    correct = [c for c, y in zip(out["completion"], out["label"], strict=True) if y >= 0.5]
    incorrect = [c for c, y in zip(out["completion"], out["label"], strict=True) if y < 0.5]
    assert sorted(incorrect) == ["a2", "a4", "c1", "c3"]  # the minority class is kept whole
    assert len(correct) == 4 and set(correct) <= {"a1", "a3", "b1", "b2", "b3", "c2"}
    order = ["a1", "a2", "a3", "a4", "b1", "b2", "b3", "c1", "c2", "c3"]
    assert out["completion"] == sorted(out["completion"], key=order.index)
    assert "kept 4 correct and 4 incorrect of 6 correct and 4 incorrect responses" in caplog.text
    assert out.to_list() == rollouts_to_unpaired(ROWS, balance="dataset", seed=1).to_list()
    draws = {tuple(rollouts_to_unpaired(ROWS, balance="dataset", seed=s)["completion"]) for s in range(8)}
    assert len(draws) > 1


def test_unpaired_balanced_per_instruction(caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        out = rollouts_to_unpaired(Dataset.from_list(ROWS), balance="instruction", seed=3)
    assert "dropped 1 of 3 instructions with only correct or only incorrect responses" in caplog.text
    assert out["prompt"] == ["A", "A", "A", "A", "C", "C"]
    assert out["completion"][:4] == ["a1", "a2", "a3", "a4"]
    assert out["completion"][4] in ("c1", "c2") and "c2" in out["completion"][4:]
    assert sorted(out["label"][4:]) in ([0.2, 0.7], [0.0, 0.7])
    assert out.to_list() == rollouts_to_unpaired(ROWS, balance="instruction", seed=3).to_list()
    draws = {tuple(rollouts_to_unpaired(ROWS, balance="instruction", seed=s)["completion"]) for s in range(8)}
    assert len(draws) == 2  # c1 or c3 goes with c2


def test_unpaired_balance_with_one_class_only(caplog):
    rows = [{"prompt": "B", "completions": ["b1", "b2"], "correctness": [True, True]}]
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert len(rollouts_to_unpaired(rows, balance="dataset")) == 0
    assert "only correct responses; nothing is kept" in caplog.text
    with pytest.raises(ValueError, match="balance must be"):
        rollouts_to_unpaired(rows, balance="prompt")


def test_bad_rollouts_name_the_column_and_row():
    rows = [ROWS[0], {"prompt": "D", "completions": ["d1", "d2"], "correctness": [True]}]
    with pytest.raises(
        DataFormatError, match=r"column 'correctness' row 1: expected one label per completion"
    ):
        rollouts_to_pairs(rows)
    rows = [{"prompt": "D", "completions": ["d1", "d2"], "correctness": [True, "wrong"]}]
    with pytest.raises(DataFormatError, match=r"column 'correctness' row 0, item 1: .*got 'wrong' \(str\)"):
        rollouts_to_unpaired(rows)
    with pytest.raises(DataFormatError, match=r"missing column 'correctness'"):
        rollouts_to_pairs(Dataset.from_dict({"prompt": ["p"], "completions": [["a"]], "labels": [[True]]}))
