"""Per-token log-probs of completion tokens: the one place they are computed.

Every reader of a model's log-probs goes through :func:`completion_logps`: the trainers (policy and reference),
the reference precomputation, KTO's mismatched pairs, :class:`~trl_implicit_prm.ProcessRewardComputer`. It
returns a float32 `[B, T]` tensor aligned with `input_ids` (position `t` holds `log π(y_t | y_<t)`), zero at
prompt, padding and position 0, and chooses among three exact backends:

- `"fused"`: TRL's fused LM head (patched onto the model once): only hidden states are kept and the head is
  applied in tiles. On CUDA/XPU it projects only the labelled positions with a Triton kernel; without Triton
  (CPU) it projects every position with several passes over a `[tokens, vocab]` tile.
- `"compact"`: the backbone once, then the model's own LM head module on the completion positions only, in tiles
  of about `TILE_ELEMENTS` logits, with a float32 log-sum-exp (in place when no gradient is needed). Exact only
  for models whose logits are the head's output unscaled and not prompt-learning PEFT (:func:`supports_compact`),
  and it calls the backbone directly, so it is never chosen for a model wrapped by DDP or DeepSpeed (their
  forward is what synchronises gradients and gathers sharded weights).
- `"logits"`: the ordinary forward, gathered from the logits in chunks of `chunk_size` positions.

`method="auto"` (the default) picks `"fused"` on CUDA/XPU or for a wrapped model, else `"compact"` when it is
exact, else `"fused"`.

Left padding: position ids are derived from the attention mask (:func:`position_ids`), which models with
absolute positions (GPT-2) need.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from trl_implicit_prm.modeling import unwrap_model

__all__ = [
    "LOGPS_METHODS",
    "completion_logps",
    "ensure_fused_lm_head",
    "label_logps",
    "position_ids",
    "resolve_logps_method",
    "supports_compact",
]

LOGPS_METHODS = ("auto", "fused", "logits", "compact")
LogpsMethod = Literal["auto", "fused", "logits", "compact"]

TILE_ELEMENTS = 2**25  # logits per tile of the compact head: 128 MiB in float32

# Config fields under which a model transforms its logits after the LM head (as TRL's fused head reads them).
_LOGIT_TRANSFORMS = (
    "final_logit_softcapping",
    "logit_scale",
    "output_multiplier",
    "lm_head_multiplier",
    "logits_scaling",
)
_FUSED_MARK = "_implicit_prm_fused_lm_head"


def ensure_fused_lm_head(model: nn.Module) -> nn.Module:
    """Give `model` TRL's fused LM head once, so per-token log-probs never materialise `[B, T, V]` logits.

    After this, `model(..., labels=labels, fused_lm_head=True).log_probs` returns `[B, T-1]` log-probs of the
    labelled next tokens; calls without `fused_lm_head=True` are unchanged (generation still works). Idempotent;
    works on plain models, PEFT models (the base model is patched, as TRL does) and modules wrapped by DeepSpeed
    or DDP.
    """
    from trl.trainer.utils import add_fused_lm_head

    owner = unwrap_model(model)  # the base model under PEFT (as TRL does), the module under DeepSpeed
    if not getattr(owner, _FUSED_MARK, False):
        add_fused_lm_head(owner)
        setattr(owner, _FUSED_MARK, True)
    return model


def position_ids(attention_mask: Tensor) -> Tensor | None:
    """Position ids of the real tokens under left padding, or None when no row is left-padded."""
    if not bool((attention_mask[:, 0] == 0).any()):
        return None
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def supports_compact(model: nn.Module) -> bool:
    """Whether the compact head gives exactly the model's log-probs (and the model is not wrapped)."""
    if hasattr(model, "module"):  # DDP / DeepSpeed: their forward must run
        return False
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict) and any(
        getattr(c, "is_prompt_learning", False) for c in peft_config.values()
    ):
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


def resolve_logps_method(model: nn.Module, method: str, device: torch.device | str | None = None) -> str:
    """The backend `method` stands for on `model` (see the module docstring); an error for an unusable one."""
    if method not in LOGPS_METHODS:
        raise ValueError(f"logps_method must be one of {LOGPS_METHODS}, got {method!r}")
    if method == "compact" and not supports_compact(model):
        raise ValueError(
            "logps_method='compact' needs an unwrapped causal LM whose logits are its LM head's output (no logit "
            "soft-capping or scaling, no prompt-learning PEFT, no DDP/DeepSpeed wrapper); use logps_method='fused'"
        )
    if method != "auto":
        return method
    if device is None:
        device = next(model.parameters()).device
    if torch.device(device).type in ("cuda", "xpu") or not supports_compact(model):
        return "fused"
    return "compact"


def completion_logps(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    method: LogpsMethod = "auto",
    chunk_size: int = 4096,
) -> Tensor:
    """Per-token log-probs `log π(y_t | x, y_<t)` of the completion tokens, float32 `[B, T]` aligned with
    `input_ids`, zero elsewhere. Gradients flow when called outside `torch.no_grad()`.
    """
    method = resolve_logps_method(model, method, input_ids.device)
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
    positions = position_ids(attention_mask)
    if positions is not None:
        kwargs["position_ids"] = positions
    if method == "compact":
        return _compact(model, kwargs, input_ids, completion_mask)
    labels = input_ids.masked_fill(completion_mask == 0, -100)
    seq_len = input_ids.size(1)
    if method == "fused":
        ensure_fused_lm_head(model)
        out = model(**kwargs, labels=labels, fused_lm_head=True)
        # Prompt-learning PEFT prepends virtual tokens: keep the positions of the real tokens.
        shifted = out.log_probs[:, -(seq_len - 1) :].float()
    else:
        shifted = _from_logits(model(**kwargs).logits[:, -seq_len:-1], labels[:, 1:], chunk_size)
    return torch.cat([shifted.new_zeros(shifted.size(0), 1), shifted], dim=1)


def _from_logits(logits: Tensor, targets: Tensor, chunk_size: int) -> Tensor:
    """Log-probs of `targets` (−100: none) from `[B, T, V]` logits, `chunk_size` positions at a time in float32."""
    flat_logits = logits.reshape(-1, logits.size(-1))
    flat_targets = targets.reshape(-1)
    pieces = []
    for start in range(0, flat_targets.numel(), chunk_size):
        lg = flat_logits[start : start + chunk_size].float()
        tg = flat_targets[start : start + chunk_size]
        picked = lg.gather(-1, tg.clamp(min=0).unsqueeze(-1)).squeeze(-1) - torch.logsumexp(lg, dim=-1)
        pieces.append(picked.masked_fill(tg == -100, 0.0))
    return torch.cat(pieces).view_as(targets)


def _compact(model: nn.Module, kwargs: dict, input_ids: Tensor, completion_mask: Tensor) -> Tensor:
    """The backbone once, the LM head on completion positions only (see the module docstring)."""
    lm = unwrap_model(model)
    hidden = lm.base_model(**kwargs).last_hidden_state
    scored = completion_mask[:, 1:].bool()
    states = hidden[:, :-1][scored]
    del hidden
    values = _head_logps(lm.get_output_embeddings(), states, input_ids[:, 1:][scored])
    out = values.new_zeros(input_ids.shape)
    if not torch.is_grad_enabled():
        out[:, 1:][scored] = values
        return out
    return out.masked_scatter(torch.cat([torch.zeros_like(scored[:, :1]), scored], dim=1), values)


def _head_logps(head: nn.Module, states: Tensor, targets: Tensor) -> Tensor:
    """`log softmax(head(states))[targets]`, float32 `[N]`, in tiles of about `TILE_ELEMENTS` logits."""
    rows = max(1, TILE_ELEMENTS // max(1, int(head.weight.shape[0])))
    grad = torch.is_grad_enabled()
    pieces = []
    for start in range(0, states.shape[0], rows):
        logits = head(states[start : start + rows]).float()
        picked = logits.gather(-1, targets[start : start + rows, None]).squeeze(-1)
        pieces.append(picked - (torch.logsumexp(logits, dim=-1) if grad else _logsumexp_(logits)))
        del logits
    return torch.cat(pieces) if pieces else states.new_zeros(0, dtype=torch.float32)


def label_logps(model: nn.Module, labels: Tensor, chunk_size: int = 4096, **forward_kwargs: Any) -> Tensor:
    """Float32 `[B, T]` log-probs of the tokens that follow each input position, `labels[b, t]` (−100: none, 0
    out), for forwards over part of a sequence: `forward_kwargs` (ids, masks, positions, a KV cache) go to the
    model as they are, and `out[b, t] = log π(labels[b, t] | everything read up to input position t)`.

    The compact head (LM head on the labelled positions only) when it is exact (:func:`supports_compact`), else
    the logits of the ordinary forward.

    Example:

    ```python
    >>> from trl_implicit_prm.tiny import build_model, build_tokenizer
    >>> model = build_model("llama", build_tokenizer(vocab_size=400))
    >>> ids = torch.tensor([[5, 6, 7, 8]])
    >>> full = completion_logps(model, ids, torch.ones_like(ids), torch.ones_like(ids))
    >>> part = label_logps(model, torch.tensor([[6, 7, -100]]), input_ids=ids[:, :3]).detach()
    >>> torch.allclose(part[0, :2], full[0, 1:3], atol=1e-5), float(part[0, 2])
    (True, 0.0)

    ```
    """
    if not supports_compact(model):
        return _from_logits(model(**forward_kwargs).logits, labels, chunk_size)
    lm = unwrap_model(model)
    hidden = lm.base_model(**forward_kwargs).last_hidden_state
    scored = labels != -100
    values = _head_logps(lm.get_output_embeddings(), hidden[scored], labels[scored])
    del hidden
    return values.new_zeros(labels.shape).masked_scatter(scored, values)


def _logsumexp_(logits: Tensor) -> Tensor:
    """`logsumexp` over the last dim, overwriting `logits` (about twice as fast as `torch.logsumexp` on CPU)."""
    top = logits.amax(dim=-1, keepdim=True)
    return logits.sub_(top).exp_().sum(dim=-1).log_().add_(top.squeeze(-1))
