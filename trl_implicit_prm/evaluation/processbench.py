"""The official ProcessBench protocol: four subsets, F1 per subset, one threshold tuned on GSM8K.

ProcessBench (Zheng et al. 2024, `Qwen/ProcessBench`) has the subsets gsm8k, math, olympiadbench and omnimath.
Each record's `label` is the index of its first wrong step, or -1. For each subset:

- accuracy on erroneous records (predicted first error == label) and on correct records (prediction == -1);
- F1 = their harmonic mean; the table's "Avg. F1" is the plain mean of the subset F1s.

A PRM that outputs a scalar per step needs a threshold (a step is wrong when its score is below it). The
benchmark's rule: tune it on the gsm8k subset and apply the same value to the others. The gsm8k figure is then
measured with a threshold tuned on it. Each subset's own best threshold (its "oracle" F1) is reported
separately and labelled as an upper bound: it is not a result of the protocol.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .process_errors import ProcessErrorResult, evaluate_process_errors, evaluate_splits

__all__ = [
    "HUB_DATASET",
    "SUBSETS",
    "TUNE_SUBSET",
    "evaluate_processbench",
    "load_processbench",
    "markdown_table",
]

SUBSETS = ("gsm8k", "math", "olympiadbench", "omnimath")
SUBSET_TITLES = {"gsm8k": "GSM8K", "math": "MATH", "olympiadbench": "OlympiadBench", "omnimath": "Omni-MATH"}
TUNE_SUBSET = "gsm8k"
HUB_DATASET = "Qwen/ProcessBench"
UPPER_BOUND_NOTE = "oracle: each subset's own best threshold (an upper bound, not the protocol)"
_FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


def _local_subset_files(folder: Path) -> dict[str, Path]:
    found = {}
    for subset in SUBSETS:
        matches = [
            folder / f"{subset}{suffix}"
            for suffix in _FILE_SUFFIXES
            if (folder / f"{subset}{suffix}").is_file()
        ]
        if len(matches) > 1:
            raise ValueError(f"{folder}: several files for subset {subset!r}: {[m.name for m in matches]}")
        if matches:
            found[subset] = matches[0]
    return found


def load_processbench(
    source: str | os.PathLike | None = None,
    *,
    revision: str | None = None,
    subsets: Sequence[str] = SUBSETS,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list]]:
    """`({subset: records}, {subset: dropped rows})` from a local copy, or from the Hub.

    `source`: a folder holding `gsm8k.jsonl` (or `.json`, `.parquet`), `math...`, `olympiadbench...`,
    `omnimath...`; or a folder written by `DatasetDict.save_to_disk` with the subsets as splits; or None for
    `Qwen/ProcessBench` on the Hub at `revision` (required: a commit sha, so that results are reproducible).
    Rows are checked by :func:`~trl_implicit_prm.data.convert_processbench`; bad ones are returned as dropped.
    """
    from trl_implicit_prm.data.converters import convert_processbench, read_source

    unknown = [s for s in subsets if s not in SUBSETS]
    if unknown:
        raise ValueError(f"unknown ProcessBench subset(s) {unknown}; the subsets are {list(SUBSETS)}")
    raw: dict[str, list[dict[str, Any]]] = {}
    if source is None:
        if not revision:
            raise ValueError(
                f"loading {HUB_DATASET} from the Hub needs revision=<commit sha> (a pinned version)"
            )
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
            raise ConnectionError(
                f"the Hub is not reachable (HF_HUB_OFFLINE is set): cannot download {HUB_DATASET}; "
                "pass --data with a local copy (a folder of gsm8k/math/olympiadbench/omnimath .jsonl files, or a "
                "DatasetDict folder)"
            )
        from datasets import load_dataset

        for subset in subsets:
            raw[subset] = [dict(r) for r in load_dataset(HUB_DATASET, split=subset, revision=revision)]
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder}: not a folder (expected one file per subset, or a datasets folder)"
            )
        if (folder / "dataset_dict.json").is_file():
            for subset in subsets:
                raw[subset] = read_source(folder, split=subset)
        else:
            files = _local_subset_files(folder)
            missing = [s for s in subsets if s not in files]
            if missing:
                raise FileNotFoundError(
                    f"{folder}: no file for subset(s) {missing} (expected e.g. {missing[0]}.jsonl)"
                )
            for subset in subsets:
                raw[subset] = read_source(files[subset])
    records, dropped = {}, {}
    for subset, rows in raw.items():
        conversion = convert_processbench(rows, to="records")
        records[subset], dropped[subset] = conversion.rows, conversion.dropped
    return records, dropped


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values and len(finite) == len(values) else math.nan


def evaluate_processbench(
    subsets: Mapping[str, tuple[Sequence[Mapping[str, Any]], Sequence[Sequence[float]]]],
    threshold: float | None = None,
) -> dict[str, Any]:
    """The protocol's figures from `{subset: (records, per-step scores)}`.

    With `threshold=None` it is tuned on gsm8k (which must be present) and applied to every subset; pass a
    threshold to use a fixed one (e.g. 0.5 on probabilities). Returns
    ``{"threshold", "tuned_on": "gsm8k" or None, "subsets": {name: ProcessErrorResult}, "average_f1",
    "oracle": {name: ProcessErrorResult at the subset's own best threshold}, "oracle_average_f1",
    "oracle_note"}``. The average is over the subsets given, in the order of :data:`SUBSETS`.
    """
    unknown = [s for s in subsets if s not in SUBSETS]
    if unknown:
        raise ValueError(f"unknown ProcessBench subset(s) {unknown}; the subsets are {list(SUBSETS)}")
    if threshold is None and TUNE_SUBSET not in subsets:
        raise ValueError(
            f"the protocol tunes the threshold on {TUNE_SUBSET!r}, which is not among the subsets {list(subsets)}; "
            "include it or pass threshold="
        )
    ordered = {name: subsets[name] for name in SUBSETS if name in subsets}
    split = evaluate_splits(ordered, tune_on=TUNE_SUBSET if threshold is None else None, threshold=threshold)
    oracle: dict[str, ProcessErrorResult] = {}
    for name, (records, scores) in ordered.items():
        oracle[name] = evaluate_process_errors(records, scores, threshold=None)
    results: dict[str, ProcessErrorResult] = split["splits"]
    return {
        "threshold": split["threshold"],
        "tuned_on": split["tuned_on"],
        "subsets": results,
        "average_f1": _mean([r.f1 for r in results.values()]),
        "oracle": oracle,
        "oracle_average_f1": _mean([r.f1 for r in oracle.values()]),
        "oracle_note": UPPER_BOUND_NOTE,
    }


def _pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{100 * value:.1f}"


def markdown_table(result: Mapping[str, Any], model_name: str = "implicit PRM") -> str:
    """The benchmark's table (F1 per subset and their average), the oracle row below it labelled as an upper
    bound, then the per-subset details (accuracies, counts, thresholds).
    """
    names = list(result["subsets"])
    titles = [SUBSET_TITLES[n] for n in names]
    tau = result["threshold"]
    how = f"τ={tau:.4g}, tuned on GSM8K" if result["tuned_on"] else f"τ={tau:.4g}, given"
    lines = [
        "| Model | " + " | ".join(titles) + " | Avg. F1 |",
        "|---|" + "---|" * (len(names) + 1),
        f"| {model_name} ({how}) | "
        + " | ".join(_pct(result["subsets"][n].f1) for n in names)
        + f" | {_pct(result['average_f1'])} |",
        f"| {model_name} (oracle τ per subset: upper bound) | "
        + " | ".join(_pct(result["oracle"][n].f1) for n in names)
        + f" | {_pct(result['oracle_average_f1'])} |",
        "",
        "| Subset | threshold | n erroneous | n correct | acc. erroneous | acc. correct | F1 | oracle τ | oracle F1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        r, o = result["subsets"][name], result["oracle"][name]
        kind = " (tuned here)" if r.oracle else ""
        lines.append(
            f"| {SUBSET_TITLES[name]} | {r.threshold:.4g}{kind} | {r.n_erroneous} | {r.n_correct} | "
            f"{_pct(r.acc_erroneous)} | {_pct(r.acc_correct)} | {_pct(r.f1)} | {o.threshold:.4g} | {_pct(o.f1)} |"
        )
    lines += ["", f"Oracle rows: {UPPER_BOUND_NOTE}."]
    return "\n".join(lines) + "\n"


def to_json(result: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-ready dict of :func:`evaluate_processbench`'s result (predictions included per subset)."""
    return {
        "threshold": result["threshold"],
        "tuned_on": result["tuned_on"],
        "average_f1": result["average_f1"],
        "subsets": {n: r.to_dict(include_predictions=True) for n, r in result["subsets"].items()},
        "oracle_average_f1": result["oracle_average_f1"],
        "oracle": {n: r.to_dict() for n, r in result["oracle"].items()},
        "oracle_note": result["oracle_note"],
    }
