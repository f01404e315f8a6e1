"""Converters from public PRM datasets to the library's formats, each reporting what it left out and why.

| source                       | converter                  | output                                        |
|------------------------------|----------------------------|-----------------------------------------------|
| Math-Shepherd (`ки` tags)    | :func:`convert_math_shepherd` | `stepwise` rows, or `rollouts` (outcome = last step's label) |
| PRM800K (phase 1 and 2)      | :func:`convert_prm800k`    | `stepwise` rows of the labelled trajectory     |
| ProcessBench                 | :func:`convert_processbench` | evaluation records, or `stepwise` rows        |
| rollouts files               | :func:`convert_rollouts`   | `rollouts` rows (columns renamed, validated)  |

Every converter takes an iterable of source rows (dicts) and returns a :class:`Conversion`: the output rows and
one :class:`DroppedRow` per source row it left out, with the row's 0-based index and the reason. Nothing is
dropped silently. :func:`read_source` reads a JSONL, JSON, Parquet or CSV file, or a `datasets` folder
(`save_to_disk`), into such rows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .formats import DataFormatError, check_label, validate_row
from .jsonl import read_json_rows

__all__ = [
    "SOURCES",
    "Conversion",
    "DroppedRow",
    "convert_math_shepherd",
    "convert_prm800k",
    "convert_processbench",
    "convert_rollouts",
    "read_source",
]

SOURCES = ("math-shepherd", "prm800k", "processbench", "rollouts")

MATH_SHEPHERD_TAG = "ки"
PRM800K_USABLE_FINISH = ("solution", "found_error")
PROCESSBENCH_COLUMNS = ("id", "generator", "problem", "steps", "final_answer_correct", "label")


@dataclass(frozen=True)
class DroppedRow:
    """A source row that was left out: its 0-based index in the input and why."""

    row: int
    reason: str


@dataclass
class Conversion:
    """The output rows of a conversion and every source row that was left out."""

    source: str
    kind: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[DroppedRow] = field(default_factory=list)
    n_input: int = 0

    def summary(self) -> str:
        """One line, e.g. `math-shepherd -> stepwise: 3 of 4 rows converted, 1 left out`."""
        return (
            f"{self.source} -> {self.kind}: {self.n_input - len(self.dropped)} of {self.n_input} rows converted "
            f"({len(self.rows)} output rows), {len(self.dropped)} left out"
        )


def _mapping(row: Any, index: int, conversion: Conversion) -> bool:
    if isinstance(row, Mapping):
        return True
    conversion.dropped.append(DroppedRow(index, f"expected an object, got {type(row).__name__}"))
    return False


# --------------------------------------------------------------------------------------------- Math-Shepherd
def _math_shepherd_row(row: Mapping[str, Any], tag: str) -> tuple[str, list[str], list[bool]]:
    """(question, steps without the tag, step labels) of one Math-Shepherd row; ValueError says what is wrong."""
    text, marked = row.get("input"), row.get("label")
    if not isinstance(text, str) or not isinstance(marked, str):
        raise ValueError(
            f"'input' and 'label' must be strings, got {type(text).__name__} and {type(marked).__name__}"
        )
    parts = text.split(tag)
    n_tags = len(parts) - 1
    if n_tags == 0:
        raise ValueError(f"'input' has no step tag {tag!r}")
    # 'label' is 'input' with each tag replaced by '+' or '-': walk both texts together.
    labels, pos = [], 0
    for k, part in enumerate(parts):
        if not marked.startswith(part, pos):
            break
        pos += len(part)
        if k == n_tags:
            break
        mark = marked[pos : pos + 1]
        if mark not in ("+", "-"):
            break
        labels.append(mark == "+")
        pos += 1
    if len(labels) != n_tags or pos != len(marked):
        n_marks = marked.count(" +") + marked.count(" -")
        raise ValueError(
            f"annotation error: 'input' has {n_tags} step tags {tag!r} but 'label' does not match it with "
            f"'+'/'-' in their places (it differs from step {len(labels) + 1} on; about {n_marks} marks found)"
        )
    if parts[-1].strip():
        raise ValueError(f"text after the last step tag: {parts[-1].strip()[:40]!r}")
    head = parts[0]
    start = head.find("Step 1:")
    if start < 0:
        raise ValueError("no 'Step 1:' in 'input': cannot tell the question from the first step")
    question = head[:start].strip()
    if not question:
        raise ValueError("empty question before 'Step 1:'")
    steps = [head[start:].strip(), *(p.strip() for p in parts[1:-1])]
    empty = [k for k, s in enumerate(steps) if not s]
    if empty:
        raise ValueError(f"step {empty[0]} is empty")
    return question, steps, labels


def convert_math_shepherd(
    rows: Iterable[Mapping[str, Any]],
    to: Literal["stepwise", "rollouts"] = "stepwise",
    *,
    tag: str = MATH_SHEPHERD_TAG,
) -> Conversion:
    """Convert Math-Shepherd rows (`input` with steps ending in the tag ` ки`, `label` = the same text with
    `+`/`-` in place of the tags).

    - `to="stepwise"`: one row per source row, `{"prompt": question, "completions": steps, "labels": [bool]}`;
      the steps are the text between tags, stripped, the first one starting at `Step 1:`;
    - `to="rollouts"`: one row per question (in order of first appearance), `{"prompt", "completions": [steps
      of each response], "correctness": [bool]}`, a response's outcome being its last step's label.

    Rows whose `label` does not match the tags of `input` (Math-Shepherd's known annotation errors: a different
    number of tags), rows without `Step 1:`, or with text after the last tag, are left out, each reported.
    """
    if to not in ("stepwise", "rollouts"):
        raise ValueError(f'to must be "stepwise" or "rollouts", got {to!r}')
    conversion = Conversion("math-shepherd", to)
    grouped: dict[str, dict[str, Any]] = {}
    for index, row in enumerate(rows):
        conversion.n_input += 1
        if not _mapping(row, index, conversion):
            continue
        try:
            question, steps, labels = _math_shepherd_row(row, tag)
        except ValueError as err:
            conversion.dropped.append(DroppedRow(index, str(err)))
            continue
        if to == "stepwise":
            conversion.rows.append({"prompt": question, "completions": steps, "labels": labels})
        else:
            group = grouped.setdefault(question, {"prompt": question, "completions": [], "correctness": []})
            group["completions"].append(steps)
            group["correctness"].append(labels[-1])
    if to == "rollouts":
        conversion.rows = list(grouped.values())
    return conversion


# --------------------------------------------------------------------------------------------------- PRM800K
def _rating(value: Any, neutral: str, k: int) -> bool:
    if value not in (-1, 0, 1) or isinstance(value, bool):
        raise ValueError(f"step {k}: rating must be -1, 0 or 1, got {value!r}")
    if value == 0:
        return neutral == "positive"
    return value == 1


def _prm800k_row(row: Mapping[str, Any], neutral: str) -> tuple[str, list[str], list[bool], bool]:
    """The prompt, steps and labels of a row, and whether the labeller stopped at a wrong step (a partial row)."""
    question, label = row.get("question"), row.get("label")
    if not isinstance(question, Mapping) or not isinstance(question.get("problem"), str):
        raise ValueError("missing 'question.problem' (a string)")
    if not isinstance(label, Mapping) or not isinstance(label.get("steps"), list):
        raise ValueError("missing 'label.steps' (a list)")
    finish = label.get("finish_reason")
    if finish not in PRM800K_USABLE_FINISH:
        raise ValueError(
            f"label.finish_reason is {finish!r}: the labeller did not reach a solution or an error "
            f"(usable: {', '.join(PRM800K_USABLE_FINISH)})"
        )
    steps: list[str] = []
    labels: list[bool] = []
    for k, step in enumerate(label["steps"]):
        completions = step.get("completions") or []
        chosen, human = step.get("chosen_completion"), step.get("human_completion")
        if chosen is not None:
            if not isinstance(chosen, int) or not 0 <= chosen < len(completions):
                raise ValueError(
                    f"step {k}: chosen_completion {chosen!r} is not an index of its {len(completions)} completions"
                )
            picked = completions[chosen]
        elif human is not None:
            picked = human
        else:  # the last step: the labeller stopped here; keep the completion rated -1 (the error found)
            wrong = [c for c in completions if c.get("rating") == -1]
            if not wrong:
                raise ValueError(f"step {k}: no chosen or human completion, and none rated -1")
            picked = wrong[0]
        text = picked.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"step {k}: empty step text")
        steps.append(text)
        rating = picked.get("rating")
        if picked is human and rating is None:
            rating = 1  # a step the labeller wrote themself, after rejecting the model's: correct
        labels.append(_rating(rating, neutral, k))
        if chosen is None and human is None:
            return question["problem"], steps, labels, True
    if not steps:
        raise ValueError("no labelled steps")
    return question["problem"], steps, labels, False


def convert_prm800k(
    rows: Iterable[Mapping[str, Any]], *, neutral: Literal["positive", "negative"]
) -> Conversion:
    """Convert PRM800K rows (phase 1 or phase 2 files) into stepwise rows `{"prompt", "completions", "labels",
    "partial"}`.

    The steps are the labelled trajectory: at each step the `chosen_completion`, else the labeller's
    `human_completion`; at a step with neither (where the labeller stopped), the first completion rated -1, and
    the row is `partial` (the solution went on: the wrong step is tokenized with its separator, without EOS).
    Ratings map 1 -> True, -1 -> False, and the neutral 0 to `neutral` ("positive": True, Qwen's PRM800K
    baseline; "negative": False, TRL's old converter) — there is no default, the choice changes the data.

    Left out, each reported: rows whose `label.finish_reason` is not "solution" or "found_error" (give_up,
    flagged_input, bad_problem: the labelling is incomplete), ratings other than -1/0/1 (e.g. null), empty
    step texts, and steps without a chosen, human or -1-rated completion. A `human_completion` (a step the
    labeller wrote) without a rating counts as correct (rating 1).
    """
    if neutral not in ("positive", "negative"):
        raise ValueError(
            f'neutral must be "positive" or "negative" (how to read a rating of 0), got {neutral!r}'
        )
    conversion = Conversion("prm800k", "stepwise")
    for index, row in enumerate(rows):
        conversion.n_input += 1
        if not _mapping(row, index, conversion):
            continue
        try:
            problem, steps, labels, partial = _prm800k_row(row, neutral)
        except (ValueError, AttributeError) as err:
            conversion.dropped.append(DroppedRow(index, str(err)))
            continue
        conversion.rows.append(
            {"prompt": problem, "completions": steps, "labels": labels, "partial": partial}
        )
    return conversion


# ---------------------------------------------------------------------------------------------- ProcessBench
def _processbench_row(row: Mapping[str, Any]) -> None:
    missing = [c for c in ("problem", "steps", "label") if c not in row]
    if missing:
        raise ValueError(f"missing {', '.join(repr(c) for c in missing)} (columns: {sorted(row)})")
    steps, label = row["steps"], row["label"]
    if not isinstance(row["problem"], str) or not row["problem"].strip():
        raise ValueError("'problem' must be a non-empty string")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s.strip() for s in steps):
        raise ValueError("'steps' must be a non-empty list of non-empty strings")
    if isinstance(label, bool) or not isinstance(label, int) or not -1 <= label < len(steps):
        raise ValueError(f"'label' must be -1 or a step index in [0, {len(steps)}), got {label!r}")
    correct = row.get("final_answer_correct")
    if label == -1 and correct is False:
        raise ValueError("label -1 (no wrong step) but final_answer_correct is false")


def convert_processbench(
    rows: Iterable[Mapping[str, Any]], to: Literal["records", "stepwise"] = "records"
) -> Conversion:
    """Convert ProcessBench rows (`id`, `generator`, `problem`, `steps`, `final_answer_correct`, `label` = index
    of the first wrong step or -1).

    - `to="records"`: evaluation records for `eval-steps` / `eval-processbench`: the row's own keys, checked;
    - `to="stepwise"`: `{"prompt": problem, "completions": steps, "labels": [bool]}` for a trainer's eval set:
      the steps before `label` are True, the step at `label` and every later one False (the protocol reads only
      the first False; steps after the first error are not verified, so do not train on these labels); with
      label -1 every step is True. `id` is kept.

    Rows with a missing column, a label outside [-1, len(steps)), an empty step, or label -1 with
    `final_answer_correct` false are left out, each reported.
    """
    if to not in ("records", "stepwise"):
        raise ValueError(f'to must be "records" or "stepwise", got {to!r}')
    conversion = Conversion("processbench", to)
    for index, row in enumerate(rows):
        conversion.n_input += 1
        if not _mapping(row, index, conversion):
            continue
        try:
            _processbench_row(row)
        except ValueError as err:
            conversion.dropped.append(DroppedRow(index, str(err)))
            continue
        if to == "records":
            conversion.rows.append(dict(row))
            continue
        label, steps = row["label"], list(row["steps"])
        first_wrong = len(steps) if label == -1 else label
        out = {
            "prompt": row["problem"],
            "completions": steps,
            "labels": [k < first_wrong for k in range(len(steps))],
        }
        if "id" in row:
            out["id"] = row["id"]
        conversion.rows.append(out)
    return conversion


# -------------------------------------------------------------------------------------------------- rollouts
def convert_rollouts(
    rows: Iterable[Mapping[str, Any]],
    *,
    prompt_column: str = "prompt",
    completions_column: str = "completions",
    correctness_column: str = "correctness",
    step_separator: str = "\n\n",
) -> Conversion:
    """Normalise rollouts rows (one prompt, several completions, 0/1 or soft correctness) to the `rollouts`
    format: `{"prompt", "completions", "correctness": [float]}`, columns renamed from the given names.

    Rows that fail the rollouts validation (see :func:`~trl_implicit_prm.data.validate_row`) are left out, each
    reported with the validation message.
    """
    conversion = Conversion("rollouts", "rollouts")
    for index, row in enumerate(rows):
        conversion.n_input += 1
        if not _mapping(row, index, conversion):
            continue
        names = {
            "prompt": prompt_column,
            "completions": completions_column,
            "correctness": correctness_column,
        }
        missing = [name for name in names.values() if name not in row]
        if missing:
            conversion.dropped.append(
                DroppedRow(index, f"missing column(s) {missing} (columns: {sorted(row)})")
            )
            continue
        out = {key: row[name] for key, name in names.items()}
        try:
            validate_row(out, "rollouts", index, step_separator=step_separator)
            out["correctness"] = [
                check_label(c, "correctness", index, i) for i, c in enumerate(out["correctness"])
            ]
        except DataFormatError as err:
            conversion.dropped.append(DroppedRow(index, str(err)))
            continue
        out["completions"] = list(out["completions"])
        conversion.rows.append(out)
    return conversion


# ------------------------------------------------------------------------------------------------- reading
def read_source(path: str | os.PathLike, split: str | None = None) -> list[dict[str, Any]]:
    """Rows of a JSONL / JSON (array or JSON lines) / Parquet / CSV file, or of a `datasets` folder.

    A folder written by `Dataset.save_to_disk` is loaded as is; one written by `DatasetDict.save_to_disk`
    needs `split`. Errors name the file and the line.
    """
    path = Path(path)
    if path.is_dir():
        from datasets import DatasetDict, load_from_disk

        try:
            loaded = load_from_disk(str(path))
        except FileNotFoundError as err:
            raise ValueError(f"{path}: not a folder written by Dataset.save_to_disk ({err})") from None
        if isinstance(loaded, DatasetDict):
            if split is None or split not in loaded:
                raise ValueError(f"{path} holds the splits {sorted(loaded)}: pass split=<one of them>")
            loaded = loaded[split]
        return [dict(r) for r in loaded]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".csv"):
        from datasets import Dataset

        reader = Dataset.from_parquet if suffix == ".parquet" else Dataset.from_csv
        return [dict(r) for r in reader(str(path))]
    if suffix not in (".json", ".jsonl"):
        raise ValueError(
            f"{path}: unknown file type {suffix!r}; expected .jsonl, .json, .parquet, .csv or a folder"
        )
    read = read_json_rows(path)  # the package's one JSON/JSONL reader: UTF-8, no NaN, no lone surrogate
    if read.bad:
        where = "" if read.unit == "line" else "item "
        raise ValueError(f"{path}:{where}{read.bad[0].number}: {read.bad[0].reason}")
    return [row for _, row in read.rows]


def write_jsonl(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write rows as JSON lines (UTF-8, non-ASCII kept)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return out
