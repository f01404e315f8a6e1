"""PRIMETrainer's accuracy filter with oversampling, and its PRM state in checkpoints (resume = uninterrupted).

Rollouts are fixed texts fed through TRL's `rollout_func` and the verifier is deterministic, so which groups pass
the filter is known in advance: prompt `Qi` gets two right answers (i % 4 == 0), two wrong ones (i % 4 == 2), or
one of each (odd i, but Q7 gets two right answers).
"""

from __future__ import annotations

import logging
import os

import torch
from datasets import Dataset
from scripts.train_prime_tiny import PROMPTS, answer, fixed_rollouts, verifier

from trl_implicit_prm import PRIMEConfig, PRIMETrainer

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func feeds the fixed rollouts


def _wrong(prompt: str, k: int) -> bool:
    i = int(prompt[1 : prompt.index(":")])
    return False if i == 7 else {0: False, 2: True}.get(i % 4, k == 1)


def _completion(prompt: str, k: int) -> str:
    value = answer(prompt) + _wrong(prompt, k)
    return f"{prompt[4:-2]} = {value}.\n\nThe answer is {value}."


def rollouts(prompts: list[str], trainer: PRIMETrainer) -> dict:
    return fixed_rollouts(prompts, trainer.processing_class, _completion)


class Recording(PRIMETrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[dict] = []

    def _compute_loss(self, model, inputs):
        self.seen.append({k: v.clone() for k, v in inputs.items() if torch.is_tensor(v)})
        return super()._compute_loss(model, inputs)


def _trainer(model, out, tokenizer, **overrides) -> Recording:
    fields = {
        "output_dir": str(out),
        "use_cpu": True,
        "bf16": False,
        "max_steps": 2,
        "learning_rate": 1e-3,
        "prm_learning_rate": 1e-3,
        "per_device_train_batch_size": 4,
        "num_generations": 2,
        "max_completion_length": 32,
        "report_to": "none",
        "logging_steps": 1,
        "save_strategy": "no",
        "shuffle_dataset": False,
        "seed": 0,
        **overrides,
    }
    return Recording(
        str(model),
        reward_funcs=verifier,
        args=PRIMEConfig(**fields),
        processing_class=tokenizer,
        train_dataset=Dataset.from_list([{"prompt": q} for q in PROMPTS]),
        rollout_func=rollouts,
    )


def test_oversampling_fills_the_batch_with_kept_groups(tiny_dir, tmp_path, tokenizer, caplog):
    trainer = _trainer(tiny_dir / "llama", tmp_path / "out", tokenizer, oversample_factor=2)
    with caplog.at_level(logging.WARNING, logger="trl_implicit_prm.rl.trainer"):
        trainer.train()
    logs = [h for h in trainer.state.log_history if "prime/groups_generated" in h]
    # step 1 draws Q0-Q3, of which Q1 and Q3 pass [0.2, 0.8]: the batch's 2 groups.
    # step 2 draws Q4-Q7, of which only Q5 passes: the first dropped group (Q4) fills the batch with no loss.
    assert [h["prime/groups_generated"] for h in logs] == [4.0, 4.0]
    assert [h["prime/groups_dropped"] for h in logs] == [2.0, 3.0]
    assert [h["prime/groups_short"] for h in logs] == [0.0, 1.0]
    assert [h["prime/kept_fraction"] for h in logs] == [1.0, 0.5]
    assert [r.getMessage() for r in caplog.records] == [
        "Accuracy filter: 1 of 4 generated groups lie in [0.2, 0.8], the batch needs 2; 1 dropped groups fill it "
        "with no loss (raise oversample_factor or widen the bounds)"
    ]
    expected = [{1: True, 3: True}, {4: False, 5: True}]
    for batch, groups in zip(trainer.seen, expected, strict=True):
        assert batch["completion_ids"].size(0) == 4  # per_device_train_batch_size rows, not the 8 generated
        prompts = tokenizer.batch_decode(batch["prompt_ids"], skip_special_tokens=True)
        assert sorted(prompts) == sorted(PROMPTS[i] for i in groups for _ in range(2))
        for prompt, trains in zip(prompts, batch["completion_mask"].sum(1) > 0, strict=True):
            assert bool(trains) == groups[PROMPTS.index(prompt)]
        # padded to this batch's longest prompt and completion, not to those of the whole generation
        ids = [
            tokenizer(_completion(p, k), add_special_tokens=False)["input_ids"]
            for p in prompts
            for k in (0, 1)
        ]
        assert batch["completion_ids"].size(1) == max(map(len, ids)) + 1  # + EOS
        assert batch["prompt_ids"].size(1) == max(len(tokenizer(p)["input_ids"]) for p in prompts)


def _optimizer_state(trainer) -> dict:
    return trainer.prm.optimizer.state_dict()


def test_resume_restores_the_prm_and_its_optimizer(tiny_dir, tmp_path, tokenizer):
    from trl_implicit_prm import ProcessRewardComputer

    bounds = {"accuracy_lower_bound": 0.0, "accuracy_upper_bound": 1.0}
    whole = _trainer(
        tiny_dir / "llama", tmp_path / "whole", tokenizer, save_strategy="steps", save_steps=1, **bounds
    )
    whole.train()
    resumed = _trainer(tiny_dir / "llama", tmp_path / "resumed", tokenizer, **bounds)
    resumed.train(resume_from_checkpoint=str(tmp_path / "whole" / "checkpoint-1"))
    assert resumed.state.global_step == 2 and len(resumed.seen) == 1  # only step 2 ran
    # after step 2 the resumed PRM equals the uninterrupted one: weights and AdamW moments (2 steps each)
    a, b = whole.prm.model.state_dict(), resumed.prm.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = _optimizer_state(whole)["state"], _optimizer_state(resumed)["state"]
    assert sa.keys() == sb.keys() and all(int(s["step"]) == 2 for s in sb.values())
    assert all(torch.equal(sa[i][m], sb[i][m]) for i in sa for m in ("exp_avg", "exp_avg_sq"))
    # the PRM loss the resumed run logs at step 2 is the uninterrupted run's (step 1's comes from the checkpoint)
    logs = [[h["prm/loss"] for h in t.state.log_history if "prm/loss" in h] for t in (whole, resumed)]
    assert logs[1] == logs[0] and logs[0][0] != logs[0][1]
    # a checkpoint's PRM is an ordinary implicit-PRM checkpoint
    prc = ProcessRewardComputer.from_pretrained(tmp_path / "whole" / "checkpoint-1" / "prm")
    assert len(prc.score_one(PROMPTS[0], _completion(PROMPTS[0], 0)).step_rewards) == 2
