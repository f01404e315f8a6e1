"""The implicit PRM inside PRIME: token rewards on rollouts, its online CE update, its metrics, its checkpoint.

Rewards are `β·(log πφ(y_t) − log πref(y_t))` on the exact token ids the policy generated
(:func:`trl_implicit_prm.rewards.token_rewards` on :func:`trl_implicit_prm.logps.completion_logps`), kept in
float64 as the package's dtype policy asks for sums over tokens; the update minimises
:func:`trl_implicit_prm.losses.ce_loss` of the outcome reward `r(y) = Σ_t β·ρ_t` against the verifier's label.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from trl_implicit_prm.logps import completion_logps
from trl_implicit_prm.losses import ce_loss
from trl_implicit_prm.modeling import unwrap_model, write_metadata
from trl_implicit_prm.rewards import outcome_rewards, token_rewards

__all__ = ["OnlinePRM", "micro_batch_size", "pairwise_accuracy", "prepare_trainable_prm"]

logger = logging.getLogger(__name__)

OPTIMIZER_FILE = "optimizer.pt"
ENGINE_DIR = "engine"
ENGINE_TAG = "prm"


def pairwise_accuracy(rewards: Tensor, labels: Tensor, group_size: int) -> tuple[int, int]:
    """Within each group of `group_size` consecutive rows, over the pairs `(i, j)` with `l_i > l_j`: how many have
    `r_i > r_j`, and how many pairs there are. Returns `(correct, pairs)`.

    Example:

    ```python
    >>> import torch
    >>> pairwise_accuracy(torch.tensor([0.5, -1.0, 0.2, 0.9]), torch.tensor([1.0, 0.0, 1.0, 0.0]), 2)
    (1, 2)

    ```
    """
    r = rewards.view(-1, group_size)
    lab = labels.view(-1, group_size)
    better = lab.unsqueeze(2) > lab.unsqueeze(1)
    correct = (r.unsqueeze(2) > r.unsqueeze(1)) & better
    return int(correct.sum()), int(better.sum())


def micro_batch_size(args: Any, rows: int) -> int:
    """Rows per PRM forward/backward: `prm_micro_batch_size` (which must divide `rows`), else all `rows`."""
    size = args.prm_micro_batch_size or rows
    if rows % size:
        raise ValueError(
            f"prm_micro_batch_size={size} must divide the {rows} rollouts each process scores per generation "
            "(per_device_train_batch_size × steps_per_generation)"
        )
    return size


def prepare_trainable_prm(
    model: nn.Module, accelerator: Any, args: Any, rows_per_update: int
) -> tuple[Any, Any]:
    """The PRM and its AdamW optimizer, placed for this run: a DeepSpeed engine of its own under DeepSpeed (the
    run's ZeRO stage, no optimizer offload, one optimizer step per `rows_per_update` rows in micro-batches of
    :func:`micro_batch_size`), DDP-wrapped on several processes, else on the device.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.prm_learning_rate, weight_decay=args.prm_weight_decay)
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        model = model.to(accelerator.device)
        if accelerator.num_processes > 1:
            model = accelerator.prepare_model(model)
        return model, optimizer
    import deepspeed

    config = copy.deepcopy(plugin.deepspeed_config)
    for key in ("optimizer", "scheduler"):
        config.pop(key, None)
    zero = config.setdefault("zero_optimization", {})
    zero.pop("offload_optimizer", None)
    hidden = getattr(unwrap_model(model).config, "hidden_size", None)
    for name, value in {
        "reduce_bucket_size": (hidden or 1024) ** 2,
        "stage3_prefetch_bucket_size": int(0.9 * (hidden or 1024) ** 2),
        "stage3_param_persistence_threshold": 10 * (hidden or 1024),
    }.items():
        if zero.get(name) == "auto":
            zero[name] = value
    micro = micro_batch_size(args, rows_per_update)
    config.update(
        train_micro_batch_size_per_gpu=micro,
        gradient_accumulation_steps=rows_per_update // micro,
        train_batch_size=rows_per_update * accelerator.num_processes,
        gradient_clipping=args.prm_max_grad_norm,
    )
    for precision in ("bf16", "fp16"):
        if isinstance(config.get(precision), dict) and config[precision].get("enabled") == "auto":
            config[precision]["enabled"] = bool(getattr(args, precision))
    engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    return engine, optimizer


class OnlinePRM:
    """An implicit PRM updated online from rollouts' outcome labels (PRIME), with its reference.

    `reference` is a frozen model, or None when the caller passes the reference log-probs itself (PRIME's
    "policy" reference: the policy's log-probs at generation time).
    """

    def __init__(
        self, model: Any, optimizer: Any, reference: nn.Module | None, args: Any, num_processes: int
    ):
        self.model = model
        self.optimizer = optimizer
        self.reference = reference
        self.beta = args.prm_beta
        self.max_grad_norm = args.prm_max_grad_norm
        self.method = args.prm_logps_method
        self.num_processes = num_processes
        self.micro_batch_size = args.prm_micro_batch_size
        self.is_deepspeed = hasattr(model, "backward") and hasattr(model, "step")

    def logps(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """Per-token log-probs `[B, P+C]` of the completion tokens of `batch` under `model`, by micro-batches."""
        parts = [
            completion_logps(
                model, part["input_ids"], part["attention_mask"], part["completion_mask"], method=self.method
            )
            for part in self._micro_batches(batch)
        ]
        return torch.cat(parts)

    def _micro_batches(self, batch: dict[str, Tensor]) -> list[dict[str, Tensor]]:
        rows = batch["input_ids"].size(0)
        size = self.micro_batch_size or rows
        return [{k: v[i : i + size] for k, v in batch.items()} for i in range(0, rows, size)]

    @torch.no_grad()
    def reference_logps(self, batch: dict[str, Tensor]) -> Tensor:
        """The frozen reference's per-token log-probs of `batch` (no gradient)."""
        if self.reference is None:
            raise RuntimeError("this PRM's reference log-probs come from the policy: pass them to the caller")
        return self.logps(self.reference, batch)

    def token_rewards(self, prm_logps: Tensor, ref_logps: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """`β·(log πφ − log πref)` on the completion tokens, float64 `[B, P+C]`."""
        return token_rewards(prm_logps.double(), ref_logps.double(), batch["completion_mask"], self.beta)

    @torch.no_grad()
    def score(self, batch: dict[str, Tensor], ref_logps: Tensor) -> Tensor:
        """Token rewards of the current PRM (no gradient)."""
        self.model.eval()
        return self.token_rewards(self.logps(self.model, batch), ref_logps, batch)

    def update(
        self, batch: dict[str, Tensor], ref_logps: Tensor, labels: Tensor, keep: Tensor, kept_total: int
    ) -> tuple[Tensor, Tensor]:
        """One optimizer step on `mean_{kept rows, all processes} ce_loss(r(y), label)`.

        Returns the update pass's token rewards (detached, before the step) and this process's summed loss over
        its kept rows. The local loss is scaled by `num_processes / kept_total`, so that the gradient averaged by
        DDP/DeepSpeed is that of the global mean.
        """
        self.model.train()
        scale = self.num_processes / max(kept_total, 1)
        rewards, losses, start = [], [], 0
        for part in self._micro_batches(batch):
            end = start + part["input_ids"].size(0)
            r = self.token_rewards(self.logps(self.model, part), ref_logps[start:end], part)
            per_row = ce_loss(outcome_rewards(r), labels[start:end].to(r.dtype)) * keep[start:end].to(r.dtype)
            loss = (per_row.sum() * scale).float()
            if self.is_deepspeed:  # the engine steps the optimizer after the last micro-batch
                self.model.backward(loss, scale_wrt_gas=False)
                self.model.step()
            else:
                loss.backward()
            rewards.append(r.detach())
            losses.append(per_row.detach())
            start = end
        if not self.is_deepspeed:
            params = [p for p in self.model.parameters() if p.requires_grad]
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.model.eval()
        return torch.cat(rewards), torch.cat(losses).sum()

    def save(
        self, output_dir: str | os.PathLike, state_dict: dict | None, tokenizer: Any, metadata: dict
    ) -> None:
        """An ordinary implicit-PRM checkpoint: weights, tokenizer and `implicit_prm.json` (main process only)."""
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        unwrap_model(self.model).save_pretrained(output_dir, state_dict=state_dict)
        tokenizer.save_pretrained(output_dir)
        write_metadata(output_dir, **metadata)
        logger.info("Saved the implicit PRM to %s", output_dir)

    def save_state(self, output_dir: str | os.PathLike, is_main_process: bool) -> None:
        """What resuming needs besides the weights :meth:`save` writes: the optimizer state (`optimizer.pt`, main
        process), or under DeepSpeed the engine's own checkpoint in `engine/` (weights and sharded optimizer
        state, written by every process). The PRM has no learning-rate scheduler (constant `prm_learning_rate`).
        """
        if self.is_deepspeed:
            self.model.save_checkpoint(str(Path(output_dir) / ENGINE_DIR), tag=ENGINE_TAG)
        elif is_main_process:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            torch.save(self.optimizer.state_dict(), Path(output_dir) / OPTIMIZER_FILE)

    def load_state(self, input_dir: str | os.PathLike) -> None:
        """Restore the weights and optimizer state :meth:`save` and :meth:`save_state` wrote to `input_dir`."""
        need = Path(input_dir) / (ENGINE_DIR if self.is_deepspeed else OPTIMIZER_FILE)
        if not need.exists():
            raise FileNotFoundError(
                f"{need} is missing: a PRIMETrainer checkpoint holds the PRM's weights and optimizer state in "
                "<checkpoint>/prm (written unless save_only_model=True); resume from such a checkpoint"
            )
        if self.is_deepspeed:
            self.model.load_checkpoint(
                str(need), tag=ENGINE_TAG, load_optimizer_states=True, load_lr_scheduler_states=False
            )
            return
        from safetensors.torch import load_file

        model = unwrap_model(self.model)
        device = next(model.parameters()).device
        state = {}
        for shard in sorted(Path(input_dir).glob("*.safetensors")):
            state.update(load_file(shard, device=str(device)))
        result = model.load_state_dict(state, strict=False)
        current = model.state_dict()
        loaded = {current[k].data_ptr() for k in state}
        # a tied weight (the LM head sharing the embeddings) is saved once: missing, but loaded through its twin
        untied = [k for k in result.missing_keys if current[k].data_ptr() not in loaded]
        if untied or result.unexpected_keys:
            raise ValueError(
                f"the PRM weights in {input_dir} do not fit this PRM: missing {untied}, unexpected "
                f"{result.unexpected_keys}"
            )
        self.optimizer.load_state_dict(torch.load(need, map_location=device, weights_only=True))
