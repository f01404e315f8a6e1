"""Step generators: given prefixes, produce each one's next step (stopping at the step separator).

A generator is any callable `generator(requests: list[StepRequest]) -> list[GeneratedStep]`, one output per
request, in order. Two are built in:

- :class:`TransformersStepGenerator`: batched `model.generate` (its own KV cache within a call), stopping at the
  separator with `stop_strings`;
- :class:`TextStepGenerator`: wraps a text-completion function `complete(texts, max_new_tokens) -> texts`, the
  shape of a vLLM engine or an HTTP API; tokens are counted with a tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

__all__ = [
    "GeneratedStep",
    "StepGenerator",
    "StepRequest",
    "TextStepGenerator",
    "TransformersStepGenerator",
    "context_text",
    "cut_step",
]


@dataclass(frozen=True)
class StepRequest:
    """One prefix to continue: its prompt, its finished steps and, when a step was interrupted by a token budget
    (early rejection), the text of that step so far. `max_new_tokens=None` means the generator's step limit.
    """

    prompt: Any
    steps: tuple[str, ...]
    partial: str = ""
    max_new_tokens: int | None = None


@dataclass(frozen=True)
class GeneratedStep:
    """What a generator produced for one request: `text` (to append to the partial step, separator excluded),
    whether the step ended (separator, EOS or the step limit), whether the whole response ended (EOS), and the
    number of tokens generated.
    """

    text: str
    step_done: bool
    finished: bool
    num_tokens: int


class StepGenerator(Protocol):
    """The interface of a step generator: one generated step per request (stop at the separator)."""

    def __call__(self, requests: Sequence[StepRequest]) -> list[GeneratedStep]:
        """The next step of each request."""
        ...


def context_text(rendered_prompt: str, request: StepRequest, separator: str) -> str:
    """The text a generator continues: rendered prompt, the steps joined by the separator, the partial step."""
    steps = separator.join(request.steps)
    if request.steps:
        steps += separator
    return rendered_prompt + steps + request.partial


def cut_step(text: str, separator: str, finished: bool, budget_hit: bool) -> tuple[str, bool, bool]:
    """`(step text, step_done, finished)` of a raw continuation: cut at the first separator (which ends the step;
    anything after it is dropped); without one the step ends only with the response or when the step limit, not
    a budget, stopped it.

    Example:

    ```python
    >>> cut_step("2+3=5.\\n\\nSo", "\\n\\n", finished=False, budget_hit=False)
    ('2+3=5.', True, False)
    >>> cut_step("2+3", "\\n\\n", finished=False, budget_hit=True)
    ('2+3', False, False)

    ```
    """
    at = text.find(separator)
    if at >= 0:
        return text[:at], True, False
    return text, finished or not budget_hit, finished


def _by_budget(requests: Sequence[StepRequest], step_limit: int) -> dict[int, list[int]]:
    """Request indices grouped by their token limit (a request's budget, capped by the step limit)."""
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault(min(r.max_new_tokens or step_limit, step_limit), []).append(i)
    return groups


def _render_default(tokenizer: Any) -> Callable[[Any], str]:
    def render(prompt: Any) -> str:
        if isinstance(prompt, str):
            return prompt
        return tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=False)

    return render


class TransformersStepGenerator:
    """Next steps from a transformers causal LM with `generate`, batched, stopping at the separator.

    `render` turns a prompt into text (default: strings as they are, chat messages with the tokenizer's chat
    template). Sampling: `temperature` (0: greedy), `top_p`. A step longer than `max_step_tokens` is cut there.

    Example:

    ```python
    >>> from trl_implicit_prm.tiny import build_model, build_tokenizer
    >>> tok = build_tokenizer(vocab_size=400)
    >>> gen = TransformersStepGenerator(build_model("llama", tok), tok, max_step_tokens=4, temperature=0.0)
    >>> out = gen([StepRequest("2+3=?\\n", ())])
    >>> len(out), out[0].num_tokens <= 4
    (1, True)

    ```
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        separator: str = "\n\n",
        max_step_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        batch_size: int = 64,
        render: Callable[[Any], str] | None = None,
    ) -> None:
        if max_step_tokens < 1:
            raise ValueError(f"max_step_tokens must be a positive integer, got {max_step_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.separator = separator
        self.max_step_tokens = max_step_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.batch_size = batch_size
        self.render = render or _render_default(tokenizer)

    def __call__(self, requests: Sequence[StepRequest]) -> list[GeneratedStep]:
        """The next step of each request."""
        results: dict[int, GeneratedStep] = {}
        for rows in _by_budget(requests, self.max_step_tokens).values():
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                outputs = self._generate([requests[i] for i in chunk])
                results.update(zip(chunk, outputs, strict=True))
        return [results[i] for i in range(len(requests))]

    @torch.no_grad()
    def _generate(self, chunk: list[StepRequest]) -> list[GeneratedStep]:
        tok = self.tokenizer
        limit = min(chunk[0].max_new_tokens or self.max_step_tokens, self.max_step_tokens)
        enc = _left_padded(tok, [context_text(self.render(r.prompt), r, self.separator) for r in chunk])
        device = next(self.model.parameters()).device
        sampling = (
            {"do_sample": False}
            if self.temperature == 0
            else {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": 0}
        )
        ids = self.model.generate(
            **{k: v.to(device) for k, v in enc.items()},
            **sampling,
            max_new_tokens=limit,
            stop_strings=[self.separator],
            tokenizer=tok,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )[:, enc["input_ids"].shape[1] :].cpu()
        return [self._one(row.tolist(), r) for row, r in zip(ids, chunk, strict=True)]

    def _one(self, row: list[int], request: StepRequest) -> GeneratedStep:
        tok = self.tokenizer
        budget = min(request.max_new_tokens or self.max_step_tokens, self.max_step_tokens)
        row = row[:budget]
        finished = tok.eos_token_id in row
        if finished:
            row = row[: row.index(tok.eos_token_id) + 1]
        elif tok.pad_token_id is not None and tok.pad_token_id in row:
            row = row[: row.index(tok.pad_token_id)]
        text = tok.decode(row, skip_special_tokens=True)
        budget_hit = not finished and len(row) >= budget and request.max_new_tokens is not None
        step, done, finished = cut_step(text, self.separator, finished, budget_hit)
        return GeneratedStep(step, done, finished, len(row))


def _left_padded(tokenizer: Any, texts: list[str]) -> dict[str, torch.Tensor]:
    """Left-padded ids of the texts, with the tokenizer's special tokens unless a text already starts with its
    BOS (a chat template's rendering).
    """
    bos = getattr(tokenizer, "bos_token", None)
    rows = [tokenizer(t, add_special_tokens=not (bos and t.startswith(bos)))["input_ids"] for t in texts]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(rows), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return {"input_ids": ids, "attention_mask": mask}


class TextStepGenerator:
    """Next steps from a text-completion function, e.g. a vLLM engine or an HTTP API.

    `complete(texts, max_new_tokens)` returns, per text, its continuation and whether the response ended (a
    `(text, finished)` pair; ask your engine to stop at the separator or let this class cut there). Tokens are
    counted with `tokenizer`. `render` turns a prompt into text (default: strings as they are, chat messages with
    the tokenizer's chat template).

    Example:

    ```python
    >>> from trl_implicit_prm.tiny import build_tokenizer
    >>> tok = build_tokenizer(vocab_size=400)
    >>> gen = TextStepGenerator(lambda texts, n: [("5.\\n\\nmore", False) for _ in texts], tok)
    >>> gen([StepRequest("2+3=?\\n", ("Add.",))])[0].text
    '5.'

    ```
    """

    def __init__(
        self,
        complete: Callable[[list[str], int], Sequence[tuple[str, bool]]],
        tokenizer: Any,
        *,
        separator: str = "\n\n",
        max_step_tokens: int = 64,
        render: Callable[[Any], str] | None = None,
    ) -> None:
        self.complete = complete
        self.tokenizer = tokenizer
        self.separator = separator
        self.max_step_tokens = max_step_tokens
        self.render = render or _render_default(tokenizer)

    def __call__(self, requests: Sequence[StepRequest]) -> list[GeneratedStep]:
        """The next step of each request."""
        results: dict[int, GeneratedStep] = {}
        for budget, rows in _by_budget(requests, self.max_step_tokens).items():
            texts = [context_text(self.render(requests[i].prompt), requests[i], self.separator) for i in rows]
            answers = list(self.complete(texts, budget))
            if len(answers) != len(rows):
                raise ValueError(f"complete() returned {len(answers)} continuations for {len(rows)} texts")
            for i, answer in zip(rows, answers, strict=True):
                text, finished = answer
                step, done, finished = cut_step(
                    text, self.separator, bool(finished), requests[i].max_new_tokens is not None
                )
                # Approximate count: the step's tokens, plus one for the separator when it ended there.
                used = len(self.tokenizer(step, add_special_tokens=False)["input_ids"])
                results[i] = GeneratedStep(step, done, finished, used + (1 if done else 0))
        return [results[i] for i in range(len(requests))]
