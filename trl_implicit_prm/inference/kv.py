"""One batched forward over the new tokens of many rows, each continuing its own past key/values.

A row's past is one tensor `[layers, 2, heads, m, head_dim]` (keys and values of every layer) holding its first
`m` tokens: one tensor per row keeps the bookkeeping to a few operations per batch whatever the depth. Rows of
different past lengths share a forward: their pasts are left-padded to the longest (masked out by the attention
mask) and their new tokens right-padded (padded queries come after every real one, so no real token attends to
them); position ids are given explicitly, so models with absolute positions (GPT-2) see the same positions as in
one forward over the whole sequence. Each row gets back a view of one tensor holding its batch (one copy per
forward): the batch's memory is freed when none of its rows is alive any more (in a search, one round after
its beams were pruned or extended), and forks of one prefix share their parent's tensor.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..modeling import unwrap_model

__all__ = ["Past", "crop_past", "forward_new_tokens", "past_bytes", "past_length"]

Past = Tensor  # [layers, 2, heads, tokens, head_dim]


def past_length(past: Past | None) -> int:
    """Number of tokens a past holds (0 for None)."""
    return 0 if past is None else int(past.shape[-2])


def past_bytes(past: Past | None) -> int:
    """Bytes held by a past."""
    return 0 if past is None else past.numel() * past.element_size()


def crop_past(past: Past | None, length: int) -> Past | None:
    """The first `length` tokens of a past (a view, no copy); None when `length` is 0."""
    if past is None or length == 0:
        return None
    if length > past_length(past):
        raise ValueError(f"cannot crop a past of {past_length(past)} tokens to {length}")
    return past[..., :length, :]


def _batched_past(pasts: Sequence[Past | None], longest: int) -> object | None:
    """A `DynamicCache` of the rows' pasts, left-padded with zeros to `longest` tokens."""
    from transformers import DynamicCache

    if longest == 0:
        return None
    template = next(p for p in pasts if p is not None)
    layers, two, heads, _, dim = template.shape
    batch = template.new_zeros(layers, two, len(pasts), heads, longest, dim)
    for i, past in enumerate(pasts):
        if past is not None:
            batch[:, :, i, :, longest - past.shape[-2] :] = past
    return DynamicCache([(batch[layer, 0], batch[layer, 1]) for layer in range(layers)])


def _split_pasts(cache: Any, lengths: Sequence[int], new: Sequence[int], longest: int) -> list[Past]:
    """Each row's past out of the batched cache the forward returned: one copy of the batch into a tensor
    `[layers, 2, B, heads, T, dim]`, each row a view of it (without its padding)."""
    layers = cache.layers
    if any(layer.keys.shape != layer.values.shape for layer in layers):
        raise ValueError("incremental scoring needs keys and values of the same shape in every layer")
    first = layers[0].keys
    stacked = first.new_empty((len(layers), 2, *first.shape))
    for index, layer in enumerate(layers):
        stacked[index, 0] = layer.keys
        stacked[index, 1] = layer.values
    return [
        stacked[:, :, i, :, longest - m : longest + n]
        for i, (m, n) in enumerate(zip(lengths, new, strict=True))
    ]


def _cache_argument(model: nn.Module) -> str:
    """The name a model's forward takes its cache under: `cache` (recent transformers) or `past_key_values`."""
    forward = unwrap_model(model).forward
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def forward_new_tokens(
    model: nn.Module,
    pasts: Sequence[Past | None],
    inputs: Sequence[Tensor],
    targets: Sequence[Tensor],
    pad_id: int,
) -> tuple[list[Tensor], list[Past]]:
    """Feed `inputs[i]` after `pasts[i]`; return the float32 log-probs of `targets[i]` and the extended pasts.

    `targets[i][j]` is the token that follows `inputs[i][j]` (`log π(target | past, inputs[:j+1])`, from a
    float32 log-softmax of the logits). Every row needs at least one input token.
    """
    device = next(model.parameters()).device
    lengths = [past_length(p) for p in pasts]
    longest, widest = max(lengths), max(int(x.numel()) for x in inputs)
    if min(int(x.numel()) for x in inputs) < 1:
        raise ValueError("every row needs at least one new token")
    batch = len(inputs)
    ids = torch.full((batch, widest), pad_id, dtype=torch.long)
    attention = torch.ones((batch, longest + widest), dtype=torch.long)
    positions = torch.zeros((batch, widest), dtype=torch.long)
    for i, (x, m) in enumerate(zip(inputs, lengths, strict=True)):
        ids[i, : x.numel()] = x
        attention[i, : longest - m] = 0
        positions[i] = torch.arange(m, m + widest)
    name = _cache_argument(model)
    out = model(
        input_ids=ids.to(device),
        attention_mask=attention.to(device),
        position_ids=positions.to(device),
        use_cache=True,
        **{name: _batched_past(pasts, longest)},
    )
    logps = []
    for i, (x, y) in enumerate(zip(inputs, targets, strict=True)):
        logits = out.logits[i, : x.numel()].float()
        picked = logits.gather(-1, y.to(device).view(-1, 1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        logps.append(picked.cpu())
    return logps, _split_pasts(out[name], lengths, [int(x.numel()) for x in inputs], longest)
