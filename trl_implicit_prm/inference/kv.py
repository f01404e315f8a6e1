"""One batched forward over the new tokens of many rows, each continuing its own past key/values.

A row's past is a tuple, per layer, of `(keys, values)` tensors `[heads, m, head_dim]` holding the first `m`
tokens of its sequence. Rows of different past lengths share a forward: their pasts are left-padded to the
longest (masked out by the attention mask) and their new tokens right-padded (padded queries come after every
real one, so no real token attends to them); position ids are given explicitly, so models with absolute
positions (GPT-2) see the same positions as in one forward over the whole sequence. Each row gets back its own
contiguous past, so that dropping a row frees its memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Past", "crop_past", "forward_new_tokens", "past_bytes", "past_length"]

Past = tuple[tuple[Tensor, Tensor], ...]


def past_length(past: Past | None) -> int:
    """Number of tokens a past holds (0 for None)."""
    return 0 if past is None else int(past[0][0].shape[1])


def past_bytes(past: Past | None) -> int:
    """Bytes held by a past's tensors."""
    if past is None:
        return 0
    return sum(t.numel() * t.element_size() for layer in past for t in layer)


def crop_past(past: Past | None, length: int) -> Past | None:
    """The first `length` tokens of a past (views, no copy); None when `length` is 0."""
    if past is None or length == 0:
        return None
    if length > past_length(past):
        raise ValueError(f"cannot crop a past of {past_length(past)} tokens to {length}")
    return tuple((k[:, :length], v[:, :length]) for k, v in past)


def _batched_past(pasts: Sequence[Past | None], longest: int) -> object | None:
    from transformers import DynamicCache

    if longest == 0:
        return None
    template = next(p for p in pasts if p is not None)
    layers = []
    for layer, (k0, v0) in enumerate(template):
        keys, values = [], []
        for past in pasts:
            k, v = (k0[:, :0], v0[:, :0]) if past is None else past[layer]
            pad = longest - k.shape[1]
            keys.append(torch.cat([k.new_zeros(k.shape[0], pad, k.shape[2]), k], dim=1))
            values.append(torch.cat([v.new_zeros(v.shape[0], pad, v.shape[2]), v], dim=1))
        layers.append((torch.stack(keys), torch.stack(values)))
    return DynamicCache(layers)


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
    out = model(
        input_ids=ids.to(device),
        attention_mask=attention.to(device),
        position_ids=positions.to(device),
        cache=_batched_past(pasts, longest),
        use_cache=True,
    )
    logps, new_pasts = [], []
    for i, (x, y, m) in enumerate(zip(inputs, targets, lengths, strict=True)):
        n = int(x.numel())
        logits = out.logits[i, :n].float()
        picked = logits.gather(-1, y.to(device).view(-1, 1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        logps.append(picked.cpu())
        new_pasts.append(
            tuple(
                (
                    layer.keys[i, :, longest - m : longest + n].clone(),
                    layer.values[i, :, longest - m : longest + n].clone(),
                )
                for layer in out.cache.layers
            )
        )
    return logps, new_pasts
