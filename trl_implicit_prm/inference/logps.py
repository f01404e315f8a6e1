"""Per-token completion log-probs for scoring: the shared fused path, or a compact head where it is faster.

:func:`trl_implicit_prm.rewards.completion_logps` (TRL's fused LM head) is the path the trainers use. On CUDA/XPU
it projects only the completion positions through the LM head with a Triton kernel. Without Triton (CPU) TRL
projects *every* position, and its torch fallback makes several full passes over a `[tokens, vocab]` tile, which
measured slower than a plain forward. The compact head here runs the backbone once, keeps the hidden states of
the completion positions only, and applies the model's own LM head module to them in tiles of about
`TILE_ELEMENTS` logits, then an in-place float32 log-sum-exp: less work and less memory than the plain forward.

It is used only where it is exact: models whose logits are the LM head's output unscaled (no soft-capping or
logit multipliers in the config) and not prompt-learning PEFT. Everything else falls back to the shared path.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ..modeling import unwrap_model
from ..rewards import completion_logps

__all__ = ["LOGPS_METHODS", "compact_completion_logps", "resolve_logps_method", "supports_compact"]

LOGPS_METHODS = ("auto", "fused", "logits", "compact")
LogpsMethod = Literal["auto", "fused", "logits", "compact"]

TILE_ELEMENTS = 2**25  # logits per tile: 128 MiB in float32

# Config fields under which a model transforms its logits after the LM head (as TRL's fused head reads them).
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                     "logits_scaling")


def supports_compact(model: nn.Module) -> bool:
    """Whether :func:`compact_completion_logps` gives exactly the model's log-probs."""
    module = getattr(model, "module", model)
    peft_config = getattr(module, "peft_config", None)
    if isinstance(peft_config, dict) and any(getattr(c, "is_prompt_learning", False) for c in peft_config.values()):
        return False
    lm = unwrap_model(model)
    config = getattr(lm, "config", None)
    if config is None or lm.get_output_embeddings() is None:
        return False
    backbone = getattr(lm, "base_model", lm)
    if backbone is lm:
        return False
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return all(getattr(text_config, name, None) is None for name in _LOGIT_TRANSFORMS)


def resolve_logps_method(model: nn.Module, method: str, device: torch.device) -> str:
    """`"auto"`: the shared fused path on CUDA/XPU, the compact head elsewhere when exact, else fused."""
    if method not in LOGPS_METHODS:
        raise ValueError(f"logps_method must be one of {LOGPS_METHODS}, got {method!r}")
    if method == "compact" and not supports_compact(model):
        raise ValueError(
            "logps_method='compact' needs a causal LM whose logits are its LM head's output (no logit soft-capping "
            "or scaling, no prompt-learning PEFT); use logps_method='fused'"
        )
    if method != "auto":
        return method
    if device.type in ("cuda", "xpu") or not supports_compact(model):
        return "fused"
    return "compact"


def compact_completion_logps(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor
) -> Tensor:
    """Same contract as :func:`~trl_implicit_prm.rewards.completion_logps`: float32 `[B, T]` log-probs of the
    completion tokens aligned with `input_ids`, zero elsewhere; the LM head runs on completion positions only."""
    lm = unwrap_model(model)
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
    if bool((attention_mask[:, 0] == 0).any()):
        kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    hidden = lm.base_model(**kwargs).last_hidden_state
    head = lm.get_output_embeddings()
    scored = completion_mask[:, 1:].bool()
    states = hidden[:, :-1][scored]
    targets = input_ids[:, 1:][scored].unsqueeze(-1)
    del hidden
    rows = max(1, TILE_ELEMENTS // max(1, int(head.weight.shape[0])))
    pieces = []
    for start in range(0, states.shape[0], rows):
        logits = head(states[start:start + rows]).float()
        picked = logits.gather(-1, targets[start:start + rows]).squeeze(-1)
        pieces.append(picked - _logsumexp_(logits))
        del logits
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    if pieces:
        out[:, 1:][scored] = torch.cat(pieces).to(out.device)
    return out


def _logsumexp_(logits: Tensor) -> Tensor:
    """`logsumexp` over the last dim, overwriting `logits` (about twice as fast as `torch.logsumexp` on CPU)."""
    top = logits.amax(dim=-1, keepdim=True)
    return logits.sub_(top).exp_().sum(dim=-1).log_().add_(top.squeeze(-1))


def model_logps(
    model: nn.Module, method: str, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor
) -> Tensor:
    """Dispatch to the compact head or to the shared `completion_logps` (`"fused"` or `"logits"`)."""
    if method == "compact":
        return compact_completion_logps(model, input_ids, attention_mask, completion_mask)
    return completion_logps(model, input_ids, attention_mask, completion_mask, method=method)
