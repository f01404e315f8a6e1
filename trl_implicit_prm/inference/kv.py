"""Key/value caches kept as a tree of segments, and one batched forward over the new tokens of many prefixes.

A prefix's past is a chain of :class:`KVSegment`: each segment holds the keys and values (one tensor
`[layers, 2, heads, n, head_dim]`, every layer at once) of the tokens a forward added, and points to the segment
of the prefix it continued. Forks of one prefix point to the same parent segment, so a shared prefix is stored
once; a segment is freed by reference counting as soon as no live prefix (and no descendant segment) refers to it,
so the memory held is that of the live prefixes' token tree, never that of the search's history.

:func:`forward_new_tokens` runs rows of different past lengths in one forward: their pasts are gathered into one
buffer, left-padded to the longest (masked out by the attention mask), with room after it for the new tokens
(right-padded: padded queries come after every real one, so no real token attends to them). The model writes the
new keys/values into that buffer in place (:class:`_Slot`, no concatenation), then each row's new tokens are
copied out into its own segment. Position ids are given explicitly, so models with absolute positions (GPT-2) see
the positions of one forward over the whole sequence. Copies per forward: the rows' pasts once into the buffer (a
batched attention needs them side by side), and the new tokens once out of it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers.cache_utils import Cache, DynamicLayer

from ..logps import label_logps
from ..modeling import unwrap_model

__all__ = ["KVSegment", "Past", "forward_new_tokens", "past_pieces"]


@dataclass(eq=False)
class KVSegment:
    """Keys and values of the tokens `[start, start + n)` of a prefix whose first `start` tokens are in `parent`.

    `kv` is `[layers, 2, heads, n, head_dim]`. A parent may hold more tokens than `start` (a child that re-read
    the parent's last tokens after a BPE merge across the old end); the child uses its first `start` only.
    """

    kv: Tensor
    start: int
    parent: KVSegment | None = None

    @property
    def end(self) -> int:
        """Position after this segment's last token."""
        return self.start + int(self.kv.shape[-2])

    @property
    def nbytes(self) -> int:
        """Bytes held by this segment's keys and values."""
        return self.kv.numel() * self.kv.element_size()


GROWTH = 1.5  # room a new batch buffer gets, for the next forwards' longer pasts
Past = tuple[KVSegment | None, int]  # the segment chain of a prefix and how many of its tokens are used


def past_pieces(past: Past) -> list[Tensor]:
    """The tensors holding tokens `[0, length)` of a past, in order (views, no copy).

    Example:

    ```python
    >>> root = KVSegment(torch.zeros(1, 2, 1, 5, 1), 0)
    >>> child = KVSegment(torch.ones(1, 2, 1, 3, 1), 4, root)  # re-read token 4 of its parent
    >>> [p.shape[-2] for p in past_pieces((child, 6))]
    [4, 2]

    ```
    """
    segment, length = past
    if segment is not None and length > segment.end:
        raise ValueError(f"a past of {segment.end} tokens cannot give {length}")
    pieces, end = [], length
    while segment is not None and end > 0:
        if segment.start < end:
            pieces.append(segment.kv[..., : end - segment.start, :])
            end = segment.start
        segment = segment.parent
    if end:
        raise ValueError(f"a past is missing its first {end} tokens")
    return pieces[::-1]


class _Slot(DynamicLayer):
    """One layer's cache over a preallocated `[B, heads, longest + widest, dim]` buffer: the model's `update`
    writes the new keys/values in place after the `filled` past tokens (no concatenation).
    """

    def __init__(self, keys: Tensor, values: Tensor, filled: int) -> None:
        super().__init__()
        self.buffer, self.filled = (keys, values), filled
        self.keys, self.values = keys[..., :filled, :], values[..., :filled, :]
        self.device, self.dtype, self.is_initialized = keys.device, keys.dtype, True

    def update(
        self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        end = self.filled + key_states.shape[-2]
        self.buffer[0][..., self.filled : end, :].copy_(key_states)
        self.buffer[1][..., self.filled : end, :].copy_(value_states)
        self.filled = end
        self.keys, self.values = self.buffer[0][..., :end, :], self.buffer[1][..., :end, :]
        return self.keys, self.values


def _workspace(template: Tensor, numel: int, workspace: Tensor | None) -> Tensor:
    """`workspace` when it has `numel` elements of `template`'s dtype and device, else new flat memory with
    `GROWTH` times the room (fresh memory costs a page fault per page on first touch, about as much as the copy).
    """
    if workspace is None or workspace.numel() < numel or workspace.dtype != template.dtype:
        return template.new_empty(int(numel * GROWTH))
    return workspace if workspace.device == template.device else template.new_empty(int(numel * GROWTH))


def _gather(buffer: Tensor, pasts: Sequence[Past], longest: int) -> None:
    """Fill `buffer` `[layers, 2, B, heads, longest + widest, dim]` with each row's past right-aligned before
    `longest`, zeros before it (masked out, but never garbage: a NaN there would survive its zero attention
    weight); the model writes every slot after `longest`.
    """
    for i, past in enumerate(pasts):
        at = longest - past[1]
        buffer[:, :, i, :, :at] = 0
        for piece in past_pieces(past):
            buffer[:, :, i, :, at : at + piece.shape[-2]] = piece
            at += piece.shape[-2]


def _cache_argument(model: nn.Module) -> str:
    """The name a model's forward takes its cache under: `cache` (recent transformers) or `past_key_values`."""
    forward = unwrap_model(model).forward
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def _kv_template(model: nn.Module, pasts: Sequence[Past], device: torch.device) -> Tensor:
    """A tensor with the past's layout `[layers, 2, kv_heads, 0, head_dim]` (from a past, else the config)."""
    for segment, length in pasts:
        if segment is not None and length:
            return segment.kv[..., :0, :]
    config = unwrap_model(model).config.get_text_config()
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    dtype = next(model.parameters()).dtype
    return torch.zeros(config.num_hidden_layers, 2, heads, 0, dim, dtype=dtype, device=device)


def forward_new_tokens(
    model: nn.Module,
    pasts: Sequence[Past],
    inputs: Sequence[Tensor],
    targets: Sequence[Tensor],
    pad_id: int,
    workspace: Tensor | None = None,
) -> tuple[list[Tensor], list[KVSegment], Tensor]:
    """Feed `inputs[i]` after `pasts[i]`; the float32 log-probs of `targets[i]`, each row's new segment (child of
    its past) and the flat memory the batch buffer used (pass it back as `workspace` to reuse it: nothing refers
    to it once this returns).

    `targets[i][j]` is the token that follows `inputs[i][j]`: `log π(target | past, inputs[:j+1])`, computed by
    :func:`~trl_implicit_prm.logps.label_logps`. Every row needs at least one input token.
    """
    if min(int(x.numel()) for x in inputs) < 1:
        raise ValueError("every row needs at least one new token")
    device = next(model.parameters()).device
    lengths = [length for _, length in pasts]
    longest, widest, batch = max(lengths), max(int(x.numel()) for x in inputs), len(inputs)
    ids = torch.full((batch, widest), pad_id, dtype=torch.long)
    labels = torch.full((batch, widest), -100, dtype=torch.long)
    attention = torch.ones((batch, longest + widest), dtype=torch.long)
    for i, (x, y, m) in enumerate(zip(inputs, targets, lengths, strict=True)):
        ids[i, : x.numel()], labels[i, : y.numel()] = x, y
        attention[i, : longest - m] = 0
    positions = torch.tensor(lengths)[:, None] + torch.arange(widest)[None]
    template = _kv_template(model, pasts, device)
    layers, two, heads, _, dim = template.shape
    shape = (layers, two, batch, heads, longest + widest, dim)
    workspace = _workspace(template, math.prod(shape), workspace)
    buffer = workspace[: math.prod(shape)].view(shape)
    _gather(buffer, pasts, longest)
    cache = Cache(layers=[_Slot(buffer[k, 0], buffer[k, 1], longest) for k in range(buffer.shape[0])])
    values = label_logps(
        model,
        labels.to(device),
        input_ids=ids.to(device),
        attention_mask=attention.to(device),
        position_ids=positions.to(device),
        use_cache=True,
        **{_cache_argument(model): cache},
    )
    logps, segments = [], []
    for i, (x, past) in enumerate(zip(inputs, pasts, strict=True)):
        n = int(x.numel())
        logps.append(values[i, :n].cpu())
        segments.append(KVSegment(buffer[:, :, i, :, longest : longest + n].clone(), past[1], past[0]))
    return logps, segments, workspace
