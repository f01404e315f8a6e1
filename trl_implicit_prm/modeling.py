"""Loading policies and references, and checking that a reference can score the policy's tokens.

Shared by the trainers and by :class:`~trl_implicit_prm.inference.ProcessRewardComputer`, so that both accept the
same things (a path, a hub id or a loaded model) and refuse the same mistakes with the same messages.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
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

from trl_implicit_prm.checks import is_finite_positive
from trl_implicit_prm.distributed import check_not_deepspeed_only

logger = logging.getLogger(__name__)

__all__ = [
    "ADAPTER_BASE",
    "METADATA_FILE",
    "MetadataError",
    "absolute_position_limit",
    "check_max_length",
    "check_reference",
    "check_same_vocabulary",
    "find_tokenizer",
    "is_adapter_dir",
    "is_peft_model",
    "load_causal_lm",
    "load_tokenizer",
    "model_id_of",
    "read_metadata",
    "resolve_dtype",
    "try_tokenizer",
    "unwrap_model",
    "validate_metadata",
    "write_metadata",
]

# Written next to every checkpoint the trainers save: what ProcessRewardComputer needs to score with it.
METADATA_FILE = "implicit_prm.json"
# The `reference_model` recorded for a PEFT adapter trained against its own base with adapters disabled.
ADAPTER_BASE = "adapter-base"


def resolve_dtype(dtype: Any) -> torch.dtype | str | None:
    """A torch dtype from a dtype, its name ("bfloat16", "torch.float16") or "auto"; None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if isinstance(dtype, str):
        value = getattr(torch, dtype.removeprefix("torch."), None)
        if isinstance(value, torch.dtype):
            return value
    raise ValueError(f"dtype must be a torch dtype, its name (e.g. 'bfloat16') or 'auto', got {dtype!r}")


def load_causal_lm(model: str | os.PathLike | PreTrainedModel, **init_kwargs: Any) -> PreTrainedModel:
    """A causal LM from a path / hub id (with `from_pretrained` kwargs), or the given model unchanged."""
    if isinstance(model, nn.Module):
        return model
    check_not_deepspeed_only(model)  # a ZeRO-3 save without weights: say how to convert it
    kwargs = dict(init_kwargs)
    if "dtype" in kwargs:
        kwargs["dtype"] = resolve_dtype(kwargs["dtype"])
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
            source,
            type(tok).__name__,
            " and ".join(changed),
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


_WARNED_NO_TOKENIZER: set[str] = set()


def try_tokenizer(location: str | os.PathLike | None) -> PreTrainedTokenizerBase | None:
    """The fast tokenizer saved in a local directory, or None when there is none to load."""
    if location is None or not Path(location).is_dir():
        return None
    try:
        return load_tokenizer(location)
    except (OSError, ValueError, TypeError):
        return None


def find_tokenizer(
    model: nn.Module, source: str | os.PathLike | None = None
) -> PreTrainedTokenizerBase | None:
    """The tokenizer saved with a model: in `source` (its path) or in `config._name_or_path`, when one is there."""
    return next((t for t in map(try_tokenizer, (source, model_id_of(model))) if t is not None), None)


def check_reference(
    policy: nn.Module,
    reference: nn.Module,
    tokenizer: PreTrainedTokenizerBase | None,
    reference_source: str | os.PathLike | None = None,
) -> None:
    """Refuse a reference whose token ids mean something else than the policy's; warn once when unverifiable.

    The embedding counts are compared first; then the policy's tokenizer against the reference's own, found in
    `reference_source` or in the reference's `config._name_or_path` (Llama-2 and Mistral both have 32000
    embeddings and different vocabularies, so the counts alone prove nothing). When the reference has no
    tokenizer to be found, a warning says so, once per reference.
    """
    ref_tokenizer = find_tokenizer(reference, reference_source)
    if ref_tokenizer is None and tokenizer is not None:
        name = str(reference_source or model_id_of(reference) or f"in-memory {type(reference).__name__}")
        if name not in _WARNED_NO_TOKENIZER:
            _WARNED_NO_TOKENIZER.add(name)
            logger.warning(
                "The reference model (%s) has no tokenizer saved with it, so only its embedding count could be "
                "checked against the policy's: make sure both use the same tokenizer (save it next to the "
                "reference's weights to have it checked).",
                name,
            )
    check_same_vocabulary(policy, reference, tokenizer, ref_tokenizer)


def absolute_position_limit(model: nn.Module) -> int | None:
    """The number of learned absolute positions (GPT-2's `n_positions`), or None for rotary/relative models.

    A longer input indexes past the position-embedding table and crashes deep in torch.
    """
    lm = unwrap_model(model)
    for name, module in lm.named_modules():
        if isinstance(module, nn.Embedding) and name.rsplit(".", 1)[-1] in _POSITION_EMBEDDINGS:
            return int(module.num_embeddings)
    return None


_POSITION_EMBEDDINGS = ("wpe", "embed_positions", "position_embeddings", "pos_emb", "position_embedding")


def check_max_length(model: nn.Module, max_length: int | None, flag: str = "max_length") -> None:
    """Refuse a `max_length` that an absolute-position model cannot embed (or None, which admits any length)."""
    limit = absolute_position_limit(model)
    if limit is None:
        return
    if max_length is None or max_length > limit:
        name = model_id_of(model) or type(unwrap_model(model)).__name__
        raise ValueError(
            f"{flag}={max_length} but the model ({name}) has learned absolute position embeddings for only "
            f"{limit} positions: longer inputs cannot be embedded. Set {flag} to at most {limit}."
        )


class MetadataError(ValueError):
    """An `implicit_prm.json` that cannot be read or holds a field of the wrong type (the message names the file)."""


def _is_str_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


# Known fields of `implicit_prm.json` and what each must hold. Unknown fields are kept (a newer writer's).
_METADATA_FIELDS: dict[str, tuple[str, Any]] = {
    "beta": ("a finite number > 0", is_finite_positive),
    "reference_free": ("true or false", lambda v: isinstance(v, bool)),
    "reference_model": ("a path or hub id string, or null", _is_str_or_none),
    "step_separator": ("a non-empty string", lambda v: isinstance(v, str) and bool(v)),
    "trainer": ("a string or null", _is_str_or_none),
    "loss_type": ("a string or null", _is_str_or_none),
    "prompt_format": ("an object or null", lambda v: v is None or isinstance(v, dict)),
    "append_eos": ("true, false or null", lambda v: v is None or isinstance(v, bool)),
    "kind": ('"implicit" or "explicit"', lambda v: v in ("implicit", "explicit")),
}


def validate_metadata(fields: dict[str, Any], source: str) -> dict[str, Any]:
    """`fields` unchanged, or a :class:`MetadataError` naming `source` and the first field of the wrong type."""
    for name, value in fields.items():
        expected, ok = _METADATA_FIELDS.get(name, (None, None))
        if ok is not None and not ok(value):
            raise MetadataError(
                f"{source}: field {name!r} must be {expected}, got {json.dumps(value)} ({type(value).__name__})"
            )
    return fields


def write_metadata(output_dir: str | os.PathLike, **fields: Any) -> None:
    """Record how a checkpoint's rewards are computed (β, reference, separator) next to its weights.

    The file is validated (no NaN or infinity: strict JSON) and written atomically: a temporary file in the same
    directory, then `os.replace`, so a reader never sees a half-written file.
    """
    path = Path(output_dir) / METADATA_FILE
    validate_metadata(fields, str(path))
    text = json.dumps(fields, indent=2, sort_keys=True, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{METADATA_FILE}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_metadata(model_dir: str | os.PathLike) -> dict[str, Any]:
    """The metadata a trainer saved with a checkpoint, or {} when there is none; errors name the file."""
    path = Path(model_dir) / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise MetadataError(f"{path}: cannot be read ({err})") from None
    if not text.strip():
        raise MetadataError(
            f"{path}: the file is empty; re-save the checkpoint or delete the file and pass beta, "
            "ref_model and step_separator explicitly"
        )
    try:
        fields = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as err:
        raise MetadataError(f"{path}: not valid JSON ({err}); the file may be truncated") from None
    if not isinstance(fields, dict):
        raise MetadataError(f"{path}: expected a JSON object, got {type(fields).__name__}")
    return validate_metadata(fields, str(path))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed (strict JSON)")
