"""PRIMETrainer end to end on a tiny model: 2 RL steps, then every logged number recomputed from the rollouts."""

from __future__ import annotations

import copy
import itertools
import json

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, TrainerCallback

from trl_implicit_prm import PRIMEConfig, PRIMETrainer, ProcessRewardComputer
from trl_implicit_prm.logps import completion_logps
from trl_implicit_prm.losses import ce_loss
from trl_implicit_prm.rewards import outcome_rewards, token_rewards
from trl_implicit_prm.rl.advantages import prime_advantages


def verifier(completions, **kwargs):
    """Alternating labels: every group of 2 holds one correct and one wrong completion."""
    return [float(i % 2) for i in range(len(completions))]


class Recording(PRIMETrainer):
    """Records what `_compute_loss` receives, next to the rollout the trainer scored for that step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[dict, dict]] = []

    def _compute_loss(self, model, inputs):
        self.seen.append(({k: v.clone() for k, v in inputs.items() if torch.is_tensor(v)}, self.last_rollout))
        return super()._compute_loss(model, inputs)


class PRMSnapshots(TrainerCallback):
    def __init__(self, trainer):
        self.trainer, self.states = trainer, []

    def on_step_begin(self, args, state, control, **kwargs):
        self.states.append(copy.deepcopy(self.trainer.prm.model.state_dict()))

    def on_train_end(self, args, state, control, **kwargs):
        self.on_step_begin(args, state, control)


def _train(tiny_dir, tmp_path, tokenizer, peft=None, **overrides):
    fields = {
        "output_dir": str(tmp_path / "out"),
        "use_cpu": True,
        "bf16": False,
        "max_steps": 2,
        "logging_steps": 1,
        "report_to": "none",
        "save_strategy": "no",
        "per_device_train_batch_size": 4,
        "num_generations": 2,
        "max_completion_length": 8,
        "prm_learning_rate": 1e-3,
        "accuracy_lower_bound": 0.0,
        "accuracy_upper_bound": 1.0,
        "seed": 0,
        **overrides,
    }
    rows = [{"prompt": "3 + 4 = ?\n"}, {"prompt": "12 - 5 = ?\n"}] * 4
    trainer = Recording(
        str(tiny_dir / "llama"),
        reward_funcs=verifier,
        args=PRIMEConfig(**fields),
        processing_class=tokenizer,
        train_dataset=Dataset.from_list(rows),
        peft_config=peft,
    )
    snapshots = PRMSnapshots(trainer)
    trainer.add_callback(snapshots)
    trainer.train()
    return trainer, snapshots.states


def _prm_rewards(tiny_dir, state, rollout, beta=0.05):
    prm = AutoModelForCausalLM.from_pretrained(tiny_dir / "llama").eval()
    prm.load_state_dict(state)
    ref = AutoModelForCausalLM.from_pretrained(tiny_dir / "llama").eval()
    b = rollout["batch"]
    with torch.no_grad():
        args = (b["input_ids"], b["attention_mask"], b["completion_mask"])
        return token_rewards(
            completion_logps(prm, *args).double(),
            completion_logps(ref, *args).double(),
            b["completion_mask"],
            beta,
        )


def _check_advantages(trainer, args):
    for inputs, rollout in trainer.seen:
        keep = rollout["keep"].unsqueeze(1).double()
        mask = rollout["completion_mask"].double() * keep
        expected = prime_advantages(
            rollout["process_rewards"],
            rollout["process_mask"].double() * keep,
            rollout["labels"].double(),
            mask,
            args.num_generations,
            process_coef=args.process_reward_coef,
            outcome_coef=args.outcome_reward_coef,
            credit_assignment=args.credit_assignment,
            temperature=args.softmin_temperature,
            whiten_advantages=args.whiten_advantages,
        )
        # TRL shuffles the rows before the loss: match them back by their prompt + completion ids
        rows = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        for i in range(rows.size(0)):
            j = next(j for j in range(rows.size(0)) if torch.equal(rollout["batch"]["input_ids"][j], rows[i]))
            assert torch.allclose(inputs["advantages"][i].double(), expected[j], atol=1e-6, rtol=0)
        assert expected.abs().sum() > 0


def test_prime_two_steps_recomputed(tiny_dir, tmp_path, tokenizer):
    trainer, states = _train(tiny_dir, tmp_path, tokenizer)
    logs = [h for h in trainer.state.log_history if "prm/loss" in h]
    assert len(logs) == 2 and len(trainer.seen) == 2 and len(states) == 3

    # the PRM learned: its weights moved at each step
    for before, after in itertools.pairwise(states):
        assert max((before[k] - after[k]).abs().max().item() for k in before) > 1e-5

    for step, ((_, rollout), log) in enumerate(zip(trainer.seen, logs, strict=True)):
        # the logged outcome loss is ce_loss of the pre-update PRM on the same rollouts
        r = outcome_rewards(_prm_rewards(tiny_dir, states[step], rollout))
        assert abs(ce_loss(r, rollout["labels"].double()).mean().item() - log["prm/loss"]) < 1e-6
        # prm_update="before": the advantages use the updated PRM's token rewards
        width = rollout["token_rewards"].size(1)
        rescored = _prm_rewards(tiny_dir, states[step + 1], rollout)[:, -width:]
        assert torch.allclose(rollout["token_rewards"], rescored, atol=1e-9, rtol=0)
    _check_advantages(trainer, trainer.args)

    # the updated PRM is an ordinary implicit-PRM checkpoint
    trainer.save_model()
    prm_dir = tmp_path / "out" / "prm"
    meta = json.loads((prm_dir / "implicit_prm.json").read_text())
    assert meta["trainer"] == "PRIMETrainer" and meta["reference_model"] == str(
        (tiny_dir / "llama").resolve()
    )
    prc = ProcessRewardComputer.from_pretrained(prm_dir)
    saved = prc.model.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in trainer.prm.model.state_dict().items())
    scored = prc.score_one("3 + 4 = ?\n", "3 + 4 = 7.\n\nThe answer is 7.")
    assert len(scored.step_rewards) == 2 and scored.outcome_reward != 0.0


def test_prime_step_granularity_softmin_after(tiny_dir, tmp_path, tokenizer):
    trainer, states = _train(
        tiny_dir,
        tmp_path,
        tokenizer,
        max_steps=1,
        granularity="step",
        credit_assignment="softmin",
        prm_update="after",
        max_completion_length=12,
        prm_micro_batch_size=2,
        prm_reference="policy",  # at the first step the policy is still the initial model
    )
    (_, rollout), log = trainer.seen[0], next(h for h in trainer.state.log_history if "prm/loss" in h)
    # "after": the advantages use the update pass's (pre-update) rewards; 2 micro-batches give the same loss
    width = rollout["token_rewards"].size(1)
    r = outcome_rewards(_prm_rewards(tiny_dir, states[0], rollout))
    assert abs(ce_loss(r, rollout["labels"].double()).mean().item() - log["prm/loss"]) < 1e-6
    assert max((states[0][k] - states[1][k]).abs().max().item() for k in states[0]) > 1e-5
    assert torch.allclose(
        rollout["token_rewards"], _prm_rewards(tiny_dir, states[0], rollout)[:, -width:], atol=1e-9
    )
    # step placement: one reward per step, at the step's last token, equal to the step's summed token rewards
    ends = rollout["process_mask"]
    assert int(ends.sum()) == int((rollout["step_index"].amax(dim=1) + 1).sum())
    assert torch.allclose(rollout["process_rewards"].sum(1), rollout["token_rewards"].sum(1), atol=1e-12)
    assert 0.0 <= log["prm/outcome_accuracy"] <= 1.0
    _check_advantages(trainer, trainer.args)


def test_prime_refuses_non_label_outcomes(tiny_dir, tmp_path, tokenizer):
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        _train(tiny_dir, tmp_path, tokenizer, max_steps=1, reward_weights=[3.0])
    with pytest.raises(ValueError, match="credit_assignment must be one of"):
        PRIMEConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, credit_assignment="max")


def test_implicit_prm_reward_in_stock_grpo(tiny_dir, tmp_path, tokenizer):
    from trl import GRPOConfig, GRPOTrainer

    from trl_implicit_prm import ImplicitPRMReward

    prc = ProcessRewardComputer.from_pretrained(
        tiny_dir / "llama", ref_model=tiny_dir / "llama-ref", beta=0.5
    )
    reward = ImplicitPRMReward(prc)
    prompts, completions = ["3 + 4 = ?\n"] * 3, ["3 + 4 = 7.\n\nSo 7.", "\n \n", "3 + 4 = 8."]
    expected = [
        r.aggregate("min") for r in prc.score([prompts[0], prompts[2]], [completions[0], completions[2]])
    ]
    assert reward(prompts=prompts, completions=completions) == [expected[0], None, expected[1]]
    assert ImplicitPRMReward(prc, aggregation="sum")(prompts=prompts[:1], completions=completions[:1]) == [
        pytest.approx(prc.score_one(prompts[0], completions[0]).outcome_reward, abs=1e-12)
    ]
    with pytest.raises(ValueError, match="aggregation must be one of"):
        ImplicitPRMReward(prc, aggregation="median")

    args = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        max_steps=1,
        report_to="none",
        save_strategy="no",
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=6,
        logging_steps=1,
    )
    trainer = GRPOTrainer(
        str(tiny_dir / "llama"),
        reward_funcs=[reward],
        args=args,
        processing_class=tokenizer,
        train_dataset=Dataset.from_list([{"prompt": "3 + 4 = ?\n"}] * 4),
    )
    trainer.train()
    assert any("rewards/implicit_prm_min/mean" in h for h in trainer.state.log_history)


@pytest.mark.parametrize(
    "completion",
    ["3 + 4 = 7.\n\nThe answer is 7.", "So we add.\n\n\n\n2 + 2 = 4.\n\nThe answer is 4.", "Only one step."],
)
def test_generated_ids_get_the_training_step_spans(tokenizer, completion):
    """Step spans from decoded generated ids equal those of the training tokenization of the same text."""
    from trl_implicit_prm.data import tokenize_example
    from trl_implicit_prm.inference.encoding import completion_step_index, decode_tokens

    ex = tokenize_example(tokenizer, "Q: add.\n", completion, append_eos=True)
    completion_ids = ex["input_ids"][ex["prompt_length"] :]
    pieces = decode_tokens(tokenizer, [completion_ids])[0]
    assert completion_step_index(pieces, "\n\n").tolist() == ex["step_index"][ex["prompt_length"] :]


def test_prime_with_a_lora_policy(tiny_dir, tmp_path, tokenizer):
    from peft import LoraConfig

    trainer, states = _train(
        tiny_dir,
        tmp_path,
        tokenizer,
        max_steps=1,
        peft=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    assert hasattr(trainer.model, "peft_config")  # the policy trains adapters
    assert not any(
        n for n, _ in trainer.prm.model.named_parameters() if "lora" in n
    )  # the PRM is a full model
    assert max((states[0][k] - states[1][k]).abs().max().item() for k in states[0]) > 1e-5
    _check_advantages(trainer, trainer.args)
