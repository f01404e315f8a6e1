"""CETrainer: an implicit PRM from unpaired, imbalanced, possibly soft-labelled outcome data."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from trl_implicit_prm.losses import ce_loss, kto_loss
from trl_implicit_prm.trainers.base import ImplicitRewardTrainer
from trl_implicit_prm.trainers.config import CEConfig
from trl_implicit_prm.trainers.metrics import RowStats, group_row_stats


class CETrainer(ImplicitRewardTrainer):
    """Train an implicit PRM on unpaired rows (prompt, completion, label) with cross-entropy (or KTO).

    `label` is bool, 0/1 or a float in [0, 1] (e.g. the fraction of tests passed). The loss is
    `−[l·log σ(r) + (1−l)·log σ(−r)]` on the implicit outcome reward `r(y) = β·log(πθ(y)/πref(y))`; it needs no
    pair, so it trains with one response per instruction, the paper's most data-efficient setting (Yuan et al.,
    2024, "Free Process Rewards without Process Labels", https://huggingface.co/papers/2412.01981, §5.2).
    `loss_type="kto"` trains KTO on the same data. Rollouts are flattened, pairs split into two labelled rows.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from trl_implicit_prm import CEConfig, CETrainer
    >>> from trl_implicit_prm.tiny import build_model, build_tokenizer
    >>> tok = build_tokenizer(vocab_size=300)
    >>> data = Dataset.from_list([{"prompt": "2 + 3 =", "completion": " 5.\\n\\nSo 5.", "label": 1.0},
    ...                           {"prompt": "4 + 4 =", "completion": " 9.\\n\\nSo 9.", "label": 0.0}])
    >>> args = CEConfig(output_dir="/tmp/ce-doc", use_cpu=True, bf16=False, max_steps=2,
    ...                 per_device_train_batch_size=2, report_to=[], learning_rate=1e-3)
    >>> trainer = CETrainer(build_model("llama", tok), args=args, train_dataset=data, processing_class=tok)
    >>> trainer.train().global_step  # the Trainer prints its final log line  # doctest: +ELLIPSIS
    {...}
    2

    ```
    """

    config_class: ClassVar[type] = CEConfig
    data_kind: ClassVar[str] = "unpaired"
    _name = "ImplicitPRM-CE"

    def _loss_and_metrics(
        self, model: Any, step_rewards: Tensor, mask: Tensor, inputs: dict[str, Tensor]
    ) -> tuple[Tensor, RowStats, dict[str, float]]:
        rewards = step_rewards.sum(-1)
        labels = inputs["label"].to(rewards.dtype)
        scalars: dict[str, float] = {}
        if self.args.loss_type == "ce":
            loss = ce_loss(rewards, labels).mean()
        else:
            z0 = self._kto_reference_point(model, inputs)
            loss = kto_loss(
                rewards, labels, z0, self.args.desirable_weight, self.args.undesirable_weight
            ).mean()
            scalars["kto/z0"] = z0.item()
        return loss, RowStats("group", group_row_stats(rewards, labels >= 0.5)), scalars
