"""Resolving what `ProcessRewardComputer.from_pretrained` is given into a policy, a reference and a tokenizer.

Accepted: a full checkpoint (path, hub id or loaded model) with a separate reference (path, hub id or model); a PEFT
adapter directory or a loaded `PeftModel`, whose reference is the base model with adapters disabled (one model
in memory); or no reference at all (`reference_free=True`). Defaults for β, the separator and the reference come
from the `implicit_prm.json` the trainers save next to a checkpoint.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..modeling import (
    check_same_vocabulary,
    is_adapter_dir,
    is_peft_model,
    load_causal_lm,
    load_tokenizer,
    model_id_of,
    read_metadata,
)

__all__ = ["ADAPTER_BASE", "ResolvedModels", "identity_of", "resolve_device", "resolve_dtype", "resolve_models"]

logger = logging.getLogger(__name__)

ADAPTER_BASE = "adapter-base"
_STAMP = "_implicit_prm_identity"


@dataclass
class ResolvedModels:
    """A policy, its reference (None when reference-free or when it is the adapter-disabled policy), a tokenizer."""

    policy: nn.Module
    reference: nn.Module | None
    adapter_reference: bool
    tokenizer: Any
    metadata: dict[str, Any] = field(default_factory=dict)
    policy_name: str | None = None
    reference_name: str | None = None


def resolve_dtype(dtype: Any) -> torch.dtype | str | None:
    """A torch dtype from a dtype, its name ("bfloat16", "torch.float16") or "auto"; None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if isinstance(dtype, str):
        value = getattr(torch, dtype.removeprefix("torch."), None)
        if isinstance(value, torch.dtype):
            return value
    raise ValueError(f"dtype must be a torch dtype, its name (e.g. 'bfloat16') or 'auto', got {dtype!r}")


def resolve_device(device: Any) -> torch.device:
    """The given device, or CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def identity_of(model: nn.Module) -> str:
    """A stamp that identifies an in-memory model object for the reference cache (set once, kept with it)."""
    stamp = getattr(model, _STAMP, None)
    if stamp is None:
        stamp = f"object:{uuid.uuid4().hex}"
        object.__setattr__(model, _STAMP, stamp)
    return stamp


def _location(value: str | os.PathLike, what: str) -> str:
    """A local path (resolved) or a hub id; a clear error for a local-looking path that does not exist."""
    text = os.fspath(value)
    path = Path(text).expanduser()
    if path.exists():
        return str(path.resolve())
    looks_local = (isinstance(value, os.PathLike) or text.startswith(("/", ".", "~")) or text.count("/") > 1
                   or "\\" in text or not text.strip())
    if looks_local:
        raise FileNotFoundError(f"{what}: {text!r} does not exist (expected a model directory or a hub id)")
    return text


def _load(location: str, what: str, **kwargs: Any) -> nn.Module:
    try:
        return load_causal_lm(location, **kwargs)
    except OSError as err:
        raise OSError(f"{what}: could not load a causal LM from {location!r}: {err}") from err


def _try_tokenizer(location: str | None) -> Any | None:
    if location is None:
        return None
    try:
        tokenizer = load_tokenizer(location)
    except (OSError, ValueError, TypeError):
        return None
    return tokenizer


def _load_kwargs(dtype: Any) -> dict[str, Any]:
    return {} if dtype is None else {"dtype": dtype}


def _load_policy(model: Any, dtype: Any) -> tuple[nn.Module, str | None, list[str], dict[str, Any]]:
    """(policy, where it came from, where its tokenizer may be (in order), metadata)."""
    if isinstance(model, nn.Module):
        name = model_id_of(model)
        local = name if name and Path(name).is_dir() else None
        return model, None, [local] if local else [], read_metadata(local) if local else {}
    if not isinstance(model, str | os.PathLike):
        raise TypeError(f"model must be a path, a hub id or a loaded model, got {type(model).__name__}")
    location = _location(model, "model")
    metadata = read_metadata(location) if Path(location).is_dir() else {}
    if Path(location).is_dir() and is_adapter_dir(location):
        from peft import PeftConfig, PeftModel

        base_location = _location(PeftConfig.from_pretrained(location).base_model_name_or_path,
                                  f"the base model of the adapter {location}")
        base = _load(base_location, "the adapter's base model", **_load_kwargs(dtype))
        policy = PeftModel.from_pretrained(base, location)
        return policy, base_location, [location, base_location], metadata
    return _load(location, "model", **_load_kwargs(dtype)), location, [location], metadata


def resolve_models(
    model: Any,
    ref_model: Any = None,
    reference_free: bool | None = None,
    tokenizer: Any = None,
    device: Any = None,
    dtype: Any = None,
) -> ResolvedModels:
    """Load (or take) the policy, the reference and the tokenizer, check they agree, and move them to `device`."""
    dtype = resolve_dtype(dtype)
    policy, policy_source, tok_locations, metadata = _load_policy(model, dtype)
    if reference_free is None:
        reference_free = bool(metadata.get("reference_free", False))
    if reference_free and ref_model is not None:
        raise ValueError("pass either ref_model=... or reference_free=True, not both")
    if tokenizer is None:
        tokenizer = next((t for t in map(_try_tokenizer, tok_locations) if t is not None), None)
        if tokenizer is None:
            where = " or ".join(tok_locations) or "an in-memory model"
            raise ValueError(f"no tokenizer found with the model ({where}); pass tokenizer=...")
    elif isinstance(tokenizer, str | os.PathLike):
        tokenizer = load_tokenizer(_location(tokenizer, "tokenizer"))

    peft = is_peft_model(policy)
    reference: nn.Module | None = None
    adapter_reference = False
    reference_name: str | None = None
    saved_ref = metadata.get("reference_model")
    if not reference_free:
        if ref_model is None and saved_ref not in (None, ADAPTER_BASE):
            ref_model = saved_ref
            logger.info("using the reference model recorded with the checkpoint: %s", saved_ref)
        if ref_model is None:
            if not peft:
                raise ValueError(
                    "no reference model: the checkpoint does not name one (no 'reference_model' in its "
                    "implicit_prm.json). Pass ref_model=... (usually the policy's initial checkpoint) or "
                    "reference_free=True"
                )
            adapter_reference = True
            reference_name = policy_source
        else:
            ref_tokenizer = None
            if isinstance(ref_model, nn.Module):
                reference = ref_model
            elif isinstance(ref_model, str | os.PathLike):
                reference_name = _location(ref_model, "ref_model")
                reference = _load(reference_name, "ref_model", **_load_kwargs(dtype))
                ref_tokenizer = _try_tokenizer(reference_name)
            else:
                raise TypeError(f"ref_model must be a path, a hub id or a loaded model, got {type(ref_model).__name__}")
            check_same_vocabulary(policy, reference, tokenizer, ref_tokenizer)

    device = resolve_device(device)
    move = {"device": device} if isinstance(dtype, str | type(None)) else {"device": device, "dtype": dtype}
    policy.to(**move).eval()
    if reference is not None:
        reference.to(**move).eval()
    return ResolvedModels(policy, reference, adapter_reference, tokenizer, metadata,
                          policy_source, reference_name)
