"""The single-process parts of trl_implicit_prm.distributed: which DeepSpeed configs save loadable weights under
ZeRO-3 (real accelerate `DeepSpeedPlugin`s), and how a directory holding only a DeepSpeed checkpoint is recognised.
The 2-process runs are in test_distributed.py."""

from __future__ import annotations

import pytest
from accelerate.utils import DeepSpeedPlugin

from trl_implicit_prm.distributed import (
    check_not_deepspeed_only,
    check_zero3_saves_weights,
    deepspeed_checkpoint_tag,
    zero3_gathers_weights_on_save,
)
from trl_implicit_prm.modeling import load_causal_lm


def _plugin(**zero) -> DeepSpeedPlugin:
    return DeepSpeedPlugin(hf_ds_config={"zero_optimization": zero, "train_micro_batch_size_per_gpu": 1})


@pytest.mark.parametrize(
    ("zero", "gathers"),
    [
        ({"stage3_gather_16bit_weights_on_model_save": True}, True),
        ({"stage3_gather_fp16_weights_on_model_save": True}, True),  # DeepSpeed's deprecated spelling
        ({"stage3_gather_16bit_weights_on_model_save": False}, False),
        ({"stage3_gather_16bit_weights_on_model_save": "auto"}, False),  # DeepSpeed reads "auto" as false
        ({}, False),
    ],
)
def test_which_configs_gather_the_weights_on_save(zero, gathers):
    assert zero3_gathers_weights_on_save({"zero_optimization": {"stage": 3, **zero}}) is gathers


def test_zero3_without_the_flag_is_refused_naming_it_and_the_rest_pass():
    with pytest.raises(ValueError, match=r"stage3_gather_16bit_weights_on_model_save: true` \(it is False\)"):
        check_zero3_saves_weights(
            _plugin(stage=3, stage3_gather_16bit_weights_on_model_save=False), peft=False
        )
    with pytest.raises(ValueError, match=r"\(it is missing\).*zero3_save_16bit_model: true"):
        check_zero3_saves_weights(_plugin(stage=3), peft=False)
    check_zero3_saves_weights(_plugin(stage=3, stage3_gather_16bit_weights_on_model_save=True), peft=False)
    check_zero3_saves_weights(DeepSpeedPlugin(zero_stage=3, zero3_save_16bit_model=True), peft=False)
    check_zero3_saves_weights(_plugin(stage=3), peft=True)  # adapters are gathered without the flag
    check_zero3_saves_weights(_plugin(stage=2), peft=False)  # ZeRO-2 keeps whole weights on every process
    check_zero3_saves_weights(None, peft=False)


def _deepspeed_dir(root, tag="global_step7", latest=True):
    (root / tag).mkdir(parents=True)
    (root / tag / "mp_rank_00_model_states.pt").write_bytes(b"")
    (root / "config.json").write_text("{}")
    if latest:
        (root / "latest").write_text(tag + "\n")
    return root


def test_a_deepspeed_checkpoint_without_weights_is_recognised(tmp_path):
    assert deepspeed_checkpoint_tag(_deepspeed_dir(tmp_path / "a")) == "global_step7"
    assert deepspeed_checkpoint_tag(_deepspeed_dir(tmp_path / "b", latest=False)) == "global_step7"
    with_weights = _deepspeed_dir(tmp_path / "c")
    (with_weights / "model.safetensors").write_bytes(b"")
    assert deepspeed_checkpoint_tag(with_weights) is None  # a checkpoint-N/ with both loads normally
    assert deepspeed_checkpoint_tag(tmp_path / "missing") is None
    assert deepspeed_checkpoint_tag("org/model") is None  # a hub id
    check_not_deepspeed_only(with_weights)


def test_loading_a_deepspeed_only_directory_says_how_to_convert_it(tmp_path):
    path = _deepspeed_dir(tmp_path / "run")
    with pytest.raises(
        OSError, match=r"global_step7/.*python -m deepspeed\.utils\.zero_to_fp32 .*run --safe_ser"
    ):
        load_causal_lm(str(path))
