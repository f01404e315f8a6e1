"""Trainers on the tiny fixtures: learning, PEFT reference integrity, TRL parity, precomputed reference, resume,
bad input, metrics, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset
from helpers import cpu_args
from transformers import AutoModelForCausalLM, TrainerCallback

from trl_implicit_prm import (
    CEConfig,
    CETrainer,
    ImplicitPRMConfig,
    ImplicitPRMTrainer,
    StepKTOConfig,
    StepKTOTrainer,
)
from trl_implicit_prm.logps import completion_logps

PROBLEMS = [(a, b) for a, b in [(2, 3), (4, 4), (7, 1), (3, 6), (5, 2), (1, 8)]]


def good(a: int, b: int) -> str:
    return f"{a} + {b} = {a + b}.\n\nThe answer is {a + b}."


def bad(a: int, b: int) -> str:
    return f"{a} + {b} = {a + b + 1}.\n\nThe answer is {a + b + 1}."


def paired_rows(eos: str = "") -> list[dict]:
    return [
        {"prompt": f"Q: {a} + {b}?\n", "chosen": good(a, b) + eos, "rejected": bad(a, b) + eos}
        for a, b in PROBLEMS
    ]


def unpaired_rows() -> list[dict]:
    return [
        {"prompt": f"Q: {a} + {b}?\n", "completion": (good if i % 2 else bad)(a, b), "label": float(i % 2)}
        for i, (a, b) in enumerate(PROBLEMS)
    ]


def stepwise_rows() -> list[dict]:
    rows = []
    for i, (a, b) in enumerate(PROBLEMS):
        steps = (good if i % 2 else bad)(a, b).split("\n\n")
        rows.append(
            {"prompt": f"Q: {a} + {b}?\n", "completions": steps, "labels": [bool(i % 2)] * len(steps)}
        )
    return rows


def config(cls, tmp_path, **overrides):
    own = dict(
        logging_steps=1,
        gradient_checkpointing=False,
        per_device_train_batch_size=6,
        per_device_eval_batch_size=6,
        learning_rate=5e-3,
        max_steps=4,
        beta=0.1,
        seed=0,
        train_sampling_strategy="sequential",
    )
    return cpu_args(cls, tmp_path, **{**own, **overrides})


TRAINERS = {
    "dpo": (ImplicitPRMTrainer, ImplicitPRMConfig, paired_rows, {"loss_type": "dpo"}),
    "nca": (ImplicitPRMTrainer, ImplicitPRMConfig, paired_rows, {"loss_type": "nca"}),
    "ce": (CETrainer, CEConfig, unpaired_rows, {"loss_type": "ce"}),
    "kto": (CETrainer, CEConfig, unpaired_rows, {"loss_type": "kto"}),
    "step_kto": (StepKTOTrainer, StepKTOConfig, stepwise_rows, {}),
    "step_kto_q": (StepKTOTrainer, StepKTOConfig, stepwise_rows, {"step_reward": "q"}),
    "ce_gradient_checkpointing": (CETrainer, CEConfig, unpaired_rows, {"gradient_checkpointing": True}),
}


def build(name, tiny_dir, tokenizer, tmp_path, arch="llama", **overrides):
    trainer_cls, config_cls, rows, extra = TRAINERS[name]
    data = Dataset.from_list(rows())
    args = config(config_cls, tmp_path, **{**extra, **overrides})
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / arch)
    return trainer_cls(model, args=args, train_dataset=data, eval_dataset=data, processing_class=tokenizer)


@pytest.mark.parametrize("name", list(TRAINERS))
def test_loss_goes_down_on_a_fixed_batch_and_parameters_change(name, tiny_dir, tokenizer, tmp_path):
    trainer = build(name, tiny_dir, tokenizer, tmp_path)
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    loss_before = trainer.evaluate()["eval_loss"]
    trainer.train()
    loss_after = trainer.evaluate()["eval_loss"]
    assert loss_after < loss_before - 1e-3, (loss_before, loss_after)
    changed = [k for k, v in trainer.model.named_parameters() if not torch.equal(v, before[k])]
    assert len(changed) > len(before) // 2
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 4
    # Rewards of positive and negative responses are logged (names follow TRL: chosen/rejected for pairs).
    assert trainer.model.is_gradient_checkpointing == (name == "ce_gradient_checkpointing")
    keys = (
        ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins")
        if name in ("dpo", "nca")
        else ("rewards/positive", "rewards/negative", "rewards/accuracies")
    )
    assert all(k in logs[-1] for k in keys), logs[-1]


def test_peft_trains_only_adapters_and_reference_stays_bit_identical(tiny_dir, tokenizer, tmp_path):
    from peft import LoraConfig

    data = Dataset.from_list(unpaired_rows())
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "qwen2")
    args = config(CEConfig, tmp_path, learning_rate=5e-2)
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    trainer = CETrainer(
        model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=peft_config
    )
    assert trainer.ref_model is None  # the reference is the base model with adapters disabled
    peft_model = trainer.model
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(6)])
    inputs = [batch[k] for k in ("input_ids", "attention_mask", "completion_mask")]

    def ref_logps():
        with torch.no_grad(), peft_model.disable_adapter():
            return completion_logps(peft_model, *inputs)

    ref_before = ref_logps()
    params_before = {k: v.detach().clone() for k, v in peft_model.named_parameters()}
    trainer.train()
    for k, v in peft_model.named_parameters():
        if "lora_" in k:
            continue
        assert torch.equal(v, params_before[k]), f"base weight {k} changed"
    assert any(
        not torch.equal(v, params_before[k]) for k, v in peft_model.named_parameters() if "lora_B" in k
    )
    assert torch.equal(ref_logps(), ref_before)
    with torch.no_grad():
        policy = completion_logps(peft_model, *inputs)
    assert not torch.allclose(policy, ref_before)  # the adapter moved the policy away from its reference


def test_first_step_matches_trl_dpo_trainer(tiny_dir, tokenizer, tmp_path):
    """lr=0: same model, reference and data -> same first loss and chosen/rejected rewards as TRL's DPOTrainer."""
    from trl import DPOConfig, DPOTrainer

    common = dict(
        use_cpu=True,
        bf16=False,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        max_steps=1,
        learning_rate=0.0,
        per_device_train_batch_size=6,
        beta=0.1,
        gradient_checkpointing=False,
        train_sampling_strategy="sequential",
        disable_tqdm=True,
        seed=0,
    )
    ref = AutoModelForCausalLM.from_pretrained(tiny_dir / "gpt2-ref")
    trl_trainer = DPOTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_dir / "gpt2"),
        ref_model=ref,
        args=DPOConfig(output_dir=str(tmp_path / "trl"), loss_type=["sigmoid"], **common),
        train_dataset=Dataset.from_list(paired_rows()),
        processing_class=tokenizer,
    )
    trl_trainer.train()
    ours = ImplicitPRMTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_dir / "gpt2"),
        ref_model=AutoModelForCausalLM.from_pretrained(tiny_dir / "gpt2-ref"),
        args=ImplicitPRMConfig(output_dir=str(tmp_path / "ours"), loss_type="dpo", **common),
        # TRL appends EOS to non-conversational completions; give ours the same text.
        train_dataset=Dataset.from_list(paired_rows(eos=tokenizer.eos_token)),
        processing_class=tokenizer,
    )
    ours.train()
    a, b = trl_trainer.state.log_history[0], ours.state.log_history[0]
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert b[key] == pytest.approx(a[key], abs=1e-5), key


@pytest.mark.parametrize("name", ["dpo", "ce", "step_kto"])
def test_precomputed_reference_gives_the_live_losses(name, tiny_dir, tokenizer, tmp_path):
    overrides = {"learning_rate": 0.0, "max_steps": 1}
    if name == "step_kto":
        overrides["kto_reference_point"] = "zero"  # mismatched pairs are formed per batch: not precomputable
    live = build(name, tiny_dir, tokenizer, tmp_path / "live", **overrides)
    pre = build(name, tiny_dir, tokenizer, tmp_path / "pre", precompute_ref_log_probs=True, **overrides)
    assert pre.ref_model is None and live.ref_model is not None
    assert any(c.startswith("ref_") for c in pre.train_dataset.column_names)
    assert pre.evaluate()["eval_loss"] == pytest.approx(live.evaluate()["eval_loss"], abs=1e-5)
    live.train()
    pre.train()
    assert pre.state.log_history[0]["loss"] == pytest.approx(live.state.log_history[0]["loss"], abs=1e-5)


class _Crash(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 2:
            raise KeyboardInterrupt("simulated kill after the step-2 checkpoint")


def test_resume_from_checkpoint_ends_with_the_uninterrupted_weights(tiny_dir, tokenizer, tmp_path):
    opts = dict(save_strategy="steps", save_steps=2, max_steps=4, per_device_train_batch_size=2)
    full = build("ce", tiny_dir, tokenizer, tmp_path / "full", **opts)
    full.train()
    crashed = build("ce", tiny_dir, tokenizer, tmp_path / "resumed", **opts)
    crashed.add_callback(_Crash())
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    resumed = build("ce", tiny_dir, tokenizer, tmp_path / "resumed", **opts)
    resumed.train(resume_from_checkpoint=str(tmp_path / "resumed" / "out" / "checkpoint-2"))
    assert resumed.state.global_step == 4
    for (k, a), (_, b) in zip(full.model.named_parameters(), resumed.model.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=k)


def test_bad_input_is_refused_before_training(tiny_dir, tokenizer, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "llama")
    args = config(ImplicitPRMConfig, tmp_path)
    with pytest.raises(ValueError, match="stepwise rows, which this trainer cannot train on"):
        ImplicitPRMTrainer(
            model, args=args, train_dataset=Dataset.from_list(stepwise_rows()), processing_class=tokenizer
        )
    with pytest.raises(ValueError, match="paired rows, which this trainer cannot train on"):
        StepKTOTrainer(
            model,
            args=config(StepKTOConfig, tmp_path),
            processing_class=tokenizer,
            train_dataset=Dataset.from_list(paired_rows()),
        )
    all_positive = [{"prompt": "Q\n", "completions": ["a", "b"], "correctness": [True, True]}] * 3
    with pytest.raises(ValueError, match=r"no \(correct, incorrect\) pair.*all-positive"):
        ImplicitPRMTrainer(
            model, args=args, train_dataset=Dataset.from_list(all_positive), processing_class=tokenizer
        )
    with pytest.raises(ValueError, match="reference_free=True scores with the policy alone"):
        CETrainer(
            model,
            ref_model=tiny_dir / "llama-ref",
            args=config(CEConfig, tmp_path, reference_free=True),
            train_dataset=Dataset.from_list(unpaired_rows()),
            processing_class=tokenizer,
        )
    other_vocab = AutoModelForCausalLM.from_config(
        model.config.__class__(**{**model.config.to_dict(), "vocab_size": 123})
    )
    with pytest.raises(ValueError, match="vocabulary"):
        CETrainer(
            model,
            ref_model=other_vocab,
            args=config(CEConfig, tmp_path),
            train_dataset=Dataset.from_list(unpaired_rows()),
            processing_class=tokenizer,
        )
    with pytest.raises(ValueError, match="column 'label'"):
        CETrainer(
            model,
            args=config(CEConfig, tmp_path),
            processing_class=tokenizer,
            train_dataset=Dataset.from_list([{"prompt": "Q", "completion": "a", "label": "yes"}]),
        )
    with pytest.raises(ValueError, match="kto_reference_point='mismatched'"):
        config(StepKTOConfig, tmp_path, precompute_ref_log_probs=True)
    with pytest.raises(ValueError, match="per_device_train_batch_size >= 2"):
        config(CEConfig, tmp_path, loss_type="kto", per_device_train_batch_size=1)


def test_step_labelled_eval_set_reports_step_error_f1(tiny_dir, tokenizer, tmp_path):
    data = Dataset.from_list(unpaired_rows())
    args = config(CEConfig, tmp_path, max_steps=1)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "llama")
    trainer = CETrainer(
        model,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        eval_dataset={"steps": Dataset.from_list(stepwise_rows())},
    )
    metrics = trainer.evaluate()
    for key in ("eval_steps_steps/f1", "eval_steps_steps/f1_oracle_threshold", "eval_steps_loss"):
        assert key in metrics, sorted(metrics)
    assert 0.0 <= metrics["eval_steps_steps/f1"] <= metrics["eval_steps_steps/f1_oracle_threshold"] <= 1.0
    # An all-correct eval set has no erroneous record: accuracy on correct records only, no F1, no crash.
    only_correct = [r for r in stepwise_rows() if all(r["labels"])]
    one_class = trainer.evaluate(Dataset.from_list(only_correct), metric_key_prefix="ok")
    assert "ok_steps/acc_correct" in one_class and "ok_steps/f1" not in one_class


def test_saved_checkpoint_has_card_citing_the_paper_and_reward_metadata(tiny_dir, tokenizer, tmp_path):
    trainer = build("dpo", tiny_dir, tokenizer, tmp_path, max_steps=1)
    trainer._model_id = trainer.reference.model_id = str(tiny_dir / "llama")
    trainer.save_model(str(tmp_path / "final"))
    card = (tmp_path / "final" / "README.md").read_text()
    assert "2412.01981" in card and "Free Process Rewards without Process Labels" in card
    meta = json.loads((tmp_path / "final" / "implicit_prm.json").read_text())
    assert meta["beta"] == 0.1 and meta["reference_model"] == str(tiny_dir / "llama")
    assert meta["step_separator"] == "\n\n" and meta["trainer"] == "ImplicitPRMTrainer"
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    for (k, a), (_, b) in zip(trainer.model.named_parameters(), reloaded.named_parameters(), strict=True):
        assert torch.equal(a, b), k
