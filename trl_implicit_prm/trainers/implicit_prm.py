"""ImplicitPRMTrainer: an implicit PRM from paired outcome data (DPO or NCA objective)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from trl_implicit_prm.losses import dpo_loss, nca_loss
from trl_implicit_prm.trainers.base import ImplicitRewardTrainer
from trl_implicit_prm.trainers.config import ImplicitPRMConfig
from trl_implicit_prm.trainers.metrics import RowStats, pair_row_stats


class ImplicitPRMTrainer(ImplicitRewardTrainer):
    """Train an implicit PRM on pairs (prompt, chosen, rejected) with the DPO or NCA objective.

    The outcome reward is `r(y) = β·Σ_t log(πθ(y_t)/πref(y_t))` over completion tokens; after training, the same
    sum over one step's tokens is that step's reward (Yuan et al., 2024, "Free Process Rewards without Process
    Labels", https://huggingface.co/papers/2412.01981). Rollouts (`prompt`, `completions`, `correctness`) and
    unpaired rows are turned into every correct × incorrect pair of each instruction.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from trl_implicit_prm import ImplicitPRMConfig, ImplicitPRMTrainer
    >>> from trl_implicit_prm.tiny import build_model, build_tokenizer
    >>> tok = build_tokenizer(vocab_size=300)
    >>> data = Dataset.from_list([{"prompt": "2 + 3 =", "chosen": " 5.\\n\\nSo 5.", "rejected": " 6.\\n\\nSo 6."}] * 4)
    >>> args = ImplicitPRMConfig(output_dir="/tmp/iprm-doc", use_cpu=True, bf16=False, max_steps=2,
    ...                          per_device_train_batch_size=2, report_to=[], learning_rate=1e-3)
    >>> trainer = ImplicitPRMTrainer(build_model("llama", tok), args=args, train_dataset=data, processing_class=tok)
    >>> trainer.train().global_step  # the Trainer prints its final log line  # doctest: +ELLIPSIS
    {...}
    2

    ```
    """

    config_class: ClassVar[type] = ImplicitPRMConfig
    data_kind: ClassVar[str] = "paired"
    _name = "ImplicitPRM"

    def __init__(self, *args: Any, **kwargs: Any):
        """The arguments of the base trainer; also refuses a `metric_for_best_model` naming the loss of a
        step-labelled eval set, which DPO/NCA do not have.
        """
        super().__init__(*args, **kwargs)
        _check_best_model_metric(self.args.metric_for_best_model, self.eval_dataset)

    def _loss_and_metrics(
        self, model: Any, step_rewards: Tensor, mask: Tensor, inputs: dict[str, Tensor]
    ) -> tuple[Tensor | None, RowStats | None, dict[str, float]]:
        if "step_labels" in inputs:
            # A step-labelled eval set has single responses, not (chosen, rejected) pairs of a prompt: DPO and NCA
            # define no loss on it (no eval_loss is reported); its step metrics are recorded by the base class.
            return None, None, {}
        chosen, rejected = step_rewards.sum(-1).chunk(2)
        loss = (dpo_loss if self.args.loss_type == "dpo" else nca_loss)(chosen, rejected).mean()
        return loss, RowStats("pair", pair_row_stats(chosen, rejected)), {}


def _check_best_model_metric(metric: str | None, eval_dataset: Any) -> None:
    """Refuse a `metric_for_best_model` that names the loss of a step-labelled eval set, which DPO/NCA lack."""
    if metric is None or eval_dataset is None:
        return
    named = eval_dataset if isinstance(eval_dataset, dict) else {None: eval_dataset}
    for name, dataset in named.items():
        if "step_labels" not in dataset.column_names:
            continue
        prefix = "eval_" if name is None else f"eval_{name}_"
        if (metric if metric.startswith("eval_") else f"eval_{metric}") == f"{prefix}loss":
            raise ValueError(
                f"metric_for_best_model={metric!r} is the loss of the step-labelled evaluation set"
                f"{'' if name is None else f' {name!r}'}, but DPO and NCA are losses on (chosen, rejected) pairs "
                "of a prompt and a step-labelled set has single responses: ImplicitPRMTrainer reports no loss "
                f"there. Set metric_for_best_model='{prefix[5:]}steps/f1' (ProcessBench F1 at threshold 0; "
                "greater_is_better=True; needs both erroneous and correct records), or give a paired "
                "evaluation set and use its loss."
            )
