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
    ADAPTER_BASE,
    METADATA_FILE,
    is_adapter_dir,
    is_peft_model,
    load_causal_lm,
    load_tokenizer,
    model_id_of,
    read_metadata,
    resolve_dtype,
    try_tokenizer,
)

__all__ = [
    "ADAPTER_BASE",
    "ResolvedModels",
    "identity_of",
    "resolve_device",
    "resolve_dtype",
    "resolve_models",
    "trainer_reference",
]

logger = logging.getLogger(__name__)

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


DEFAULT_BETA = 0.05
DEFAULT_SEPARATOR = "\n\n"


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
    looks_local = (
        isinstance(value, os.PathLike)
        or text.startswith(("/", ".", "~"))
        or text.count("/") > 1
        or "\\" in text
        or not text.strip()
    )
    if looks_local:
        raise FileNotFoundError(f"{what}: {text!r} does not exist (expected a model directory or a hub id)")
    return text


def _load(location: str, what: str, **kwargs: Any) -> nn.Module:
    try:
        return load_causal_lm(location, **kwargs)
    except OSError as err:
        raise OSError(f"{what}: could not load a causal LM from {location!r}: {err}") from err


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

        base_location = _location(
            PeftConfig.from_pretrained(location).base_model_name_or_path,
            f"the base model of the adapter {location}",
        )
        base = _load(base_location, "the adapter's base model", **_load_kwargs(dtype))
        policy = PeftModel.from_pretrained(base, location)
        return policy, base_location, [location, base_location], metadata
    return _load(location, "model", **_load_kwargs(dtype)), location, [location], metadata


def _recorded_location(recorded: str, checkpoint: str) -> str:
    """The reference path recorded in a checkpoint's metadata, or an error saying where it came from."""
    try:
        return _location(recorded, "ref_model")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"the reference model {recorded!r} recorded in {Path(checkpoint) / METADATA_FILE} does not exist (was "
            "it moved or deleted?): pass ref_model=... (CLI: --ref-model) with its new location to override it"
        ) from None


def trainer_reference(trainer: Any, ref_model: Any = None) -> dict[str, Any]:
    """Constructor arguments of a ProcessRewardComputer scoring with `trainer`'s policy against its own reference."""
    args = trainer.args
    plugin = getattr(args, "deepspeed_plugin", None)
    if plugin is not None and plugin.zero_stage == 3:
        raise ValueError(
            "from_trainer: under DeepSpeed ZeRO-3 the weights are sharded across processes; save the model "
            "(trainer.save_model(dir)) and score with ProcessRewardComputer.from_pretrained(dir)"
        )
    policy = trainer.accelerator.unwrap_model(trainer.model)
    rendering = trainer._rendering  # how training rendered prompts and ended completions
    out: dict[str, Any] = {
        "model": policy,
        "tokenizer": trainer.processing_class,
        "beta": args.beta,
        "step_separator": args.step_separator,
        "model_name": trainer._model_id,
        "reference_name": trainer.reference.model_id,
        "prompt_format": rendering.get("prompt_format"),
        "append_eos": bool(rendering.get("append_eos", False)),
    }
    if ref_model is not None:
        if args.reference_free:
            raise ValueError(
                "from_trainer: the trainer is reference-free (reference_free=True); do not pass ref_model"
            )
        out["ref_model"] = (
            _load(_location(ref_model, "ref_model"), "ref_model")
            if isinstance(ref_model, str | os.PathLike)
            else ref_model
        )
        out["reference_name"] = str(ref_model) if isinstance(ref_model, str | os.PathLike) else None
    elif args.reference_free:
        out["reference_free"] = True
    elif trainer.reference.model is not None:
        out["ref_model"] = trainer.accelerator.unwrap_model(trainer.reference.model)
    elif trainer.reference.kind == "adapters_disabled":
        out["adapter_reference"] = True
    elif trainer.reference.model_id is not None:  # precomputed reference log-probs: the model was let go
        logger.info(
            "from_trainer: the reference log-probs were precomputed; loading the reference %s again",
            trainer.reference.model_id,
        )
        location = _location(trainer.reference.model_id, "the trainer's reference")
        out["ref_model"] = _load(location, "the trainer's reference", **dict(args.model_init_kwargs or {}))
    else:
        raise ValueError(
            "from_trainer: the trainer's reference log-probs were precomputed from an in-memory reference model "
            "(no path), which was then dropped: pass the same reference as ref_model=..."
        )
    if out.get("ref_model") is not None:  # on the policy's device (a reloaded reference starts on the CPU)
        out["ref_model"] = out["ref_model"].to(next(policy.parameters()).device)
    return out


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
        tokenizer = next((t for t in map(try_tokenizer, tok_locations) if t is not None), None)
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
            ref_model = _recorded_location(saved_ref, policy_source or model_id_of(policy) or "")
            logger.info("using the reference model recorded with the checkpoint: %s", saved_ref)
        if ref_model is None:
            if not peft:
                raise ValueError(
                    "no reference model: the checkpoint does not name one (no 'reference_model' in its "
                    f"{METADATA_FILE}). Pass ref_model=... (CLI: --ref-model; usually the policy's initial "
                    "checkpoint) or reference_free=True (--reference-free)"
                )
            adapter_reference = True
            reference_name = policy_source
        elif isinstance(ref_model, nn.Module):
            reference = ref_model
        elif isinstance(ref_model, str | os.PathLike):
            reference_name = _location(ref_model, "ref_model")
            reference = _load(reference_name, "ref_model", **_load_kwargs(dtype))
        else:
            raise TypeError(
                f"ref_model must be a path, a hub id or a loaded model, got {type(ref_model).__name__}"
            )

    device = resolve_device(device)
    move = {"device": device} if isinstance(dtype, str | type(None)) else {"device": device, "dtype": dtype}
    policy.to(**move).eval()
    if reference is not None:
        reference.to(**move).eval()
    return ResolvedModels(
        policy, reference, adapter_reference, tokenizer, metadata, policy_source, reference_name
    )


def pretrained_kwargs(
    resolved: ResolvedModels,
    model: Any,
    beta: float | None,
    step_separator: str | None,
    prompt_format: Any,
    append_eos: bool | None,
) -> dict[str, Any]:
    """`ProcessRewardComputer` arguments from resolved models: β, the separator, the prompt rendering and EOS
    from the arguments, else from the checkpoint's `implicit_prm.json` (else the defaults).
    """
    from ..data.rendering import append_eos_from_metadata, prompt_format_from_metadata

    meta = resolved.metadata
    where = resolved.policy_name or (model if isinstance(model, str) else None) or "the in-memory model"
    source = str(Path(where) / METADATA_FILE) if Path(str(where)).is_dir() else f"{where} ({METADATA_FILE})"
    return {
        "model": resolved.policy,
        "tokenizer": resolved.tokenizer,
        "ref_model": resolved.reference,
        "reference_free": resolved.reference is None and not resolved.adapter_reference,
        "adapter_reference": resolved.adapter_reference,
        "beta": beta if beta is not None else meta.get("beta", DEFAULT_BETA),
        "step_separator": step_separator
        if step_separator is not None
        else meta.get("step_separator", DEFAULT_SEPARATOR),
        "model_name": resolved.policy_name,
        "reference_name": resolved.reference_name,
        "prompt_format": prompt_format
        if prompt_format is not None
        else prompt_format_from_metadata(meta, source),
        "append_eos": append_eos if append_eos is not None else append_eos_from_metadata(meta, source),
    }
