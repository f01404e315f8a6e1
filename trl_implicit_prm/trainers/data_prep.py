"""Turn whatever rows a user gives a trainer into the tokenized kind that trainer trains on, or say why not.

| trainer kind | accepted rows (converted on the fly)                                              |
|--------------|------------------------------------------------------------------------------------|
| paired       | paired; rollouts and unpaired (every correct × incorrect pair of an instruction)   |
| unpaired     | unpaired; rollouts (flattened); paired (chosen → 1, rejected → 0)                  |
| stepwise     | stepwise                                                                           |

Evaluation sets may also be stepwise for every trainer: they give the step-error metrics.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from datasets import Dataset

from trl_implicit_prm.data import (
    detect_format,
    rollouts_to_pairs,
    rollouts_to_unpaired,
    tokenize_dataset,
    validate_dataset,
)
from trl_implicit_prm.data.columns import RESPONSE_SUMS, RESPONSE_SUMS_ADVICE, tokenized_kind
from trl_implicit_prm.data.rollouts import pairs_of_rows

logger = logging.getLogger(__name__)

_HINT = {
    "paired": "ImplicitPRMTrainer (paired: prompt, chosen, rejected)",
    "unpaired": "CETrainer (unpaired: prompt, completion, label)",
    "stepwise": "StepKTOTrainer (stepwise: prompt, completions = steps, labels = per-step bools)",
}


def _group_unpaired(dataset: Dataset) -> list[dict[str, Any]]:
    """Validated unpaired rows grouped by prompt into rollout rows (prompt, completions, labels)."""
    groups: dict[str, dict[str, Any]] = {}
    for row in dataset:
        key = json.dumps(row["prompt"], sort_keys=True)
        group = groups.setdefault(key, {"prompt": row["prompt"], "completions": [], "labels": []})
        group["completions"].append(row["completion"])
        group["labels"].append(float(row["label"]))
    return list(groups.values())


def _paired_to_unpaired(dataset: Dataset) -> Dataset:
    rows = []
    for row in dataset:
        rows.append({"prompt": row["prompt"], "completion": row["chosen"], "label": 1.0})
        rows.append({"prompt": row["prompt"], "completion": row["rejected"], "label": 0.0})
    return Dataset.from_list(rows)


def _convert(dataset: Dataset, kind: str, target: str, name: str, args: Any) -> tuple[Dataset, str]:
    """Rows of `kind` as rows of `target`, or an error saying which trainer fits them."""
    if target == "paired" and kind in ("rollouts", "unpaired"):
        max_pairs = getattr(args, "max_pairs_per_prompt", None)
        if kind == "rollouts":  # validates each rollout row, naming the user's rows
            pairs = rollouts_to_pairs(dataset, args.seed, max_pairs, step_separator=args.step_separator)
        else:  # validated by the caller
            pairs = pairs_of_rows(_group_unpaired(dataset), args.seed, max_pairs)
        if len(pairs) == 0:
            raise ValueError(
                f"The {name} dataset ({kind}, {len(dataset)} rows) gives no (correct, incorrect) pair: every "
                "instruction has only correct or only incorrect responses (e.g. all-positive data). A paired "
                "trainer needs both classes for the same prompt; train on this data with CETrainer, which "
                "accepts unpaired and one-class data."
            )
        logger.info("%s dataset: %d %s rows -> %d pairs", name, len(dataset), kind, len(pairs))
        return pairs, "paired"
    if target == "unpaired" and kind == "rollouts":
        flat = rollouts_to_unpaired(dataset)
        logger.info("%s dataset: %d rollout rows -> %d unpaired rows", name, len(dataset), len(flat))
        return flat, "unpaired"
    if target == "unpaired" and kind == "paired":
        return _paired_to_unpaired(dataset), "unpaired"
    raise ValueError(
        f"The {name} dataset holds {kind} rows, which this trainer cannot train on: it needs "
        f"{_HINT.get(target, target)}. Use {_HINT.get(kind, 'the rollout helpers in trl_implicit_prm.data')} "
        "for this data."
    )


def prepare_dataset(
    dataset: Dataset, tokenizer: Any, args: Any, target_kind: str, name: str, eval_only: bool = False
) -> Dataset:
    """Validate, convert and tokenize `dataset` for a trainer of `target_kind` (clear errors before training)."""
    if not isinstance(dataset, Dataset):
        raise TypeError(f"The {name} dataset must be a datasets.Dataset, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError(f"The {name} dataset is empty")
    sums = [c for c in dataset.column_names if c in RESPONSE_SUMS]
    if sums:  # kept by tokenization, read by nothing: the run would use another reference, silently
        raise ValueError(
            f"The {name} dataset has per-response reference log-prob sums {sums}: they cannot give step rewards. "
            + RESPONSE_SUMS_ADVICE
        )
    tokenized = tokenized_kind(dataset.column_names)
    if tokenized is not None:
        if tokenized != target_kind and not (eval_only and tokenized == "stepwise"):
            raise ValueError(
                f"The {name} dataset is already tokenized as {tokenized}; this trainer needs "
                f"{_HINT.get(target_kind, target_kind)}"
            )
        return dataset
    kind = detect_format(dataset)
    if kind != target_kind and not (eval_only and kind == "stepwise"):
        # Rows are validated once before converting, so that errors name the user's own columns and rows:
        # here, or (rollouts) by the converter. Converted rows are new rows: tokenization validates those.
        if kind != "rollouts":
            validate_dataset(dataset, kind, step_separator=args.step_separator)
        dataset, kind = _convert(dataset, kind, target_kind, name, args)
    # tokenize_dataset validates every row; stepwise rows get `label` = their lowest step label.
    out = tokenize_dataset(
        dataset,
        tokenizer,
        kind,
        step_separator=args.step_separator,
        max_length=args.max_length,
        num_proc=args.dataset_num_proc,
        append_eos=args.append_eos,
    )
    if kind == "unpaired" and len(out):
        labels = out["label"]
        if all(x >= 0.5 for x in labels) or all(x < 0.5 for x in labels):
            logger.warning(
                "%s dataset: every label is %s; the implicit reward learns only to move one way. The paper's CE "
                "setting works with imbalanced data, but a single class gives no contrast.",
                name,
                "positive" if labels[0] >= 0.5 else "negative",
            )
    if len(out) == 0:
        raise ValueError(
            f"The {name} dataset has no row left after tokenization (see the dropped-row counts above)"
        )
    return out
