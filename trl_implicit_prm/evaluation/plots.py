"""PNG plots of evaluation results: best-of-N accuracy against N, and step-error F1 against the threshold.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no global backend switch), so these
functions work headless and in threads. matplotlib is imported on first use.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_best_of_n", "plot_f1_vs_threshold"]


def _figure(width: float = 6.4, height: float = 4.4):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _percent(values: Sequence[float]) -> list[float]:
    return [100.0 * v if v is not None and math.isfinite(v) else math.nan for v in values]


def plot_best_of_n(curve: Mapping[str, Any], path: str | os.PathLike, title: str | None = None) -> Path:
    """Accuracy (%) against N (log2 axis) for each selection method, with pass@N dashed; returns the PNG path.

    `curve` is the output of :func:`best_of_n_curve` (keys `ns`, `accuracy`, optionally `pass_at_n`,
    `n_problems`).

    Example:

    ```python
    >>> import tempfile, pathlib
    >>> curve = {"ns": [1, 2, 4], "accuracy": {"prm:min": [0.4, 0.5, 0.6]}, "pass_at_n": [0.4, 0.6, 0.7]}
    >>> plot_best_of_n(curve, pathlib.Path(tempfile.mkdtemp()) / "bon.png").stat().st_size > 1000
    True

    ```
    """
    ns = list(curve["ns"])
    figure = _figure()
    axes = figure.add_subplot()
    markers = "osD^v<>ph*"
    for index, (method, values) in enumerate(curve["accuracy"].items()):
        axes.plot(ns, _percent(values), marker=markers[index % len(markers)], linewidth=1.8, label=method)
    if curve.get("pass_at_n") is not None:
        axes.plot(
            ns, _percent(curve["pass_at_n"]), linestyle="--", color="0.45", linewidth=1.4, label="pass@N"
        )
    axes.set_xscale("log", base=2)
    axes.set_xticks(ns, [str(n) for n in ns])
    axes.minorticks_off()
    axes.set_xlabel("N (candidates per problem)")
    axes.set_ylabel("accuracy (%)")
    n_problems = curve.get("n_problems")
    default = "Best-of-N" + (f" ({n_problems} problems)" if n_problems else "")
    axes.set_title(title or default)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    return _save(figure, path)


def plot_f1_vs_threshold(
    curve_rows: Sequence[Sequence[float]],
    path: str | os.PathLike,
    chosen_threshold: float | None = None,
    title: str | None = None,
) -> Path:
    """F1 and both accuracies (%) against the threshold τ, from :func:`f1_threshold_curve` rows.

    The curves are step functions (constant between scores), drawn as steps; `chosen_threshold` is marked
    with a vertical line. Returns the PNG path.

    Example:

    ```python
    >>> import tempfile, pathlib
    >>> rows = [(-1.0, 0.0, 1.0, 0.0), (0.0, 0.5, 0.8, 0.615), (1.0, 1.0, 0.0, 0.0)]
    >>> plot_f1_vs_threshold(rows, pathlib.Path(tempfile.mkdtemp()) / "f1.png", 0.0).stat().st_size > 1000
    True

    ```
    """
    rows = sorted((tuple(row) for row in curve_rows), key=lambda row: row[0])
    if not rows:
        raise ValueError("plot_f1_vs_threshold needs at least one (τ, acc_erroneous, acc_correct, f1) row")
    taus = [row[0] for row in rows]
    figure = _figure()
    axes = figure.add_subplot()
    axes.step(taus, _percent([r[3] for r in rows]), where="mid", linewidth=2.2, color="C3", label="F1")
    axes.step(
        taus, _percent([r[1] for r in rows]), where="mid", linewidth=1.4, color="C0", label="acc. erroneous"
    )
    axes.step(
        taus, _percent([r[2] for r in rows]), where="mid", linewidth=1.4, color="C2", label="acc. correct"
    )
    if chosen_threshold is not None:
        axes.axvline(
            chosen_threshold, color="0.3", linestyle=":", linewidth=1.4, label=f"τ = {chosen_threshold:.4g}"
        )
    axes.set_xlabel("threshold τ (a step is flagged when its score < τ)")
    axes.set_ylabel("%")
    axes.set_ylim(-2, 102)
    axes.set_title(title or "Step-error localization against the threshold")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    return _save(figure, path)
