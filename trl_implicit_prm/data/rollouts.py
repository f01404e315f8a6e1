"""Turn rollouts (several sampled responses per instruction, each marked correct or not) into training data.

A response is *correct* when its correctness label is True, 1, or a float >= 0.5, and *incorrect* otherwise.

- :func:`rollouts_to_pairs`: every correct x incorrect pair of an instruction, for `ImplicitPRMTrainer`;
- :func:`rollouts_to_unpaired`: one row per response with its label (soft labels kept), for `CETrainer`,
  optionally balanced between correct and incorrect responses over the dataset or within each instruction.

Instructions whose responses are all correct or all incorrect cannot form a pair (nor a balanced set); they are
dropped, and the count is logged. Both helpers accept a `datasets.Dataset` or a list of dicts, validate every
row, are deterministic under `seed`, and return a `datasets.Dataset`. Other columns are not carried over.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping
from itertools import product
from typing import Any

from datasets import Dataset

from .formats import check_label, validate_row

__all__ = ["rollouts_to_pairs", "rollouts_to_unpaired"]

logger = logging.getLogger(__name__)

_DROPPED = "dropped %d of %d instructions with only correct or only incorrect responses"


def _rows(
    dataset_or_rows: Dataset | Iterable[Mapping[str, Any]], step_separator: str
) -> list[dict[str, Any]]:
    """Materialise and validate rollout rows; return [{prompt, completions, labels (floats)}]."""
    if isinstance(dataset_or_rows, Dataset):
        columns = ("prompt", "completions", "correctness")
        missing = [c for c in columns if c not in dataset_or_rows.column_names]
        if missing:
            validate_row(dict.fromkeys(dataset_or_rows.column_names), "rollouts")  # raises, naming the column
        dataset_or_rows = dataset_or_rows.select_columns(list(columns))
    rows = []
    for index, row in enumerate(dataset_or_rows):
        validate_row(row, "rollouts", index, step_separator=step_separator)
        labels = [check_label(c, "correctness", index, i) for i, c in enumerate(row["correctness"])]
        rows.append({"prompt": row["prompt"], "completions": list(row["completions"]), "labels": labels})
    return rows


def rollouts_to_pairs(
    dataset_or_rows: Dataset | Iterable[Mapping[str, Any]],
    seed: int = 0,
    max_pairs_per_prompt: int | None = None,
    *,
    step_separator: str = "\n\n",
) -> Dataset:
    """Build a paired dataset (`prompt`, `chosen`, `rejected`) from every correct x incorrect pair.

    Pairs of an instruction come in order (correct responses in their order, each with every incorrect one).
    With `max_pairs_per_prompt`, that many pairs are drawn without replacement (order kept), deterministically
    under `seed`. Instructions with only one class are dropped and counted in a warning.

    Example:

    ```python
    >>> rows = [{"prompt": "2+3=", "completions": ["5", "6", "5.0"], "correctness": [True, False, 1.0]},
    ...         {"prompt": "1+1=", "completions": ["2"], "correctness": [True]}]
    >>> pairs = rollouts_to_pairs(rows)
    >>> [(r["chosen"], r["rejected"]) for r in pairs]
    [('5', '6'), ('5.0', '6')]

    ```
    """
    if max_pairs_per_prompt is not None and max_pairs_per_prompt < 1:
        raise ValueError(
            f"max_pairs_per_prompt must be a positive integer or None, got {max_pairs_per_prompt}"
        )
    return pairs_of_rows(_rows(dataset_or_rows, step_separator), seed, max_pairs_per_prompt)


def pairs_of_rows(rows: list[dict[str, Any]], seed: int, max_pairs_per_prompt: int | None) -> Dataset:
    """:func:`rollouts_to_pairs` on rows already validated, as ``[{prompt, completions, labels (floats)}]``."""
    rng = random.Random(seed)
    out: dict[str, list[Any]] = {"prompt": [], "chosen": [], "rejected": []}
    dropped = 0
    for row in rows:
        good = [c for c, y in zip(row["completions"], row["labels"], strict=True) if y >= 0.5]
        bad = [c for c, y in zip(row["completions"], row["labels"], strict=True) if y < 0.5]
        if not good or not bad:
            dropped += 1
            continue
        pairs = list(product(good, bad))
        if max_pairs_per_prompt is not None and len(pairs) > max_pairs_per_prompt:
            pairs = [pairs[i] for i in sorted(rng.sample(range(len(pairs)), max_pairs_per_prompt))]
        for chosen, rejected in pairs:
            out["prompt"].append(row["prompt"])
            out["chosen"].append(chosen)
            out["rejected"].append(rejected)
    logger.log(
        logging.WARNING if dropped else logging.INFO,
        _DROPPED + "; built %d pairs",
        dropped,
        len(rows),
        len(out["prompt"]),
    )
    return Dataset.from_dict(out)


def rollouts_to_unpaired(
    dataset_or_rows: Dataset | Iterable[Mapping[str, Any]],
    balance: str | None = None,
    seed: int = 0,
    *,
    step_separator: str = "\n\n",
) -> Dataset:
    """Flatten rollouts into an unpaired dataset (`prompt`, `completion`, `label` as float).

    `balance`:

    - `None`: every response, labels as given (floats; soft labels kept);
    - `"dataset"`: the majority class (correct or incorrect) is subsampled over the whole dataset to the size
      of the minority class;
    - `"instruction"`: the same within each instruction; instructions with one class contribute nothing and
      their count is logged.

    Subsampling keeps the original order of the rows it keeps and is deterministic under `seed`.

    Example:

    ```python
    >>> rows = [{"prompt": "2+3=", "completions": ["5", "6", "7"], "correctness": [1.0, 0.0, 0.2]}]
    >>> len(rollouts_to_unpaired(rows)), len(rollouts_to_unpaired(rows, balance="instruction"))
    (3, 2)

    ```
    """
    if balance not in (None, "dataset", "instruction"):
        raise ValueError(f'balance must be None, "dataset" or "instruction", got {balance!r}')
    rng = random.Random(seed)
    rows = _rows(dataset_or_rows, step_separator)
    flat: list[tuple[Any, Any, float]] = []
    dropped = 0
    for row in rows:
        items = [(row["prompt"], c, y) for c, y in zip(row["completions"], row["labels"], strict=True)]
        if balance == "instruction":
            good = [i for i, item in enumerate(items) if item[2] >= 0.5]
            bad = [i for i, item in enumerate(items) if item[2] < 0.5]
            if not good or not bad:
                dropped += 1
                continue
            keep = _balanced(good, bad, rng)
            items = [items[i] for i in keep]
        flat.extend(items)
    if balance == "instruction":
        logger.log(logging.WARNING if dropped else logging.INFO, _DROPPED, dropped, len(rows))
    if balance == "dataset":
        flat = _balanced_over_dataset(flat, rng)
    return Dataset.from_dict(
        {
            "prompt": [p for p, _, _ in flat],
            "completion": [c for _, c, _ in flat],
            "label": [y for _, _, y in flat],
        }
    )


def _balanced_over_dataset(
    flat: list[tuple[Any, Any, float]], rng: random.Random
) -> list[tuple[Any, Any, float]]:
    """`balance="dataset"`: the majority class subsampled to the minority's size over the whole dataset."""
    good = [i for i, item in enumerate(flat) if item[2] >= 0.5]
    bad = [i for i, item in enumerate(flat) if item[2] < 0.5]
    keep = _balanced(good, bad, rng)
    logger.info(
        "balanced over the dataset: kept %d correct and %d incorrect of %d correct and %d incorrect responses",
        min(len(good), len(bad)),
        min(len(good), len(bad)),
        len(good),
        len(bad),
    )
    if not keep:
        logger.warning(
            "balance='dataset': the dataset has only %s responses; nothing is kept",
            "correct" if good else "incorrect",
        )
    return [flat[i] for i in keep]


def _balanced(good: list[int], bad: list[int], rng: random.Random) -> list[int]:
    """Indices of both classes with the majority subsampled to the minority's size, in their original order."""
    n = min(len(good), len(bad))
    if len(good) > n:
        good = rng.sample(good, n)
    if len(bad) > n:
        bad = rng.sample(bad, n)
    return sorted(good + bad)
