"""The demo's report: report.json (every number), report.md (a table and its reading), bon.png, steps.html."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from trl_implicit_prm.evaluation.records import strict_json

logger = logging.getLogger(__name__)

CE, STEP, REF = "implicit PRM (CE)", "step-supervised (StepKTO)", "reference (no training)"
MC = "explicit PRM (MC labels)"
F1_TARGET, GAP_TARGET, MC_GAP_TARGET, COST_TARGET = 0.80, 0.10, 0.05, 0.10


def _at(curve: dict[str, Any], method: str, n: int) -> float | None:
    ns = curve["ns"]
    return curve["accuracy"][method][ns.index(n)] if n in ns else None


def _summary(results: dict[str, Any], bon_n: int) -> dict[str, Any]:
    from trl_implicit_prm.demo.baselines import LABELS

    rows = {}
    costs = results.get("extra", {}).get("data_cost_tokens", {})
    for name, sets in results["step_error"].items():
        test = sets["sampled"]["test"]
        curve = results["best_of_n"][name]
        rows[name] = {
            "labels": LABELS.get(name, ""),
            "data_cost_tokens": costs.get(name),
            "test_f1": test["f1"],
            "test_acc_erroneous": test["acc_erroneous"],
            "test_acc_correct": test["acc_correct"],
            "threshold": sets["sampled"]["threshold"],
            "injected_test_f1": sets["injected"]["test"]["f1"],
            f"bon@{bon_n}_min": _at(curve, "prm:min", bon_n),
            f"weighted@{bon_n}_min": _at(curve, "weighted:min", bon_n),
        }
    any_curve = next(iter(results["best_of_n"].values()))
    return {
        "models": rows,
        "pass@1": any_curve["pass_at_1"],
        f"majority@{bon_n}": _at(any_curve, "majority", bon_n),
        f"pass@{bon_n}": any_curve["pass_at_n"][any_curve["ns"].index(bon_n)]
        if bon_n in any_curve["ns"]
        else None,
    }


def _sane_baselines(models: dict[str, Any]) -> dict[str, bool]:
    """Guard: each trained step-level baseline is sane iff its held-out F1 is above the untrained reference's
    (a baseline below it failed to learn and is evidence of nothing).
    """
    ref = models.get(REF, {}).get("test_f1")
    return {
        name: ref is not None and row["test_f1"] is not None and row["test_f1"] > ref
        for name, row in models.items()
        if name not in (REF, CE) and "outcome" not in row["labels"]
    }


def _comparisons(models: dict[str, Any], sane: dict[str, bool], ce_f1: float) -> dict[str, Any]:
    """Claims against the step-level baselines, each made only when that baseline is sane."""
    out: dict[str, Any] = {}
    if STEP in models and sane[STEP]:
        gap = models[STEP]["test_f1"] - ce_f1
        out.update({"gap_to_step_supervised": gap, "ce_within_0.10_of_step_supervised": gap <= GAP_TARGET})
    if MC in models:
        cost_ratio = models[CE]["data_cost_tokens"] / max(1, models[MC]["data_cost_tokens"])
        out["ce_cost_over_mc_cost"] = cost_ratio
        out["ce_cost_at_most_0.10_of_mc"] = cost_ratio <= COST_TARGET
        if sane[MC]:
            gap = models[MC]["test_f1"] - ce_f1
            out.update({"gap_to_explicit_mc": gap, "ce_within_0.05_of_explicit_mc": gap <= MC_GAP_TARGET})
    return out


def _claims(summary: dict[str, Any], bon_n: int) -> dict[str, Any]:
    models = summary["models"]
    if CE not in models:
        return {}
    ce_f1 = models[CE]["test_f1"]
    sane = _sane_baselines(models)
    out = {
        "ce_f1": ce_f1,
        "ce_f1_at_least_0.80": ce_f1 >= F1_TARGET,
        "baselines_above_reference": sane,
        "failed_baselines": sorted(name for name, ok in sane.items() if not ok),
    }
    out.update(_comparisons(models, sane, ce_f1))
    bon = models[CE][f"bon@{bon_n}_min"]
    if bon is not None:
        out.update(
            {
                f"ce_bon@{bon_n}_min": bon,
                "ce_bon_above_pass@1": bon > summary["pass@1"],
                "ce_bon_above_majority": bon > summary[f"majority@{bon_n}"],
            }
        )
    return out


def _markdown(report: dict[str, Any]) -> str:
    n = report["config"]["bon_n"]
    s = report["summary"]
    lines = [
        "# Implicit PRM demo: free process rewards, in miniature",
        "",
        f"Seed {report['config']['seed']}, {report['config']['n_terms']} terms, operators "
        f"`{report['config']['operators']}`; total {report['total_seconds']:.0f} s on CPU.",
        "",
        "Step-error localization in the ProcessBench protocol (the prediction is the first step whose reward falls",
        "below a threshold tuned on a validation split): on the reference policy's own solutions to held-out",
        "problems, with the first wrong step located by recomputing every step (main columns), and on reference",
        "solutions with one injected error. Best-of-N selection on",
        f"{report['config']['n_bon_problems']} held-out problems with {n} samples each from the reference policy.",
        "",
        f"| model | labels used | generated tokens (data) | step-error F1 | acc. erroneous | acc. correct "
        f"| F1, injected errors | best-of-{n} (min) | weighted vote@{n} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    failed = set(report["claims"].get("failed_baselines", []))
    for name, row in s["models"].items():

        def pct(x: float | None) -> str:
            return "–" if x is None else f"{100 * x:.1f}"

        cost = row.get("data_cost_tokens")
        shown = f"{name} (failed: below the reference)" if name in failed else name
        lines.append(
            f"| {shown} | {row.get('labels', '')} | {'–' if cost is None else f'{cost:,}'} "
            f"| {pct(row['test_f1'])} | {pct(row['test_acc_erroneous'])} "
            f"| {pct(row['test_acc_correct'])} | {pct(row['injected_test_f1'])} | {pct(row[f'bon@{n}_min'])} "
            f"| {pct(row[f'weighted@{n}_min'])} |"
        )
    lines += [
        "",
        f"Baselines without a PRM: pass@1 {100 * s['pass@1']:.1f}, majority vote@{n} "
        f"{100 * s[f'majority@{n}']:.1f}, pass@{n} (oracle) {100 * s[f'pass@{n}']:.1f}.",
        "",
        "## Reading",
        "",
        *_reading(report["claims"], s, n),
        *_mc_reading(report.get("mc")),
    ]
    lines += [
        "",
        "Files: `report.json` (every number), `bon.png`, `steps.html`, `data/` (the public formats).",
        "",
    ]
    return "\n".join(lines)


def _reading(c: dict[str, Any], s: dict[str, Any], n: int) -> list[str]:
    """The report's "Reading" bullets: what the claims and the summary say."""
    lines: list[str] = []
    if not c:
        return lines
    verdict = "meets" if c["ce_f1_at_least_0.80"] else "misses"
    lines.append(
        f"- Trained on final-answer labels only, the CE implicit PRM localises the first wrong step "
        f"with F1 {100 * c['ce_f1']:.1f} ({verdict} the 80 target)."
    )
    lines += _baseline_reading(c, s["models"])
    if f"ce_bon@{n}_min" in c:
        lines.append(
            f"- Best-of-{n} by the minimum step reward: {100 * c[f'ce_bon@{n}_min']:.1f}, against pass@1 "
            f"{100 * s['pass@1']:.1f} and majority voting {100 * s[f'majority@{n}']:.1f}."
        )
    ref = s["models"].get(REF)
    if ref is not None:
        lines.append(
            f"- The untrained reference alone scores F1 {100 * ref['test_f1']:.1f} on its own solutions: "
            "the gain comes from training on outcomes, not from the model's own likelihoods."
        )
        lines.append(
            f"- On injected errors the reference alone scores {100 * ref['injected_test_f1']:.1f}: an "
            "error the policy would not make is improbable under it already, while a log-ratio "
            "reward only carries what training changed (the paper's §5.5.2 discusses this)."
        )
    return lines


def _mc_reading(mc: dict[str, Any] | None) -> list[str]:
    """Where the MC labels came from and how often they are right (the report's `mc` entry)."""
    if not mc:
        return []
    completer = mc["completer"]
    kinds = {"trained": "a trained completer", "faithful": "a trained completer that continues after errors"}
    who = (
        "the reference policy"
        if completer["kind"] == "policy"
        else f"{kinds[completer['kind']]} (greedy accuracy {100 * completer['greedy_accuracy']:.0f}%)"
    )
    return [
        f"- The MC labels: {mc['completions_per_step']} completions per step prefix by {who}, on "
        f"{mc['n_problems']:,} problems ({mc['n_new_problems']:,} beyond the training ones); their hard labels "
        f"agree with the true ones on {100 * mc['hard_label_agreement_with_truth']:.1f}% of the steps."
    ]


def _baseline_reading(c: dict[str, Any], models: dict[str, Any]) -> list[str]:
    """The lines about the step-level baselines: a failed one is named as failed, never compared with."""
    lines = []
    for name in c.get("failed_baselines", []):
        lines.append(
            f"- {name} scores F1 {100 * models[name]['test_f1']:.1f}, not above the untrained reference "
            f"({100 * models[REF]['test_f1']:.1f}): this baseline failed, and no claim is drawn from it."
        )
    if "gap_to_step_supervised" in c:
        gap = 100 * c["gap_to_step_supervised"]
        relation = (
            f"outcome labels come within {gap:.1f} points of per-step supervision"
            if gap >= 0
            else f"the outcome-trained PRM is {-gap:.1f} points above it"
        )
        lines.append(
            f"- StepKTO on the true step labels reaches {100 * models[STEP]['test_f1']:.1f}: {relation}."
        )
    if "ce_cost_over_mc_cost" in c:
        mc = models[MC]
        relation = ""
        if "gap_to_explicit_mc" in c:
            gap = 100 * c["gap_to_explicit_mc"]
            relation = (
                f"; the CE implicit PRM is {-gap:.1f} points above it"
                if gap <= 0
                else f"; the CE implicit PRM is {gap:.1f} points below it"
            )
        lines.append(
            f"- The explicit PRM on Monte-Carlo step labels reaches F1 {100 * mc['test_f1']:.1f}{relation}. "
            f"Its data took {mc['data_cost_tokens']:,} generated tokens, the CE PRM's "
            f"{models[CE]['data_cost_tokens']:,} ({100 * c['ce_cost_over_mc_cost']:.0f}%)."
        )
    return lines


def _plot(results: dict[str, Any], path: Path, n: int) -> None:
    from trl_implicit_prm.evaluation import plot_best_of_n

    curves = results["best_of_n"]
    first = next(iter(curves.values()))
    merged = {
        "ns": first["ns"],
        "pass_at_n": first["pass_at_n"],
        "n_problems": first["n_problems"],
        "accuracy": {"majority vote": first["accuracy"]["majority"]},
    }
    for name, curve in curves.items():
        merged["accuracy"][f"{name}, min"] = curve["accuracy"]["prm:min"]
    plot_best_of_n(merged, path, title=f"Best-of-N on held-out problems (up to {n} samples)")


def _html(results: dict[str, Any], eval_sets: dict[str, Any], path: Path, count: int) -> None:
    from trl_implicit_prm.render import save_html

    items = eval_sets["injected"][1]
    scored = results["_scored_test"]["injected"].get(CE) or next(
        iter(results["_scored_test"]["injected"].values())
    )
    name = CE if CE in results["step_error"] else next(iter(results["step_error"]))
    threshold = results["step_error"][name]["injected"]["threshold"]
    picked = [i for i, (_, s) in enumerate(items) if s.first_error not in (-1, None)][:count]
    picked += [i for i, (_, s) in enumerate(items) if s.first_error == -1][: max(1, count // 3)]
    prompts = []
    for i in picked:
        problem, sol = items[i]
        truth = "no error" if sol.first_error == -1 else f"error injected at step {sol.first_error + 1}"
        prompts.append(f"{problem.prompt.strip()}   [truth: {truth}]")
    save_html(
        [scored[i] for i in picked],
        path,
        prompts=prompts,
        threshold=threshold,
        title=f"{name}: step rewards on held-out solutions with an injected error",
    )


def write_report(
    out: Path, cfg: Any, results: dict[str, Any], eval_sets: dict[str, Any], seconds: dict[str, float]
) -> dict[str, Any]:
    """Write the four report files; return the report dict (report.json holds it as strict JSON: NaN/inf as
    null, their places under `non_finite`).
    """
    n = cfg.bon_n
    summary = _summary(results, n)
    report = {
        "config": asdict(cfg),
        "seed": cfg.seed,
        "timings_seconds": seconds,
        "total_seconds": round(sum(seconds.values()), 2),
        "summary": summary,
        "claims": _claims(summary, n),
        "step_error": results["step_error"],
        "best_of_n": results["best_of_n"],
    }
    report.update(results.get("extra", {}))
    strict, nulled = strict_json(report)  # strict JSON: NaN/inf as null, listed
    strict["non_finite"] = {"count": len(nulled), "fields": nulled}
    if nulled:
        logger.warning(
            "report.json: %d non-finite value(s) written as null: %s", len(nulled), ", ".join(nulled[:10])
        )
    (out / "report.json").write_text(json.dumps(strict, indent=2, allow_nan=False, default=float))
    (out / "report.md").write_text(_markdown(report))
    _plot(results, out / "bon.png", n)
    _html(results, eval_sets, out / "steps.html", cfg.html_examples)
    return report
