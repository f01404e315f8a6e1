"""StepKTOTrainer: second-stage training of an implicit PRM on step labels (step-level KTO)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from trl_implicit_prm.losses import step_ce_loss, step_kto_loss
from trl_implicit_prm.rewards import fit_steps, step_q_values
from trl_implicit_prm.trainers.base import ImplicitRewardTrainer
from trl_implicit_prm.trainers.config import StepKTOConfig
from trl_implicit_prm.trainers.metrics import RowStats, group_row_stats


class StepKTOTrainer(ImplicitRewardTrainer):
    """Train an implicit PRM on step labels: step-level KTO (paper §5.3) or step-level CE (`loss_type="ce"`).

    Rows are (prompt, completions = list of steps, labels = one bool or soft label per step). The paper's exact
    step-KTO formula did not survive; this library applies KTO to every labelled step: desirable steps get
    `λ_D·(1 − σ(v_k − z0))`, undesirable ones `λ_U·(1 − σ(z0 − v_k))`, averaged over the labelled steps of the
    batch, with `v_k` the step's implicit reward `r^k` (`step_reward="step"`, the default for KTO) or the
    cumulative q-value at the step's end (`step_reward="q"`). KTO's reference point `z0` is estimated on
    mismatched pairs at the scale of `v_k`: per step (each pair's log-ratio divided by its number of steps) for
    `r^k`, per response for `q`. `loss_type="ce"` trains `−[l_k·log σ(v_k) + (1−l_k)·log σ(−v_k)]` with `v_k`
    the q-value at the end of step `k` by default, the objective of the paper's released Stage-2 models (Yuan et
    al., 2024, "Free Process Rewards without Process Labels", https://huggingface.co/papers/2412.01981).

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from trl_implicit_prm import StepKTOConfig, StepKTOTrainer
    >>> from trl_implicit_prm.tiny import build_model, build_tokenizer
    >>> tok = build_tokenizer(vocab_size=300)
    >>> data = Dataset.from_list([{"prompt": "2 + 3 =", "completions": [" 5.", "So 5."], "labels": [True, True]},
    ...                           {"prompt": "4 + 4 =", "completions": [" 9.", "So 9."], "labels": [False, False]}])
    >>> args = StepKTOConfig(output_dir="/tmp/stepkto-doc", use_cpu=True, bf16=False, max_steps=2,
    ...                      per_device_train_batch_size=2, report_to=[], learning_rate=1e-3)
    >>> trainer = StepKTOTrainer(build_model("llama", tok), args=args, train_dataset=data, processing_class=tok)
    >>> trainer.train().global_step  # the Trainer prints its final log line  # doctest: +ELLIPSIS
    {...}
    2

    ```
    """

    config_class: ClassVar[type] = StepKTOConfig
    data_kind: ClassVar[str] = "stepwise"
    _name = "ImplicitPRM-StepKTO"

    def _loss_and_metrics(
        self, model: Any, step_rewards: Tensor, mask: Tensor, inputs: dict[str, Tensor]
    ) -> tuple[Tensor, RowStats, dict[str, float]]:
        k = step_rewards.size(1)
        values = step_rewards if self.args.step_reward == "step" else step_q_values(step_rewards) * mask
        labels = fit_steps(inputs["step_labels"].to(values.dtype), k)
        labelled = fit_steps(inputs["step_label_mask"].to(torch.bool), k) & mask
        scalars: dict[str, float] = {}
        if self.args.loss_type == "ce":
            losses = step_ce_loss(values, labels, labelled)
        else:
            z0 = self._kto_reference_point(model, inputs, per_step=self.args.step_reward == "step")
            losses = step_kto_loss(
                values, labels, labelled, z0, self.args.desirable_weight, self.args.undesirable_weight
            )
            scalars["kto/z0"] = z0.item()
        # A batch without labelled steps still backpropagates (a zero that keeps the graph), as every process must.
        loss = losses.mean() if losses.numel() else values.sum() * 0.0
        # Reward metrics are over labelled steps (each step one item), summed per row.
        return (
            loss,
            RowStats("group", group_row_stats(values, labels >= 0.5, labelled)),
            scalars,
        )
