"""Score every response of a JSONL (or JSON array) file with a trained implicit PRM.

Input rows hold a prompt (a string, or chat messages) and a response (a string, split on the step separator, or
a list of steps), or instead a `steps` list as for `trl-implicit-prm score`; column names are settings. Output:
the input rows plus `step_rewards`, `q_values`, `outcome_reward` (= the sum), the aggregates `min`, `mean`, `max`,
`last`, and `truncated` / `num_truncated_steps`, as the `score` command writes them; optionally an HTML page
colouring every step and token by its reward.

    python recipes/score.py --model_name_or_path outputs/llama3.1-8b-implicit-prm-ce \
        --input_file responses.jsonl --output_file scored.jsonl --html_file scored.html

Without `html_file` it runs data-parallel under `accelerate launch --num_processes N recipes/score.py ...` and
resumes after a kill (see `trl_implicit_prm.inference.sharding`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from common import ScoringArguments, build_computer, clean_float, read_rows, write_rows
from trl import TrlParser

from trl_implicit_prm.inference.sharding import distributed_context, run_manifest, score_to_file
from trl_implicit_prm.render import save_html


@dataclass
class ScoreFileArguments:
    input_file: str | None = field(
        default=None, metadata={"help": "JSONL or JSON-array file of rows to score."}
    )
    output_file: str | None = field(
        default=None, metadata={"help": "Where to write the scored rows (JSONL)."}
    )
    html_file: str | None = field(default=None, metadata={"help": "Optional HTML page of the step rewards."})
    html_max_rows: int = field(
        default=200, metadata={"help": "Rows shown in the HTML page (the first ones)."}
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Column holding the prompt."})
    response_column: str = field(
        default="response",
        metadata={"help": "Column holding the response (rows without it may have 'steps')."},
    )


def _scored(row: dict[str, Any], r: Any) -> dict[str, Any]:
    """The same keys as `trl-implicit-prm score` (sum = outcome_reward)."""
    return {
        **row,
        "step_rewards": r.step_rewards,
        "q_values": r.q_values,
        "outcome_reward": r.outcome_reward,
        **{how: clean_float(r.aggregate(how)) for how in ("min", "mean", "max", "last")},
        "truncated": r.truncated,
        "num_truncated_steps": r.num_truncated_steps,
    }


def main() -> None:
    parser = TrlParser((ScoringArguments, ScoreFileArguments))
    scoring, files = parser.parse_args_and_config()
    if not files.input_file or not files.output_file:
        parser.error("input_file and output_file are required")
    rows = read_rows(files.input_file)
    responses = []
    for i, row in enumerate(rows):
        response_column = files.response_column if files.response_column in row else "steps"
        if files.prompt_column not in row or response_column not in row:
            parser.error(
                f"{files.input_file}, row {i}: needs {files.prompt_column!r} and {files.response_column!r} "
                f"(or 'steps'), it has {sorted(row)}; set prompt_column / response_column"
            )
        responses.append(row[response_column])
    ctx = distributed_context(
        scoring.device
    )  # under `accelerate launch`: rows sharded, output in input order
    if ctx.world_size > 1 and files.html_file:
        parser.error("html_file needs every result in one process: leave it out under accelerate launch")
    if ctx.world_size > 1 and scoring.device is None:
        scoring.device = ctx.device
    computer = build_computer(scoring)
    prompts = [computer.render_prompt(row[files.prompt_column]) for row in rows]  # as training rendered them
    if not files.html_file:  # resumable: rows already scored by a killed run are skipped
        encoded = computer.encode(prompts, responses)
        score_to_file(
            computer,
            encoded,
            files.output_file,
            lambda i, r: json.dumps(_scored(rows[i], r), ensure_ascii=False, default=str),
            manifest=run_manifest(
                computer,
                files.input_file,
                prompt_column=files.prompt_column,
                response_column=files.response_column,
            ),
            ctx=ctx,
            show_progress=ctx.is_main,
        )
        if ctx.is_main:
            print(
                f"Scored {len(rows)} responses with {computer} ({ctx.world_size} process(es)): {files.output_file}"
            )
        return
    results = computer.score(prompts, responses, show_progress=True)
    write_rows(files.output_file, [_scored(row, r) for row, r in zip(rows, results, strict=True)])
    print(f"Scored {len(rows)} responses with {computer}: {files.output_file}")
    if files.html_file:
        n = files.html_max_rows
        save_html(results[:n], files.html_file, prompts=prompts[:n])
        print(f"Step-reward page: {files.html_file}")


if __name__ == "__main__":
    main()
