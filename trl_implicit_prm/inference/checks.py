"""Checks of a :class:`~trl_implicit_prm.inference.ProcessRewardComputer`'s settings, made before it scores:
which reference it uses (:func:`choose_reference`), how prompts are rendered and responses ended
(:func:`check_rendering`), and the default length limit (:func:`default_max_length`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from torch import nn

from ..data.formats import check_step_separator
from ..data.rendering import PromptFormat, template_sha256
from ..modeling import is_peft_model, unwrap_model

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_TOKENS = 16384
_SANE_LENGTH = 10**7  # tokenizers without a limit report 1e30


def default_max_length(model: nn.Module, tokenizer: Any) -> int | None:
    """The smaller of the model's position limit and the tokenizer's `model_max_length`, when they are sane."""
    lm = unwrap_model(model)
    config = getattr(lm, "config", None)
    text_config = (
        config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
    )
    limits = [
        getattr(text_config, "max_position_embeddings", None),
        getattr(text_config, "n_positions", None),
        getattr(tokenizer, "model_max_length", None),
    ]
    sane = [int(x) for x in limits if isinstance(x, int) and 0 < x < _SANE_LENGTH]
    return min(sane) if sane else None


def check_rendering(
    tokenizer: Any,
    step_separator: Any,
    prompt_format: PromptFormat | Mapping[str, Any] | None,
    append_eos: Any,
) -> PromptFormat | None:
    """The prompt format as a :class:`PromptFormat` (or None), after checking the separator, `append_eos` and
    the tokenizer's pad/EOS tokens; a warning when the chat template differs from the one training used.
    """
    check_step_separator(step_separator)
    if isinstance(prompt_format, Mapping):
        prompt_format = PromptFormat.from_metadata(prompt_format, "prompt_format")
    if prompt_format is not None and not isinstance(prompt_format, PromptFormat):
        raise TypeError(
            f"prompt_format must be a PromptFormat, its dict or None, got {type(prompt_format).__name__}"
        )
    if not isinstance(append_eos, bool):
        raise TypeError(f"append_eos must be True or False, got {append_eos!r}")
    if append_eos and not getattr(tokenizer, "eos_token", None):
        raise ValueError("append_eos=True needs a tokenizer with an eos_token; pass append_eos=False")
    if getattr(tokenizer, "pad_token_id", None) is None and getattr(tokenizer, "eos_token_id", None) is None:
        raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad batches with")
    recorded = (
        prompt_format.chat_template_sha256 if prompt_format is not None and prompt_format.is_chat else None
    )
    if recorded is not None and template_sha256(tokenizer) != recorded:
        logger.warning(
            "the tokenizer's chat template (sha256 %s) is not the one the PRM was trained with (sha256 %s): "
            "chat prompts are rendered differently from training; use the tokenizer saved with the checkpoint",
            template_sha256(tokenizer),
            recorded,
        )
    return prompt_format


def choose_reference(
    model: nn.Module, ref_model: Any, reference_free: bool, adapter_reference: bool | None
) -> bool:
    """Whether the reference is the policy with adapters disabled; an error when there is no reference at all.

    A separate `ref_model` is the reference; a PEFT policy without one is scored against its adapters-disabled
    base; reference-free scoring (`ρ = log πθ`) happens only when asked for with `reference_free=True`.
    """
    if not isinstance(reference_free, bool):
        raise TypeError(f"reference_free must be True or False, got {reference_free!r}")
    if reference_free and (ref_model is not None or adapter_reference):
        raise ValueError(
            "reference_free=True scores with the policy alone: do not pass ref_model or "
            "adapter_reference=True with it"
        )
    if ref_model is not None:
        if adapter_reference:
            raise ValueError(
                "adapter_reference=True uses the policy with adapters disabled; do not pass ref_model"
            )
        return False
    if reference_free:
        return False
    peft = callable(getattr(model, "disable_adapter", None)) and is_peft_model(model)
    if adapter_reference and not peft:
        raise ValueError("adapter_reference=True needs a PEFT model (one with `disable_adapter()`)")
    if not peft:
        raise ValueError(
            "no reference model: pass ref_model=... (usually the policy's initial checkpoint), use "
            "ProcessRewardComputer.from_trainer(trainer) to score with a trainer's own reference, or pass "
            "reference_free=True to score with log πθ alone (paper §5.5.2). A trainer's `ref_model` is None "
            "after LoRA or precompute_ref_log_probs=True training, so do not pass `trainer.ref_model`."
        )
    if adapter_reference is None:
        logger.info(
            "the policy is a PEFT model without ref_model: its base with adapters disabled is the reference"
        )
    return True
