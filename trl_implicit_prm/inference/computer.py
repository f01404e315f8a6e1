"""`ProcessRewardComputer`: any implicit-PRM checkpoint to per-step rewards, many responses at a time.

One forward pass of the policy and one of the reference per response, whatever its number of steps: the
per-token log-ratios come from :func:`~trl_implicit_prm.logps.completion_logps` (as in training), and the
step rewards come from :func:`~trl_implicit_prm.rewards.implicit_step_rewards` on float64 per-step sums, the same
functions the trainers log with.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..checks import check_beta
from ..data.rendering import (
    PromptFormat,
)
from ..logps import completion_logps, resolve_logps_method
from ..modeling import check_max_length, check_reference
from .assemble import assemble_step_rewards
from .batching import collate, plan_batches
from .cache import ReferenceCache
from .checks import DEFAULT_MAX_BATCH_TOKENS, check_rendering, choose_reference, default_max_length
from .encoding import EncodedResponse, encode_response
from .loading import (
    DEFAULT_BETA,
    DEFAULT_SEPARATOR,
    identity_of,
    pretrained_kwargs,
    resolve_models,
    trainer_reference,
)
from .step_rewards import StepRewards

__all__ = [
    "DEFAULT_BETA",
    "DEFAULT_MAX_BATCH_TOKENS",
    "DEFAULT_SEPARATOR",
    "ProcessRewardComputer",
    "default_max_length",
]

logger = logging.getLogger(__name__)

PROGRESS_THRESHOLD = 128  # responses; above this `show_progress=None` shows a bar
_PASSED_THROUGH = (
    "max_length",
    "truncation",
    "batch_size",
    "max_batch_tokens",
    "reference_cache",
    "logps_method",
)


class ProcessRewardComputer:
    """Per-step implicit rewards of responses, from a policy πθ and a reference πref (or none).

    `r^k = β·Σ_{t∈S_k} (log πθ(y_t) − log πref(y_t))` for each step `k` of a response (docs/method.md). Build
    it with :meth:`from_pretrained` (paths, hub ids, adapter directories or loaded models), or directly from
    loaded objects with `ref_model=...`, or with :meth:`from_trainer` (a trainer's own reference). A PEFT policy
    without `ref_model` is scored against its base with adapters disabled; any other policy without a reference
    is an error, unless reference-free scoring (`ρ = log πθ`) is asked for with `reference_free=True`.

    Rendering (what training did, read from the checkpoint by :meth:`from_pretrained`): `prompt_format` (a
    :class:`~trl_implicit_prm.data.rendering.PromptFormat` or its `implicit_prm.json` dict) renders string
    prompts: `"text"` ends them with the recorded separator, `"chat"` wraps them as one user message for the
    chat template (with a warning, once: pass chat messages to choose the rendering yourself); None scores them
    as they are. `append_eos=True` appends the EOS token to string and step-list responses, in their last step,
    as the trainers do by default; `score(..., complete=False)` leaves it out for a partial response (e.g. a
    prefix being searched at test time) and ends the last step with the separator instead, the token that
    follows it in the whole response (the separator after step k belongs to step k, as in training);
    `step_open=True` says the last step was cut mid-way (a token budget stopped it), so nothing is appended.

    Truncation: a response that does not fit in `max_length` tokens raises
    :class:`~trl_implicit_prm.inference.ResponseTooLongError` by default. With `truncation=True` its end is
    cut and the :class:`StepRewards` is flagged `truncated`, with the steps that lost tokens counted and the
    steps left out listed, never a silently partial score.

    Example:

    ```python
    >>> from trl_implicit_prm.tiny import build_model, build_tokenizer
    >>> tok = build_tokenizer(vocab_size=400)
    >>> policy, ref = build_model("llama", tok, seed=0), build_model("llama", tok, seed=1)
    >>> prc = ProcessRewardComputer(policy, tok, ref_model=ref, beta=0.05)
    >>> out = prc.score(["2+3=?\\n", "1+1=?\\n"], ["Add 2 and 3.\\n\\nThe answer is 5.", ["1+1=2.", "So 2."]])
    >>> [len(r.step_rewards) for r in out]
    [2, 2]
    >>> abs(sum(out[0].step_rewards) - out[0].outcome_reward) < 1e-6
    True

    ```
    """

    # A step cut mid-way (`step_open`) is scored on its own tokens by an implicit PRM (its reward exists at every
    # token); an explicit one reads each step at the separator after it (ExplicitPRMComputer), so even an open
    # step ends with it there.
    open_step_ends_at_separator: bool = False

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        ref_model: nn.Module | None = None,
        reference_free: bool = False,
        adapter_reference: bool | None = None,
        beta: float = DEFAULT_BETA,
        step_separator: str = DEFAULT_SEPARATOR,
        max_length: int | None = None,
        truncation: bool = False,
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        reference_cache: ReferenceCache | bool | None = None,
        logps_method: str = "auto",
        model_name: str | None = None,
        reference_name: str | None = None,
        prompt_format: PromptFormat | Mapping[str, Any] | None = None,
        append_eos: bool = False,
    ):
        adapter_reference = choose_reference(model, ref_model, reference_free, adapter_reference)
        beta = check_beta(beta)
        prompt_format = check_rendering(tokenizer, step_separator, prompt_format, append_eos)
        if ref_model is not None:
            check_reference(model, ref_model, tokenizer, reference_name)
        if max_length is not None:
            check_max_length(model, max_length)
        self.model = model.eval()
        self.ref_model = ref_model.eval() if ref_model is not None else None
        self.adapter_reference = adapter_reference
        self._reference_free = bool(reference_free)
        self.tokenizer = tokenizer
        self.beta = float(beta)
        self.step_separator = step_separator
        self.max_length = max_length if max_length is not None else default_max_length(model, tokenizer)
        self.truncation = truncation
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens or DEFAULT_MAX_BATCH_TOKENS
        if reference_cache is None or reference_cache is True:
            reference_cache = ReferenceCache()
        self.reference_cache: ReferenceCache | None = None if reference_cache is False else reference_cache
        self.logps_method = logps_method
        self.model_name = model_name
        self.reference_name = reference_name
        self.prompt_format: PromptFormat | None = prompt_format
        self.append_eos = append_eos
        self._warned_string_prompt = False
        resolve_logps_method(model, logps_method, self.device)  # fail early on an unusable method

    # ----------------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        model: Any,
        ref_model: Any = None,
        reference_free: bool | None = None,
        beta: float | None = None,
        step_separator: str | None = None,
        tokenizer: Any = None,
        device: Any = None,
        dtype: Any = None,
        batch_size: int | None = None,
        max_length: int | None = None,
        reference_cache: ReferenceCache | bool | None = None,
        *,
        truncation: bool = False,
        max_batch_tokens: int | None = None,
        logps_method: str = "auto",
        prompt_format: PromptFormat | Mapping[str, Any] | None = None,
        append_eos: bool | None = None,
    ) -> ProcessRewardComputer:
        """Build a computer from a checkpoint path, hub id, PEFT adapter directory or loaded model.

        - `ref_model`: a path, hub id or model. Default: the reference recorded in the checkpoint's
          `implicit_prm.json`; for a PEFT adapter (directory or `PeftModel`), the base model with adapters
          disabled (no second copy in memory). Without either: an error, unless `reference_free=True`
          (ρ = log πθ; default: the checkpoint's metadata, else False).
        - `beta` (default: metadata, else 0.05), `step_separator` (default: metadata, else "\\n\\n"), `tokenizer`
          (default: the one saved with the model or the adapter's base), `device` (default CUDA when available,
          else CPU), `dtype` (a torch dtype or its name).
        - `max_length`: default, the smaller of the model's position limit and `tokenizer.model_max_length`;
          longer responses raise unless `truncation=True`.
        - `batch_size` caps the rows of a batch; `max_batch_tokens` (default 16384) caps its padded tokens.
        - `reference_cache`: a :class:`ReferenceCache` to share, default a private one, `False` for none.
        - `prompt_format` and `append_eos`: how training rendered prompts and ended completions (default: the
          checkpoint's `implicit_prm.json`; if it records neither, strings as they are, no EOS, a warning).

        Example:

        ```python
        >>> import contextlib, io, tempfile; from trl_implicit_prm.tiny import build_model, build_tokenizer
        >>> tok, root = build_tokenizer(vocab_size=400), tempfile.mkdtemp()
        >>> with contextlib.redirect_stdout(io.StringIO()):  # saving may print a DeepSpeed notice
        ...     for name, seed in (("policy", 0), ("ref", 1)):
        ...         build_model("qwen2", tok, seed=seed).save_pretrained(f"{root}/{name}")
        ...         _ = tok.save_pretrained(f"{root}/{name}")
        >>> prc = ProcessRewardComputer.from_pretrained(f"{root}/policy", ref_model=f"{root}/ref", device="cpu")
        >>> prc.score_one("Q: 2+2?\\n", "2+2=4.\\n\\nAnswer: 4.").num_steps
        2

        ```
        """
        from .explicit import explicit_computer  # an explicit PRM's checkpoint gets an ExplicitPRMComputer

        if (explicit := explicit_computer(model, locals())) is not None:  # a classifier: its own loader
            return explicit
        resolved = resolve_models(model, ref_model, reference_free, tokenizer, device, dtype)
        options = {k: v for k, v in locals().items() if k in _PASSED_THROUGH}  # to the constructor, unchanged
        return cls(
            **pretrained_kwargs(resolved, model, beta, step_separator, prompt_format, append_eos), **options
        )

    @classmethod
    def from_trainer(cls, trainer: Any, *, ref_model: Any = None, **kwargs: Any) -> ProcessRewardComputer:
        """A computer that scores with a trainer's policy and the reference it trains against, as it is now.

        The reference is the trainer's own: its reference model (a separate model or the frozen initial
        copy), the policy with adapters disabled (LoRA), nothing (`reference_free=True`), or, after
        `precompute_ref_log_probs=True` dropped the reference model, the reference recorded for the checkpoint
        metadata, loaded again (an in-memory reference cannot be reloaded: pass it as `ref_model=`). β, the
        step separator and the tokenizer are the trainer's. Other keyword arguments go to the constructor.
        Under DeepSpeed ZeRO-3 the weights are sharded across processes: save the model and use
        :meth:`from_pretrained` instead.

        Example:

        ```python
        >>> from datasets import Dataset
        >>> from trl_implicit_prm import CEConfig, CETrainer
        >>> from trl_implicit_prm.tiny import build_model, build_tokenizer
        >>> tok = build_tokenizer(vocab_size=300)
        >>> rows = [{"prompt": "2 + 3 =", "completion": " 5.\\n\\nSo 5.", "label": 1.0},
        ...         {"prompt": "4 + 4 =", "completion": " 9.\\n\\nSo 9.", "label": 0.0}]
        >>> args = CEConfig(output_dir="/tmp/from-trainer-doc", use_cpu=True, bf16=False, max_steps=1,
        ...                 per_device_train_batch_size=2, report_to=[])
        >>> trainer = CETrainer(build_model("llama", tok), args=args, train_dataset=Dataset.from_list(rows),
        ...                     processing_class=tok)
        >>> prc = ProcessRewardComputer.from_trainer(trainer)  # the frozen initial policy is the reference
        >>> prc.ref_model is not None, prc.reference_free
        (True, False)

        ```
        """
        return cls(**trainer_reference(trainer, ref_model), **kwargs)

    # ------------------------------------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        """The device of the policy model (inputs are moved there)."""
        return next(self.model.parameters()).device

    @property
    def reference_free(self) -> bool:
        """Whether rewards are `β·log πθ` alone (asked for with `reference_free=True`, never a fallback)."""
        return self._reference_free

    @property
    def reference_id(self) -> str | None:
        """What identifies the reference in a :class:`ReferenceCache`: its source (path or hub id, or the
        in-memory object), dtype and device type. None when reference-free.
        """
        if self.reference_free:
            return None
        module = self.ref_model if self.ref_model is not None else self.model.get_base_model()
        name = self.reference_name or identity_of(module)
        param = next(module.parameters())
        return f"{name}|{param.dtype}|{param.device.type}"

    def __repr__(self) -> str:
        ref = (
            "reference-free"
            if self.reference_free
            else (
                "adapter-disabled base"
                if self.adapter_reference
                else self.reference_name or "in-memory reference"
            )
        )
        fmt = self.prompt_format.to_metadata() if self.prompt_format is not None else None
        return (
            f"ProcessRewardComputer(model={self.model_name or type(self.model).__name__}, reference={ref}, "
            f"beta={self.beta}, step_separator={self.step_separator!r}, max_length={self.max_length}, "
            f"prompt_format={fmt}, append_eos={self.append_eos})"
        )

    # ------------------------------------------------------------------------------------------------- scoring
    def render_prompt(self, prompt: Any) -> Any:
        """A bare problem string rendered as training did (see `prompt_format`); chat messages as they are."""
        return self.prompt_format.render(prompt) if self.prompt_format is not None else prompt

    def encode_one(
        self,
        prompt: Any,
        response: Any,
        *,
        index: int = 0,
        truncation: bool | None = None,
        complete: bool = True,
        step_open: bool = False,
    ) -> EncodedResponse:
        """Tokenize one pair as :meth:`score` does; errors name `prompts[index]` / `responses[index]`."""
        if complete and step_open:
            raise ValueError(
                f"responses[{index}]: complete=True and step_open=True: a finished response has no open step"
            )
        chat = self.prompt_format is not None and self.prompt_format.is_chat
        if isinstance(prompt, str) and chat and not self._warned_string_prompt:
            self._warned_string_prompt = True
            logger.warning(
                "a string prompt was given to a PRM trained on chat prompts: it is scored as one user message "
                "rendered with the chat template. Pass chat messages to choose the rendering yourself (or "
                "prompt_format=PromptFormat('text') if the string is already rendered)."
            )
        return encode_response(
            self.tokenizer,
            self.render_prompt(prompt),
            response,
            index=index,
            separator=self.step_separator,
            max_length=self.max_length,
            truncation=self.truncation if truncation is None else truncation,
            append_eos=self.append_eos and complete,
            partial=not complete and (not step_open or self.open_step_ends_at_separator),
        )

    def encode(
        self,
        prompts: Sequence[Any],
        responses: Sequence[Any],
        *,
        truncation: bool | None = None,
        complete: bool = True,
        step_open: bool = False,
    ) -> list[EncodedResponse]:
        """Tokenize every prompt/response pair with its step spans (errors name `prompts[i]`/`responses[i]`)."""
        for name, value in (("prompts", prompts), ("responses", responses)):
            if isinstance(value, str | bytes) or not isinstance(value, Sequence):
                raise TypeError(
                    f"{name} must be a list (one entry per response), got {type(value).__name__}; "
                    "use score_one(prompt, response) for a single response"
                )
        if len(prompts) != len(responses):
            raise ValueError(
                f"prompts and responses must have the same length, got {len(prompts)} prompts and "
                f"{len(responses)} responses"
            )
        return [
            self.encode_one(p, r, index=i, truncation=truncation, complete=complete, step_open=step_open)
            for i, (p, r) in enumerate(zip(prompts, responses, strict=True))
        ]

    def score(
        self,
        prompts: Sequence[Any],
        responses: Sequence[Any],
        *,
        batch_size: int | None = None,
        show_progress: bool | None = None,
        truncation: bool | None = None,
        complete: bool = True,
        step_open: bool = False,
    ) -> list[StepRewards]:
        """Score many responses; returns one :class:`StepRewards` per response, in input order.

        A prompt is a string (rendered by `prompt_format`) or a list of chat messages; a response is a string
        (split on the step separator) or a list of step strings. With `append_eos`, full responses end with the
        EOS token (owned by the last step); `complete=False` scores partial responses (a prefix in search),
        without it and with the separator after the last step, as in the whole response; with `step_open=True`
        the last step was cut mid-way and gets no separator (an explicit PRM still reads it there). Batches are
        sorted by length under a token budget; the reference log-probs come from the cache when this reference
        has scored the same tokens before. `show_progress=None` shows a progress bar above 128 responses.

        Example:

        ```python
        >>> from trl_implicit_prm.tiny import build_model, build_tokenizer
        >>> tok = build_tokenizer(vocab_size=400)
        >>> prc = ProcessRewardComputer(build_model("gpt2", tok), tok, reference_free=True)
        >>> [r.num_steps for r in prc.score(["Q\\n"] * 2, ["a.\\n\\nb.", ["x.", "y.", "z."]])]
        [2, 3]

        ```
        """
        return self.score_encoded(
            self.encode(prompts, responses, truncation=truncation, complete=complete, step_open=step_open),
            batch_size=batch_size,
            show_progress=show_progress,
        )

    def score_one(
        self,
        prompt: Any,
        response: Any,
        *,
        truncation: bool | None = None,
        complete: bool = True,
        step_open: bool = False,
    ) -> StepRewards:
        """Score one response (see :meth:`score`)."""
        return self.score(
            [prompt], [response], truncation=truncation, complete=complete, step_open=step_open
        )[0]

    def score_encoded(
        self,
        encoded: Sequence[EncodedResponse],
        *,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> list[StepRewards]:
        """Score responses already tokenized by :meth:`encode`."""
        results: list[StepRewards | None] = [None] * len(encoded)
        batches = plan_batches(
            [e.length for e in encoded], self.max_batch_tokens, batch_size or self.batch_size
        )
        show = len(encoded) > PROGRESS_THRESHOLD if show_progress is None else show_progress
        with (
            torch.inference_mode(),
            tqdm(total=len(encoded), disable=not show, desc="Scoring", unit="response") as bar,
        ):
            for batch in batches:
                rows = [encoded[i] for i in batch]
                for i, result in zip(batch, self._score_batch(rows), strict=True):
                    results[i] = result
                bar.update(len(batch))
        return results  # type: ignore[return-value]

    # ----------------------------------------------------------------------------------------------- internals
    @property
    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id)

    def _logps(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        device = self.device
        ids, attn, cmask = (
            tensors[k].to(device, non_blocking=True)
            for k in ("input_ids", "attention_mask", "completion_mask")
        )
        return completion_logps(model, ids, attn, cmask, method=self.logps_method).cpu()

    @contextlib.contextmanager
    def _reference(self) -> Iterator[nn.Module]:
        if self.adapter_reference:
            with self.model.disable_adapter():
                yield self.model
        else:
            yield self.ref_model

    def _reference_logps(self, rows: list[EncodedResponse], shape: torch.Size) -> torch.Tensor:
        """`[B, T]` reference log-probs: cached rows from the cache, the others from one forward on them."""
        out = torch.zeros(shape, dtype=torch.float32)
        cache = self.reference_cache
        ref_id = self.reference_id if cache is not None else None
        keys = [cache.key(ref_id, r.input_ids, r.prompt_length) for r in rows] if cache is not None else None
        missing = []
        for b, row in enumerate(rows):
            cached = cache.get(keys[b]) if cache is not None else None
            if cached is None:
                missing.append(b)
            else:
                out[b, row.prompt_length : row.length] = torch.from_numpy(np.array(cached))
        if missing:
            sub = collate([rows[b] for b in missing], self._pad_id)
            with self._reference() as ref:
                logps = self._logps(ref, sub)
            for j, b in enumerate(missing):
                row = rows[b]
                values = logps[j, row.prompt_length : row.length]
                out[b, row.prompt_length : row.length] = values
                if cache is not None:
                    cache.put(keys[b], values.numpy())
        return out

    def _score_batch(self, rows: list[EncodedResponse]) -> list[StepRewards]:
        tensors = collate(rows, self._pad_id)
        # The trainers' path: float32 log-probs, float64 per-step sums, r^k = β·(Σ policy − Σ reference).
        policy = self._logps(self.model, tensors)
        ref = None if self.reference_free else self._reference_logps(rows, policy.shape)
        return assemble_step_rewards(
            self.tokenizer, rows, policy, ref, tensors["step_index"], tensors["completion_mask"], self.beta
        )
