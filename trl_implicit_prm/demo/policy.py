"""The demo's reference policy: a tiny Llama fine-tuned on correct solutions, and sampling from it.

In the paper the reference (and the PRM's initialisation) is an instruct model; here a few-hundred-thousand
parameter model learns the synthetic task's format and most of its arithmetic in well under a minute on a CPU,
and makes mistakes of its own when sampled — exactly what outcome-labelled rollouts need.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trl_implicit_prm.demo.grading import solution_from_text
from trl_implicit_prm.demo.task import (
    STEP_SEPARATOR,
    Problem,
    Solution,
    reference_solution,
)

__all__ = [
    "continuation_rows",
    "finetune_on_solutions",
    "generate_texts",
    "generated_lengths",
    "new_policy",
    "sample_solutions",
]


def _row(tokenizer: PreTrainedTokenizerBase, context: str, target: str) -> tuple[list[int], int]:
    """Token ids of `context` + `target` + EOS (tokenized apart, as at generation time) and the context length."""
    ids = tokenizer(context)["input_ids"]
    return ids + tokenizer(target + tokenizer.eos_token, add_special_tokens=False)["input_ids"], len(ids)


def _sft_rows(tokenizer: PreTrainedTokenizerBase, problems: Sequence[Problem]) -> list[tuple[list[int], int]]:
    return [_row(tokenizer, p.prompt, reference_solution(p).text) for p in problems]


def continuation_rows(
    tokenizer: PreTrainedTokenizerBase, problems: Sequence[Problem], seed: int = 0
) -> list[tuple[list[int], int]]:
    """One row per problem that continues faithfully after an injected error: the context is the prompt and a
    solution's steps up to and including a wrong one (:func:`~trl_implicit_prm.demo.corruption.corrupt`, at a
    step drawn among those before the last), the target the later steps computed from the wrong total, even where
    they leave the task's value range (the policy never writes such values, so a completer that has never seen
    them steps around the error instead). Trained with the loss on the target only, a model learns to carry on
    from what is written, never to make the error. Problems with no such step (one operation) give no row.

    Example:

    ```python
    >>> from trl_implicit_prm.tiny import build_tokenizer
    >>> p = Problem(3, (("+", 4), ("*", 2), ("-", 5)))
    >>> tok = build_tokenizer(vocab_size=400)
    >>> (ids, n_context), = continuation_rows(tok, [p], seed=0)
    >>> print(tok.decode(ids[:n_context], skip_special_tokens=True))  # a wrong copy of the total at step 1
    Compute left to right: 3+4*2-5
    3+4=7
    8*2=16
    >>> tok.decode(ids[n_context:])  # the separator, then carried on from 16
    '\\n16-5=11. The answer is \\\\boxed{11}.</s>'

    ```
    """
    from trl_implicit_prm.demo.corruption import corrupt, corruptible_steps

    rng, rows = random.Random(seed), []
    for p in problems:
        steps = [k for k in corruptible_steps(p) if k < len(p.ops) - 1]
        if not steps:
            continue
        k = rng.choice(steps)
        bad = corrupt(replace(p, max_value=None), k, rng)  # carried on wherever the wrong total leads
        context = p.prompt + STEP_SEPARATOR.join(bad.steps[: k + 1])
        rows.append(_row(tokenizer, context, STEP_SEPARATOR + STEP_SEPARATOR.join(bad.steps[k + 1 :])))
    return rows


def _sft_step(
    model: PreTrainedModel,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    batch: dict[str, torch.Tensor],
) -> torch.Tensor:
    """One optimizer step on a batch (gradient norm clipped to 1); returns the loss."""
    model.train()
    loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad()
    return loss


def new_policy(cfg: Any, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """The demo's untrained policy model: a tiny llama of `cfg.hidden_size` × `cfg.num_layers`, initialised under
    `cfg.seed` (the reference policy and a trained MC completer both start from it).
    """
    from trl_implicit_prm.tiny import build_model

    return build_model(
        "llama", tokenizer, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, num_heads=4, seed=cfg.seed
    )


def finetune_on_solutions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    *,
    epochs: int = 8,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
    stop_at_accuracy: float | None = None,
    eval_problems: Sequence[Problem] = (),
    evals_per_epoch: int = 2,
    continue_after_errors: bool = False,
    desc: str = "fine-tuning the reference policy",
) -> list[dict[str, float | None]]:
    """Supervised fine-tuning on the reference solutions (loss on completion tokens only).

    With `continue_after_errors`, every epoch also trains on one :func:`continuation_rows` row per problem (a
    model that carries on from a wrong step instead of stepping around it: a Monte-Carlo completer).

    With `stop_at_accuracy`, training stops as soon as greedy decoding solves that fraction of `eval_problems`
    (checked `evals_per_epoch` times an epoch): a *briefly* fine-tuned policy that still makes mistakes of its
    own, whatever the seed or problem length. Returns the history: `{"epoch", "loss", "greedy_accuracy"}` at
    every check and at every epoch end (`greedy_accuracy` None where it was not measured). `desc`: the progress
    bar's.
    """
    extra = continuation_rows(tokenizer, problems, seed=seed) if continue_after_errors else []
    rows = _sft_rows(tokenizer, problems) + extra
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    steps_per_epoch = (len(rows) + batch_size - 1) // batch_size
    warmup = max(1, steps_per_epoch // 2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
    check_every = max(1, steps_per_epoch // max(1, evals_per_epoch))
    history: list[dict[str, float | None]] = []
    bar = tqdm(total=epochs * steps_per_epoch, desc=desc, disable=not progress, leave=False)
    step = 0
    for epoch in range(epochs):
        rng.shuffle(rows)
        for start in range(0, len(rows), batch_size):
            loss = _sft_step(
                model, opt, sched, _batch(rows[start : start + batch_size], tokenizer.pad_token_id)
            )
            step += 1
            bar.update(1)
            if stop_at_accuracy is not None and eval_problems and step % check_every == 0:
                accuracy = greedy_accuracy(model, tokenizer, eval_problems)
                history.append(
                    {"epoch": step / steps_per_epoch, "loss": loss.item(), "greedy_accuracy": accuracy}
                )
                bar.set_postfix(loss=f"{loss.item():.3f}", greedy_acc=f"{accuracy:.2f}")
                if accuracy >= stop_at_accuracy:
                    bar.close()
                    model.eval()
                    return history
        history.append({"epoch": epoch + 1.0, "loss": loss.item(), "greedy_accuracy": None})
    bar.close()
    model.eval()
    return history


def _batch(chunk: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in chunk)
    ids = torch.full((len(chunk), width), pad_id)
    labels = torch.full((len(chunk), width), -100)
    attn = torch.zeros((len(chunk), width), dtype=torch.long)
    for i, (seq, n_prompt) in enumerate(chunk):
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
        attn[i, : len(seq)] = 1
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


@torch.no_grad()
def greedy_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    max_new_tokens: int = 96,
) -> float:
    """Fraction of `problems` whose greedy solution has the right final answer."""
    model.eval()
    sols = sample_solutions(
        model, tokenizer, problems, 1, greedy=True, max_new_tokens=max_new_tokens, progress=False
    )
    return sum(s[0].is_correct for s in sols) / max(1, len(sols))


def generated_lengths(new_tokens: torch.Tensor, eos_token_id: int) -> list[int]:
    """Tokens each row of a `generate` output generated (`new_tokens` = the ids after the prompt): up to and
    including its first EOS, or all of them when it has none (cut by `max_new_tokens`).

    Example:

    ```python
    >>> generated_lengths(torch.tensor([[5, 6, 2, 2], [5, 6, 7, 8], [2, 2, 2, 2]]), eos_token_id=2)
    [3, 4, 1]

    ```
    """
    is_eos = new_tokens == eos_token_id
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, new_tokens.size(1))
    return first.tolist()


@torch.no_grad()
def generate_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    temperature: float = 1.0,
    batch_size: int = 256,
    max_new_tokens: int = 96,
    seed: int = 0,
    progress: bool = True,
    greedy: bool = False,
    desc: str = "sampling",
) -> tuple[list[str], list[int]]:
    """One completion per prompt string: the decoded texts and how many tokens each generated
    (:func:`generated_lengths`, the cost accounting of the demo's data), in the order of `prompts`.

    Prompts are generated in order of length (left-padded batches of similar prompts, which also tend to
    finish together: a batch runs until its longest completion ends), deterministically under `seed`.
    """
    torch.manual_seed(seed)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    prompts = [prompts[i] for i in order]
    texts: list[str] = []
    counts: list[int] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    sampling = (
        {"do_sample": False}
        if greedy
        else {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    )
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=not progress, leave=False):
            enc = tokenizer(list(prompts[start : start + batch_size]), return_tensors="pt", padding=True)
            out = model.generate(
                **enc,
                **sampling,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new = out[:, enc["input_ids"].size(1) :]
            texts.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
            counts.extend(generated_lengths(new, tokenizer.eos_token_id))
    finally:
        tokenizer.padding_side = side
    by_prompt = [0] * len(order)
    for position, i in enumerate(order):
        by_prompt[i] = position
    return [texts[j] for j in by_prompt], [counts[j] for j in by_prompt]


def sample_solutions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    n: int,
    *,
    temperature: float = 1.0,
    batch_size: int = 256,
    max_new_tokens: int = 96,
    seed: int = 0,
    progress: bool = True,
    greedy: bool = False,
    token_counts: list[int] | None = None,
) -> list[list[Solution]]:
    """`n` sampled solutions per problem, parsed into steps and graded against the known truth. With
    `token_counts`, the number of tokens each sample generated is appended to it (problem-major order).
    """
    prompts = [p for p in problems for _ in range(n)]
    texts, counts = generate_texts(
        model,
        tokenizer,
        [p.prompt for p in prompts],
        temperature=temperature,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        seed=seed,
        progress=progress,
        greedy=greedy,
        desc=f"sampling {n} solutions per problem",
    )
    if token_counts is not None:
        token_counts.extend(counts)
    solutions = [
        solution_from_text(p, t.strip(), separator=STEP_SEPARATOR)
        for p, t in zip(prompts, texts, strict=True)
    ]
    return [solutions[i * n : (i + 1) * n] for i in range(len(problems))]
