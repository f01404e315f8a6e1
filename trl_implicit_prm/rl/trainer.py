"""PRIMETrainer: TRL's `GRPOTrainer` with implicit process rewards, an online PRM and `[B, T]` advantages."""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from datasets import IterableDataset
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler
from trl import GRPOTrainer
from trl.trainer.utils import RepeatSampler, disable_dropout_in_model

from trl_implicit_prm.data.rendering import measure_prompt_format
from trl_implicit_prm.inference.encoding import completion_step_index, decode_tokens
from trl_implicit_prm.modeling import check_same_vocabulary, is_peft_model, load_causal_lm, model_id_of
from trl_implicit_prm.rewards import outcome_rewards, step_logp_sums
from trl_implicit_prm.rl.advantages import (
    group_accuracy_mask,
    place_step_rewards,
    prime_advantages,
    select_groups,
    step_end_mask,
)
from trl_implicit_prm.rl.config import PRIMEConfig
from trl_implicit_prm.rl.oversample import group_rows, take_rows
from trl_implicit_prm.rl.prm import OnlinePRM, micro_batch_size, pairwise_accuracy, prepare_trainable_prm

__all__ = ["PRIMETrainer"]

logger = logging.getLogger(__name__)


def _load(model: Any, init_kwargs: dict | None) -> tuple[nn.Module, str | None]:
    """A model (loaded when a path) and the path it came from."""
    if isinstance(model, str | os.PathLike):
        return load_causal_lm(model, **(init_kwargs or {})), str(model)
    return model, model_id_of(model)


def _initial_prm(
    model: Any, prm_model: Any, prm_ref_model: Any, args: PRIMEConfig
) -> tuple[nn.Module, str | None, nn.Module | None, str | None]:
    """The PRM (default: the initial policy) and its frozen reference (default: the PRM's initial weights), each
    loaded from its path when there is one (a copy of an in-memory model otherwise), with those paths.
    """
    if prm_ref_model is not None and args.prm_reference == "policy":
        raise ValueError(
            "prm_ref_model is a frozen reference; it cannot be given with prm_reference='policy'"
        )
    kwargs = args.model_init_kwargs
    source = model if prm_model is None else prm_model
    fresh = copy.deepcopy if isinstance(source, nn.Module) else (lambda path: path)
    prm, prm_source = _load(fresh(source), kwargs)
    if args.prm_reference == "policy":
        return prm, prm_source, None, None
    ref, ref_source = _load(fresh(source) if prm_ref_model is None else prm_ref_model, kwargs)
    return prm, prm_source, ref, ref_source


class PRIMETrainer(GRPOTrainer):
    """GRPO with dense implicit process rewards: PRIME (Cui et al., 2025, "Process Reinforcement through Implicit
    Rewards", https://arxiv.org/abs/2502.01456) and PURE's min-form credit assignment (Cheng et al., 2025,
    https://arxiv.org/abs/2504.15275).

    Everything of `GRPOTrainer` is kept (data, generation with or without vLLM, the clipped policy loss); the
    `reward_funcs` are the verifier, whose weighted sum must be an outcome label in [0, 1]. On each generation
    batch the implicit PRM `prm_model` (default: a copy of the initial policy) scores the generated token ids
    against its reference (a frozen copy of itself, or the policy's log-probs with `prm_reference="policy"`), is
    updated with CE on the outcome labels (`prm_update`), and the advantages handed to the policy loss are
    `[B, T]` (see :func:`~trl_implicit_prm.rl.advantages.prime_advantages`). `save_model` also writes the PRM to
    `<output_dir>/prm`, an ordinary implicit-PRM checkpoint for `ProcessRewardComputer.from_pretrained`.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from trl_implicit_prm.rl import PRIMEConfig, PRIMETrainer
    >>> from trl_implicit_prm.tiny import build_model, build_tokenizer
    >>> tok = build_tokenizer()
    >>> def verifier(completions, **kwargs):
    ...     return [float("7" in c) for c in completions]
    >>> args = PRIMEConfig(output_dir="prime-doc", use_cpu=True, bf16=False, max_steps=1, report_to="none",
    ...                    per_device_train_batch_size=4, num_generations=2, max_completion_length=4,
    ...                    accuracy_lower_bound=0.0, accuracy_upper_bound=1.0, save_strategy="no")
    >>> trainer = PRIMETrainer(build_model("llama", tok), reward_funcs=verifier, args=args, processing_class=tok,
    ...                        train_dataset=Dataset.from_list([{"prompt": "3 + 4 = ?\\n"}] * 4))
    >>> trainer.train().global_step  # the Trainer prints its final log line  # doctest: +ELLIPSIS
    {...}
    1

    ```
    """

    _tag_names: ClassVar[list[str]] = ["trl", "grpo", "prime", "implicit-prm"]
    _name = "PRIME"

    def __init__(
        self,
        model: str | nn.Module,
        reward_funcs: Any,
        args: PRIMEConfig | None = None,
        *,
        prm_model: str | nn.Module | None = None,
        prm_ref_model: str | nn.Module | None = None,
        **kwargs: Any,
    ):
        if args is None:
            args = PRIMEConfig(output_dir="PRIME")
        if not isinstance(args, PRIMEConfig):
            raise TypeError(f"PRIMETrainer needs a PRIMEConfig, got {type(args).__name__}")
        if prm_model is None and is_peft_model(model):
            raise ValueError(
                "the policy is a PEFT model, so the default PRM (a copy of the initial policy) is ambiguous: pass "
                "prm_model= (the base checkpoint's path), or pass the base model with peft_config="
            )
        prm, prm_source, ref, ref_source = _initial_prm(model, prm_model, prm_ref_model, args)
        super().__init__(model, reward_funcs, args=args, **kwargs)
        self._setup_prm(prm, prm_source, ref, ref_source)

    def _setup_prm(
        self, prm: nn.Module, prm_source: str | None, ref: nn.Module | None, ref_source: str | None
    ):
        policy = self.accelerator.unwrap_model(self.model)
        check_same_vocabulary(policy, prm)
        if ref is not None:
            check_same_vocabulary(prm, ref)
        if self.args.disable_dropout:
            disable_dropout_in_model(prm)
        prm.requires_grad_(self.args.prm_update != "none")
        if self.args.gradient_checkpointing and self.args.prm_update != "none":
            prm.config.use_cache = False
            prm.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs
            )
        rows = self.args.per_device_train_batch_size * self.args.steps_per_generation
        micro_batch_size(self.args, rows)  # refuses a size that does not divide the rollouts per process
        model, optimizer = prepare_trainable_prm(prm, self.accelerator, self.args, rows)
        if ref is not None:
            ref = self._prepare_frozen(ref)
        self.prm = OnlinePRM(model, optimizer, ref, self.args, self.accelerator.num_processes)
        self.prm_source = prm_source
        self.prm_ref_source = ref_source if self.args.prm_reference == "copy" else model_id_of(policy)
        self._verifier_rewards: Tensor | None = None
        self.last_rollout: dict[str, Any] = {}

    def _prepare_frozen(self, model: nn.Module) -> nn.Module:
        """A frozen model prepared like GRPO's reference (DeepSpeed inference engine, or on the device)."""
        if self.args.disable_dropout:
            disable_dropout_in_model(model)
        model.requires_grad_(False).eval()
        if self.is_deepspeed_enabled:
            from trl.models import prepare_deepspeed

            return prepare_deepspeed(model, self.accelerator)
        return self.accelerator.prepare_model(model, evaluation_mode=True)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._verifier_rewards = rewards_per_func  # gathered over processes
        return rewards_per_func

    def _outcome_labels(self) -> Tensor:
        """The verifier's outcome per completion (all processes): the weighted sum of `reward_funcs`, in [0, 1]."""
        per_func = self._verifier_rewards
        if bool(torch.isnan(per_func).all(dim=1).any()):
            row = int(torch.isnan(per_func).all(dim=1).nonzero()[0])
            raise ValueError(
                f"completion {row}: every reward function returned None; PRIME needs an outcome label"
            )
        labels = (per_func * self.reward_weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)
        bad = (labels < 0) | (labels > 1)
        if bool(bad.any()):
            raise ValueError(
                f"the verifier reward_funcs {self.reward_func_names} (weighted by reward_weights) gave "
                f"{labels[bad][0].item()} for completion {int(bad.nonzero()[0])}: PRIME trains its PRM with CE on "
                "outcome labels, so the weighted reward must lie in [0, 1] (e.g. 1.0 correct, 0.0 wrong)"
            )
        return labels

    def _rollout(self, output: dict[str, Tensor]) -> dict[str, Tensor]:
        """This process's rollouts as one left-padded prompt + right-padded completion batch."""
        prompt_mask, completion_mask = output["prompt_mask"], output["completion_mask"]
        return {
            "input_ids": torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1),
            "attention_mask": torch.cat([prompt_mask, completion_mask], dim=1),
            "completion_mask": torch.cat([torch.zeros_like(prompt_mask), completion_mask], dim=1),
        }

    def _step_index(self, output: dict[str, Tensor]) -> Tensor:
        """The step of every completion token `[B, C]` (-1 on padding), from the decoded generated ids."""
        ids, mask = output["completion_ids"], output["completion_mask"]
        rows = [row[: int(m.sum())].tolist() for row, m in zip(ids, mask, strict=True)]
        pieces = decode_tokens(self.processing_class, rows)
        out = torch.full_like(ids, -1)
        for i, p in enumerate(pieces):
            if p:
                out[i, : len(p)] = torch.as_tensor(completion_step_index(p, self.args.step_separator))
        return out

    @torch.no_grad()
    def _reference_logps(self, batch: dict[str, Tensor]) -> Tensor:
        """The PRM reference's log-probs: the frozen copy's, or the policy's at generation time ("policy")."""
        if self.prm.reference is not None:
            return self.prm.reference_logps(batch)
        return self.prm.logps(self.model, batch)

    def _prm_step(self, batch: dict[str, Tensor], ref_logps: Tensor, labels: Tensor, keep: Tensor) -> Tensor:
        """Update the PRM (`prm_update`), log its metrics, and return the token rewards the advantages use."""
        local = slice(
            self.accelerator.process_index * batch["input_ids"].size(0),
            (self.accelerator.process_index + 1) * batch["input_ids"].size(0),
        )
        kept_total = int(keep.sum())
        if self.args.prm_update == "none" or kept_total == 0:  # no kept group: nothing to learn from
            scored = rewards = self.prm.score(batch, ref_logps)
        else:
            scored, loss_sum = self.prm.update(batch, ref_logps, labels[local], keep[local], kept_total)
            loss = self.accelerator.gather(loss_sum.reshape(1)).sum().item() / kept_total
            self._metrics["train"]["prm/loss"].append(loss)
            rewards = self.prm.score(batch, ref_logps) if self.args.prm_update == "before" else scored
        self._log_prm_metrics(self.accelerator.gather(outcome_rewards(scored)), labels)
        return rewards

    def _log_prm_metrics(self, rewards: Tensor, labels: Tensor) -> None:
        """Outcome accuracy of sign(r(y)) and pairwise accuracy within groups, on every rollout of the batch."""
        metrics = self._metrics["train"]
        metrics["prm/outcome_accuracy"].append(((rewards > 0) == (labels > 0.5)).double().mean().item())
        correct, pairs = pairwise_accuracy(rewards, labels, self.num_generations)
        if pairs:
            metrics["prm/pairwise_accuracy"].append(correct / pairs)
        metrics["prm/reward_mean"].append(rewards.mean().item())

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        if not self.model.training:
            return output
        output, labels, keep = self._filter_groups(output, self._outcome_labels())
        local = self._local_slice(output)
        batch = self._rollout(output)
        ref_logps = self._reference_logps(batch)
        token_r = self._prm_step(batch, ref_logps, labels, keep)
        prompt_len = output["prompt_ids"].size(1)
        step_index = self._step_index(output) if self.args.granularity == "step" else None  # decoding costs
        process, process_mask = self._placed_process_rewards(token_r[:, prompt_len:], step_index, output)
        gathered = self._gather_padded(process, process_mask, output["completion_mask"])
        mask = gathered[2] * keep.unsqueeze(1).to(gathered[2].dtype)
        advantages = prime_advantages(
            gathered[0],
            gathered[1] * keep.unsqueeze(1).to(gathered[1].dtype),
            labels.double(),
            mask,
            self.num_generations,
            process_coef=self.args.process_reward_coef,
            outcome_coef=self.args.outcome_reward_coef,
            credit_assignment=self.args.credit_assignment,
            temperature=self.args.softmin_temperature,
            whiten_advantages=self.args.whiten_advantages,
        )
        width = output["completion_ids"].size(1)
        completion_mask = output["completion_mask"]
        output["advantages"] = advantages[local, :width].float()
        output["completion_mask"] = completion_mask * keep[local].unsqueeze(1).to(completion_mask.dtype)
        output["num_items_in_batch"] = self.accelerator.gather(output["completion_mask"].sum()).sum()
        # This process's rollouts, rewards and advantages, for inspection (the tests recompute them from here).
        self.last_rollout = {
            "batch": batch,
            "completion_ids": output["completion_ids"],
            "completion_mask": completion_mask,
            "step_index": step_index,
            "token_rewards": token_r[:, prompt_len:],
            "process_rewards": process,
            "process_mask": process_mask,
            "labels": labels[local],
            "keep": keep[local],
            "advantages": output["advantages"],
        }
        return output

    def get_train_dataloader(self) -> DataLoader:
        """GRPO's dataloader, with `oversample_factor` times the prompts per generation batch."""
        if self.args.oversample_factor == 1:
            return super().get_train_dataloader()
        if isinstance(self.train_dataset, IterableDataset):
            raise ValueError("oversample_factor > 1 needs a map-style train_dataset (not an IterableDataset)")
        return self._get_dataloader(
            dataset=self.train_dataset,
            description="Training",
            batch_size=self._train_batch_size * self.args.steps_per_generation * self.args.oversample_factor,
            sampler_fn=self._get_train_sampler,
            is_training=True,
        )

    def _get_train_sampler(self, dataset: Any = None) -> Sampler:
        """GRPO's `RepeatSampler` over `oversample_factor` times the prompts of a generation batch."""
        dataset = self.train_dataset if dataset is None else dataset
        prompts = self.args.oversample_factor * self.args.generation_batch_size // self.num_generations
        if len(dataset) < prompts:
            raise ValueError(
                f"train_dataset has {len(dataset)} prompts, fewer than the {prompts} one generation draws "
                f"(oversample_factor={self.args.oversample_factor} × generation_batch_size / num_generations)"
            )
        return RepeatSampler(
            data_source=dataset,
            mini_repeat_count=self.num_generations,
            batch_size=prompts,
            repeat_count=self.num_iterations * self.args.steps_per_generation,
            shuffle=self.shuffle_dataset,
            seed=self.args.seed,
        )

    def _filter_groups(self, output: dict[str, Any], labels: Tensor) -> tuple[dict[str, Any], Tensor, Tensor]:
        """PRIME's accuracy filter on all generated groups; with oversampling, the batch keeps only the groups
        :func:`select_groups` picks (filled up with dropped ones, which carry no loss, when too few pass).
        Returns the batch, the outcome labels and the keep mask of its rows (all processes).
        """
        keep = group_accuracy_mask(
            labels, self.num_generations, self.args.accuracy_lower_bound, self.args.accuracy_upper_bound
        )
        kept_groups = keep.view(-1, self.num_generations)[:, 0]
        needed = kept_groups.numel() // self.args.oversample_factor
        groups, short = select_groups(kept_groups, needed)
        metrics = self._metrics["train"]
        metrics["prime/groups_generated"].append(float(kept_groups.numel()))
        metrics["prime/groups_dropped"].append(float((~kept_groups).sum()))
        metrics["prime/groups_short"].append(float(short))
        if short and (self.args.oversample_factor > 1 or short == needed):  # factor 1: documented, logged
            logger.warning(
                "Accuracy filter: %d of %d generated groups lie in [%s, %s], the batch needs %d; %d dropped groups "
                "fill it with no loss (raise oversample_factor or widen the bounds)",
                int(kept_groups.sum()), kept_groups.numel(), self.args.accuracy_lower_bound,
                self.args.accuracy_upper_bound, needed, short,
            )  # fmt: skip
        if needed < kept_groups.numel():
            rows = group_rows(groups.to(labels.device), self.num_generations)
            output = take_rows(output, rows, self.accelerator, self._tokenizer.pad_token_id)
            labels, keep = labels[rows], keep[rows]
        metrics["prime/kept_fraction"].append(keep.float().mean().item())
        return output, labels, keep

    def _local_slice(self, output: dict[str, Tensor]) -> slice:
        b = output["completion_ids"].size(0)
        return slice(self.accelerator.process_index * b, (self.accelerator.process_index + 1) * b)

    def _placed_process_rewards(
        self, token_r: Tensor, step_index: Tensor | None, output: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Process rewards `[B, C]` and their positions: every token, or each step's sum at its last token."""
        mask = output["completion_mask"].bool()
        if self.args.granularity == "token":
            return token_r * mask, mask
        step_r = step_logp_sums(token_r, step_index)  # the per-step sums of the float64 token rewards
        return place_step_rewards(step_r, step_index), step_end_mask(step_index) & mask

    def _gather_padded(self, *tensors: Tensor) -> list[Tensor]:
        """Each `[B, C]` tensor padded to the longest completion of all processes and gathered."""
        out = []
        for t in tensors:
            padded = self.accelerator.pad_across_processes(t, dim=1, pad_index=0)
            out.append(self.accelerator.gather(padded))
        return out

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The policy as `GRPOTrainer` saves it, and the updated PRM in `<output_dir>/prm` (with implicit_prm.json)."""
        super().save_model(output_dir, _internal_call)
        output_dir = output_dir or self.args.output_dir
        state = self.accelerator.get_state_dict(self.prm.model) if self.is_deepspeed_enabled else None
        if self.is_world_process_zero():
            self.prm.save(Path(output_dir) / "prm", state, self.processing_class, self._prm_metadata())

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        """The policy's optimizer and scheduler as the Trainer saves them, and the PRM's optimizer state next to
        the PRM weights `save_model` wrote to `<checkpoint>/prm`.
        """
        super()._save_optimizer_and_scheduler(output_dir)
        self.prm.save_state(Path(output_dir) / "prm", self.is_world_process_zero())

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        """On resume: the policy's states as the Trainer loads them, then the PRM's weights and optimizer state."""
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            self.prm.load_state(Path(checkpoint) / "prm")

    def _prm_metadata(self) -> dict[str, Any]:
        """`implicit_prm.json` of the saved PRM: β, its reference, separator and the prompts' rendering."""
        reference = self.prm_ref_source
        if reference is not None and Path(reference).exists():
            reference = str(Path(reference).resolve())
        if reference is None:
            logger.warning(
                "The PRM's reference was given in memory without a path, so the checkpoint cannot record it: pass "
                "ref_model=... to ProcessRewardComputer.from_pretrained when scoring with the saved PRM."
            )
        if self.args.prm_reference == "policy":
            logger.warning(
                "The PRM was trained against the moving policy (prm_reference='policy'); the checkpoint records "
                "the initial policy as its reference."
            )
        out: dict[str, Any] = {
            "beta": self.args.prm_beta,
            "reference_free": False,
            "reference_model": reference,
            "step_separator": self.args.step_separator,
            "trainer": "PRIMETrainer",
            "loss_type": "ce",
            "append_eos": True,  # a finished completion ends with the EOS it generated, in its last step
        }
        dataset = self.train_dataset
        if dataset is not None and "prompt" in (getattr(dataset, "column_names", None) or []):
            prompt_format = measure_prompt_format(dataset["prompt"], self.processing_class)
            if prompt_format is not None:
                out["prompt_format"] = prompt_format.to_metadata()
        return out
