"""Several demo runs (seeds) in one report: the mean and spread of every summary number.

`trl-implicit-prm demo --seeds 0 1 2` runs the demo once per seed (into `seed-<S>/` under the output
directory) and writes `report.json` and `report.md` there with, for every number of each run's `summary`, its
per-seed values, mean, sample standard deviation, minimum and maximum; and each run's claims side by side.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trl_implicit_prm.evaluation.records import strict_json

__all__ = ["aggregate_reports", "spread"]


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """`{"values", "mean", "std", "min", "max"}` of the finite values (std: sample standard deviation, 0 for one
    value); None for each statistic when no value is finite.

    Example:

    ```python
    >>> spread([0.5, 0.7, None])["mean"], spread([0.5, 0.7])["std"]
    (0.6, 0.1414)

    ```
    """
    finite = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not finite:
        return {"values": list(values), "mean": None, "std": None, "min": None, "max": None}
    mean = sum(finite) / len(finite)
    var = sum((v - mean) ** 2 for v in finite) / (len(finite) - 1) if len(finite) > 1 else 0.0
    return {
        "values": list(values),
        "mean": round(mean, 4),
        "std": round(math.sqrt(var), 4),
        "min": min(finite),
        "max": max(finite),
    }


def _numbers(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The numeric entries of a run's summary, as {row: {column: value}} (row "baselines" for the model-free ones)."""
    rows = {
        name: {k: v for k, v in row.items() if not isinstance(v, str)}
        for name, row in summary["models"].items()
    }
    rows["baselines"] = {k: v for k, v in summary.items() if k != "models"}
    return rows


def aggregate_reports(reports: Sequence[dict[str, Any]], out: str | Path) -> dict[str, Any]:
    """Write `report.json` and `report.md` under `out` for `reports` (one per seed); returns the aggregate."""
    per_run = [_numbers(r["summary"]) for r in reports]
    rows: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(n for run in per_run for n in run):
        columns = dict.fromkeys(c for run in per_run for c in run.get(name, {}))
        rows[name] = {c: spread([run.get(name, {}).get(c) for run in per_run]) for c in columns}
    aggregate = {
        "seeds": [r["seed"] for r in reports],
        "config": {k: v for k, v in reports[0]["config"].items() if k not in ("seed", "output_dir")},
        "summary": rows,
        "claims": {str(r["seed"]): r["claims"] for r in reports},
        "total_seconds": [r["total_seconds"] for r in reports],
    }
    strict, nulled = strict_json(aggregate)
    strict["non_finite"] = {"count": len(nulled), "fields": nulled}
    out = Path(out)
    (out / "report.json").write_text(json.dumps(strict, indent=2, allow_nan=False, default=float))
    (out / "report.md").write_text(_markdown(aggregate))
    return aggregate


def _markdown(aggregate: dict[str, Any]) -> str:
    columns = ("test_f1", "injected_test_f1")
    rows = aggregate["summary"]
    bon = [c for c in rows.get("implicit PRM (CE)", {}) if c.startswith(("bon@", "weighted@"))]
    lines = [
        f"# Implicit PRM demo over seeds {', '.join(map(str, aggregate['seeds']))}",
        "",
        "Mean ± sample standard deviation over the seeds (per-seed values in report.json).",
        "",
        "| model | " + " | ".join((*columns, *bon)) + " |",
        "|---|" + "---|" * (len(columns) + len(bon)),
    ]

    def cell(stats: dict[str, Any] | None) -> str:
        if not stats or stats["mean"] is None:
            return "–"
        return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}"

    for name, row in rows.items():
        if name != "baselines":
            lines.append(f"| {name} | " + " | ".join(cell(row.get(c)) for c in (*columns, *bon)) + " |")
    base = rows.get("baselines", {})
    lines += ["", "Without a PRM: " + ", ".join(f"{k} {cell(v)}" for k, v in base.items()), ""]
    for seed, claims in aggregate["claims"].items():
        failed = claims.get("failed_baselines") or []
        lines.append(
            f"- seed {seed}: CE F1 {100 * claims.get('ce_f1', float('nan')):.1f}; failed baselines: "
            f"{', '.join(failed) if failed else 'none'}"
        )
    return "\n".join(lines) + "\n"
