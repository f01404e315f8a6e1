"""Losses: hand-computed values, and parity with TRL's own DPO (sigmoid, nca_pair) and KTO implementations."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset

from trl_implicit_prm.logps import completion_logps
from trl_implicit_prm.losses import ce_loss, dpo_loss, kto_loss, kto_reference_point, nca_loss, step_kto_loss


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_ce_loss_by_hand_with_soft_labels():
    r = torch.tensor([0.0, 2.0, -1.0, 0.5])
    labels = torch.tensor([1.0, 0.0, 1.0, 0.25])
    want = [
        -logsig(0.0),
        -logsig(-2.0),
        -logsig(-1.0),
        -(0.25 * logsig(0.5) + 0.75 * logsig(-0.5)),
    ]
    assert ce_loss(r, labels).tolist() == pytest.approx(want, abs=1e-6)
    # Bool labels behave like 0/1.
    assert ce_loss(r[:2], torch.tensor([True, False])).tolist() == pytest.approx(want[:2], abs=1e-6)
    # Gradient of CE with respect to r is σ(r) − l.
    r_req = r.clone().requires_grad_(True)
    ce_loss(r_req, labels).sum().backward()
    assert r_req.grad.tolist() == pytest.approx(
        [sig(x) - lab for x, lab in zip(r.tolist(), labels.tolist(), strict=True)], abs=1e-6
    )


def test_dpo_and_nca_by_hand():
    rw, rl = torch.tensor([1.0, -0.5]), torch.tensor([0.2, 0.5])
    assert dpo_loss(rw, rl).tolist() == pytest.approx([-logsig(0.8), -logsig(-1.0)], abs=1e-6)
    want_nca = [-logsig(w) - 0.5 * logsig(-w) - 0.5 * logsig(-lo) for w, lo in ((1.0, 0.2), (-0.5, 0.5))]
    assert nca_loss(rw, rl).tolist() == pytest.approx(want_nca, abs=1e-6)


def test_kto_by_hand_and_reference_point():
    # z0 = max(0, mean β·(πθ − πref)) over mismatched pairs: β=0.5, ratios (2, -1, 5) -> 0.5·2 = 1.0
    z0 = kto_reference_point(torch.tensor([1.0, 0.0, 3.0]), torch.tensor([-1.0, 1.0, -2.0]), beta=0.5)
    assert z0.item() == pytest.approx(1.0)
    assert kto_reference_point(torch.tensor([0.0]), torch.tensor([3.0]), beta=1.0).item() == 0.0  # clamped
    r = torch.tensor([2.0, 0.0, 0.5])
    labels = torch.tensor([1.0, 0.0, 0.5])
    got = kto_loss(r, labels, z0, desirable_weight=2.0, undesirable_weight=0.5).tolist()
    want = [
        2.0 * (1 - sig(1.0)),
        0.5 * (1 - sig(1.0)),
        0.5 * 2.0 * (1 - sig(-0.5)) + 0.5 * 0.5 * (1 - sig(0.5)),
    ]
    assert got == pytest.approx(want, abs=1e-6)


def test_step_kto_averages_over_labelled_steps_only():
    sr = torch.tensor([[0.5, -1.0, 9.0], [2.0, 9.0, 9.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    got = step_kto_loss(sr, labels, mask, z0=0.0)
    assert got.tolist() == pytest.approx([1 - sig(0.5), 1 - sig(1.0), 1 - sig(2.0)], abs=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        step_kto_loss(sr, labels[:, :2], mask, z0=0.0)


# --- Parity with TRL's own implementations -------------------------------------------------------------------


def _preference_rows(eos: str) -> list[dict]:
    return [
        {
            "prompt": "Q: 2 + 3?\n",
            "chosen": "2 + 3 = 5.\n\nThe answer is 5." + eos,
            "rejected": "2 + 3 = 6." + eos,
        },
        {"prompt": "Q: 4 * 2?\n", "chosen": "4 * 2 = 8." + eos, "rejected": "4 * 2 = 6.\n\nSo 6." + eos},
        {"prompt": "Q: 9 - 1?\n", "chosen": "9 - 1 = 8" + eos, "rejected": "9 - 1 = 10.\n\n10" + eos},
    ]


def _sum_logps(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return completion_logps(
            model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
        ).sum(-1)


@pytest.mark.parametrize("trl_loss,ours", [("sigmoid", dpo_loss), ("nca_pair", nca_loss)])
def test_dpo_and_nca_match_trl(tiny_dir, tokenizer, tmp_path, trl_loss, ours):
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    policy = AutoModelForCausalLM.from_pretrained(tiny_dir / "llama")
    ref = AutoModelForCausalLM.from_pretrained(tiny_dir / "llama-ref")
    beta = 0.3
    args = DPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        beta=beta,
        loss_type=[trl_loss],
        report_to=[],
        per_device_train_batch_size=3,
        disable_dropout=True,
    )
    trainer = DPOTrainer(
        policy,
        ref_model=ref,
        args=args,
        processing_class=tokenizer,
        train_dataset=Dataset.from_list(_preference_rows("")),
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    trainer.model.train()
    trl_value = trainer._compute_loss(trainer.model, batch, return_outputs=False)

    policy_sums, ref_sums = _sum_logps(trainer.model, batch), _sum_logps(trainer.ref_model, batch)
    rewards = beta * (policy_sums - ref_sums)
    chosen, rejected = rewards.chunk(2)
    assert ours(chosen, rejected).mean().item() == pytest.approx(trl_value.item(), abs=1e-6)
    metrics = trainer._metrics["train"]
    assert metrics["rewards/chosen"][-1] == pytest.approx(chosen.mean().item(), abs=1e-6)
    assert metrics["rewards/rejected"][-1] == pytest.approx(rejected.mean().item(), abs=1e-6)


def test_kto_matches_trl(tiny_dir, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM
    from trl import KTOConfig, KTOTrainer

    policy = AutoModelForCausalLM.from_pretrained(tiny_dir / "qwen2")
    ref = AutoModelForCausalLM.from_pretrained(tiny_dir / "qwen2-ref")
    beta, lam_d, lam_u = 0.2, 1.5, 0.7
    rows = []
    for r in _preference_rows(""):
        rows.append({"prompt": r["prompt"], "completion": r["chosen"], "label": True})
        rows.append({"prompt": r["prompt"], "completion": r["rejected"], "label": False})
    args = KTOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        beta=beta,
        desirable_weight=lam_d,
        undesirable_weight=lam_u,
        report_to=[],
        per_device_train_batch_size=6,
        disable_dropout=True,
    )
    trainer = KTOTrainer(
        policy, ref_model=ref, args=args, processing_class=tokenizer, train_dataset=Dataset.from_list(rows)
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(6)])
    trainer.model.train()
    trl_value = trainer._compute_loss(trainer.model, batch, return_outputs=False)

    main = {k: batch[k] for k in ("input_ids", "attention_mask", "completion_mask")}
    mismatched = {k: batch[f"KL_{k}"] for k in ("input_ids", "attention_mask", "completion_mask")}
    rewards = beta * (_sum_logps(trainer.model, main) - _sum_logps(trainer.ref_model, main))
    z0 = kto_reference_point(
        _sum_logps(trainer.model, mismatched), _sum_logps(trainer.ref_model, mismatched), beta
    )
    labels = torch.as_tensor(batch["label"], dtype=torch.float32)
    ours = kto_loss(rewards, labels, z0, desirable_weight=lam_d, undesirable_weight=lam_u).mean()
    assert ours.item() == pytest.approx(trl_value.item(), abs=1e-6)
    assert trainer._metrics["train"]["kl"][-1] == pytest.approx(z0.item() / beta, abs=1e-5)
