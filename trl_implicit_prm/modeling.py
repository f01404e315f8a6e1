"""Loading policies and references, and checking that a reference can score the policy's tokens.

Shared by the trainers and by :class:`~trl_implicit_prm.inference.ProcessRewardComputer`, so that both accept the
same things (a path, a hub id or a loaded model) and refuse the same mistakes with the same messages.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from trl_implicit_prm.distributed import check_not_deepspeed_only

logger = logging.getLogger(__name__)

__all__ = [
    "METADATA_FILE",
    "check_same_vocabulary",
    "is_adapter_dir",
    "is_peft_model",
    "load_causal_lm",
    "load_tokenizer",
    "model_id_of",
    "read_metadata",
    "unwrap_model",
    "write_metadata",
]

# Written next to every checkpoint the trainers save: what ProcessRewardComputer needs to score with it.
METADATA_FILE = "implicit_prm.json"


def _resolve_dtype(dtype: Any) -> Any:
    if isinstance(dtype, str) and dtype not in ("auto",):
        return getattr(torch, dtype)
    return dtype


def load_causal_lm(model: str | os.PathLike | PreTrainedModel, **init_kwargs: Any) -> PreTrainedModel:
    """A causal LM from a path / hub id (with `from_pretrained` kwargs), or the given model unchanged."""
    if isinstance(model, nn.Module):
        return model
    check_not_deepspeed_only(model)  # a ZeRO-3 save without weights: say how to convert it
    kwargs = dict(init_kwargs)
    if "dtype" in kwargs:
        kwargs["dtype"] = _resolve_dtype(kwargs["dtype"])
    return AutoModelForCausalLM.from_pretrained(str(model), **kwargs)


def is_adapter_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a local PEFT adapter directory (has `adapter_config.json`)."""
    return Path(path).is_dir() and (Path(path) / "adapter_config.json").is_file()


def unwrap_model(model: nn.Module) -> nn.Module:
    """The causal LM inside DeepSpeed/DDP wrappers and under a PEFT adapter (whose layers stay in place)."""
    module = getattr(model, "module", model)
    get_base = getattr(module, "get_base_model", None)
    return get_base() if callable(get_base) else module


def is_peft_model(model: nn.Module) -> bool:
    """Whether `model` (or the module a DeepSpeed/DDP wrapper holds) is a PEFT model."""
    from peft import PeftModel

    return isinstance(getattr(model, "module", model), PeftModel)


def model_id_of(model: nn.Module) -> str | None:
    """The path or hub id a model was loaded from (`config._name_or_path`), or None for an in-memory model."""
    name = getattr(getattr(unwrap_model(model), "config", None), "_name_or_path", "") or ""
    return name or None


def load_tokenizer(source: str | os.PathLike, **kwargs: Any) -> PreTrainedTokenizerBase:
    """The fast tokenizer saved with a model, exactly as saved; a clear error when only a slow one exists.

    transformers 5 may choose the tokenizer class from the model type and rebuild its pipeline (a Qwen2
    checkpoint's tokenizer gets Qwen2's pre-tokenizer and normaliser), which silently changes token ids when the
    saved `tokenizer.json` differs from that class's defaults. When that happens the saved pipeline is loaded
    instead, with a warning: rewards must be computed on the ids the model was trained on.
    """
    tok = AutoTokenizer.from_pretrained(str(source), **kwargs)
    if not getattr(tok, "is_fast", False):
        raise ValueError(
            f"The tokenizer of {source!s} is a slow (Python) tokenizer; step spans need character offsets, which "
            "only fast tokenizers give. Load it with `AutoTokenizer.from_pretrained(..., use_fast=True)` or pass "
            "a `PreTrainedTokenizerFast`."
        )
    changed = _rebuilt_parts(tok, Path(source) / "tokenizer.json")
    if changed:
        logger.warning(
            "%s: %s rebuilt the tokenizer with a different %s than the saved tokenizer.json; loading the saved "
            "tokenizer.json as is, so token ids match those the model was trained on.",
            source, type(tok).__name__, " and ".join(changed),
        )
        tok = PreTrainedTokenizerFast.from_pretrained(str(source), **kwargs)
    return tok


def _rebuilt_parts(tokenizer: PreTrainedTokenizerBase, saved: Path) -> list[str]:
    """The parts of a saved tokenizer.json that the loaded tokenizer's pipeline does not reproduce."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not saved.is_file():
        return []
    try:
        file, loaded = json.loads(saved.read_text(encoding="utf-8")), json.loads(backend.to_str())
    except (OSError, ValueError):
        return []
    return [part for part in ("normalizer", "pre_tokenizer", "model") if file.get(part) != loaded.get(part)]


def _vocab_size(model: nn.Module) -> int:
    module = getattr(model, "module", model)
    emb = module.get_input_embeddings()
    return int(emb.num_embeddings) if hasattr(emb, "num_embeddings") else int(module.config.vocab_size)


def check_same_vocabulary(
    policy: nn.Module,
    reference: nn.Module,
    tokenizer: PreTrainedTokenizerBase | None = None,
    reference_tokenizer: PreTrainedTokenizerBase | None = None,
) -> None:
    """Refuse a reference that cannot score the policy's token ids: log-ratios need one shared vocabulary.

    Compares embedding sizes, and the two tokenizers' vocabularies when both are known.
    """
    n_pol, n_ref = _vocab_size(policy), _vocab_size(reference)
    if n_pol != n_ref:
        raise ValueError(
            f"The reference model's vocabulary ({n_ref} embeddings) differs from the policy's ({n_pol}). An implicit "
            "PRM compares log-probabilities of the same token ids, so both models must share one tokenizer: use "
            "the policy's initial checkpoint as reference, or `reference_free=True`."
        )
    if tokenizer is not None and reference_tokenizer is not None:
        a, b = tokenizer.get_vocab(), reference_tokenizer.get_vocab()
        if a != b:
            diff = sorted(set(a.items()) ^ set(b.items()), key=lambda kv: kv[1])[:5]
            raise ValueError(
                "The reference model's tokenizer differs from the policy's (first differing entries: "
                f"{diff}). Both models must share one tokenizer: use the policy's initial checkpoint as "
                "reference, or `reference_free=True`."
            )


def write_metadata(output_dir: str | os.PathLike, **fields: Any) -> None:
    """Record how a checkpoint's rewards are computed (β, reference, separator) next to its weights."""
    path = Path(output_dir) / METADATA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")


def read_metadata(model_dir: str | os.PathLike) -> dict[str, Any]:
    """The metadata a trainer saved with a checkpoint, or {} when there is none."""
    path = Path(model_dir) / METADATA_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text())
