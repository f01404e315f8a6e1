"""What the three implicit-PRM trainers share: models, reference, data, per-step log-probs, metrics, cards.

A subclass declares its data kind and implements the abstract `_loss_and_metrics` (step rewards to loss).
Everything else lives here once: loading, PEFT, the reference (:class:`~.reference.Reference`), DeepSpeed and
DDP preparation, step rewards, metrics, step-level evaluation; records: :mod:`.saving`; precompute: :mod:`.precompute`.
"""

from __future__ import annotations

import abc
import copy
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from datasets import Dataset
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from trl.models.utils import disable_gradient_checkpointing, prepare_deepspeed, prepare_fsdp
from trl.trainer.base_trainer import _BaseTrainer
from trl.trainer.utils import disable_dropout_in_model

from trl_implicit_prm.data import ImplicitPRMCollator
from trl_implicit_prm.data.columns import TOKENIZED_COLUMNS
from trl_implicit_prm.distributed import check_zero3_saves_weights
from trl_implicit_prm.logps import ensure_fused_lm_head
from trl_implicit_prm.losses import kto_reference_point
from trl_implicit_prm.modeling import (
    check_max_length,
    check_reference,
    is_peft_model,
    load_causal_lm,
    load_tokenizer,
    model_id_of,
)
from trl_implicit_prm.rewards import implicit_step_rewards, step_mask
from trl_implicit_prm.step_errors import step_error_metrics
from trl_implicit_prm.trainers.config import ImplicitPRMBaseConfig
from trl_implicit_prm.trainers.data_prep import prepare_dataset
from trl_implicit_prm.trainers.metrics import RowStats, reward_metrics
from trl_implicit_prm.trainers.mismatched import mismatched_inputs
from trl_implicit_prm.trainers.precompute import ReferencePrecomputeMixin
from trl_implicit_prm.trainers.reference import Reference, model_step_logps, recorded_reference
from trl_implicit_prm.trainers.saving import CheckpointRecordMixin, training_rendering

logger = logging.getLogger(__name__)

PAPER = {
    "title": "Free Process Rewards without Process Labels",
    "id": "2412.01981",
    "citation": (
        "@inproceedings{yuan2025free,\n"
        "    title        = {{Free Process Rewards without Process Labels}},\n"
        "    author       = {Lifan Yuan and Wendi Li and Huayu Chen and Ganqu Cui and Ning Ding and Kaiyan Zhang "
        "and Bowen Zhou and Zhiyuan Liu and Hao Peng},\n"
        "    booktitle    = {Forty-second International Conference on Machine Learning},\n"
        "    year         = 2025,\n"
        "    eprint       = {arXiv:2412.01981},\n"
        "}"
    ),
}


class ImplicitRewardTrainer(
    ReferencePrecomputeMixin, CheckpointRecordMixin, _BaseTrainer, metaclass=abc.ABCMeta
):
    """Base of the implicit-PRM trainers (not used directly: see ImplicitPRMTrainer, CETrainer, StepKTOTrainer)."""

    _tag_names: ClassVar[list[str]] = ["trl", "trl-implicit-prm", "process-reward-model"]
    _paper: ClassVar[dict[str, str]] = PAPER
    config_class: ClassVar[type[ImplicitPRMBaseConfig]] = ImplicitPRMBaseConfig
    data_kind: ClassVar[str] = ""
    # Per-token log-probs backend of training (trl_implicit_prm.logps): TRL's fused head.
    _logps_method: ClassVar[str] = "fused"

    def __init__(
        self,
        model: str | PreTrainedModel,
        ref_model: str | PreTrainedModel | None = None,
        args: ImplicitPRMBaseConfig | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        peft_config: Any = None,
        data_collator: Callable | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple = (None, None),
    ):
        args = self._checked_args(model, args, train_dataset)
        self._validate_reference_args(model, ref_model, args)
        check_zero3_saves_weights(args.deepspeed_plugin, peft=peft_config is not None or is_peft_model(model))
        init_kwargs = dict(args.model_init_kwargs or {})
        self._model_id = model if isinstance(model, str) else model_id_of(model)
        if ref_model is None and not args.reference_free:
            ref_model = recorded_reference(self._model_id)
        model = load_causal_lm(model, **init_kwargs)
        check_max_length(model, args.max_length)
        processing_class = self._checked_tokenizer(processing_class)
        given = self._given_reference(model, ref_model, processing_class, init_kwargs)
        model = self._with_peft(model, peft_config, args)
        self.reference = given or self._default_reference(model, args, init_kwargs)
        if self.reference.model is not None:
            self.reference.model.eval().requires_grad_(False)
        if args.disable_dropout:
            for module in (model, self.reference.model):
                if module is not None:
                    disable_dropout_in_model(module)
        raw_train_dataset = train_dataset
        train_dataset, eval_dataset = self._prepared_datasets(
            train_dataset, eval_dataset, processing_class, args
        )
        self._rendering = training_rendering(raw_train_dataset, processing_class, args)  # rows validated
        if data_collator is None:
            data_collator = ImplicitPRMCollator(
                pad_token_id=processing_class.pad_token_id, pad_to_multiple_of=args.pad_to_multiple_of
            )
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        self._prepare_reference_model()
        self._metrics: dict[str, dict[str, list[float]]] = {m: defaultdict(list) for m in ("train", "eval")}
        self._reward_totals: dict[str, dict[str, tuple[str, Tensor]]] = {"train": {}, "eval": {}}
        self._z0_estimate: float | None = None  # KTO's latest z0 from mismatched pairs, for one-row batches
        self._step_eval: dict[str, list] = {"rewards": [], "labels": []}
        if args.precompute_ref_log_probs:
            self._precompute_reference()

    # --- set-up: the stages of __init__ -------------------------------------------------------------------------

    @property
    def ref_model(self) -> Any:
        """The frozen reference model (`ref_model=` or a frozen copy of the initial policy); None for adapters
        disabled, reference-free, or once precomputed. The reference itself, of any kind: `self.reference`.
        """
        return self.reference.model

    def _checked_args(self, model: Any, args: ImplicitPRMBaseConfig | None, train_dataset: Any) -> Any:
        """`args`, or the default config named after the model; a config of another trainer is refused."""
        if args is None:
            name = (
                (model if isinstance(model, str) else model_id_of(model) or "model")
                .rstrip("/")
                .split("/")[-1]
            )
            args = self.config_class(output_dir=f"{name}-{type(self).__name__}")
        if not isinstance(args, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(args).__name__}"
            )
        if train_dataset is None:
            raise ValueError("train_dataset is required")
        return args

    def _checked_tokenizer(self, processing_class: Any) -> Any:
        """The given tokenizer or the model's; it must be fast (offsets give the step spans) and have a pad token."""
        if processing_class is None:
            if not self._model_id:
                raise ValueError(
                    "processing_class is required when model is an in-memory model without a path"
                )
            processing_class = load_tokenizer(self._model_id)
        if not getattr(processing_class, "is_fast", False):
            raise ValueError(
                "processing_class must be a fast tokenizer (step spans are computed from character offsets): load "
                "it with `AutoTokenizer.from_pretrained(..., use_fast=True)`."
            )
        if processing_class.pad_token is None:
            processing_class.pad_token = processing_class.eos_token
        return processing_class

    def _given_reference(
        self, model: PreTrainedModel, ref_model: Any, tokenizer: Any, init_kwargs: dict
    ) -> Reference | None:
        """A reference given as a path / hub id (loaded) or a model, checked against the policy; else None."""
        if ref_model is None:
            return None
        if isinstance(ref_model, str):
            model_id, ref_model = ref_model, load_causal_lm(ref_model, **init_kwargs)
            check_reference(model, ref_model, tokenizer, model_id)
        else:
            model_id = model_id_of(ref_model)
            check_reference(model, ref_model, tokenizer)
        return Reference("model", model=ref_model, model_id=model_id, logps_method=self._logps_method)

    @staticmethod
    def _with_peft(model: PreTrainedModel, peft_config: Any, args: ImplicitPRMBaseConfig) -> Any:
        """The policy with `peft_config`'s adapters (a policy that is already a PeftModel keeps its own)."""
        if peft_config is not None:
            from peft import get_peft_model

            if is_peft_model(model):
                raise ValueError("model is already a PeftModel: pass peft_config=None to train its adapter")
            model = get_peft_model(model, peft_config)
        if is_peft_model(model) and args.gradient_checkpointing:
            model.enable_input_require_grads()
        return model

    def _default_reference(self, model: Any, args: ImplicitPRMBaseConfig, init_kwargs: dict) -> Reference:
        """Without a given reference: none (reference-free), adapters disabled (PEFT), else a frozen copy."""
        if args.reference_free:
            return Reference("none", logps_method=self._logps_method)
        if is_peft_model(model):
            return Reference("adapters_disabled", logps_method=self._logps_method)
        copy_ = self._frozen_copy(model, args, init_kwargs)
        return Reference("frozen_copy", model=copy_, model_id=self._model_id, logps_method=self._logps_method)

    def _prepared_datasets(
        self, train_dataset: Dataset, eval_dataset: Any, tokenizer: Any, args: ImplicitPRMBaseConfig
    ) -> tuple[Dataset, Any]:
        """The training set and each evaluation set validated, converted and tokenized for this trainer."""
        train = prepare_dataset(train_dataset, tokenizer, args, self.data_kind, "train")
        if isinstance(eval_dataset, dict):
            return train, {
                k: prepare_dataset(v, tokenizer, args, self.data_kind, k, eval_only=True)
                for k, v in eval_dataset.items()
            }
        if eval_dataset is not None:
            eval_dataset = prepare_dataset(
                eval_dataset, tokenizer, args, self.data_kind, "eval", eval_only=True
            )
        return train, eval_dataset

    def _prepare_reference_model(self) -> None:
        """Fused log-prob heads on both models, and the frozen reference prepared as the policy is."""
        ensure_fused_lm_head(self.model)
        if self.reference.model is None:
            return
        ref = self.reference.model
        ensure_fused_lm_head(ref)
        if self.is_deepspeed_enabled:
            ref = prepare_deepspeed(ref, self.accelerator)
        elif self.is_fsdp_enabled:
            ref = prepare_fsdp(ref, self.accelerator)
        else:
            ref = self.accelerator.prepare_model(ref, evaluation_mode=True)
        self.reference.model = ref

    @staticmethod
    def _validate_reference_args(model: Any, ref_model: Any, args: ImplicitPRMBaseConfig) -> None:
        if ref_model is not None and args.reference_free:
            raise ValueError(
                "reference_free=True scores with the policy alone, but a ref_model was given: drop ref_model, or "
                "set reference_free=False to use it."
            )
        if ref_model is not None and ref_model is model:
            raise ValueError(
                "model and ref_model are the same object; omit ref_model to use a frozen copy of model"
            )

    def _frozen_copy(
        self, model: PreTrainedModel, args: ImplicitPRMBaseConfig, init_kwargs: dict
    ) -> PreTrainedModel:
        """The initial policy as reference (loaded again under ZeRO-3, where parameters are already sharded)."""
        plugin = args.deepspeed_plugin
        if plugin is not None and plugin.zero_stage == 3:
            if not self._model_id:
                raise ValueError(
                    "Under ZeRO-3 give model as a path (or pass ref_model) so the reference can be loaded"
                )
            return load_causal_lm(self._model_id, **{"dtype": model.dtype, **init_kwargs})
        return copy.deepcopy(model)

    def _set_signature_columns_if_needed(self) -> None:
        # The collator needs the tokenized columns and labels, not only the model's forward arguments.
        if self._signature_columns is None:
            self._signature_columns = list(TOKENIZED_COLUMNS)

    # --- per-step log-probs -----------------------------------------------------------------------------------

    def _step_logps(self, model: Any, inputs: dict[str, Tensor], num_steps: int) -> Tensor:
        """Per-step log-prob sums `[B, K]` (float64) of `model` on a batch."""
        return model_step_logps(model, inputs, num_steps, self._logps_method)

    def _reference_step_logps(self, inputs: dict[str, Tensor], num_steps: int) -> Tensor | None:
        """Per-step reference log-probs `[B, K]` (:meth:`Reference.step_logps`), gradient checkpointing off."""
        with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            return self.reference.step_logps(inputs, num_steps, self.model, self.accelerator.unwrap_model)

    def _kto_reference_point(self, model: Any, inputs: dict[str, Tensor], per_step: bool = False) -> Tensor:
        """KTO's z0 for this batch: :func:`~trl_implicit_prm.losses.kto_reference_point` on the batch's mismatched
        pairs (row `i`'s prompt with row `i+1`'s completion), summed over processes. `per_step=True` divides each
        pair's log-ratio by its completion's number of steps: the reference point of a one-step reward `r^k`
        (a response-level z0 is `K` steps' worth of KL and would sit above every step reward).

        A one-row batch has no mismatched pair (its row could only be paired with itself, and its own reward is
        no KL estimate). Its forward still runs, so that every process takes part in the same collectives
        (ZeRO-3), but it adds no pair; when no process has a pair, z0 is the latest estimate (from an earlier
        batch, logged), and with none yet the batch is refused.
        """
        device = inputs["input_ids"].device
        if self.args.kto_reference_point == "zero":
            return torch.zeros((), device=device)
        pairs = mismatched_inputs(
            inputs["input_ids"],
            inputs["attention_mask"],
            inputs["completion_mask"],
            pad_token_id=self.processing_class.pad_token_id,
        )
        with (
            torch.no_grad(),
            disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
        ):
            policy = self._step_logps(model, pairs, 1)[:, 0]
            reference = self.reference.step_logps(pairs, 1, self.model, self.accelerator.unwrap_model)
            reference = None if reference is None else reference[:, 0]
        if per_step:  # row i holds row i+1's completion
            steps = inputs["num_steps"].roll(-1).clamp(min=1).to(policy.dtype)
            policy, reference = policy / steps, None if reference is None else reference / steps
        keep = slice(None) if policy.size(0) > 1 else slice(0, 0)
        z0 = kto_reference_point(
            policy[keep],
            None if reference is None else reference[keep],
            self.args.beta,
            sum_over_processes=lambda t: self.accelerator.reduce(t, reduction="sum"),
        )
        if z0 is not None:
            self._z0_estimate = z0.item()
            return z0
        if self._z0_estimate is None:
            raise ValueError(
                "KTO's reference point z0 is estimated on mismatched (prompt, completion) pairs of a batch, but this "
                "batch has a single row on every process (the last batch of a dataset whose size is one more than a "
                "multiple of the batch size, with dataloader_drop_last=False) and no earlier batch has given an "
                "estimate. Set dataloader_drop_last=True, change the batch size or the dataset size, or set "
                "kto_reference_point='zero'."
            )
        logger.info(
            "KTO: a one-row batch has no mismatched pair; z0 = %.6g, the estimate of an earlier batch",
            self._z0_estimate,
        )
        return torch.tensor(self._z0_estimate, device=device)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The batch's loss from its implicit step rewards (the subclass's :meth:`_loss_and_metrics`), metrics recorded."""
        mode = "train" if self.model.training else "eval"
        num_steps = max(1, int(inputs["num_steps"].max().item()))
        policy = self._step_logps(model, inputs, num_steps)
        reference = self._reference_step_logps(inputs, num_steps)
        mask = step_mask(inputs["num_steps"], num_steps)
        rewards = implicit_step_rewards(policy, reference, self.args.beta, mask)  # float64, as when scoring
        if mode == "eval" and "step_labels" in inputs:
            self._record_step_eval(rewards.detach(), mask, inputs)
        loss, row_stats, scalars = self._loss_and_metrics(model, rewards, mask, inputs)
        if loss is None and mode == "train":
            raise RuntimeError(
                f"{type(self).__name__} has no loss on this training batch (keys {sorted(inputs)})"
            )
        loss = None if loss is None else loss.float()  # the rewards are float64; the optimizer sees float32
        self._record_metrics(mode, row_stats, scalars)
        return (loss, {"rewards": rewards.detach()}) if return_outputs else loss

    @abc.abstractmethod
    def _loss_and_metrics(
        self, model: Any, step_rewards: Tensor, step_mask: Tensor, inputs: dict[str, Tensor]
    ) -> tuple[Tensor | None, RowStats | None, dict[str, float]]:
        """The subclass hook: a batch's loss and metrics from its implicit step rewards.

        Args:
            model: the (wrapped) policy being trained, for losses that need another forward pass (KTO's z0).
            step_rewards: `[B, K]` float64 step rewards `r^k = β·(Σ_{t∈S_k} log πθ − log πref)`, zero past
                each row's steps (paired data: the B/2 chosen rows, then the B/2 rejected ones).
            step_mask: `[B, K]` bool, True on each row's real steps.
            inputs: the collated batch (`label`, `step_labels`, `step_label_mask`, ... by data kind).

        Returns:
            `(loss, row_stats, scalars)`: the scalar loss (None where the batch has none, e.g. DPO on a
            step-labelled evaluation set; refused in training), per-example reward statistics
            (:class:`~trl_implicit_prm.trainers.metrics.RowStats`, or None) and batch-level scalars such as
            `kto/z0`, logged as means over batches.
        """

    # --- metrics ----------------------------------------------------------------------------------------------

    def _record_metrics(self, mode: str, row_stats: RowStats | None, scalars: dict[str, float]) -> None:
        """Add a batch's reward statistics to the running sums of `mode`, summed over processes.

        Evaluation gathers the per-example rows with `gather_for_metrics`, which drops the duplicates that even
        batches add to the last batch under several processes; training sums every row that was trained on
        (duplicates included) with an all-reduce. Batch-level scalars are kept per batch.
        """
        for name, value in scalars.items():
            self._metrics[mode][name].append(value)
        if row_stats is None:
            return
        if mode == "eval":
            total = self.accelerator.gather_for_metrics(row_stats.sums.detach()).sum(0)
        else:
            total = self.accelerator.reduce(row_stats.sums.detach().sum(0), reduction="sum")
        kind, previous = self._reward_totals[mode].get(row_stats.prefix, (row_stats.kind, 0.0))
        if kind != row_stats.kind:
            raise RuntimeError(
                f"reward statistics {row_stats.prefix!r} changed kind from {kind} to {row_stats.kind}"
            )
        self._reward_totals[mode][row_stats.prefix] = (kind, previous + total.cpu())

    def _pop_metrics(self, mode: str) -> dict[str, float]:
        """The metrics of `mode` since the last call, then reset: reward metrics are per-item means over every row
        recorded (`Σ sums / Σ counts`, see :mod:`~trl_implicit_prm.trainers.metrics`), scalars (`kto/z0`) the
        mean of their per-batch values.
        """
        metrics = {k: sum(v) / len(v) for k, v in self._metrics[mode].items() if v}
        for prefix, (kind, totals) in self._reward_totals[mode].items():
            metrics.update(reward_metrics(kind, totals, prefix))
        self._metrics[mode].clear()
        self._reward_totals[mode].clear()
        return metrics

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the training metrics: per-item means over the rows of every process and every micro-batch since
        the last log (scalars such as `kto/z0`: the mean of their per-batch values). Evaluation metrics are added
        by `evaluation_loop`, once per evaluation set.
        """
        if self.model.training:
            logs.update(self._pop_metrics("train"))
        super().log(logs, start_time)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation loss and per-row step rewards (for the step-error metrics) of one batch."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return (None if loss is None else loss.detach()), None, None

    # --- step-level evaluation (ProcessBench protocol) ---------------------------------------------------------

    def _record_step_eval(self, rewards: Tensor, mask: Tensor, inputs: dict[str, Tensor]) -> None:
        labels = inputs["step_labels"]
        label_mask = inputs["step_label_mask"].to(torch.bool)
        k = min(rewards.size(1), labels.size(1))
        rewards = self.accelerator.pad_across_processes(rewards[:, :k].contiguous(), dim=1, pad_index=0.0)
        # Earliest wrong step, or -1 (ProcessBench label); a row's steps are its labelled ones.
        wrong = (labels[:, :k] < 0.5) & label_mask[:, :k]
        first = torch.where(
            wrong.any(1), wrong.float().argmax(1), torch.full_like(wrong[:, 0], -1, dtype=torch.long)
        )
        counts = label_mask[:, :k].sum(1)
        gathered = self.accelerator.gather_for_metrics((rewards, first, counts))
        for row, lab, n in zip(*(t.cpu() for t in gathered), strict=True):
            self._step_eval["rewards"].append(row[: int(n)].tolist())
            self._step_eval["labels"].append(int(lab))

    def evaluate(
        self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """Trainer.evaluate, plus the step-error metrics when the evaluation set has step labels."""
        if isinstance(eval_dataset, Dataset):  # a dataset given here is prepared as the init-time ones are
            eval_dataset = prepare_dataset(
                eval_dataset,
                self.processing_class,
                self.args,
                self.data_kind,
                metric_key_prefix,
                eval_only=True,
            )
            if not self.reference.is_live and _tokenized_needs_reference(eval_dataset):
                raise ValueError(
                    "precompute_ref_log_probs=True keeps no reference model after start-up, so a new dataset "
                    "cannot be scored against it in evaluate(): give it as eval_dataset when building the trainer."
                )
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    def evaluation_loop(
        self,
        dataloader,
        description,
        prediction_loss_only=None,
        ignore_keys=None,
        metric_key_prefix: str = "eval",
    ):
        """The loop of `transformers.Trainer`, plus this set's reward and step metrics, each computed once from
        the per-example values of the whole set (padded duplicates excluded) and named
        `{metric_key_prefix}_rewards/...`, `{metric_key_prefix}_steps/...` (`eval_<name>_...` for a dict of
        evaluation sets). They are in the logged metrics, in what `on_evaluate` callbacks (early stopping) see,
        and usable as `metric_for_best_model`.
        """
        self._step_eval = {"rewards": [], "labels": []}
        self._metrics["eval"].clear()
        self._reward_totals["eval"].clear()
        output = super().evaluation_loop(
            dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
        )
        metrics = self._pop_metrics("eval")
        if self._step_eval["labels"]:
            metrics.update(step_error_metrics(self._step_eval["rewards"], self._step_eval["labels"]))
        output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in metrics.items()})
        return output


def _tokenized_needs_reference(dataset: Dataset) -> bool:
    return not any(c.startswith("ref_") for c in dataset.column_names)
