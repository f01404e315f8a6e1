"""`trl-implicit-prm search`: PRM-guided search at test time (best-of-N, beam search, DVTS, early rejection).

Input: one JSON object per line with `prompt` (a string, rendered as the PRM's training rendered prompts, or a
list of chat messages); other keys (an `id`, a reference answer) are copied to the output. The policy
(`--policy`) writes the steps, one round at a time, with transformers `generate`; the PRM (`--model`, with its
reference) scores every prefix incrementally with both models' KV caches. Output: the input rows plus the chosen
`response`, its `steps`, `step_rewards` and `score`, whether it `finished` (EOS), `generated_tokens` and
`scored_tokens` (tokens read by each PRM model), and with `--with-candidates` every final candidate.

Example: `trl-implicit-prm search --model prm/ --policy base/ --input problems.jsonl --output found.jsonl
--method beam --n 16 --beam-width 4`
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from trl_implicit_prm.commands._errors import CommandError
from trl_implicit_prm.commands._models import (
    add_model_arguments,
    computer_from_args,
    finite_float,
    positive_int,
    preflight,
)
from trl_implicit_prm.rewards import AGGREGATIONS

NAME = "search"
HELP = "PRM-guided search (best-of-N, beam, DVTS, early rejection) with incremental scoring; JSONL in and out"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `search` command's arguments to `parser`."""
    from trl_implicit_prm.search import METHODS
    from trl_implicit_prm.search.driver import RANKINGS

    add_model_arguments(parser)
    parser.add_argument(
        "--policy", required=True, help="the model that writes the steps (directory or hub id)"
    )
    parser.add_argument("--input", required=True, type=Path, help="JSONL rows with a 'prompt'")
    parser.add_argument("--output", required=True, type=Path, help="JSONL file to write the results to")
    parser.add_argument("--method", choices=METHODS, default="beam", help="search strategy (default beam)")
    parser.add_argument("--n", type=positive_int, default=16, help="candidates or beams per problem (16)")
    parser.add_argument(
        "--beam-width", type=positive_int, default=4, help="beam/dvts: forks per kept beam (4)"
    )
    parser.add_argument("--max-steps", type=positive_int, default=8, help="steps per candidate at most (8)")
    parser.add_argument(
        "--max-step-tokens", type=positive_int, default=64, help="tokens per step at most (64)"
    )
    parser.add_argument("--aggregation", choices=AGGREGATIONS, default="min", help="ranking score (min)")
    parser.add_argument(
        "--reject-after-tokens", type=positive_int, default=16, help="early: token budget (16)"
    )
    parser.add_argument(
        "--keep-fraction", type=finite_float, default=0.25, help="early: fraction kept (0.25)"
    )
    parser.add_argument("--reject-by", choices=RANKINGS, default="q", help="early: rejection score (q)")
    parser.add_argument("--reject-threshold", type=finite_float, default=None, help="early: drop below this")
    parser.add_argument("--temperature", type=finite_float, default=1.0, help="sampling temperature (1.0)")
    parser.add_argument("--top-p", type=finite_float, default=1.0, help="nucleus sampling (1.0)")
    parser.add_argument(
        "--problems-per-round", type=positive_int, default=8, help="problems searched together"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (0)")
    parser.add_argument("--with-candidates", action="store_true", help="also write every final candidate")


def _config(args: argparse.Namespace) -> Any:
    from trl_implicit_prm.search import SearchConfig

    if not 0 < args.keep_fraction <= 1:
        raise CommandError(f"--keep-fraction must be in (0, 1], got {args.keep_fraction}")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        raise CommandError("--temperature must be >= 0 and --top-p in (0, 1]")
    if args.method in ("beam", "dvts") and args.n % args.beam_width:
        raise CommandError(
            f"--n {args.n} must be a multiple of --beam-width {args.beam_width} for --method {args.method}"
        )
    try:
        return SearchConfig(
            method=args.method,
            n=args.n,
            beam_width=args.beam_width,
            max_steps=args.max_steps,
            aggregation=args.aggregation,
            reject_after_tokens=args.reject_after_tokens,
            keep_fraction=args.keep_fraction,
            reject_by=args.reject_by,
            reject_threshold=args.reject_threshold,
        )
    except ValueError as err:
        raise CommandError(
            str(err).replace("beam_width", "--beam-width").replace("n must", "--n must")
        ) from None


def _read(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The rows with their line numbers; every bad row is reported at once (a CommandError)."""
    from trl_implicit_prm.commands._validate import prompt_problem
    from trl_implicit_prm.data.jsonl import read_json_rows

    if not path.is_file():
        raise CommandError(f"--input: {path} does not exist")
    read = read_json_rows(path)
    errors = [f"{path}:{bad.number}: {bad.reason}" for bad in read.bad]
    rows = []
    for number, row in read.rows:
        if not isinstance(row, dict) or "prompt" not in row:
            errors.append(f"{path}:{number}: expected a JSON object with a 'prompt'")
            continue
        problem = prompt_problem(row["prompt"], "prompt")
        if problem:
            errors.append(f"{path}:{number}: {problem}")
        else:
            rows.append((number, row))
    if errors:
        raise CommandError(f"{len(errors)} invalid row(s), nothing searched:\n" + "\n".join(errors[:20]))
    if not rows:
        raise CommandError(f"--input: {path} has no rows")
    return rows


def _generator(args: argparse.Namespace, prm: Any) -> Any:
    from transformers import AutoModelForCausalLM

    from trl_implicit_prm.inference.loading import resolve_dtype
    from trl_implicit_prm.modeling import load_tokenizer
    from trl_implicit_prm.search import TransformersStepGenerator

    try:
        tokenizer = load_tokenizer(args.policy)
        policy = AutoModelForCausalLM.from_pretrained(
            args.policy, dtype=resolve_dtype(args.dtype) if args.dtype else "auto"
        )
    except (OSError, ValueError) as err:
        raise CommandError(f"--policy {args.policy!r}: {err}") from None
    policy.to(prm.device)

    def render(prompt: Any) -> str:  # what the PRM scores is what the policy continues
        rendered = prm.render_prompt(prompt)
        if isinstance(rendered, str):
            return rendered
        return tokenizer.apply_chat_template(rendered, add_generation_prompt=True, tokenize=False)

    return TransformersStepGenerator(
        policy,
        tokenizer,
        separator=prm.step_separator,
        max_step_tokens=args.max_step_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        render=render,
    )


def run(args: argparse.Namespace) -> int:
    """Run the `search` command; return the exit status."""
    import torch
    from tqdm.auto import tqdm

    from trl_implicit_prm.evaluation.records import strict_json
    from trl_implicit_prm.search import IncrementalScorer, run_search

    config = _config(args)
    rows = _read(args.input)
    pre = preflight(args)
    prm = computer_from_args(args, pre)
    if getattr(prm, "kind", None) == "explicit":
        raise CommandError(
            f"--model {args.model} is an explicit PRM (a classifier): search scores growing prefixes "
            "incrementally with an implicit PRM's policy and reference caches; pass an implicit-PRM checkpoint"
        )
    generator = _generator(args, prm)
    torch.manual_seed(args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    totals = {"generated": 0, "scored": 0}
    step = args.problems_per_round
    with (
        args.output.open("w", encoding="utf-8") as f,
        tqdm(total=len(rows), desc="Searching", unit="problem") as bar,
    ):
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            results = run_search(
                [row["prompt"] for _, row in chunk], generator, IncrementalScorer(prm), config
            )
            for (_, row), result in zip(chunk, results, strict=True):
                out = result.to_dict(prm.step_separator)
                if not args.with_candidates:
                    out.pop("candidates")
                clean, _ = strict_json({**row, **out})
                f.write(json.dumps(clean, ensure_ascii=False, allow_nan=False) + "\n")
                totals["generated"] += result.generated_tokens
                totals["scored"] += result.scored_tokens
            bar.update(len(chunk))
    print(
        f"searched {len(rows)} problem(s) with {config.method}: {totals['generated']} tokens generated, "
        f"{totals['scored']} scored; wrote {args.output}"
    )
    return 0
