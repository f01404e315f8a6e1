"""Which reference a trainer uses when none is given: the frozen initial policy, unless the policy is itself
an implicit PRM, whose metadata names the reference its rewards are measured against."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from trl_implicit_prm.modeling import ADAPTER_BASE, METADATA_FILE, is_adapter_dir, read_metadata

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
