"""Inputs that used to give silently wrong numbers, lost work or crashed deep in torch (issue "Every number right
or refused", items 2, 10, 15, 19, 20): each is refused with a message naming what to change, or made visible."""

from __future__ import annotations

import json
import logging
import math

import pytest
from datasets import Dataset
from helpers import cpu_args
from transformers import AutoModelForCausalLM

from trl_implicit_prm import (
    CEConfig,
    CETrainer,
    ImplicitPRMConfig,
    ImplicitPRMTrainer,
    ProcessRewardComputer,
    StepKTOConfig,
)
from trl_implicit_prm.modeling import METADATA_FILE, MetadataError, read_metadata, write_metadata
from trl_implicit_prm.tiny import build_model

BAD_BETAS = [float("nan"), float("inf"), -float("inf"), 0.0, -0.1, True]


def _args(cls, tmp_path, **kw):
    own = dict(
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        max_steps=1,
    )
    return cpu_args(cls, tmp_path, **{**own, **kw})


@pytest.mark.parametrize("config_cls", [CEConfig, ImplicitPRMConfig, StepKTOConfig])
@pytest.mark.parametrize("beta", BAD_BETAS)
def test_every_config_refuses_a_non_finite_or_non_positive_beta(config_cls, beta, tmp_path):
    """Old code: `beta <= 0` let NaN and +inf through (loss 0, NaN weights, "beta": NaN in the metadata)."""
    with pytest.raises(ValueError, match="finite number > 0"):
        _args(config_cls, tmp_path, beta=beta)


@pytest.mark.parametrize("name", ["desirable_weight", "undesirable_weight"])
def test_kto_weights_must_be_finite(name, tmp_path):
    with pytest.raises(ValueError, match=name):
        _args(CEConfig, tmp_path, loss_type="kto", kto_reference_point="zero", **{name: float("nan")})


@pytest.mark.parametrize("beta", BAD_BETAS)
def test_computer_refuses_a_non_finite_beta(beta, tiny_dir, tokenizer):
    """Old code: beta=inf was accepted and scored NaN."""
    policy = AutoModelForCausalLM.from_pretrained(tiny_dir / "llama")
    with pytest.raises(ValueError, match="finite number > 0"):
        ProcessRewardComputer(policy, tokenizer, reference_free=True, beta=beta)
    with pytest.raises(ValueError, match="finite number > 0"):
        ProcessRewardComputer.from_pretrained(str(tiny_dir / "llama"), reference_free=True, beta=beta)


def test_metadata_is_strict_json_and_refuses_nan(tmp_path):
    with pytest.raises(MetadataError, match="'beta' must be a finite number"):
        write_metadata(tmp_path, beta=float("nan"), reference_free=False, step_separator="\n\n")
    assert not (tmp_path / METADATA_FILE).exists()  # nothing half-written either
    write_metadata(tmp_path, beta=0.05, reference_free=False, reference_model="/x", step_separator="\n\n")
    assert json.loads((tmp_path / METADATA_FILE).read_text())["beta"] == 0.05
    assert [p.name for p in tmp_path.iterdir()] == [METADATA_FILE]  # the temporary file was renamed away


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "is empty"),
        ('{"beta": 0.05, "reference_fr', "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"beta": NaN}', "not valid JSON"),
        ('{"beta": 0.05, "reference_free": "false"}', "'reference_free' must be true or false"),
        ('{"beta": "0.05"}', "'beta' must be a finite number > 0"),
        ('{"step_separator": ""}', "'step_separator' must be a non-empty string"),
        ('{"reference_model": 3}', "'reference_model' must be a path or hub id string"),
    ],
)
def test_reading_bad_metadata_names_the_file_and_field(text, message, tmp_path):
    """Old code: a string "false" for reference_free was truthy; empty/truncated files raised bare JSON errors."""
    (tmp_path / METADATA_FILE).write_text(text)
    with pytest.raises(MetadataError, match=message) as err:
        read_metadata(tmp_path)
    assert str(tmp_path / METADATA_FILE) in str(err.value)


def test_from_pretrained_reports_bad_metadata_with_the_file(tiny_dir, tokenizer, tmp_path):
    build_model("llama", tokenizer).save_pretrained(tmp_path / "prm")
    tokenizer.save_pretrained(tmp_path / "prm")
    (tmp_path / "prm" / METADATA_FILE).write_text(
        '{"beta": 0.1, "reference_free": "false", "step_separator": "x"}'
    )
    with pytest.raises(MetadataError, match=rf"{METADATA_FILE}: field 'reference_free'"):
        ProcessRewardComputer.from_pretrained(str(tmp_path / "prm"))


def _gpt2_short(tokenizer, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=1,
        n_head=2,
        n_positions=32,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    model.save_pretrained(tmp_path / "gpt2-32")
    tokenizer.save_pretrained(tmp_path / "gpt2-32")
    return str(tmp_path / "gpt2-32")


def test_trainer_refuses_max_length_beyond_absolute_positions(tokenizer, tmp_path):
    """Old code: CETrainer with max_length 1024 on a 32-position GPT-2 crashed in training with IndexError."""
    path = _gpt2_short(tokenizer, tmp_path)
    rows = [
        {"prompt": "Q: " + "1 + 1 " * 20 + "?\n", "completion": "2.\n\nThe answer is 2.", "label": 1.0},
        {"prompt": "Q: 2?\n", "completion": "3.", "label": 0.0},
    ]
    with pytest.raises(ValueError, match=r"max_length=1024 .* 32 positions.*at most 32"):
        CETrainer(
            path,
            args=_args(CEConfig, tmp_path, reference_free=True),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
    trainer = CETrainer(
        path,
        args=_args(CEConfig, tmp_path, reference_free=True, max_length=32),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    assert math.isfinite(trainer.train().training_loss)


def test_computer_refuses_max_length_beyond_absolute_positions(tokenizer, tmp_path):
    path = _gpt2_short(tokenizer, tmp_path)
    with pytest.raises(ValueError, match="at most 32"):
        ProcessRewardComputer.from_pretrained(path, reference_free=True, max_length=100)
    prc = ProcessRewardComputer.from_pretrained(path, reference_free=True)
    assert prc.max_length == 32  # the default respects the position limit


def test_truncated_training_completions_are_a_warning_with_a_count(tiny_dir, tokenizer, tmp_path, caplog):
    """Old code: logged at INFO, invisible under the default log level."""
    rows = [
        {"prompt": "Q?\n", "completion": "1 + 1 = 2. " * 30 + "\n\nThe answer is 2.", "label": 1.0},
        {"prompt": "Q?\n", "completion": "3.", "label": 0.0},
    ]
    with caplog.at_level(logging.WARNING):
        CETrainer(
            str(tiny_dir / "llama"),
            args=_args(CEConfig, tmp_path, max_length=24),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
    assert "truncated the completion of 1 of 2 rows to max_length=24" in caplog.text


def test_implicit_prm_trainer_caps_pairs_per_prompt(tiny_dir, tokenizer, tmp_path):
    """Old code: every correct x incorrect pair was used (no `max_pairs_per_prompt` on the trainer)."""
    rollouts = [
        {
            "prompt": f"Q{i}?\n",
            "completions": [f"{j}." for j in range(8)],
            "correctness": [j < 4 for j in range(8)],
        }
        for i in range(3)
    ]
    make = lambda **kw: ImplicitPRMTrainer(  # noqa: E731
        str(tiny_dir / "llama"),
        args=_args(ImplicitPRMConfig, tmp_path, **kw),
        train_dataset=Dataset.from_list(rollouts),
        processing_class=tokenizer,
    )
    assert len(make().train_dataset) == 3 * 16
    capped = make(max_pairs_per_prompt=5, seed=3)
    assert len(capped.train_dataset) == 3 * 5
    again = make(max_pairs_per_prompt=5, seed=3)
    assert capped.train_dataset["chosen_input_ids"] == again.train_dataset["chosen_input_ids"]  # seeded
    other = make(max_pairs_per_prompt=5, seed=4)
    assert other.train_dataset["rejected_input_ids"] != capped.train_dataset["rejected_input_ids"]
    with pytest.raises(ValueError, match="max_pairs_per_prompt"):
        _args(ImplicitPRMConfig, tmp_path, max_pairs_per_prompt=0)


def test_per_response_reference_sums_are_refused_not_ignored(tokenizer):
    """A user's `ref_logps` column used to be kept and read by nothing: the run used another reference."""
    from trl_implicit_prm.trainers.data_prep import prepare_dataset

    rows = Dataset.from_list([{"prompt": "1 + 1 = ?\n", "completion": "2", "label": 1.0, "ref_logps": -1.0}])
    with pytest.raises(
        ValueError,
        match=r"per-response reference log-prob sums \['ref_logps'\]: they cannot give step rewards",
    ):
        prepare_dataset(rows, tokenizer, None, "unpaired", "train")
