"""The TRL internals this package relies on. When TRL changes one of them, this file fails first and says which.

setup.cfg declares the TRL range these were checked against (trl>=1.16,<1.17).
"""

from __future__ import annotations

import inspect

import torch
import trl
from packaging.version import Version
from transformers import Trainer


def test_trl_version_is_in_the_declared_range():
    assert Version("1.16") <= Version(trl.__version__) < Version("1.17"), trl.__version__


def test_base_trainer_and_config_still_provide_what_we_subclass():
    from trl.trainer.base_config import _BaseConfig
    from trl.trainer.base_trainer import _BaseTrainer

    # Model cards: create_model_card reads the class attributes _paper / _name / _tag_names.
    assert issubclass(_BaseTrainer, Trainer)
    params = inspect.signature(_BaseTrainer.create_model_card).parameters
    assert {"model_name", "dataset_name", "tags"} <= set(params)
    source = inspect.getsource(_BaseTrainer.create_model_card)
    assert "self._paper" in source and "self._name" in source and "self._tag_names" in source
    # Configs: bf16 defaults to True unless fp16 (documented in our configs), _VALID_DICT_FIELDS extended.
    assert _BaseConfig.__dataclass_fields__["bf16"].default is None
    assert isinstance(_BaseConfig._VALID_DICT_FIELDS, list)
    # The Trainer hook that decides which dataset columns reach the collator.
    assert hasattr(Trainer, "_set_signature_columns_if_needed")


def test_fused_lm_head_contract(tiny_dir):
    """`model(..., labels=, fused_lm_head=True).log_probs` is [B, T-1], zero where the label is -100."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "llama")
    add_fused_lm_head(model)
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    labels = ids.masked_fill(torch.tensor([[1, 1, 0, 0, 0]]) == 1, -100)
    out = model(input_ids=ids, labels=labels, fused_lm_head=True)
    assert out.log_probs.shape == (1, 4)
    assert out.log_probs[0, 0] == 0 and (out.log_probs[0, 1:] < 0).all()
    with torch.no_grad():
        full = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
    torch.testing.assert_close(
        out.log_probs[0, 1:].double(), full[torch.arange(1, 4), ids[0, 2:]], atol=1e-5, rtol=0
    )


def test_helpers_we_import_keep_their_signatures():
    from trl.models.utils import disable_gradient_checkpointing, prepare_deepspeed, prepare_fsdp
    from trl.trainer.utils import disable_dropout_in_model, use_adapter

    assert list(inspect.signature(prepare_deepspeed).parameters) == ["model", "accelerator"]
    assert list(inspect.signature(prepare_fsdp).parameters)[:2] == ["model", "accelerator"]
    assert list(inspect.signature(use_adapter).parameters) == ["model", "adapter_name"]
    assert list(inspect.signature(disable_gradient_checkpointing).parameters)[:2] == [
        "model",
        "gradient_checkpointing_kwargs",
    ]
    assert list(inspect.signature(disable_dropout_in_model).parameters) == ["model"]
