"""Drop-in parity with TRL: the same standard rows through TRL's trainer and ours give the same logged numbers.

Learning rate 0, so every step sees the same weights; the same policy weights and one separate reference model
for both trainers. The rows are TRL's "standard" (non-conversational) format, given to both trainers as they
are: TRL appends the EOS token to such completions, and so do ours by default (`append_eos=True`).
"""

from __future__ import annotations

import pytest
from datasets import Dataset
from transformers import AutoModelForCausalLM

from trl_implicit_prm import CEConfig, CETrainer, ImplicitPRMConfig, ImplicitPRMTrainer

PROBLEMS = [(2, 3), (4, 4), (7, 1), (3, 6), (5, 2), (1, 8), (6, 6), (9, 2)]
COMMON = dict(
    use_cpu=True,
    bf16=False,
    report_to=[],
    logging_steps=1,
    save_strategy="no",
    max_steps=2,
    learning_rate=0.0,
    beta=0.1,
    gradient_checkpointing=False,
    train_sampling_strategy="sequential",
    disable_tqdm=True,
    seed=0,
)


def _good(a: int, b: int) -> str:
    return f"Add: {a} + {b} = {a + b}.\n\nThe answer is {a + b}."


def _bad(a: int, b: int) -> str:
    return f"Add: {a} + {b} = {a + b + 1}.\n\nThe answer is {a + b + 1}."


def _paired() -> list[dict]:
    return [
        {"prompt": f"Q: {a} + {b}?\n", "chosen": _good(a, b), "rejected": _bad(a, b)} for a, b in PROBLEMS
    ]


def _unpaired() -> list[dict]:
    # Alternating labels: every batch of 2 holds one desirable and one undesirable row.
    return [
        {
            "prompt": f"Q: {a} + {b}?\n",
            "completion": (_good if i % 2 == 0 else _bad)(a, b),
            "label": i % 2 == 0,
        }
        for i, (a, b) in enumerate(PROBLEMS[:4])
    ]


def _models(tiny_dir):
    return (
        AutoModelForCausalLM.from_pretrained(tiny_dir / "llama"),
        AutoModelForCausalLM.from_pretrained(tiny_dir / "llama-ref"),
    )


def _trainer(cls: type, config: type, rows: list[dict], out, tiny_dir, tokenizer, train: bool = True, **args):
    """`cls` (TRL's trainer or ours) on `rows` from the tiny llama, reference llama-ref, with COMMON settings."""
    policy, ref = _models(tiny_dir)
    trainer = cls(
        policy,
        ref_model=ref,
        processing_class=tokenizer,
        train_dataset=Dataset.from_list(rows),
        args=config(output_dir=str(out), **COMMON, **args),
    )
    if train:
        trainer.train()
    return trainer


def _assert_logs_match(
    theirs: list[dict], ours: list[dict], pairs: dict[str, str], scale: dict | None = None
):
    steps = [(a, b) for a, b in zip(theirs, ours, strict=False) if "loss" in a and "loss" in b]
    assert len(steps) == COMMON["max_steps"]
    for a, b in steps:
        for their_key, our_key in pairs.items():
            expected = a[their_key] * (scale or {}).get(their_key, 1.0)
            assert b[our_key] == pytest.approx(expected, abs=1e-5), (their_key, a, b)


def test_dpo_trainer_and_implicit_prm_dpo_log_the_same_numbers_on_standard_rows(
    tiny_dir, tokenizer, tmp_path
):
    from trl import DPOConfig, DPOTrainer

    trl_trainer = _trainer(
        DPOTrainer, DPOConfig, _paired(), tmp_path / "trl", tiny_dir, tokenizer,
        loss_type=["sigmoid"], per_device_train_batch_size=4,
    )  # fmt: skip
    ours = _trainer(
        ImplicitPRMTrainer, ImplicitPRMConfig, _paired(), tmp_path / "ours", tiny_dir, tokenizer,
        loss_type="dpo", per_device_train_batch_size=4,
    )  # fmt: skip
    keys = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
    _assert_logs_match(trl_trainer.state.log_history, ours.state.log_history, {k: k for k in keys})
    # Because the token ids are the same, EOS included (the last token of every completion).
    for theirs, mine in zip(trl_trainer.train_dataset, ours.train_dataset, strict=True):
        for side in ("chosen", "rejected"):
            assert theirs["prompt_ids"] + theirs[f"{side}_ids"] == mine[f"{side}_input_ids"]
            assert mine[f"{side}_input_ids"][-1] == tokenizer.eos_token_id
            assert len(theirs["prompt_ids"]) == mine[f"{side}_completion_mask"].count(0)


def test_kto_trainer_and_ce_kto_log_the_same_numbers_on_standard_rows(tiny_dir, tokenizer, tmp_path):
    """KTO's reference point: TRL pairs each prompt with the previous row's completion of its batch (a rotation
    by one, fixed when the dataset is prepared) and logs `kl` = max(0, mean log-ratio); ours pairs it with the
    next row's completion (`kto_reference_point="mismatched"`) and logs `kto/z0` = β·kl. With batches of two
    rows, both rotations give the same pairs, so the estimates are the same; `rewards/positive|negative` are
    TRL's `rewards/chosen|rejected` (desirable / undesirable rows), and their difference its `rewards/margins`.
    """
    from trl import KTOConfig, KTOTrainer

    trl_trainer = _trainer(
        KTOTrainer,
        KTOConfig,
        _unpaired(),
        tmp_path / "trl",
        tiny_dir,
        tokenizer,
        per_device_train_batch_size=2,
    )
    ours = _trainer(
        CETrainer, CEConfig, _unpaired(), tmp_path / "ours", tiny_dir, tokenizer,
        loss_type="kto", kto_reference_point="mismatched", per_device_train_batch_size=2,
    )  # fmt: skip
    for entry in ours.state.log_history:
        if "rewards/positive" in entry:
            entry["rewards/margins"] = entry["rewards/positive"] - entry["rewards/negative"]
    assert any(e.get("kl", 0) > 0 for e in trl_trainer.state.log_history)  # a step where z0 is not clamped
    _assert_logs_match(
        trl_trainer.state.log_history,
        ours.state.log_history,
        {
            "loss": "loss",
            "rewards/chosen": "rewards/positive",
            "rewards/rejected": "rewards/negative",
            "rewards/margins": "rewards/margins",
            "kl": "kto/z0",
        },
        scale={"kl": COMMON["beta"]},
    )
    for theirs, mine in zip(trl_trainer.train_dataset, ours.train_dataset, strict=True):
        assert theirs["prompt_ids"] + theirs["completion_ids"] == mine["input_ids"]
        assert mine["input_ids"][-1] == tokenizer.eos_token_id


def test_append_eos_false_keeps_completions_as_given(tiny_dir, tokenizer, tmp_path):
    rows = _paired()[:2]
    ours = _trainer(
        ImplicitPRMTrainer, ImplicitPRMConfig, rows, tmp_path / "ours", tiny_dir, tokenizer, train=False,
        append_eos=False, per_device_train_batch_size=2,
    )  # fmt: skip
    for row, tokenized in zip(rows, ours.train_dataset, strict=True):
        expected = tokenizer(row["prompt"] + row["chosen"])["input_ids"]
        assert tokenized["chosen_input_ids"] == expected and expected[-1] != tokenizer.eos_token_id
