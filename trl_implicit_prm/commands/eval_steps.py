"""`trl-implicit-prm eval-steps`: step-error localization in the ProcessBench protocol.

Each data file holds ProcessBench records (`problem`, `steps`, `label` = index of the earliest wrong step or -1),
one split per file. The PRM predicts the first step whose score falls below a threshold; the threshold is tuned
on `--tune-on` (a split name or file) and reused on the others, and the tuned split's own result is labelled
"oracle threshold". Malformed rows are reported with their line numbers, counted, and left out.

Example: `trl-implicit-prm eval-steps --model ckpt/ --data gsm8k.jsonl math.jsonl --tune-on gsm8k
--output steps.json --plot f1.png`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trl_implicit_prm.commands._models import add_model_arguments, computer_from_args
from trl_implicit_prm.evaluation.prm_scores import score_process_records

NAME = "eval-steps"
HELP = "step-error F1 (ProcessBench protocol) of a PRM on one or more split files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--data", nargs="+", required=True, type=Path, help="ProcessBench JSONL/JSON files, one per split")
    parser.add_argument("--tune-on", default=None,
                        help="split (file stem or path) to tune the threshold on; default: the first file")
    parser.add_argument("--threshold", type=float, default=None, help="use this threshold instead of tuning")
    parser.add_argument("--score", choices=["step", "q-sigmoid"], default="step",
                        help="per-step score: the step reward, or sigmoid of the cumulative q at the step's end")
    parser.add_argument("--output", type=Path, default=Path("eval_steps.json"), help="results JSON")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of F1 against the threshold (tuned split)")


def _split_name(path: Path, stems: list[str]) -> str:
    """A split is named by its file stem, or by its path when two files share a stem."""
    return path.stem if stems.count(path.stem) == 1 else str(path)


def run(args: argparse.Namespace) -> int:
    from trl_implicit_prm.evaluation import (
        evaluate_splits,
        f1_threshold_curve,
        plot_f1_vs_threshold,
        read_process_records,
        write_results_json,
    )

    missing = [str(p) for p in args.data if not p.is_file()]
    if missing:
        print(f"--data: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    stems = [p.stem for p in args.data]
    names = [_split_name(p, stems) for p in args.data]
    tune_on = args.tune_on if args.tune_on is not None else names[0]
    if args.threshold is None and tune_on not in names:
        print(f"--tune-on {tune_on!r} is none of the splits {names}", file=sys.stderr)
        return 2
    prc = computer_from_args(args)
    splits, skipped = {}, {}
    for name, path in zip(names, args.data, strict=True):
        loaded = read_process_records(path)
        skipped[path] = loaded.skipped  # line numbers are per file
        records = list(loaded.records)
        splits[name] = (records, score_process_records(prc, records, args.score))
    result = evaluate_splits(splits, tune_on=None if args.threshold is not None else tune_on,
                             threshold=args.threshold)
    print(f"{'split':<24}{'acc. erroneous':>16}{'acc. correct':>14}{'F1':>8}")
    for name, res in result["splits"].items():
        tag = "  (oracle threshold)" if res.oracle else ""
        print(f"{name:<24}{100 * res.acc_erroneous:>16.1f}{100 * res.acc_correct:>14.1f}{100 * res.f1:>8.1f}{tag}")
    print(f"threshold {result['threshold']:.4g}; mean F1 {100 * result['mean_f1']:.1f}; skipped rows {sum(map(len, skipped.values()))}")
    if args.plot is not None:
        records, scores = splits[tune_on if tune_on in splits else names[0]]
        plot_f1_vs_threshold(f1_threshold_curve(records, scores), args.plot, chosen_threshold=result["threshold"])
    payload = {"splits": {k: v.to_dict() for k, v in result["splits"].items()}, "mean_f1": result["mean_f1"],
               "mean_f1_held_out": result.get("mean_f1_held_out"), "tuned_on": result.get("tuned_on"),
               "score": args.score}
    write_results_json(args.output, payload, model=args.model, data_files=list(args.data), beta=prc.beta,
                       aggregation=args.score, threshold=result["threshold"], skipped=skipped)
    print(f"results written to {args.output}")
    return 0
