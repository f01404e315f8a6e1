"""ImplicitPRMTrainer: an implicit PRM from paired outcome data (DPO or NCA objective)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from trl_implicit_prm.losses import dpo_loss, nca_loss
from trl_implicit_prm.trainers.base import ImplicitRewardTrainer
from trl_implicit_prm.trainers.config import ImplicitPRMConfig


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
    >>> trainer.train().global_step
    2

    ```
    """

    config_class: ClassVar[type] = ImplicitPRMConfig
    data_kind: ClassVar[str] = "paired"
    _name = "ImplicitPRM"

    def _loss_and_metrics(
        self, model: Any, step_rewards: Tensor, mask: Tensor, inputs: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, float]]:
        if "step_labels" in inputs:  # a step-labelled eval set: step metrics only, no pairs to score
            return torch.full((), float("nan"), device=step_rewards.device), {}
        chosen, rejected = step_rewards.sum(-1).chunk(2)
        loss = (dpo_loss if self.args.loss_type == "dpo" else nca_loss)(chosen, rejected).mean()
        gathered_c, gathered_r = self.accelerator.gather_for_metrics((chosen.detach(), rejected.detach()))
        metrics = {
            "rewards/chosen": gathered_c.mean().item(),
            "rewards/rejected": gathered_r.mean().item(),
            "rewards/accuracies": (gathered_c > gathered_r).float().mean().item(),
            "rewards/margins": (gathered_c - gathered_r).mean().item(),
        }
        return loss, metrics
