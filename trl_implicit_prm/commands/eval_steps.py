"""`trl-implicit-prm eval-steps`: step-error localization in the ProcessBench protocol.

Each data file holds ProcessBench records (`problem`, `steps`, `label` = index of the earliest wrong step or -1),
one split per file. The PRM predicts the first step whose score falls below a threshold; the threshold is tuned
on `--tune-on` (a split name or file) and reused on the others, and the tuned split's own result is labelled
"oracle threshold" (the others: "threshold tuned on <split>"); the summary's mean F1 is over the held-out
splits only. All data is read and checked before the model is loaded: malformed rows (invalid UTF-8 or JSON,
schema errors), records with an empty or whitespace-only step and records longer than `--max-length` are
left out, counted per file with their line numbers, printed and recorded in the results JSON. A split left
with no erroneous or no correct record (F1 is undefined) is refused with a message.

Example: `trl-implicit-prm eval-steps --model ckpt/ --data gsm8k.jsonl math.jsonl --tune-on gsm8k
--output steps.json --plot f1.png`
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from trl_implicit_prm.commands._errors import CommandError
from trl_implicit_prm.commands._models import (
    Preflight,
    add_model_arguments,
    add_score_argument,
    computer_from_args,
    finite_float,
    positive_int,
    preflight,
)
from trl_implicit_prm.evaluation.prm_scores import score_process_records

NAME = "eval-steps"
HELP = "step-error F1 (ProcessBench protocol) of a PRM on one or more split files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `eval-steps` command's arguments to `parser`."""
    add_model_arguments(parser)
    parser.add_argument(
        "--data",
        nargs="+",
        required=True,
        help="ProcessBench JSONL/JSON files, one per split, as PATH (named by its stem) or NAME=PATH",
    )
    parser.add_argument(
        "--tune-on",
        default=None,
        help="split (file stem or path) to tune the threshold on; default: the first file",
    )
    parser.add_argument(
        "--threshold", type=finite_float, default=None, help="use this threshold instead of tuning"
    )
    add_score_argument(parser)
    parser.add_argument(
        "--max-length",
        type=positive_int,
        default=None,
        help="token limit per problem + steps (default: the model's context); longer records are "
        "left out and counted",
    )
    parser.add_argument("--output", type=Path, default=Path("eval_steps.json"), help="results JSON")
    parser.add_argument(
        "--plot", type=Path, default=None, help="PNG of F1 against the threshold (tuned split)"
    )


def named_files(items: list[str]) -> tuple[list[str], list[Path]]:
    """Split names and paths of `--data` items: NAME=PATH, or PATH named by its file stem (by its path when two
    files share a stem). An item that is an existing file is a PATH even if it holds '='.
    """
    given = [
        item.partition("=")[::2] if "=" in item and not Path(item).is_file() else ("", item) for item in items
    ]
    paths = [Path(path) for _, path in given]
    stems = [p.stem for p in paths]
    names = [
        name or (p.stem if stems.count(p.stem) == 1 else str(p))
        for (name, _), p in zip(given, paths, strict=True)
    ]
    doubled = sorted({name for name in names if names.count(name) > 1})
    if doubled:
        raise CommandError(
            f"--data: two splits are named {doubled}; give them as NAME=PATH with distinct names"
        )
    return names, paths


def screen_records(loaded: Any, pre: Preflight) -> tuple[list[dict[str, Any]], list[Any]]:
    """The records the PRM can score, and a :class:`SkippedRow` (with its line) for each one it cannot:
    an empty or whitespace-only step, a problem that is not text, or more tokens than the length limit.
    Records without steps are kept (the protocol predicts -1 for them).
    """
    from trl_implicit_prm.commands._validate import content_problem, encode_checked
    from trl_implicit_prm.evaluation import SkippedRow

    kept, skipped = [], []
    for line, record in zip(loaded.lines, loaded.records, strict=True):
        problem = None
        if record["steps"]:
            problem = content_problem(record["problem"], "problem", record["steps"], "steps")
            if problem is None:
                _, problem = encode_checked(
                    pre, record["problem"], record["steps"], truncation=False, truncation_flag=False
                )
        if problem is None:
            kept.append(record)
        else:
            skipped.append(SkippedRow(line, problem))
    return kept, skipped


def check_classes(
    splits: dict[str, list[dict[str, Any]]], paths: dict[str, Path], tune_on: str | None
) -> None:
    """Refuse a split without an erroneous or without a correct record: its F1 is undefined."""
    problems = []
    for name, records in splits.items():
        n_err = sum(r["label"] != -1 for r in records)
        n_corr = len(records) - n_err
        if n_err == 0 or n_corr == 0:
            what = "no records left" if not records else f"{n_err} erroneous and {n_corr} correct records"
            problems.append(f"split {name!r} ({paths[name]}) has {what} after skipping invalid ones")
    if problems:
        hint = " (or pass --threshold instead of tuning)" if tune_on is not None else ""
        raise CommandError(
            "; ".join(problems) + ": step-error F1 needs both erroneous (label >= 0) and correct "
            f"(label -1) records in every split; remove such files from --data{hint}"
        )


def _load_splits(args: argparse.Namespace, names: list[str], pre: Preflight):
    from trl_implicit_prm.evaluation import read_process_records

    records, skipped = {}, {}
    for name, path in zip(names, args.data, strict=True):
        loaded = read_process_records(path)
        kept, unscorable = screen_records(loaded, pre)
        skipped[path] = sorted([*loaded.skipped, *unscorable], key=lambda row: row.line)  # lines are per file
        records[name] = kept
    return records, skipped


def _print_table(result: dict[str, Any]) -> None:
    tuned_on = result.get("tuned_on")
    print(f"{'split':<24}{'acc. erroneous':>16}{'acc. correct':>14}{'F1':>8}")
    for name, res in result["splits"].items():
        if res.oracle:
            tag = "  (oracle threshold: tuned on this split)"
        elif tuned_on is not None:
            tag = f"  (threshold tuned on {tuned_on})"
        else:
            tag = ""
        print(
            f"{name:<24}{100 * res.acc_erroneous:>16.1f}{100 * res.acc_correct:>14.1f}{100 * res.f1:>8.1f}{tag}"
        )
    held_out = [name for name, res in result["splits"].items() if not res.oracle]
    if tuned_on is None:
        summary = f"threshold {result['threshold']:.4g} (given); mean F1 {100 * result['mean_f1']:.1f}"
    elif held_out:
        summary = (
            f"threshold {result['threshold']:.4g} (tuned on {tuned_on}); held-out mean F1 "
            f"{100 * result['mean_f1_held_out']:.1f} over {len(held_out)} split(s)"
        )
    else:
        summary = (
            f"threshold {result['threshold']:.4g} (tuned on {tuned_on}); no held-out split: the F1 above "
            "is an oracle one"
        )
    print(summary)


def run(args: argparse.Namespace) -> int:
    """Run the `eval-steps` command; return the exit status."""
    from trl_implicit_prm.commands._validate import print_skipped
    from trl_implicit_prm.evaluation import (
        evaluate_splits,
        f1_threshold_curve,
        plot_f1_vs_threshold,
        write_results_json,
    )

    names, args.data = named_files(args.data)
    missing = [str(p) for p in args.data if not p.is_file()]
    if missing:
        raise CommandError(f"--data: no such file: {', '.join(missing)}")
    tune_on = args.tune_on if args.tune_on is not None else names[0]
    if args.threshold is None and tune_on not in names:
        raise CommandError(f"--tune-on {tune_on!r} is none of the splits {names}")
    tuned = None if args.threshold is not None else tune_on
    pre = preflight(args)  # tokenizer and length limit, no weights
    records, skipped = _load_splits(args, names, pre)
    for path, rows in skipped.items():
        print_skipped(path, rows)
    check_classes(records, dict(zip(names, args.data, strict=True)), tuned)
    prc = computer_from_args(args, pre)
    splits = {name: (rows, score_process_records(prc, rows, args.score)) for name, rows in records.items()}
    result = evaluate_splits(splits, tune_on=tuned, threshold=args.threshold)
    _print_table(result)
    n_skipped = sum(map(len, skipped.values()))
    print(f"skipped rows {n_skipped}")
    if args.plot is not None:
        rows, scores = splits[tune_on if tune_on in splits else names[0]]
        plot_f1_vs_threshold(
            f1_threshold_curve(rows, scores), args.plot, chosen_threshold=result["threshold"]
        )
    split_dicts = {}
    for name, res in result["splits"].items():
        split_dicts[name] = res.to_dict()
        if tuned is not None and not res.oracle:
            split_dicts[name]["threshold_kind"] = f"threshold tuned on {tuned}"
    payload = {
        "splits": split_dicts,
        "mean_f1_held_out": result.get("mean_f1_held_out"),
        "tuned_on": result.get("tuned_on"),
        "score": args.score,
    }
    if tuned is None:  # a given threshold: every split is held out
        payload["mean_f1"] = result["mean_f1"]
    write_results_json(
        args.output,
        payload,
        model=args.model,
        data_files=list(args.data),
        beta=prc.beta,
        aggregation=args.score,
        threshold=result["threshold"],
        skipped=skipped,
    )
    print(f"results written to {args.output}")
    return 0
