"""Scoring explicit (discriminative) PRM checkpoints through the `ProcessRewardComputer` API.

An explicit PRM (:class:`~trl_implicit_prm.trainers.ExplicitPRMTrainer`, Math-Shepherd, PRM800K) has a
classifier read at the last token of every step; its checkpoint records `kind: "explicit"` in
`implicit_prm.json`. :class:`ExplicitPRMComputer` is a `ProcessRewardComputer` whose batches are scored by that
classifier instead of by a log-likelihood ratio: the same tokenization with step spans, batching, truncation
policy, rendering and :class:`StepRewards`, so every consumer (`score`, `eval-steps`, `eval-bon`, the HTML
page, the demo) treats both kinds alike. In its results:

- `step_rewards[k]` = `q_values[k]` = `z_k`, the log-odds that the prefix through step `k` is correct
  (`σ(z_k)` = P(correct)): the first step below a threshold is the predicted first error, `min` is the
  paper's best-of-N aggregation, and weighted voting weighs by `σ(z)`;
- `outcome_reward` = the last step's `z` (the classifier's verdict on the whole response), not a sum: the
  implicit invariant "step rewards add up to the outcome reward" does not apply to a classifier;
- `token_rewards`: `z_k` on each step's last token (where it is read), 0 elsewhere.

A partial response (`score(..., complete=False)`, a prefix in test-time search) is scored as completed steps:
its last step ends with the step separator, the token the classifier was trained to read for a step that more
steps follow, even when the step was cut mid-way (`step_open=True`, where an implicit PRM appends nothing):
without it, the last step would be read at a token no label ever sat on.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.rendering import append_eos_from_metadata, prompt_format_from_metadata
from ..explicit import EXPLICIT_KIND, step_end_positions, step_log_odds
from ..modeling import METADATA_FILE, read_metadata, try_tokenizer
from .batching import collate
from .computer import DEFAULT_SEPARATOR, ProcessRewardComputer
from .encoding import EncodedResponse, decode_tokens
from .loading import resolve_device, resolve_dtype
from .step_rewards import StepRewards

__all__ = ["ExplicitPRMComputer", "is_explicit_checkpoint"]


def is_explicit_checkpoint(model: Any) -> bool:
    """Whether `model` is a local checkpoint directory whose `implicit_prm.json` records `kind: "explicit"`."""
    if not isinstance(model, str | os.PathLike) or not Path(model).expanduser().is_dir():
        return False
    return read_metadata(Path(model).expanduser()).get("kind") == EXPLICIT_KIND


_NO_REFERENCE = ("ref_model", "reference_free", "reference_cache", "beta", "logps_method")


class ExplicitPRMComputer(ProcessRewardComputer):
    """Per-step scores of an explicit PRM (a token-classification model), with `ProcessRewardComputer`'s API.

    Built by `ProcessRewardComputer.from_pretrained` when the checkpoint records `kind: "explicit"`, or
    directly from a loaded model with 1 or 2 labels. There is no reference and no β.

    Example:

    ```python
    >>> from transformers import AutoModelForTokenClassification
    >>> from trl_implicit_prm.tiny import build_model, build_tokenizer
    >>> import contextlib, io, tempfile
    >>> tok, path = build_tokenizer(vocab_size=400), tempfile.mkdtemp()
    >>> with contextlib.redirect_stdout(io.StringIO()):
    ...     build_model("llama", tok).save_pretrained(path)
    >>> model = AutoModelForTokenClassification.from_pretrained(path, num_labels=2)
    >>> prc = ExplicitPRMComputer(model, tok)
    >>> r = prc.score_one("Q: 2+2?\\n", "2+2=4.\\n\\nAnswer: 4.")
    >>> r.num_steps, r.step_rewards == r.q_values, r.outcome_reward == r.step_rewards[-1]
    (2, True, True)

    ```
    """

    kind = EXPLICIT_KIND
    open_step_ends_at_separator = True

    def __init__(self, model: nn.Module, tokenizer: Any, **kwargs: Any):
        num_labels = getattr(getattr(model, "config", None), "num_labels", None)
        if num_labels not in (1, 2):
            raise ValueError(
                f"an explicit PRM is a token-classification model with 1 or 2 labels, got {type(model).__name__} "
                f"with num_labels={num_labels}"
            )
        for name in ("ref_model", "reference_free", "beta", "reference_cache", "logps_method"):
            if kwargs.get(name) not in (None, False):
                raise ValueError(f"{name}={kwargs[name]!r}: an explicit PRM has no reference model and no β")
            kwargs.pop(name, None)
        super().__init__(
            model, tokenizer, reference_free=True, reference_cache=False, logps_method="fused", **kwargs
        )
        self.beta = None  # no implicit reward, so no β (results files record null, never the default 0.05)

    @classmethod
    def from_pretrained(cls, model: Any, **options: Any) -> ExplicitPRMComputer:
        """Load an explicit-PRM checkpoint directory.

        `options` are the keyword arguments of `ProcessRewardComputer.from_pretrained`, with the same defaults
        (the checkpoint's metadata for `step_separator`, `prompt_format` and `append_eos`); a reference
        (`ref_model`, `reference_free`, `reference_cache`), `beta` and `logps_method` are refused: an explicit
        PRM has none.
        """
        from transformers import AutoModelForTokenClassification

        given = {k: options.pop(k, None) for k in _NO_REFERENCE}
        passed = [f"{k}={v!r}" for k, v in given.items() if v not in (None, False, "auto")]
        if passed:
            raise ValueError(
                f"{model}: an explicit PRM (kind 'explicit' in its {METADATA_FILE}) scores with its classifier "
                f"alone: do not pass a reference model, reference_free, beta or logps_method (got {', '.join(passed)})"
            )
        tokenizer, device, dtype = (options.pop(k, None) for k in ("tokenizer", "device", "dtype"))
        step_separator, prompt_format, append_eos = (
            options.pop(k, None) for k in ("step_separator", "prompt_format", "append_eos")
        )
        location = Path(model).expanduser().resolve()
        meta = read_metadata(location)
        source = str(location / METADATA_FILE)
        dtype = resolve_dtype(dtype)
        net = AutoModelForTokenClassification.from_pretrained(
            location, **({} if dtype is None else {"dtype": dtype})
        )
        net.to(resolve_device(device)).eval()
        tokenizer = tokenizer or try_tokenizer(location)
        if tokenizer is None:
            raise ValueError(f"no tokenizer found with the model ({location}); pass tokenizer=...")
        return cls(
            net,
            tokenizer,
            step_separator=step_separator or meta.get("step_separator", DEFAULT_SEPARATOR),
            prompt_format=prompt_format
            if prompt_format is not None
            else prompt_format_from_metadata(meta, source),
            append_eos=append_eos if append_eos is not None else append_eos_from_metadata(meta, source),
            model_name=str(location),
            **{k: v for k, v in options.items() if v is not None},
        )

    def __repr__(self) -> str:
        fmt = self.prompt_format.to_metadata() if self.prompt_format is not None else None
        return (
            f"ExplicitPRMComputer(model={self.model_name or type(self.model).__name__}, "
            f"step_separator={self.step_separator!r}, max_length={self.max_length}, prompt_format={fmt}, "
            f"append_eos={self.append_eos})"
        )

    def _score_batch(self, rows: list[EncodedResponse]) -> list[StepRewards]:
        tensors = collate(rows, self._pad_id)
        most = max(len(r.steps) for r in rows)
        logits = self.model(
            input_ids=tensors["input_ids"].to(self.device),
            attention_mask=tensors["attention_mask"].to(self.device),
        ).logits
        z = step_log_odds(logits.double().cpu(), tensors["step_index"], most)
        ends = step_end_positions(tensors["step_index"], most)
        texts = decode_tokens(self.tokenizer, [r.input_ids[r.prompt_length :] for r in rows])
        results = []
        for b, row in enumerate(rows):
            k, span = len(row.steps), slice(row.prompt_length, row.length)
            scores = z[b, :k].tolist()
            tokens = torch.zeros(row.length, dtype=torch.float64)
            tokens[ends[b, :k]] = z[b, :k]
            results.append(
                StepRewards(
                    steps=list(row.steps),
                    step_rewards=scores,
                    q_values=list(scores),
                    token_rewards=tokens[span].tolist(),
                    tokens=texts[b],
                    token_steps=tensors["step_index"][b, span].tolist(),
                    outcome_reward=scores[-1] if scores else 0.0,
                    truncated=row.truncated,
                    num_truncated_steps=row.num_truncated_steps,
                    unscored_steps=list(row.unscored_steps),
                )
            )
        return results


def explicit_computer(model: Any, args: dict[str, Any]) -> ExplicitPRMComputer | None:
    """The computer of an explicit PRM checkpoint (`kind: "explicit"` in its `implicit_prm.json`), else None;
    `args` are the arguments of `ProcessRewardComputer.from_pretrained`.
    """
    if not is_explicit_checkpoint(model):
        return None
    names = inspect.signature(ProcessRewardComputer.from_pretrained).parameters
    return ExplicitPRMComputer.from_pretrained(
        model, **{k: args[k] for k in names if k not in ("cls", "model")}
    )
