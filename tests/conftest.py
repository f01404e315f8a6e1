"""Shared fixtures: a locally trained byte-level BPE tokenizer and tiny Llama / Qwen2 / GPT-2 models.

Nothing here touches the Hugging Face Hub: the session runs with `HF_HUB_OFFLINE=1`, the tokenizer is trained
with `tokenizers`, models are built from configs and saved to a temporary directory so that tests exercise
the real `from_pretrained` loading path.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

from pathlib import Path

import pytest
import torch

from trl_implicit_prm.tiny import ARCHITECTURES, build_model, build_tokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A session directory holding `tokenizer/` and one saved model per architecture (`llama/`, ...)."""
    root = tmp_path_factory.mktemp("tiny")
    tok = build_tokenizer()
    tok.save_pretrained(root / "tokenizer")
    for i, arch in enumerate(ARCHITECTURES):
        model = build_model(arch, tok, seed=i)
        model.save_pretrained(root / arch)
        tok.save_pretrained(root / arch)
        # A second, different model of the same architecture serves as a reference.
        build_model(arch, tok, seed=100 + i).save_pretrained(root / f"{arch}-ref")
        tok.save_pretrained(root / f"{arch}-ref")
    return root


@pytest.fixture(scope="session")
def tokenizer(tiny_dir):
    """The byte-level BPE test tokenizer, loaded back from disk (fast tokenizer, with a chat template)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir / "tokenizer")


@pytest.fixture(params=ARCHITECTURES)
def arch(request) -> str:
    """Parametrises a test over the three fixture architectures."""
    return request.param


@pytest.fixture
def model_and_ref(tiny_dir, arch):
    """A tiny policy and a different tiny reference of architecture `arch`, loaded from disk."""
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(tiny_dir / arch).eval()
    ref = AutoModelForCausalLM.from_pretrained(tiny_dir / f"{arch}-ref").eval()
    return policy, ref
