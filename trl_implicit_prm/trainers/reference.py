"""A trainer's reference πref: one small type (:class:`Reference`) for its four kinds, and which reference a
trainer uses when none is given (:func:`recorded_reference`: the frozen initial policy, unless the policy is
itself an implicit PRM, whose metadata names the reference its rewards are measured against).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from trl.trainer.utils import use_adapter

from trl_implicit_prm.logps import completion_logps
from trl_implicit_prm.modeling import ADAPTER_BASE, METADATA_FILE, is_adapter_dir, read_metadata
from trl_implicit_prm.rewards import fit_steps, step_logp_sums

MODEL_INPUTS = ("input_ids", "attention_mask", "completion_mask")

logger = logging.getLogger(__name__)


def recorded_reference(model_id: str | None) -> str | None:
    """The reference recorded with a checkpoint that training continues from, or None for a plain model.

    Continuing from an implicit-PRM checkpoint (`run/checkpoint-4`) with the frozen copy as reference would measure
    rewards against the checkpoint itself, not against the reference its `implicit_prm.json` names. The recorded
    reference is returned (and logged) instead; a checkpoint whose reference cannot be used is refused with a
    message saying what to pass.
    """
    if not model_id or not Path(model_id).is_dir():
        return None
    meta = read_metadata(model_id)
    if not meta:
        return None
    source = Path(model_id) / METADATA_FILE
    if meta.get("reference_free"):
        raise ValueError(
            f"{model_id} is an implicit PRM trained reference-free ({source} says reference_free: true): continue "
            "with reference_free=True, or pass ref_model=... to measure rewards against another model"
        )
    recorded = meta.get("reference_model")
    if recorded == ADAPTER_BASE:
        recorded = _adapter_base(model_id, source)
    if recorded is None:
        raise ValueError(
            f"{model_id} is an implicit PRM whose reference was an in-memory model without a path ({source} "
            "records no reference_model): pass that reference as ref_model=..."
        )
    if recorded.startswith(("/", ".", "~")) and not Path(recorded).expanduser().exists():  # a local path
        raise FileNotFoundError(
            f"{model_id} is an implicit PRM whose reference {recorded!r} (recorded in {source}) does not exist: "
            "pass ref_model=... with its new location"
        )
    logger.warning(
        "%s is an implicit-PRM checkpoint: training continues against the reference recorded in %s (%s), not a "
        "frozen copy of the checkpoint; pass ref_model=... to choose another.",
        model_id,
        source,
        recorded,
    )
    return recorded


def _adapter_base(model_id: str, source: Path) -> str:
    """The base model of an adapter checkpoint trained with adapters disabled as reference."""
    config = Path(model_id) / "adapter_config.json"
    if not is_adapter_dir(model_id):
        raise ValueError(
            f"{source} says the reference is the adapter's base model, but {model_id} has no adapter_config.json: "
            "pass ref_model=... (the base model the adapter was trained on)"
        )
    base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise ValueError(
            f"{config} names no base_model_name_or_path: pass ref_model=... (the adapter's base model)"
        )
    return str(base)


REFERENCE_KINDS = ("model", "frozen_copy", "adapters_disabled", "none")


def model_step_logps(model: Any, inputs: dict[str, Tensor], num_steps: int, method: str) -> Tensor:
    """Per-step sums `[B, num_steps]` (float64) of `model`'s completion-token log-probs on a tokenized batch:
    :func:`~trl_implicit_prm.logps.completion_logps` then :func:`~trl_implicit_prm.rewards.step_logp_sums`.
    """
    logps = completion_logps(model, *(inputs[k] for k in MODEL_INPUTS), method=method)
    return step_logp_sums(logps, inputs["step_index"], num_steps)


@dataclass
class Reference:
    """The reference πref of a trainer, one of four kinds (`kind`), whose log-probs may be precomputed.

    - `"model"`: a separate frozen model (`ref_model=`, or the reference recorded with a PRM checkpoint that
      training continues from);
    - `"frozen_copy"`: a frozen copy of the initial policy (the default);
    - `"adapters_disabled"`: the policy's base model, with its LoRA adapters disabled (PEFT, no `ref_model`);
    - `"none"`: reference-free (paper §5.5.2), `r = β·log πθ`.

    `precomputed=True` once the per-step reference log-probs are dataset columns (`ref_step_logps`,
    `precompute_ref_log_probs=True`): the frozen model is let go (`model` is None). :meth:`step_logps` gives the
    reference's per-step log-probs of a batch, :meth:`describe` what `implicit_prm.json` records.

    Example:

    ```python
    >>> import torch
    >>> ref = Reference("frozen_copy", model_id="base-model", precomputed=True)
    >>> batch = {"ref_step_logps": torch.tensor([[-1.0, -2.0]], dtype=torch.float64)}
    >>> ref.step_logps(batch, 3, policy=None).tolist(), ref.describe()
    ([[-1.0, -2.0, 0.0]], 'base-model')
    >>> Reference("adapters_disabled").describe(), Reference("none").step_logps(batch, 2, policy=None)
    ('adapter-base', None)

    ```
    """

    kind: str
    model: Any = None
    model_id: str | None = None
    precomputed: bool = False
    logps_method: str = "fused"

    def __post_init__(self) -> None:
        if self.kind not in REFERENCE_KINDS:
            raise ValueError(f"reference kind must be one of {REFERENCE_KINDS}, got {self.kind!r}")

    @property
    def is_live(self) -> bool:
        """Whether log-probs of new data can still be computed (a frozen model, or the adapters to disable)."""
        return self.model is not None or self.kind == "adapters_disabled"

    def step_logps(
        self, inputs: dict[str, Tensor], num_steps: int, policy: Any, unwrap: Any = None
    ) -> Tensor | None:
        """Per-step reference log-prob sums `[B, num_steps]` of a batch, float64; None when reference-free.

        Precomputed columns (`ref_step_logps`) are used when the batch has them; otherwise the frozen model, or
        `policy` (unwrapped with `unwrap`) with its adapters disabled, runs without gradients.
        """
        if self.kind == "none":
            return None
        if "ref_step_logps" in inputs:
            return fit_steps(inputs["ref_step_logps"], num_steps)
        if not self.is_live:
            raise ValueError(
                "the reference log-probs were precomputed and the reference model let go, but this batch has no "
                "ref_step_logps: give every dataset to the trainer before training, or keep "
                "precompute_ref_log_probs=False"
            )
        with torch.no_grad():
            if self.model is not None:
                return model_step_logps(self.model, inputs, num_steps, self.logps_method)
            base = unwrap(policy) if unwrap is not None else policy
            with use_adapter(base, adapter_name=None):
                return model_step_logps(policy, inputs, num_steps, self.logps_method)

    def describe(self) -> str | None:
        """The `reference_model` of `implicit_prm.json`: the model's path (absolute when local) or hub id,
        `"adapter-base"` for adapters disabled, None when reference-free or for an in-memory model.
        """
        if self.kind == "none":
            return None
        if self.kind == "adapters_disabled":
            return ADAPTER_BASE
        if self.model_id is not None and Path(self.model_id).exists():
            return str(Path(self.model_id).resolve())  # a local path must survive moving the checkpoint
        return self.model_id

    def without_model(self) -> Reference:
        """The same reference after precomputation: its log-probs are dataset columns, its model let go."""
        return replace(self, model=None, precomputed=True)
