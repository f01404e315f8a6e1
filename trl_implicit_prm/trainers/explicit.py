"""ExplicitPRMTrainer: the discriminative PRM baseline, a classifier at the last token of every step."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from datasets import Dataset
from torch import Tensor
from transformers import AutoModelForTokenClassification, PreTrainedModel, PreTrainedTokenizerBase
from trl.trainer.base_trainer import _BaseTrainer
from trl.trainer.utils import disable_dropout_in_model

from trl_implicit_prm.data import ImplicitPRMCollator
from trl_implicit_prm.explicit import EXPLICIT_KIND, step_log_odds
from trl_implicit_prm.losses import ce_loss
from trl_implicit_prm.modeling import check_max_length, load_tokenizer, model_id_of, write_metadata
from trl_implicit_prm.trainers.base import PAPER
from trl_implicit_prm.trainers.config import ExplicitPRMConfig
from trl_implicit_prm.trainers.data_prep import prepare_dataset
from trl_implicit_prm.trainers.saving import training_rendering

_COLUMNS = ["input_ids", "completion_mask", "step_index", "num_steps", "step_labels", "label"]


def _load_classifier(model: str | PreTrainedModel, init_kwargs: dict[str, Any]) -> PreTrainedModel:
    """A token-classification model: loaded from a path (a causal-LM checkpoint gets a fresh 2-way head), or the
    given one, which must already have a 1- or 2-output head.
    """
    if isinstance(model, str):
        return AutoModelForTokenClassification.from_pretrained(model, **{"num_labels": 2, **init_kwargs})
    if getattr(model.config, "num_labels", None) not in (1, 2) or not type(model).__name__.endswith(
        "ForTokenClassification"
    ):
        raise ValueError(
            f"ExplicitPRMTrainer needs a token-classification model with 1 or 2 labels, got "
            f"{type(model).__name__}: pass the checkpoint's path (a causal-LM checkpoint gets a new 2-way head), "
            "or AutoModelForTokenClassification.from_pretrained(path, num_labels=2)"
        )
    return model


class ExplicitPRMTrainer(_BaseTrainer):
    """Train an explicit (discriminative) PRM on step labels: the Math-Shepherd / PRM800K recipe.

    A token-classification head reads the last token of each step (the step separator, which belongs to the
    step before it; the last step's final token) and is trained with two-class cross-entropy against the
    step's label (soft labels allowed), on every labelled step or, with `train_on_last_step_only=True`, on each
    row's last one. The score of step `k` is the log-odds `z_k` that the prefix through step `k` is correct
    (:mod:`trl_implicit_prm.explicit`). Data: stepwise rows (prompt, completions = steps, labels), tokenized
    once with step spans by the same data layer as the implicit trainers. Saved checkpoints record
    `kind: "explicit"` in `implicit_prm.json`, and `ProcessRewardComputer.from_pretrained` scores them through
    the same API. It is the baseline of Yuan et al., 2024, "Free Process Rewards without Process Labels"
    (https://huggingface.co/papers/2412.01981), after Wang et al., 2024, "Math-Shepherd"
    (https://huggingface.co/papers/2312.08935).

    Example:

    ```python
    >>> import contextlib, io, tempfile
    >>> from datasets import Dataset
    >>> from trl_implicit_prm import ExplicitPRMConfig, ExplicitPRMTrainer
    >>> from trl_implicit_prm.tiny import build_model, build_tokenizer
    >>> tok, path = build_tokenizer(vocab_size=300), tempfile.mkdtemp()
    >>> with contextlib.redirect_stdout(io.StringIO()):  # saving may print a DeepSpeed notice
    ...     build_model("llama", tok).save_pretrained(path)
    ...     _ = tok.save_pretrained(path)
    >>> data = Dataset.from_list([{"prompt": "2 + 3 =", "completions": [" 5.", "So 5."], "labels": [True, True]},
    ...                           {"prompt": "4 + 4 =", "completions": [" 9.", "So 9."], "labels": [False, False]}])
    >>> args = ExplicitPRMConfig(output_dir="/tmp/explicit-doc", use_cpu=True, bf16=False, max_steps=2,
    ...                          per_device_train_batch_size=2, report_to=[], learning_rate=1e-3)
    >>> trainer = ExplicitPRMTrainer(path, args=args, train_dataset=data)
    >>> trainer.train().global_step  # the Trainer prints its final log line  # doctest: +ELLIPSIS
    {...}
    2

    ```
    """

    _tag_names: ClassVar[list[str]] = ["trl", "trl-implicit-prm", "process-reward-model", "explicit-prm"]
    _name = "ExplicitPRM"
    _paper: ClassVar[dict[str, str]] = PAPER

    def __init__(
        self,
        model: str | PreTrainedModel,
        args: ExplicitPRMConfig | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        data_collator: Any = None,
        callbacks: list | None = None,
        optimizers: tuple = (None, None),
    ):
        model_id = model if isinstance(model, str) else model_id_of(model)
        if args is None:
            args = ExplicitPRMConfig(
                output_dir=f"{(model_id or 'model').rstrip('/').split('/')[-1]}-ExplicitPRM"
            )
        if not isinstance(args, ExplicitPRMConfig):
            raise TypeError(f"ExplicitPRMTrainer needs an ExplicitPRMConfig, got {type(args).__name__}")
        if train_dataset is None:
            raise ValueError("train_dataset is required")
        model = _load_classifier(model, dict(args.model_init_kwargs or {}))
        check_max_length(model, args.max_length)
        if processing_class is None:
            if not model_id:
                raise ValueError(
                    "processing_class is required when model is an in-memory model without a path"
                )
            processing_class = load_tokenizer(model_id)
        if not getattr(processing_class, "is_fast", False):
            raise ValueError(
                "processing_class must be a fast tokenizer (step spans come from character offsets)"
            )
        if processing_class.pad_token is None:
            processing_class.pad_token = processing_class.eos_token
        if args.disable_dropout:
            disable_dropout_in_model(model)
        self._rendering = training_rendering(train_dataset, processing_class, args)
        train_dataset = prepare_dataset(train_dataset, processing_class, args, "stepwise", "train")
        if isinstance(eval_dataset, dict):
            eval_dataset = {
                k: prepare_dataset(v, processing_class, args, "stepwise", k) for k, v in eval_dataset.items()
            }
        elif eval_dataset is not None:
            eval_dataset = prepare_dataset(eval_dataset, processing_class, args, "stepwise", "eval")
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator
            or ImplicitPRMCollator(
                pad_token_id=processing_class.pad_token_id,
                pad_to_multiple_of=args.pad_to_multiple_of,
                kind="stepwise",
            ),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
        )

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = list(_COLUMNS)

    def compute_loss(
        self, model: Any, inputs: dict[str, Tensor], return_outputs: bool = False, **kwargs: Any
    ):
        """Two-class CE of each trained step's log-odds against its label, averaged over the trained steps."""
        k = inputs["step_labels"].size(1)
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        z = step_log_odds(logits.float(), inputs["step_index"], k)
        trained = inputs["step_label_mask"] & (
            torch.arange(k, device=z.device) < inputs["num_steps"][:, None]
        )
        if self.args.train_on_last_step_only:
            last = trained.long().cumsum(1).argmax(1, keepdim=True)  # the last trained step of each row
            trained = trained & (torch.arange(k, device=z.device)[None, :] == last)
        losses = ce_loss(z[trained], inputs["step_labels"][trained])
        loss = losses.mean() if losses.numel() else z.sum() * 0.0
        return (loss, {"step_log_odds": z}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation loss and per-step scores of one batch."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the model and tokenizer, and `implicit_prm.json` with `kind: "explicit"` and the rendering."""
        super().save_model(output_dir, _internal_call)
        output_dir = output_dir or self.args.output_dir
        if self.is_world_process_zero():
            write_metadata(
                output_dir,
                kind=EXPLICIT_KIND,
                trainer=type(self).__name__,
                loss_type="last_step_ce" if self.args.train_on_last_step_only else "step_ce",
                step_separator=self.args.step_separator,
                **self._rendering,
            )
