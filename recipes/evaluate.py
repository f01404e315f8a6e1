"""Evaluate a trained implicit PRM: step-error localization (ProcessBench protocol) and/or best-of-N.

- Step errors: one ProcessBench-format file per split (`problem`, `steps`, `label` = earliest wrong step or
  -1). The PRM flags the first step whose reward is below τ; τ is tuned on the split `tune_on` and reused on
  the others (the tuned split's own F1 is marked "oracle threshold"), or fixed with `threshold`.
- Best-of-N: a candidates file (`problem`, `reference`, `candidates`); each candidate is scored and the step
  rewards aggregated (`min` in the paper), then accuracy against N for PRM selection, majority voting and
  weighted majority voting. Without a model, the candidates' precomputed `scores` are used.

Writes `output_dir/results.json` (with file hashes, β, τ, skipped rows), `f1_vs_threshold.png`, `best_of_n.png`.

    python recipes/evaluate.py --model_name_or_path outputs/llama3.1-8b-implicit-prm-ce \
        --process_files gsm8k=processbench/gsm8k.jsonl math=processbench/math.jsonl --tune_on gsm8k \
        --bon_file math500_candidates.jsonl --output_dir eval/ce
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import ScoringArguments, build_computer
from trl import TrlParser

from trl_implicit_prm.evaluation import (
    best_of_n_curve,
    evaluate_splits,
    f1_threshold_curve,
    plot_best_of_n,
    plot_f1_vs_threshold,
    read_bon_candidates,
    read_process_records,
    write_results_json,
)


@dataclass
class EvaluateArguments:
    process_files: list[str] | None = field(
        default=None,
        metadata={"help": "ProcessBench-format files, as NAME=PATH or PATH (name: the file stem)."},
    )
    tune_on: str | None = field(
        default=None,
        metadata={"help": "Split whose records tune τ. Default: the first split (unless threshold)."},
    )
    threshold: float | None = field(default=None, metadata={"help": "A fixed τ instead of tuning one."})
    bon_file: str | None = field(default=None, metadata={"help": "Best-of-N candidates file (JSONL)."})
    aggregations: list[str] = field(
        default_factory=lambda: ["min"],
        metadata={"help": "Step-reward aggregations for best-of-N (min: paper §4.1)."},
    )
    ns: list[int] | None = field(
        default=None, metadata={"help": "Values of N. Default: 1, 2, 4, ... up to all."}
    )
    methods: list[str] = field(
        default_factory=lambda: ["prm", "majority", "weighted"],
        metadata={
            "help": "Best-of-N selections: prm (top score), majority, weighted (σ(score)-weighted vote)."
        },
    )
    output_dir: str = field(default="eval_results", metadata={"help": "Where results.json and the plots go."})


def step_errors(
    args: EvaluateArguments, scoring: ScoringArguments, computer: Any, out: Path
) -> dict[str, Any]:
    splits, loaded = {}, {}
    for item in args.process_files:
        name, _, path = item.rpartition("=")
        name = name or Path(path).stem
        if name in splits:
            raise ValueError(
                f"two process files are named {name!r}: give them as NAME=PATH with distinct names"
            )
        loaded[path] = records = read_process_records(path)
        results = computer.score(
            [computer.render_prompt(r["problem"]) for r in records],
            [r["steps"] for r in records],
            show_progress=True,
        )
        splits[name] = (list(records), [r.step_rewards for r in results])
    tune_on = None if args.threshold is not None else (args.tune_on or next(iter(splits)))
    report = evaluate_splits(splits, tune_on=tune_on, threshold=args.threshold)
    plotted = tune_on or next(iter(splits))
    plot_f1_vs_threshold(
        f1_threshold_curve(*splits[plotted]),
        out / "f1_vs_threshold.png",
        chosen_threshold=report["threshold"],
        title=f"Step-error F1 against τ ({plotted})",
    )
    for name, result in report["splits"].items():
        print(f"{name}: {result.describe()}")
    return {"report": report, "skipped": {p: r.skipped for p, r in loaded.items()}, "files": list(loaded)}


def best_of_n(args: EvaluateArguments, scoring: ScoringArguments, computer: Any, out: Path) -> dict[str, Any]:
    problems = read_bon_candidates(args.bon_file)
    scores = None  # without a model: the candidates' own "scores"
    if computer is not None:
        flat = [(p, c["response"]) for p in problems for c in p["candidates"]]
        results = iter(
            computer.score(
                [computer.render_prompt(p["problem"]) for p, _ in flat],
                [response for _, response in flat],
                show_progress=True,
            )
        )
        per_problem = [[next(results) for _ in p["candidates"]] for p in problems]
        scores = {how: [[r.aggregate(how) for r in rs] for rs in per_problem] for how in args.aggregations}
    separator = computer.step_separator if computer is not None else (scoring.step_separator or "\n\n")
    curve = best_of_n_curve(
        list(problems), scores, ns=args.ns, methods=args.methods, step_separator=separator
    )
    plot_best_of_n(curve, out / "best_of_n.png")
    for method, accuracy in curve["accuracy"].items():
        print(
            f"best-of-N {method}: "
            + ", ".join(f"@{n} {100 * a:.1f}" for n, a in zip(curve["ns"], accuracy, strict=True))
        )
    return {"curve": curve, "skipped": {args.bon_file: problems.skipped}}


def main() -> None:
    parser = TrlParser((ScoringArguments, EvaluateArguments))
    scoring, args = parser.parse_args_and_config()
    if not args.process_files and not args.bon_file:
        parser.error("give process_files (step-error evaluation) and/or bon_file (best-of-N)")
    if args.process_files and not scoring.model_name_or_path:
        parser.error("process_files need a model (model_name_or_path) to score the steps")
    computer = build_computer(scoring) if scoring.model_name_or_path else None
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results, skipped, files, threshold = {}, {}, [], None
    if args.process_files:
        steps = step_errors(args, scoring, computer, out)
        results["process_errors"] = steps["report"]
        threshold = steps["report"]["threshold"]
        skipped.update(steps["skipped"])
        files += steps["files"]
    if args.bon_file:
        bon = best_of_n(args, scoring, computer, out)
        results["best_of_n"] = bon["curve"]
        skipped.update(bon["skipped"])
        files.append(args.bon_file)
    write_results_json(
        out / "results.json",
        results,
        model=scoring.model_name_or_path or "precomputed scores",
        data_files=files,
        beta=computer.beta if computer is not None else None,
        aggregation=args.aggregations,
        threshold=threshold,
        skipped=skipped,
    )
    print(f"Results: {out / 'results.json'}")


if __name__ == "__main__":
    main()
