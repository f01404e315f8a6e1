"""Evaluation metrics equal the per-row truth: reward metrics against `ProcessRewardComputer` on the saved
checkpoint, a loss-free step-labelled eval set driving best-model selection and early stopping, and KTO's z0 on
a one-row batch. (The two-process version of the reward-metric check is in test_distributed.py.)"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from helpers import cpu_args
from transformers import EarlyStoppingCallback

from trl_implicit_prm import (
    CEConfig,
    CETrainer,
    ImplicitPRMConfig,
    ImplicitPRMTrainer,
    ProcessRewardComputer,
    StepKTOConfig,
    StepKTOTrainer,
)
from trl_implicit_prm.losses import kto_reference_point
from trl_implicit_prm.trainers.metrics import group_row_stats, pair_row_stats, reward_metrics

PROBLEMS = [(2, 3), (4, 4), (7, 1), (3, 6), (5, 2), (1, 8), (6, 3)]


def good(a: int, b: int) -> str:
    return f"{a} + {b} = {a + b}.\n\nThe answer is {a + b}."


def bad(a: int, b: int) -> str:
    return f"{a} + {b} = {a + b + 1}.\n\nThe answer is {a + b + 1}."


def unpaired(problems, labels) -> list[dict]:
    return [
        {"prompt": f"Q: {a} + {b}?\n", "completion": (good if y else bad)(a, b), "label": float(y)}
        for (a, b), y in zip(problems, labels, strict=True)
    ]


def stepwise(problems, labels) -> list[dict]:
    return [
        {
            "prompt": f"Q: {a} + {b}?\n",
            "completions": (good if y else bad)(a, b).split("\n\n"),
            "labels": [bool(y)] * 2,
        }
        for (a, b), y in zip(problems, labels, strict=True)
    ]


def paired(problems) -> list[dict]:
    return [{"prompt": f"Q: {a} + {b}?\n", "chosen": good(a, b), "rejected": bad(a, b)} for a, b in problems]


def config(cls, tmp_path, **overrides):
    own = dict(
        logging_steps=1,
        gradient_checkpointing=False,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        learning_rate=1e-3,
        max_steps=1,
        beta=0.5,
        seed=0,
        train_sampling_strategy="sequential",
    )
    return cpu_args(cls, tmp_path, **{**own, **overrides})


def truth(prc: ProcessRewardComputer, rows: list[dict]) -> dict[str, float]:
    """Per-row metrics of unpaired rows from the scorer's outcome rewards (the definition, written out)."""
    rewards = [
        r.outcome_reward for r in prc.score([r["prompt"] for r in rows], [r["completion"] for r in rows])
    ]
    positive = [r["label"] >= 0.5 for r in rows]
    pos = [x for x, p in zip(rewards, positive, strict=True) if p]
    neg = [x for x, p in zip(rewards, positive, strict=True) if not p]
    correct = [(x > 0) == p for x, p in zip(rewards, positive, strict=True)]
    batches = [correct[i : i + 2] for i in range(0, len(rows), 2)]
    return {
        "positive": sum(pos) / len(pos),
        "negative": sum(neg) / len(neg),
        "accuracies": sum(correct) / len(rows),
        # what averaging per-batch means over batches of 2 gives (the old, wrong, accuracy)
        "batch_mean_accuracy": sum(sum(b) / len(b) for b in batches) / len(batches),
    }


# --- pure functions ----------------------------------------------------------------------------------------------


def test_row_stats_reduce_to_per_item_means_whatever_the_batches():
    values = torch.tensor([[0.5, -1.0, 9.0], [2.0, 9.0, 9.0], [-0.5, 0.0, 0.0]])
    positive = torch.tensor([[True, False, True], [True, True, True], [False, False, False]])
    valid = torch.tensor([[True, True, False], [True, False, False], [True, False, False]])
    # items: (0.5, +), (-1.0, -), (2.0, +), (-0.5, -): positive mean 1.25, negative -0.75, all 4 correct
    whole = group_row_stats(values, positive, valid).sum(0)
    split = group_row_stats(values[:2], positive[:2], valid[:2]).sum(0) + group_row_stats(
        values[2:], positive[2:], valid[2:]
    ).sum(0)
    assert torch.equal(whole, split)
    assert reward_metrics("group", whole) == {
        "rewards/positive": 1.25,
        "rewards/negative": -0.75,
        "rewards/accuracies": 1.0,
    }
    # 1-D outcome rewards; a set without negatives has no rewards/negative
    got = reward_metrics(
        "group", group_row_stats(torch.tensor([1.0, -3.0]), torch.tensor([True, True])).sum(0)
    )
    assert got == {"rewards/positive": -1.0, "rewards/accuracies": 0.5}
    pairs = pair_row_stats(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.5, 1.0, -1.0])).sum(0)
    assert reward_metrics("pair", pairs) == pytest.approx(
        {
            "rewards/chosen": 1.0,
            "rewards/rejected": 0.5 / 3,
            "rewards/accuracies": 2 / 3,
            "rewards/margins": 2.5 / 3,
        }
    )
    with pytest.raises(ValueError, match="same shape"):
        group_row_stats(values, positive[:, :2], valid)


def test_kto_reference_point_pools_pairs_over_processes_and_has_none_without_pairs():
    beta = 0.5
    # this process: log-ratios (2, 6) -> β·r = (1, 3); the other process: (10) -> 5.
    other = torch.tensor([5.0, 1.0], dtype=torch.float64)
    z0 = kto_reference_point(
        torch.tensor([3.0, 6.0]), torch.tensor([1.0, 0.0]), beta, sum_over_processes=lambda t: t + other
    )
    assert z0.item() == pytest.approx(3.0)  # (1 + 3 + 5) / 3, not the mean of the process means (3.5)
    assert kto_reference_point(torch.tensor([]), torch.tensor([]), beta) is None
    alone = kto_reference_point(torch.tensor([]), None, beta, sum_over_processes=lambda t: t + other)
    assert alone.item() == pytest.approx(5.0)  # a process without pairs uses the other's
    assert kto_reference_point(torch.tensor([-4.0]), None, beta).item() == 0.0  # clamped, reference-free


# --- item 5: reward metrics ----------------------------------------------------------------------------------------


def test_eval_reward_metrics_equal_the_per_row_values_of_the_saved_checkpoint(tiny_dir, tokenizer, tmp_path):
    """5 rows in eval batches of 2, 2, 1; with a dict of eval sets each gets its own prefixed metrics."""
    five = unpaired(PROBLEMS[:5], [1, 0, 1, 1, 0])
    three = unpaired(PROBLEMS[4:], [0, 1, 1])
    args = config(CEConfig, tmp_path)
    trainer = CETrainer(
        str(tiny_dir / "llama"),
        ref_model=str(tiny_dir / "llama-ref"),
        args=args,
        train_dataset=Dataset.from_list(five),
        processing_class=tokenizer,
        eval_dataset={"five": Dataset.from_list(five), "three": Dataset.from_list(three)},
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "ckpt"))
    prc = ProcessRewardComputer.from_pretrained(tmp_path / "ckpt", device="cpu")
    want = {"five": truth(prc, five), "three": truth(prc, three)}
    # The split matters here: the mean of the per-batch accuracies is not the per-row one.
    assert abs(want["five"]["batch_mean_accuracy"] - want["five"]["accuracies"]) > 0.05

    single = trainer.evaluate(Dataset.from_list(five))
    for metric in ("accuracies", "positive", "negative"):
        assert single[f"eval_rewards/{metric}"] == pytest.approx(want["five"][metric], abs=1e-5), metric

    both = trainer.evaluate()
    logged = trainer.state.log_history[-2:]  # one log entry per eval set
    for name in ("five", "three"):
        entry = next(e for e in logged if f"eval_{name}_loss" in e)
        for metric in ("accuracies", "positive", "negative"):
            key = f"eval_{name}_rewards/{metric}"
            assert both[key] == pytest.approx(want[name][metric], abs=1e-5), key
            assert entry[key] == both[key]
    assert not any(k.startswith("eval_rewards/") for k in both)  # nothing unprefixed to overwrite


@pytest.mark.parametrize("name", ["dpo", "step_kto"])
def test_pair_and_step_reward_metrics_equal_the_per_item_values_of_the_saved_checkpoint(
    name, tiny_dir, tokenizer, tmp_path
):
    """DPO: per pair (chosen, rejected, margins, accuracies); step-KTO: per labelled step."""
    if name == "dpo":
        rows = paired(PROBLEMS[:5])
        trainer_cls, config_cls = ImplicitPRMTrainer, ImplicitPRMConfig
    else:
        rows = stepwise(PROBLEMS[:5], [1, 0, 1, 1, 0])
        rows[2]["labels"] = [True, False]  # a row with both kinds of steps
        trainer_cls, config_cls = StepKTOTrainer, StepKTOConfig
    trainer = trainer_cls(
        str(tiny_dir / "llama"),
        ref_model=str(tiny_dir / "llama-ref"),
        args=config(config_cls, tmp_path),
        train_dataset=Dataset.from_list(rows),
        eval_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    trainer.save_model(str(tmp_path / "ckpt"))
    prc = ProcessRewardComputer.from_pretrained(tmp_path / "ckpt", device="cpu")
    metrics = trainer.evaluate()
    if name == "dpo":
        chosen = [
            r.outcome_reward for r in prc.score([r["prompt"] for r in rows], [r["chosen"] for r in rows])
        ]
        rejected = [
            r.outcome_reward for r in prc.score([r["prompt"] for r in rows], [r["rejected"] for r in rows])
        ]
        n = len(rows)
        want = {
            "chosen": sum(chosen) / n,
            "rejected": sum(rejected) / n,
            "margins": (sum(chosen) - sum(rejected)) / n,
            "accuracies": sum(c > r for c, r in zip(chosen, rejected, strict=True)) / n,
        }
    else:
        scored = prc.score([r["prompt"] for r in rows], [r["completions"] for r in rows])
        items = [
            (x, y)
            for r, s in zip(rows, scored, strict=True)
            for x, y in zip(s.step_rewards, r["labels"], strict=True)
        ]
        pos, neg = [x for x, y in items if y], [x for x, y in items if not y]
        want = {
            "positive": sum(pos) / len(pos),
            "negative": sum(neg) / len(neg),
            "accuracies": sum((x > 0) == y for x, y in items) / len(items),
        }
    for metric, value in want.items():
        assert metrics[f"eval_rewards/{metric}"] == pytest.approx(value, abs=1e-5), metric


# --- item 6: a step-labelled eval set for DPO / NCA -----------------------------------------------------------------


@pytest.mark.parametrize("loss_type", ["dpo", "nca"])
def test_dpo_on_a_step_labelled_eval_set_reports_no_nan_and_early_stops_on_step_f1(
    loss_type, tiny_dir, tokenizer, tmp_path
):
    steps = Dataset.from_list(stepwise(PROBLEMS[:6], [1, 0, 1, 0, 0, 1]))
    common = dict(
        loss_type=loss_type,
        max_steps=4,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        load_best_model_at_end=True,
    )
    args = config(ImplicitPRMConfig, tmp_path, metric_for_best_model="steps/f1", **common)
    # Patience 1 with an unreachable improvement threshold: the second evaluation stops training.
    trainer = ImplicitPRMTrainer(
        str(tiny_dir / "llama"),
        args=args,
        eval_dataset=steps,
        processing_class=tokenizer,
        train_dataset=Dataset.from_list(paired(PROBLEMS)),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=1, early_stopping_threshold=10.0)],
    )
    trainer.train()
    evals = [e for e in trainer.state.log_history if "eval_steps/f1" in e]
    assert len(evals) == 2 and trainer.state.global_step == 2  # early stopping saw eval_steps/f1
    assert not any("eval_loss" in e for e in trainer.state.log_history)  # no loss on step labels, no NaN
    assert trainer.state.best_metric == evals[0]["eval_steps/f1"]
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-1")
    # With load_best_model_at_end the default metric is the loss, which this eval set does not have.
    with pytest.raises(ValueError, match=r"metric_for_best_model='steps/f1'"):
        ImplicitPRMTrainer(
            str(tiny_dir / "llama"),
            args=config(ImplicitPRMConfig, tmp_path / "default", **common),
            train_dataset=Dataset.from_list(paired(PROBLEMS)),
            eval_dataset=steps,
            processing_class=tokenizer,
        )


# --- item 7: KTO's z0 on a one-row batch ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["kto", "step_kto"])
def test_kto_z0_of_a_one_row_last_batch_is_the_previous_estimate(name, tiny_dir, tokenizer, tmp_path):
    """5 rows in batches of 2, 2, 1 (dataloader_drop_last=False): the last batch has no mismatched pair."""
    labels = [1, 0, 1, 1, 0]
    if name == "kto":
        cls, cfg, rows, extra = CETrainer, CEConfig, unpaired(PROBLEMS[:5], labels), {"loss_type": "kto"}
    else:
        cls, cfg, rows, extra = StepKTOTrainer, StepKTOConfig, stepwise(PROBLEMS[:5], labels), {}
    # lr=0: the parameters, hence the estimates, do not change (and with this reference z0 > 0).
    args = config(cfg, tmp_path, learning_rate=0.0, max_steps=3, dataloader_drop_last=False, **extra)
    trainer = cls(
        str(tiny_dir / "llama"),
        ref_model=str(tiny_dir / "llama-ref"),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    trainer.train()
    z0 = [e["kto/z0"] for e in trainer.state.log_history if "kto/z0" in e]
    assert len(z0) == 3 and z0[1] > 0 and z0[0] != z0[1]
    assert z0[2] == z0[1]  # the one-row batch keeps the latest estimate, not max(0, its own reward)
    fresh = cls(
        str(tiny_dir / "llama"),
        ref_model=str(tiny_dir / "llama-ref"),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    with pytest.raises(ValueError, match=r"single row on every process.*kto_reference_point='zero'"):
        fresh.evaluate(Dataset.from_list(rows[:1]))  # a one-row batch and no earlier estimate to use


def test_kto_with_one_row_evaluation_batches_is_refused(tmp_path):
    for cls, extra in ((CEConfig, {"loss_type": "kto"}), (StepKTOConfig, {})):
        with pytest.raises(ValueError, match="per_device_eval_batch_size >= 2"):
            config(cls, tmp_path, per_device_eval_batch_size=1, **extra)
        config(
            cls, tmp_path, per_device_eval_batch_size=1, kto_reference_point="zero", **extra
        )  # no pairs needed
