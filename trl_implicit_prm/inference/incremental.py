"""Incremental scoring: prefixes that grow step by step, scored with the policy's and reference's KV caches.

An implicit PRM's q-value exists at every token (paper Prop. 3.1), so a partial response can be scored as it
grows. :class:`IncrementalScorer` keeps, for each prefix, the per-token log-probs already computed and the past
key/values of both models: extending a prefix forwards only the tokens that are new. Which tokens are new is
decided on the real tokenization of the whole text (the computer's :meth:`encode_one`, the step-span rule of
:mod:`trl_implicit_prm.data.tokenize`): the new token ids are compared with the old ones and everything from the
first difference on is recomputed, so a BPE merge across the old end (`"5."` + `"\\n\\nSo"` tokenized as
`"5.\\n\\n"`, `"So"`) costs a token or two more, never a wrong number. The result equals
`ProcessRewardComputer.score(..., complete=..., step_open=...)` on the whole prefix up to float rounding (same log-prob
assembly, :func:`~trl_implicit_prm.inference.assemble.assemble_step_rewards`).

Forks share: the caches are a tree of segments (:mod:`.kv`), each holding the keys/values of the tokens one
extension added and pointing to its parent's, so several continuations of one prefix share its tensors. Memory
is that of the live prefixes' token tree: a segment is freed, by reference counting, as soon as no live prefix
uses it (drop the prefix, or call :meth:`ScoredPrefix.release`), so a search that prunes holds (live beams) x
(prefix length) at most, whatever its history. :attr:`IncrementalScorer.cache_bytes` is what is held now,
:attr:`IncrementalScorer.peak_cache_bytes` the most ever held, including the batch buffer of the forwards (whose
memory the scorer keeps for the next ones).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..explicit import EXPLICIT_KIND
from ..rewards import implicit_step_rewards, step_logp_sums
from .assemble import assemble_step_rewards
from .batching import plan_batches
from .encoding import EncodedResponse
from .kv import KVSegment, Past, forward_new_tokens
from .step_rewards import StepRewards

__all__ = ["IncrementalScorer", "ScoredPrefix"]


@dataclass(eq=False)
class _Track:
    """One model's state for a prefix: float32 log-probs of every token (0 at position 0), and the cache whose
    first `len(logps) - 1` tokens are the past of all but the last token (None once released).
    """

    logps: np.ndarray
    segment: KVSegment | None

    def past(self, length: int) -> Past:
        """The first `length` tokens of this prefix's past."""
        return (self.segment, length) if length else (None, 0)


@dataclass(eq=False)
class ScoredPrefix:
    """A prompt and the steps generated so far, with their implicit rewards and the caches to extend them.

    `step_rewards[k]` is `r^k` (the last one of an open step so far), `outcome_reward` the q-value at the last
    token, `new_tokens` the tokens forwarded (per model) to get here from the prefix it was extended from.
    `complete`: the response ended (EOS appended if the computer's `append_eos` says so); otherwise its last
    step ends with the separator, unless `step_open` (cut mid-way by a token budget).
    """

    prompt: Any
    steps: tuple[str, ...]
    complete: bool
    step_open: bool
    input_ids: np.ndarray
    encoded: EncodedResponse | None
    step_rewards: list[float]
    new_tokens: int
    policy: _Track = field(repr=False)
    reference: _Track | None = field(repr=False)
    released: bool = False

    @property
    def q_values(self) -> list[float]:
        """Q at the end of each step: the running sums of `step_rewards`."""
        return np.cumsum(self.step_rewards).tolist() if self.step_rewards else []

    @property
    def outcome_reward(self) -> float:
        """Q at the last token, `β·Σ_t ρ_t` over every completion token so far."""
        return float(sum(self.step_rewards))

    @property
    def num_completion_tokens(self) -> int:
        """Number of completion tokens scored so far."""
        return 0 if self.encoded is None else self.encoded.length - self.encoded.prompt_length

    @property
    def cache_bytes(self) -> int:
        """Bytes of the key/value segments this prefix uses, both models (shared ones counted for each holder)."""
        return sum(seg.nbytes for seg in self.segments())

    def segments(self) -> list[KVSegment]:
        """The cache segments this prefix uses (its own and its ancestors'), both models."""
        out = []
        for track in (self.policy, self.reference):
            segment = None if track is None else track.segment
            while segment is not None:
                out.append(segment)
                segment = segment.parent
        return out

    def release(self) -> None:
        """Drop the caches (the prefix can no longer be extended; its rewards stay)."""
        self.released = True
        self.policy = _Track(self.policy.logps, None)
        if self.reference is not None:
            self.reference = _Track(self.reference.logps, None)


class IncrementalScorer:
    """Score growing prefixes with a :class:`ProcessRewardComputer`'s models, reusing their KV caches.

    Rendering (prompt format) and the EOS rule come from the computer (hence from the checkpoint's metadata):
    partial prefixes are scored without EOS and with the separator after their last step (unless `step_open`),
    `complete=True` ones as :meth:`ProcessRewardComputer.score` scores finished responses: the same tokens as
    `score(..., complete=..., step_open=...)`. Extending costs one forward of each model over the new tokens
    only (and a token or two again where the separator or a BPE merge moved).

    Example:

    ```python
    >>> from trl_implicit_prm import ProcessRewardComputer
    >>> from trl_implicit_prm.tiny import build_model, build_tokenizer
    >>> tok = build_tokenizer(vocab_size=400)
    >>> prm = ProcessRewardComputer(build_model("llama", tok), tok, ref_model=build_model("llama", tok, seed=1))
    >>> scorer = IncrementalScorer(prm)
    >>> roots = scorer.start(["2+3=?\\n"])
    >>> a, b = scorer.extend([roots[0], roots[0]], ["Add 2 and 3.", "Take 2."])  # a fork: one shared root
    >>> a2 = scorer.extend([a], ["The answer is 5."])[0]
    >>> full = prm.score_one("2+3=?\\n", ["Add 2 and 3.", "The answer is 5."], complete=False)
    >>> max(abs(x - y) for x, y in zip(a2.step_rewards, full.step_rewards)) < 1e-5
    True

    ```
    """

    def __init__(self, prm: Any, *, placeholder: str = "x") -> None:
        if getattr(prm, "kind", None) == EXPLICIT_KIND:
            raise ValueError(
                "incremental scoring continues the policy's and the reference's KV caches of an implicit PRM; "
                f"{type(prm).__name__} is an explicit PRM (a classifier, no reference, no per-token q-values). "
                "Score its candidates whole with prm.score(...), or search with an implicit-PRM checkpoint"
            )
        self.prm = prm
        self.placeholder = placeholder
        self.tokens_forwarded = 0  # tokens read by each model (policy and reference read the same ones)
        self.peak_cache_bytes = 0
        self._segments: weakref.WeakSet[KVSegment] = weakref.WeakSet()
        self._workspace: torch.Tensor | None = None  # the batch buffer's memory, reused by the next forwards

    @property
    def cache_bytes(self) -> int:
        """Bytes of the key/value segments alive now (each counted once, both models)."""
        return sum(seg.nbytes for seg in self._segments)

    # ----------------------------------------------------------------------------------------------- public
    def start(self, prompts: Sequence[Any]) -> list[ScoredPrefix]:
        """Root prefixes (no step yet): the prompts' tokens run through both models once."""
        ids = []
        for i, prompt in enumerate(prompts):
            enc = self.prm.encode_one(prompt, [self.placeholder], index=i, complete=False, step_open=True)
            ids.append(enc.input_ids[: enc.prompt_length])
        roots = [
            ScoredPrefix(p, (), False, False, np.zeros(0, dtype=np.int64), None, [], 0, _empty(), _empty())
            for p in prompts
        ]
        flags = [(False, False)] * len(prompts)
        return self._advance(roots, [()] * len(prompts), flags, ids)

    def extend(
        self,
        prefixes: Sequence[ScoredPrefix],
        steps: Sequence[str],
        *,
        complete: bool | Sequence[bool] = False,
        step_open: bool | Sequence[bool] = False,
    ) -> list[ScoredPrefix]:
        """Each prefix with one more step (`complete=True`: the response ends there, EOS appended if the
        computer's `append_eos` says so; `step_open=True`: the step was cut mid-way, no separator after it).
        """
        new_steps = [(*p.steps, s) for p, s in zip(prefixes, steps, strict=True)]
        return self._advance(prefixes, new_steps, _flags(complete, step_open, len(prefixes)))

    def continue_step(
        self,
        prefixes: Sequence[ScoredPrefix],
        texts: Sequence[str],
        *,
        complete: bool | Sequence[bool] = False,
        step_open: bool | Sequence[bool] = False,
    ) -> list[ScoredPrefix]:
        """Each prefix with more text appended to its last (open) step; flags as in :meth:`extend`."""
        new_steps = []
        for i, (p, t) in enumerate(zip(prefixes, texts, strict=True)):
            if not p.steps:
                raise ValueError(f"prefixes[{i}] has no step to continue; use extend()")
            new_steps.append((*p.steps[:-1], p.steps[-1] + t))
        return self._advance(prefixes, new_steps, _flags(complete, step_open, len(prefixes)))

    def step_rewards(self, prefix: ScoredPrefix) -> StepRewards:
        """The full :class:`StepRewards` of a prefix (token rewards and texts included), as `score()` gives."""
        if prefix.encoded is None:
            raise ValueError("a root prefix has no step to report")
        enc = prefix.encoded
        policy = torch.from_numpy(prefix.policy.logps)[None]
        ref = None if prefix.reference is None else torch.from_numpy(prefix.reference.logps)[None]
        step_index = torch.from_numpy(enc.step_index)[None]
        return assemble_step_rewards(
            self.prm.tokenizer, [enc], policy, ref, step_index, (step_index >= 0).long(), self.prm.beta
        )[0]

    # ----------------------------------------------------------------------------------------------- internals
    def _advance(
        self,
        prefixes: Sequence[ScoredPrefix],
        new_steps: Sequence[tuple[str, ...]],
        flags: Sequence[tuple[bool, bool]],
        ids: Sequence[np.ndarray] | None = None,
    ) -> list[ScoredPrefix]:
        for i, p in enumerate(prefixes):
            if p.released:
                raise ValueError(f"prefixes[{i}] was released (its caches dropped): it cannot be extended")
        encoded: list[EncodedResponse | None] = [None] * len(prefixes)
        if ids is None:
            encoded = [
                self.prm.encode_one(p.prompt, list(s), index=i, complete=c, step_open=o)
                for i, (p, s, (c, o)) in enumerate(zip(prefixes, new_steps, flags, strict=True))
            ]
            ids = [e.input_ids for e in encoded]
        starts = [_first_change(p.input_ids, x) for p, x in zip(prefixes, ids, strict=True)]
        policy = self._run(self.prm.model, [p.policy for p in prefixes], ids, starts)
        reference = [None] * len(prefixes)
        if not self.prm.reference_free:
            with self.prm._reference() as ref_model:
                reference = self._run(ref_model, [p.reference for p in prefixes], ids, starts)
        out = []
        for i, prefix in enumerate(prefixes):
            self.tokens_forwarded += max(0, len(ids[i]) - 1 - starts[i])
            out.append(
                ScoredPrefix(
                    prefix.prompt,
                    tuple(new_steps[i]),
                    *flags[i],
                    ids[i],
                    encoded[i],
                    self._rewards(encoded[i], policy[i], reference[i]),
                    max(0, len(ids[i]) - 1 - starts[i]),
                    policy[i],
                    reference[i],
                )
            )
        return out

    def _run(
        self, model: Any, tracks: Sequence[_Track], ids: Sequence[np.ndarray], starts: Sequence[int]
    ) -> list[_Track]:
        """Forward ids[i][s:-1] after the past of ids[i][:s], s = starts[i]; new tracks (old ones untouched)."""
        out: list[_Track | None] = [None] * len(tracks)
        todo = []
        for i, (track, x, s) in enumerate(zip(tracks, ids, starts, strict=True)):
            if s >= len(x) - 1:  # nothing new to read (the same tokens)
                out[i] = _Track(_kept(track.logps, len(x), len(x)), track.segment)
            else:
                todo.append(i)
        lengths = [len(ids[i]) - 1 for i in todo]
        for batch in plan_batches(lengths, self.prm.max_batch_tokens, self.prm.batch_size):
            rows = [todo[j] for j in batch]
            inputs = [torch.from_numpy(ids[i][starts[i] : -1]) for i in rows]
            targets = [torch.from_numpy(ids[i][starts[i] + 1 :]) for i in rows]
            pasts = [tracks[i].past(starts[i]) for i in rows]
            with torch.inference_mode():
                logps, segments, self._workspace = forward_new_tokens(
                    model, pasts, inputs, targets, self.prm._pad_id, self._workspace
                )
            self._segments.update(segments)
            workspace = self._workspace.numel() * self._workspace.element_size()
            self.peak_cache_bytes = max(self.peak_cache_bytes, self.cache_bytes + workspace)
            for i, lp, segment in zip(rows, logps, segments, strict=True):
                values = _kept(tracks[i].logps, starts[i] + 1, len(ids[i]))
                values[starts[i] + 1 :] = lp.numpy()
                out[i] = _Track(values, segment)
        return out  # type: ignore[return-value]

    def _rewards(self, enc: EncodedResponse | None, policy: _Track, ref: _Track | None) -> list[float]:
        if enc is None:
            return []
        step_index = torch.from_numpy(enc.step_index)[None]
        k = len(enc.steps)
        rewards = implicit_step_rewards(
            step_logp_sums(torch.from_numpy(policy.logps)[None], step_index, k),
            None if ref is None else step_logp_sums(torch.from_numpy(ref.logps)[None], step_index, k),
            self.prm.beta,
        )
        return rewards[0].tolist()


def _first_change(old: np.ndarray, new: np.ndarray) -> int:
    """Where forwarding restarts: the last position before the first differing token (its log-prob row is
    needed to score the first new token), at most the old length − 1.
    """
    n = min(len(old), len(new))
    differ = np.flatnonzero(old[:n] != new[:n])
    common = int(differ[0]) if differ.size else n
    return max(common - 1, 0)


def _empty() -> _Track:
    return _Track(np.zeros(0, dtype=np.float32), None)


def _kept(logps: np.ndarray, keep: int, length: int) -> np.ndarray:
    """A float32 array of `length` log-probs whose first `keep` come from `logps` (zeros past its end)."""
    out = np.zeros(length, dtype=np.float32)
    n = min(keep, len(logps), length)
    out[:n] = logps[:n]
    return out


def _flags(
    complete: bool | Sequence[bool], step_open: bool | Sequence[bool], n: int
) -> list[tuple[bool, bool]]:
    """`(complete, step_open)` per prefix, from a flag for all or one per prefix."""

    def each(value: bool | Sequence[bool], name: str) -> list[bool]:
        if isinstance(value, bool):
            return [value] * n
        if len(value) != n:
            raise ValueError(f"{name} has {len(value)} flags for {n} prefixes")
        return [bool(v) for v in value]

    return list(zip(each(complete, "complete"), each(step_open, "step_open"), strict=True))
