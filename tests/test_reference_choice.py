"""Which reference scores a policy: never a silent fallback to reference-free (issue "Every number right or
refused", items 1, 3 and 4). Each test here failed on the code before the fix (see the test docstrings)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from datasets import Dataset
from helpers import cpu_args
from transformers import AutoModelForCausalLM

from trl_implicit_prm import CEConfig, CETrainer, ProcessRewardComputer, StepKTOConfig, StepKTOTrainer
from trl_implicit_prm.tiny import build_model, build_tokenizer

PROMPT, RESPONSE = "Q: 2 + 3?\n", "2 + 3 = 5.\n\nThe answer is 5."


def _rows() -> list[dict]:
    return [
        {
            "prompt": f"Q: {a} + {b}?\n",
            "completion": f"{a} + {b} = {a + b + e}.\n\nThe answer is {a + b + e}.",
            "label": float(e == 0),
        }
        for a, b in [(2, 3), (4, 4), (7, 1)]
        for e in (0, 1)
    ]


def _step_rows() -> list[dict]:
    return [
        {"prompt": r["prompt"], "completions": r["completion"].split("\n\n"), "labels": [r["label"] > 0] * 2}
        for r in _rows()
    ]


def _args(cls, tmp_path, **kw):
    own = dict(
        per_device_train_batch_size=6,
        learning_rate=5e-3,
        max_steps=2,
        beta=0.1,
    )
    return cpu_args(cls, tmp_path, **{**own, **kw})


def _ref_scores(policy, tokenizer, ref, beta=0.1, append_eos=False):
    return (
        ProcessRewardComputer(policy, tokenizer, ref_model=ref, beta=beta, append_eos=append_eos)
        .score_one(PROMPT, RESPONSE)
        .step_rewards
    )


def test_trainer_ref_model_none_after_precompute_is_refused_not_reference_free(tiny_dir, tokenizer, tmp_path):
    """Old code: `ProcessRewardComputer(trainer.model, tok, ref_model=None)` scored reference-free (log πθ)."""
    args = _args(CEConfig, tmp_path, precompute_ref_log_probs=True)
    trainer = CETrainer(
        str(tiny_dir / "llama"),
        ref_model=str(tiny_dir / "llama-ref"),
        args=args,
        train_dataset=Dataset.from_list(_rows()),
        processing_class=tokenizer,
    )
    assert trainer.ref_model is None
    with pytest.raises(ValueError, match="from_trainer"):
        ProcessRewardComputer(trainer.model, tokenizer, ref_model=trainer.ref_model)
    # from_trainer reloads the reference recorded for the metadata: the scores are the true log-ratios.
    prc = ProcessRewardComputer.from_trainer(trainer)
    ref = AutoModelForCausalLM.from_pretrained(tiny_dir / "llama-ref")
    expected = _ref_scores(trainer.model, tokenizer, ref, append_eos=True)
    assert prc.append_eos is True  # as training rendered the completions
    assert prc.score_one(PROMPT, RESPONSE).step_rewards == pytest.approx(expected, abs=1e-6)
    assert not prc.reference_free


def test_peft_model_without_reference_uses_adapters_disabled(tiny_dir, tokenizer, tmp_path):
    """Old code: a PeftModel passed without ref_model was scored reference-free."""
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(tiny_dir / "qwen2")
    base_copy = AutoModelForCausalLM.from_pretrained(tiny_dir / "qwen2")
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, lora)
    got = ProcessRewardComputer(peft_model, tokenizer, beta=0.1).score_one(PROMPT, RESPONSE).step_rewards
    expected = _ref_scores(peft_model, tokenizer, base_copy)
    assert got == pytest.approx(expected, abs=1e-6)
    free = ProcessRewardComputer(peft_model, tokenizer, beta=0.1, reference_free=True).score_one(
        PROMPT, RESPONSE
    )
    assert abs(free.step_rewards[0] - got[0]) > 1e-3  # reference-free is something else, and only on request


def test_plain_model_without_reference_is_an_error_unless_asked(tiny_dir, tokenizer):
    policy = AutoModelForCausalLM.from_pretrained(tiny_dir / "gpt2")
    with pytest.raises(ValueError, match="reference_free=True"):
        ProcessRewardComputer(policy, tokenizer)
    assert ProcessRewardComputer(policy, tokenizer, reference_free=True).reference_free
    ref = AutoModelForCausalLM.from_pretrained(tiny_dir / "gpt2-ref")
    with pytest.raises(ValueError, match="reference_free=True"):
        ProcessRewardComputer(policy, tokenizer, ref_model=ref, reference_free=True)


@pytest.mark.parametrize("kind", ["frozen_copy", "adapters", "reference_free"])
def test_from_trainer_uses_the_trainers_own_reference(kind, tiny_dir, tokenizer, tmp_path):
    from peft import LoraConfig

    args = _args(CEConfig, tmp_path, reference_free=kind == "reference_free")
    peft = (
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        if kind == "adapters"
        else None
    )
    trainer = CETrainer(
        str(tiny_dir / "qwen2"),
        args=args,
        train_dataset=Dataset.from_list(_rows()),
        processing_class=tokenizer,
        peft_config=peft,
    )
    trainer.train()
    prc = ProcessRewardComputer.from_trainer(trainer)
    got = prc.score_one(PROMPT, RESPONSE).step_rewards
    initial = AutoModelForCausalLM.from_pretrained(tiny_dir / "qwen2")
    if kind == "reference_free":
        assert prc.reference_free
        expected = (
            ProcessRewardComputer(trainer.model, tokenizer, beta=0.1, reference_free=True, append_eos=True)
            .score_one(PROMPT, RESPONSE)
            .step_rewards
        )
    else:
        expected = _ref_scores(trainer.model, tokenizer, initial, append_eos=True)
    # Training appended EOS to string completions (as TRL does), so from_trainer scores with it too.
    assert prc.append_eos is True
    assert got == pytest.approx(expected, abs=1e-6)
    assert prc.beta == 0.1 and prc.step_separator == "\n\n"


def _train_and_save(cls, config_cls, rows, tiny_dir, tokenizer, tmp_path, **kw) -> str:
    args = _args(config_cls, tmp_path, **kw)
    ref = None if kw.get("reference_free") else str(tiny_dir / "llama-ref")
    trainer = cls(
        str(tiny_dir / "llama"),
        ref_model=ref,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    trainer.train()
    out = str(tmp_path / "prm")
    trainer.save_model(out)
    return out


@pytest.mark.parametrize(
    "cls, config_cls, rows", [(CETrainer, CEConfig, _rows), (StepKTOTrainer, StepKTOConfig, _step_rows)]
)
def test_continuing_from_a_prm_checkpoint_keeps_its_recorded_reference(
    cls, config_cls, rows, tiny_dir, tokenizer, tmp_path, caplog
):
    """Old code: the checkpoint became its own reference (its reference id was the checkpoint)."""
    extra = {"kto_reference_point": "zero"} if cls is StepKTOTrainer else {}
    ckpt = _train_and_save(cls, config_cls, rows(), tiny_dir, tokenizer, tmp_path, **extra)
    recorded = json.loads((tmp_path / "prm" / "implicit_prm.json").read_text())["reference_model"]
    assert recorded == str((tiny_dir / "llama-ref").resolve())
    with caplog.at_level(logging.WARNING):
        again = cls(
            ckpt,
            args=_args(config_cls, tmp_path / "again", **extra),
            train_dataset=Dataset.from_list(rows()),
            processing_class=tokenizer,
        )
    assert again.reference.kind == "model" and again.reference.model_id == recorded
    assert "recorded in" in caplog.text
    ref = AutoModelForCausalLM.from_pretrained(tiny_dir / "llama-ref")
    batch = again.data_collator([again.train_dataset[i] for i in range(2)])
    with torch.no_grad():
        live = again._reference_step_logps(batch, int(batch["num_steps"].max()))
        expected = again._step_logps(ref, batch, int(batch["num_steps"].max()))
    torch.testing.assert_close(live, expected)


def test_continuing_from_a_reference_free_prm_must_say_so(tiny_dir, tokenizer, tmp_path):
    ckpt = _train_and_save(CETrainer, CEConfig, _rows(), tiny_dir, tokenizer, tmp_path, reference_free=True)
    with pytest.raises(ValueError, match="reference_free=True"):
        CETrainer(
            ckpt,
            args=_args(CEConfig, tmp_path / "again"),
            train_dataset=Dataset.from_list(_rows()),
            processing_class=tokenizer,
        )
    trainer = CETrainer(
        ckpt,
        args=_args(CEConfig, tmp_path / "again", reference_free=True),
        train_dataset=Dataset.from_list(_rows()),
        processing_class=tokenizer,
    )
    assert trainer.ref_model is None


def test_moved_recorded_reference_names_the_metadata_file(tiny_dir, tokenizer, tmp_path):
    import shutil

    shutil.copytree(tiny_dir / "llama-ref", tmp_path / "moving-ref")
    args = _args(CEConfig, tmp_path)
    trainer = CETrainer(
        str(tiny_dir / "llama"),
        ref_model=str(tmp_path / "moving-ref"),
        args=args,
        train_dataset=Dataset.from_list(_rows()),
        processing_class=tokenizer,
    )
    trainer.save_model(str(tmp_path / "prm"))
    shutil.rmtree(tmp_path / "moving-ref")
    with pytest.raises(FileNotFoundError, match=r"implicit_prm\.json.*ref_model=") as err:
        ProcessRewardComputer.from_pretrained(str(tmp_path / "prm"))
    assert "--ref-model" in str(err.value)
    with pytest.raises(FileNotFoundError, match=r"implicit_prm\.json"):
        CETrainer(
            str(tmp_path / "prm"),
            args=_args(CEConfig, tmp_path / "b"),
            train_dataset=Dataset.from_list(_rows()),
            processing_class=tokenizer,
        )


def _other_vocabulary_model(tokenizer, tmp_path, with_tokenizer: bool):
    """A reference with the same embedding count as the policy but a different vocabulary (like Llama-2 vs Mistral)."""
    corpus = [f"zz {i} qq {i * 7} xy" for i in range(2000)]
    other = build_tokenizer(vocab_size=len(tokenizer), corpus=corpus)
    assert len(other) == len(tokenizer) and other.get_vocab() != tokenizer.get_vocab()
    model = build_model("llama", tokenizer, seed=5)
    path = tmp_path / ("other-vocab" if with_tokenizer else "no-tokenizer")
    model.save_pretrained(path)
    if with_tokenizer:
        other.save_pretrained(path)
    return AutoModelForCausalLM.from_pretrained(path), path


def test_in_memory_reference_with_another_vocabulary_is_refused(tiny_dir, tokenizer, tmp_path):
    """Old code: an in-memory reference was only checked by embedding count, so this was scored on wrong ids."""
    ref, _ = _other_vocabulary_model(tokenizer, tmp_path, with_tokenizer=True)
    policy = AutoModelForCausalLM.from_pretrained(tiny_dir / "llama")
    with pytest.raises(ValueError, match="tokenizer differs"):
        ProcessRewardComputer(policy, tokenizer, ref_model=ref)
    with pytest.raises(ValueError, match="tokenizer differs"):
        CETrainer(
            policy,
            ref_model=ref,
            args=_args(CEConfig, tmp_path),
            train_dataset=Dataset.from_list(_rows()),
            processing_class=tokenizer,
        )
    with pytest.raises(ValueError, match="tokenizer differs"):
        ProcessRewardComputer.from_pretrained(str(tiny_dir / "llama"), ref_model=ref)


def test_reference_without_tokenizer_warns_once(tiny_dir, tokenizer, tmp_path, caplog):
    """Old code: a reference directory without tokenizer files was accepted without a word."""
    ref, path = _other_vocabulary_model(tokenizer, tmp_path, with_tokenizer=False)
    policy = AutoModelForCausalLM.from_pretrained(tiny_dir / "llama")
    with caplog.at_level(logging.WARNING):
        ProcessRewardComputer(policy, tokenizer, ref_model=ref)
        ProcessRewardComputer.from_pretrained(str(tiny_dir / "llama"), ref_model=str(path))
    assert caplog.text.count("has no tokenizer saved with it") == 1
