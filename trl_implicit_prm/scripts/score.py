"""`recipes/score.py` and `recipes/evaluate.py`: YAML/TRL-style doors to `trl-implicit-prm score`,
`eval-steps` and `eval-bon`.

The recipes take TRL-style keys (`model_name_or_path`, `input_file`, ... in a `--config` YAML or as flags);
this module turns them into the command's flags and runs the command, so that a recipe and the command score,
skip, count and write the same way (one implementation: :mod:`trl_implicit_prm.commands`).

    >>> scoring = ScoringArguments(model_name_or_path="ckpt", step_separator="\\\\n", chat_prompt=False)
    >>> model_flags(scoring, truncation=False)
    ['--model', 'ckpt', '--separator', '\\\\n', '--no-chat-prompt']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ScoringArguments:
    """The scoring model, as the commands' model flags (`--model`, `--ref-model`, ...)."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Trained implicit PRM: checkpoint dir, PEFT adapter dir or hub id."}
    )
    ref_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Reference model. Default: the one recorded in the checkpoint's implicit_prm.json (the "
            "adapter-disabled base for a PEFT adapter)."
        },
    )
    reference_free: bool = field(
        default=False,
        metadata={
            "help": "Score without a reference (r = β·log πθ, paper §5.5.2). Default: the checkpoint's."
        },
    )
    beta: float | None = field(default=None, metadata={"help": "β. Default: the checkpoint's (else 0.05)."})
    step_separator: str | None = field(
        default=None,
        metadata={
            "help": "Step separator of string responses (escapes such as \\n are read). Default: the checkpoint's."
        },
    )
    dtype: str | None = field(
        default=None, metadata={"help": "Weights dtype: 'bfloat16', 'float32' or 'auto'."}
    )
    device: str | None = field(
        default=None, metadata={"help": "'cuda', 'cpu', ... Default: CUDA if available."}
    )
    batch_size: int | None = field(default=None, metadata={"help": "Maximum responses per forward pass."})
    max_length: int | None = field(default=None, metadata={"help": "Longest prompt + response in tokens."})
    truncation: bool = field(
        default=False, metadata={"help": "Cut responses longer than max_length (flagged) instead of failing."}
    )
    chat_prompt: bool | None = field(
        default=None,
        metadata={
            "help": "Render string prompts as one user message with the chat template (true) or as plain text "
            "(false). Default: as in training, from the checkpoint's implicit_prm.json."
        },
    )
    prompt_separator: str | None = field(
        default=None,
        metadata={"help": "Plain-text prompts end with this before the response. Default: the checkpoint's."},
    )
    append_eos: bool | None = field(
        default=None,
        metadata={
            "help": "Append the EOS token to every response. Default: as in training (implicit_prm.json)."
        },
    )


@dataclass
class ScoreFileArguments:
    """What `recipes/score.py` reads and writes, as `trl-implicit-prm score`'s flags."""

    input_file: str | None = field(
        default=None,
        metadata={
            "help": "JSONL or JSON-array rows with 'prompt' and 'response' (a string) or 'steps' (a list)."
        },
    )
    output_file: str | None = field(
        default=None, metadata={"help": "Where to write the scored rows (JSONL)."}
    )
    html_file: str | None = field(default=None, metadata={"help": "Optional HTML page of the step rewards."})
    threshold: float = field(default=0.0, metadata={"help": "In the HTML, mark the first step below this."})
    max_batch_tokens: int | None = field(
        default=None, metadata={"help": "Maximum padded tokens per forward pass."}
    )
    skip_invalid: bool = field(
        default=False, metadata={"help": "Leave malformed rows out (counted) instead of stopping."}
    )


@dataclass
class EvaluateArguments:
    """What `recipes/evaluate.py` evaluates, as `eval-steps` and `eval-bon` flags."""

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
        metadata={"help": "Step-reward aggregations for best-of-N (min: §4.1)."},
    )
    ns: list[int] | None = field(
        default=None, metadata={"help": "Values of N. Default: 1, 2, 4, ... up to all."}
    )
    output_dir: str = field(
        default="eval_results",
        metadata={"help": "Where eval_steps.json, eval_bon.json and their PNG plots go."},
    )


def _flag(name: str, value: object) -> list[str]:
    """`--name value` for a set value, `--name` / `--no-name` for a boolean, nothing for None."""
    if value is None:
        return []
    if isinstance(value, bool):
        return [f"--{name}"] if value else [f"--no-{name}"]
    return [f"--{name}", *(map(str, value) if isinstance(value, list) else [str(value)])]


def model_flags(args: ScoringArguments, truncation: bool) -> list[str]:
    """The commands' model flags for `args` (`--truncation` only where the command has it)."""
    flags = [
        *_flag("model", args.model_name_or_path),
        *_flag("ref-model", args.ref_model_name_or_path),
        *(["--reference-free"] if args.reference_free else []),
        *_flag("beta", args.beta),
        *_flag("separator", args.step_separator),
        *_flag("chat-prompt", args.chat_prompt),
        *_flag("prompt-separator", args.prompt_separator),
        *_flag("append-eos", args.append_eos),
        *_flag("batch-size", args.batch_size),
        *_flag("dtype", args.dtype),
        *_flag("device", args.device),
        *_flag("max-length", args.max_length),
    ]
    return flags + (["--truncation"] if truncation and args.truncation else [])


def _run_command(argv: list[str]) -> None:
    """Run a `trl-implicit-prm` command; a non-zero status (a user error, printed) ends the script with it."""
    from trl_implicit_prm.cli import main

    status = main(argv)
    if status:
        raise SystemExit(status)


def score_main(argv: Sequence[str] | None = None) -> None:
    """`recipes/score.py`: `trl-implicit-prm score` with TRL-style keys (or a `--config` YAML of them)."""
    from trl import TrlParser

    parser = TrlParser((ScoringArguments, ScoreFileArguments))
    scoring, files = parser.parse_args_and_config(argv)
    if not files.input_file or not files.output_file:
        parser.error("input_file and output_file are required")
    _run_command(
        [
            "score",
            *model_flags(scoring, truncation=True),
            *_flag("input", files.input_file),
            *_flag("output", files.output_file),
            *_flag("html", files.html_file),
            *_flag("threshold", files.threshold),
            *_flag("max-batch-tokens", files.max_batch_tokens),
            *(["--skip-invalid"] if files.skip_invalid else []),
        ]
    )


def evaluate_main(argv: Sequence[str] | None = None) -> None:
    """`recipes/evaluate.py`: `eval-steps` on `process_files` and/or `eval-bon` on `bon_file`, with TRL-style
    keys; results and plots in `output_dir` (eval_steps.json, f1_vs_threshold.png, eval_bon.json,
    best_of_n.png).
    """
    from trl import TrlParser

    parser = TrlParser((ScoringArguments, EvaluateArguments))
    scoring, args = parser.parse_args_and_config(argv)
    if not args.process_files and not args.bon_file:
        parser.error("give process_files (step-error evaluation) and/or bon_file (best-of-N)")
    if not scoring.model_name_or_path:
        parser.error(
            "model_name_or_path is required (the PRM that scores the steps); best-of-N from the candidates' "
            "precomputed scores is best_of_n_curve(read_bon_candidates(path)) in Python"
        )
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.process_files:
        _run_command(
            [
                "eval-steps",
                *model_flags(scoring, truncation=False),
                *_flag("data", args.process_files),
                *_flag("tune-on", args.tune_on),
                *_flag("threshold", args.threshold),
                *_flag("output", out / "eval_steps.json"),
                *_flag("plot", out / "f1_vs_threshold.png"),
            ]
        )
    if args.bon_file:
        _run_command(
            [
                "eval-bon",
                *model_flags(scoring, truncation=True),
                *_flag("data", args.bon_file),
                *_flag("aggregations", args.aggregations),
                *_flag("ns", args.ns),
                *_flag("output", out / "eval_bon.json"),
                *_flag("plot", out / "best_of_n.png"),
            ]
        )
