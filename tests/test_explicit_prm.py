"""Step-level CE (StepKTOTrainer loss_type="ce") and the explicit PRM: losses by hand, training, checkpoints
that record their kind, and scoring through ProcessRewardComputer and the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from datasets import Dataset
from helpers import cpu_args
from transformers import AutoModelForCausalLM

from trl_implicit_prm import (
    CEConfig,
    CETrainer,
    ExplicitPRMConfig,
    ExplicitPRMTrainer,
    ProcessRewardComputer,
    StepKTOConfig,
    StepKTOTrainer,
)
from trl_implicit_prm.cli import main
from trl_implicit_prm.data import tokenize_example
from trl_implicit_prm.evaluation import evaluate_process_errors
from trl_implicit_prm.explicit import step_end_positions
from trl_implicit_prm.inference import ExplicitPRMComputer
from trl_implicit_prm.logps import completion_logps
from trl_implicit_prm.losses import step_ce_loss
from trl_implicit_prm.modeling import read_metadata
from trl_implicit_prm.rewards import step_logp_sums
from trl_implicit_prm.search import IncrementalScorer

PROBLEMS = [(2, 3), (4, 4), (7, 1), (3, 6), (5, 2), (1, 8)]


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def rows() -> list[dict]:
    """Stepwise rows: a right first step, then (odd rows) a wrong second step."""
    out = []
    for i, (a, b) in enumerate(PROBLEMS):
        c = a + b + (i % 2)
        out.append(
            {
                "prompt": f"Q: {a} + {b}?\n",
                "completions": [f"{a} + {b} = {c}.", f"The answer is {c}."],
                "labels": [True, not i % 2],
            }
        )
    return out


def args(cls, tmp_path, **overrides):
    own = dict(
        per_device_train_batch_size=6,
        per_device_eval_batch_size=6,
        learning_rate=5e-3,
        max_steps=4,
        seed=0,
        train_sampling_strategy="sequential",
    )
    return cpu_args(cls, tmp_path, **{**own, **overrides})


def test_step_ce_loss_by_hand():
    q = torch.tensor([[0.5, -1.0, 9.0], [2.0, 9.0, 9.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.25, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    want = [-logsig(0.5), -logsig(1.0), -(0.25 * logsig(2.0) + 0.75 * logsig(-2.0))]
    assert step_ce_loss(q, labels, mask).tolist() == pytest.approx(want, abs=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        step_ce_loss(q, labels[:, :2], mask)


def test_step_ce_config_defaults_to_q_and_needs_no_kto_settings(tmp_path):
    ce = args(StepKTOConfig, tmp_path, loss_type="ce", per_device_train_batch_size=1)  # no mismatched pairs
    assert ce.step_reward == "q"
    assert args(StepKTOConfig, tmp_path).step_reward == "step"
    with pytest.raises(ValueError, match="loss_type must be 'kto' or 'ce'"):
        args(StepKTOConfig, tmp_path, loss_type="dpo")


def test_step_ce_trainer_loss_is_ce_of_q_at_each_step_end(tiny_dir, tokenizer, tmp_path):
    """The trainer's loss on a batch equals the formula computed by hand from the two models' log-probs."""
    policy = AutoModelForCausalLM.from_pretrained(tiny_dir / "llama")
    ref = AutoModelForCausalLM.from_pretrained(tiny_dir / "llama-ref")
    cfg = args(StepKTOConfig, tmp_path, loss_type="ce", beta=0.5)
    trainer = StepKTOTrainer(
        policy, ref_model=ref, args=cfg, train_dataset=Dataset.from_list(rows()), processing_class=tokenizer
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(6)])
    with torch.no_grad():
        got = trainer.compute_loss(trainer.model, batch).item()
        inputs = [batch[k] for k in ("input_ids", "attention_mask", "completion_mask")]
        diff = step_logp_sums(completion_logps(policy, *inputs), batch["step_index"], 2) - step_logp_sums(
            completion_logps(ref, *inputs), batch["step_index"], 2
        )
    q = (0.5 * diff).cumsum(-1).tolist()
    losses = [
        -(lab * logsig(v) + (1 - lab) * logsig(-v))
        for row, r in zip(q, rows(), strict=True)
        for v, lab in zip(row, map(float, r["labels"]), strict=True)
    ]
    assert got == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert trainer.train().global_step == 4


def _explicit(tiny_dir, tokenizer, tmp_path, **overrides):
    data = Dataset.from_list(rows())
    cfg = args(ExplicitPRMConfig, tmp_path, **overrides)
    return ExplicitPRMTrainer(
        str(tiny_dir / "llama"), args=cfg, train_dataset=data, eval_dataset=data, processing_class=tokenizer
    )


@pytest.mark.parametrize("last_only", [False, True])
def test_explicit_loss_is_two_class_ce_at_each_step_end(tiny_dir, tokenizer, tmp_path, last_only):
    trainer = _explicit(tiny_dir, tokenizer, tmp_path, train_on_last_step_only=last_only)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(6)])
    with torch.no_grad():
        got = trainer.compute_loss(trainer.model, batch).item()
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    losses = []
    for b, row in enumerate(rows()):
        step_index = batch["step_index"][b].tolist()
        for k, label in enumerate(row["labels"]):
            if last_only and k != len(row["labels"]) - 1:
                continue
            end = max(t for t, s in enumerate(step_index) if s == k)  # the step's last token
            z = (logits[b, end, 1] - logits[b, end, 0]).item()
            losses.append(-(label * logsig(z) + (1 - label) * logsig(-z)))
    assert got == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_explicit_trains_saves_its_kind_and_scores_through_the_same_api(tiny_dir, tokenizer, tmp_path):
    trainer = _explicit(tiny_dir, tokenizer, tmp_path)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    assert trainer.evaluate()["eval_loss"] < before - 1e-3
    out = tmp_path / "explicit"
    trainer.save_model(str(out))
    meta = read_metadata(out)
    assert meta["kind"] == "explicit" and meta["trainer"] == "ExplicitPRMTrainer"
    prc = ProcessRewardComputer.from_pretrained(out, device="cpu")
    assert isinstance(prc, ExplicitPRMComputer)
    data = rows()
    results = prc.score([r["prompt"] for r in data], [r["completions"] for r in data])
    assert [r.num_steps for r in results] == [2] * 6
    # The score of step k is the classifier's log-odds at the step's last token, computed by hand here.
    enc = tokenize_example(
        prc.tokenizer, data[1]["prompt"], data[1]["completions"], append_eos=meta["append_eos"]
    )
    with torch.no_grad():
        logits = prc.model(input_ids=torch.tensor([enc["input_ids"]])).logits[0]
    ends = step_end_positions(torch.tensor([enc["step_index"]]), 2)[0].tolist()
    want = [(logits[t, 1] - logits[t, 0]).item() for t in ends]
    assert results[1].step_rewards == pytest.approx(want, abs=1e-5)
    assert results[1].q_values == results[1].step_rewards
    assert results[1].outcome_reward == pytest.approx(want[-1], abs=1e-5)
    with pytest.raises(ValueError, match="do not pass a reference model"):
        ProcessRewardComputer.from_pretrained(out, ref_model=tiny_dir / "llama", device="cpu")

    # The CLI scores it like any checkpoint.
    inp = tmp_path / "rows.jsonl"
    inp.write_text(
        "".join(json.dumps({"prompt": r["prompt"], "steps": r["completions"]}) + "\n" for r in data)
    )
    scored = tmp_path / "scored.jsonl"
    argv = ["score", "--model", str(out), "--input", str(inp), "--output", str(scored), "--device", "cpu"]
    assert main(argv) == 0
    lines = [json.loads(x) for x in scored.read_text().splitlines()]
    for line, result in zip(lines, results, strict=True):
        assert line["step_rewards"] == pytest.approx(result.step_rewards, abs=1e-5)
    # eval-steps too: the F1 it reports is the library's on the explicit scores.
    records = [
        {
            "problem": r["prompt"],
            "steps": r["completions"],
            "label": r["labels"].index(False) if False in r["labels"] else -1,
        }
        for r in data
    ]
    (tmp_path / "pb.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    report = tmp_path / "steps.json"
    argv = ["eval-steps", "--model", str(out), "--data", str(tmp_path / "pb.jsonl"), "--output", str(report)]
    assert main([*argv, "--device", "cpu"]) == 0
    tuned = evaluate_process_errors(records, [r.step_rewards for r in results])
    written = json.loads(report.read_text())
    assert written["threshold"] == pytest.approx(tuned.threshold, abs=1e-5)
    assert written["beta"] is None and prc.beta is None  # a classifier has no β: none is reported
    # Search continues an implicit PRM's KV caches: an explicit one is refused, not scored as if it were one.
    with pytest.raises(ValueError, match="is an explicit PRM"):
        IncrementalScorer(prc)
    problems = tmp_path / "problems.jsonl"
    problems.write_text(json.dumps({"prompt": data[0]["prompt"]}) + "\n")
    argv = ["search", "--model", str(out), "--policy", str(tiny_dir / "llama"), "--input", str(problems)]
    assert main([*argv, "--output", str(tmp_path / "s.jsonl"), "--device", "cpu", "--n", "2"]) == 2


def test_implicit_checkpoints_record_their_kind(tiny_dir, tokenizer, tmp_path):
    data = [{"prompt": r["prompt"], "completion": r["completions"], "label": r["labels"][-1]} for r in rows()]
    cfg = args(CEConfig, tmp_path, max_steps=1)
    trainer = CETrainer(
        str(tiny_dir / "llama"), args=cfg, train_dataset=Dataset.from_list(data), processing_class=tokenizer
    )
    trainer.save_model(str(tmp_path / "ce"))
    assert read_metadata(tmp_path / "ce")["kind"] == "implicit"
    prc = ProcessRewardComputer.from_pretrained(tmp_path / "ce", device="cpu")
    assert type(prc) is ProcessRewardComputer


def test_explicit_partial_response_reads_its_last_step_where_a_whole_one_does(tiny_dir, tokenizer):
    """`complete=False` (a prefix in search): each step's score equals the one it gets inside the whole response,
    read at the separator after it. Before, the last step of a prefix was read at its last text token, where no
    label ever sat.
    """
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(tiny_dir / "llama", num_labels=2)
    prc = ExplicitPRMComputer(model, tokenizer, step_separator="\n\n", append_eos=True)
    steps = ["Add 2 and 3.", "2 + 3 = 5.", "The answer is 5."]
    whole = prc.score_one("Q: 2+3?\n", steps)
    prefix = prc.score_one("Q: 2+3?\n", steps[:2], complete=False)
    assert prefix.steps == steps[:2]
    assert prefix.step_rewards == pytest.approx(whole.step_rewards[:2], abs=1e-6)
    assert prefix.step_rewards[1] != pytest.approx(prc.score_one("Q: 2+3?\n", steps[:2]).step_rewards[1])
