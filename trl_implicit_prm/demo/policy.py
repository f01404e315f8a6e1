"""The demo's reference policy: a tiny Llama fine-tuned on correct solutions, and sampling from it.

In the paper the reference (and the PRM's initialisation) is an instruct model; here a few-hundred-thousand
parameter model learns the synthetic task's format and most of its arithmetic in well under a minute on a CPU,
and makes mistakes of its own when sampled — exactly what outcome-labelled rollouts need.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trl_implicit_prm.demo.task import (
    STEP_SEPARATOR,
    Problem,
    Solution,
    reference_solution,
    solution_from_text,
)

__all__ = ["finetune_on_solutions", "sample_solutions"]


def _sft_rows(tokenizer: PreTrainedTokenizerBase, problems: Sequence[Problem]) -> list[tuple[list[int], int]]:
    rows = []
    for p in problems:
        prompt = tokenizer(p.prompt)["input_ids"]
        completion = tokenizer(reference_solution(p).text + tokenizer.eos_token, add_special_tokens=False)
        rows.append((prompt + completion["input_ids"], len(prompt)))
    return rows


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
) -> list[float]:
    """Supervised fine-tuning on the reference solutions (loss on completion tokens only); returns epoch losses."""
    rows = _sft_rows(tokenizer, problems)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    total = epochs * ((len(rows) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=learning_rate, total_steps=total, pct_start=0.1)
    model.train()
    losses = []
    bar = tqdm(total=total, desc="fine-tuning the reference policy", disable=not progress, leave=False)
    for _ in range(epochs):
        rng.shuffle(rows)
        epoch_loss = 0.0
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id)
            labels = torch.full((len(chunk), width), -100)
            attn = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, (seq, n_prompt) in enumerate(chunk):
                ids[i, :len(seq)] = torch.tensor(seq)
                labels[i, n_prompt:len(seq)] = torch.tensor(seq[n_prompt:])
                attn[i, :len(seq)] = 1
            loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            epoch_loss += loss.item() * len(chunk)
            bar.update(1)
        losses.append(epoch_loss / len(rows))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    model.eval()
    return losses


@torch.no_grad()
def sample_solutions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    n: int,
    *,
    temperature: float = 1.0,
    batch_size: int = 256,
    max_new_tokens: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> list[list[Solution]]:
    """`n` sampled solutions per problem, parsed into steps and graded against the known truth."""
    torch.manual_seed(seed)
    prompts = [p for p in problems for _ in range(n)]
    texts: list[str] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc=f"sampling {n} solutions per problem",
                          disable=not progress, leave=False):
            chunk = [p.prompt for p in prompts[start:start + batch_size]]
            enc = tokenizer(chunk, return_tensors="pt", padding=True)
            out = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                 max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
            texts.extend(tokenizer.batch_decode(out[:, enc["input_ids"].size(1):], skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    solutions = [solution_from_text(p, t.strip(), separator=STEP_SEPARATOR) for p, t in zip(prompts, texts,
                                                                                          strict=True)]
    return [solutions[i * n:(i + 1) * n] for i in range(len(problems))]
