"""Dataset formats: detection and validation of the four kinds of rows the library accepts.

| kind       | columns                                   | one row describes                                   |
|------------|-------------------------------------------|-----------------------------------------------------|
| `paired`   | `prompt`, `chosen`, `rejected`            | a better and a worse response to one prompt         |
| `unpaired` | `prompt`, `completion`, `label`           | one response with an outcome label                  |
| `rollouts` | `prompt`, `completions`, `correctness`    | several sampled responses, each with an outcome     |
| `stepwise` | `prompt`, `completions`, `labels`         | one response as a list of steps, one label per step |

Optional stepwise column `partial` (bool): the steps begin a longer response (e.g. one cut at its first wrong
step); the last step is then tokenized as inside the whole response (:mod:`.tokenize`), separator kept, no EOS.

Values:

- a prompt is a string or a list of chat messages (`{"role": ..., "content": ...}` dicts);
- a completion (`chosen`, `rejected`, `completion`, an item of rollout `completions`) is a string, a list of
  step strings, or an assistant message (a list holding one `{"role": "assistant", "content": str}` dict);
  a stepwise `completions` is the list of step strings of one response;
- a label (`label`, items of `correctness` and `labels`) is a bool, 0/1, or a float in [0, 1] (soft label).

Steps: a string completion is split on the step separator by :func:`split_steps` (empty or whitespace-only
pieces merge into a neighbouring step, the text is kept exactly); steps given as a list must each contain a
non-whitespace character, or a token of a neighbour could swallow one and a response lose a step reward.

Every error is a :class:`DataFormatError` naming the column, the row, what was found and what was expected.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

__all__ = [
    "FORMATS",
    "OPTIONAL_COLUMNS",
    "DataFormatError",
    "Kind",
    "check_completion",
    "check_label",
    "check_partial",
    "check_prompt",
    "check_steps",
    "detect_format",
    "find_lone_surrogate",
    "is_chat",
    "split_steps",
    "validate_dataset",
    "validate_row",
]

Kind = Literal["paired", "unpaired", "rollouts", "stepwise"]

FORMATS: dict[str, tuple[str, ...]] = {
    "paired": ("prompt", "chosen", "rejected"),
    "unpaired": ("prompt", "completion", "label"),
    "rollouts": ("prompt", "completions", "correctness"),
    "stepwise": ("prompt", "completions", "labels"),
}

# Columns a kind may have besides FORMATS's: validated and used by tokenization, never passed through.
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {"stepwise": ("partial",)}

_LABEL_EXPECTED = "bool, 0/1 or a float in [0, 1]"
_COMPLETION_EXPECTED = (
    "a non-empty string, a list of step strings, or one assistant message "
    "[{'role': 'assistant', 'content': str}]"
)


class DataFormatError(ValueError):
    """A dataset row or column does not match the expected format; the message says where and why."""


def _where(column: str, index: int | None = None, item: int | None = None, step: int | None = None) -> str:
    text = f"column {column!r}"
    if index is not None:
        text += f" row {index}"
    if item is not None:
        text += f", item {item}"
    if step is not None:
        text += f", step {step}"
    return text


def _found(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def _lone_surrogate_at(text: str) -> int | None:
    """The index of the first lone surrogate (U+D800..U+DFFF) in `text`, or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start
    return None


def find_lone_surrogate(value: Any, path: str = "") -> str | None:
    """Where a string inside `value` (nested dicts and lists) holds a lone surrogate, or None.

    JSON's `"\\udcff"` escape decodes to such a character; it is not Unicode text, and tokenizers and UTF-8
    writers fail on it. The place is given as a subscript path from `value`.

    Example:

    ```python
    >>> print(find_lone_surrogate({"steps": ["ok", "bad \\udcff"]}))
    ['steps'][1], character 4 ('\\udcff')
    >>> find_lone_surrogate(["fine", {"a": 1}]) is None
    True

    ```
    """
    if isinstance(value, str):
        at = _lone_surrogate_at(value)
        return None if at is None else f"{path or 'the text'}, character {at} ({value[at]!a})"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and _lone_surrogate_at(key) is not None:
                return f"{path}[{key!a}] (a key)"
            found = find_lone_surrogate(item, f"{path}[{key!r}]")
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = find_lone_surrogate(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _check_text(text: str, where: str) -> None:
    """Refuse a string with a lone surrogate (not valid Unicode), naming where it is."""
    at = _lone_surrogate_at(text)
    if at is not None:
        raise DataFormatError(
            f"{where}: expected Unicode text, got a lone surrogate {text[at]!a} at character {at} "
            "(the data was decoded wrongly or holds a broken '\\u' escape); fix the text"
        )


def _kinds_listing() -> str:
    return "; ".join(f"{kind}: {', '.join(cols)}" for kind, cols in FORMATS.items())


def _check_kind(kind: str) -> None:
    if kind not in FORMATS:
        raise ValueError(f"kind must be one of {list(FORMATS)}, got {kind!r}")


def _columns_of(row_or_columns: Any) -> list[str]:
    if hasattr(row_or_columns, "column_names"):  # datasets.Dataset / IterableDataset
        names = row_or_columns.column_names
        if isinstance(names, Mapping):  # DatasetDict: {split: columns}
            raise TypeError("detect_format takes one split, not a DatasetDict; pass dataset['train']")
        return list(names)
    if isinstance(row_or_columns, Mapping):
        return list(row_or_columns.keys())
    if isinstance(row_or_columns, Iterable) and not isinstance(row_or_columns, str):
        return [str(c) for c in row_or_columns]
    raise TypeError(
        f"expected a row (dict), a list of column names or a Dataset, got {_found(row_or_columns)}"
    )


def _missing_columns_message(columns: Sequence[str], kind: str | None = None) -> str:
    present = set(columns)
    candidates = [kind] if kind is not None else list(FORMATS)
    best = max(len(present & set(FORMATS[k])) for k in candidates)
    closest = [k for k in candidates if len(present & set(FORMATS[k])) == best]
    parts = []
    for k in closest:
        missing = [c for c in FORMATS[k] if c not in present]
        unknown = [c for c in columns if c not in FORMATS[k]]
        close = {col: difflib.get_close_matches(col, unknown, n=1, cutoff=0.6) for col in missing}
        hints = [f"found {m[0]!r}, did you mean {col!r}?" for col, m in close.items() if m]
        missing_text = ", ".join(repr(c) for c in missing)
        parts.append(f"{k} (missing column {missing_text}{'; ' + ' '.join(hints) if hints else ''})")
    return (
        f"columns {sorted(columns)} do not match "
        f"{'the ' + kind + ' format' if kind else 'any dataset format'}: closest: {', '.join(parts)}. "
        f"Accepted kinds and their columns: {_kinds_listing()}"
    )


def detect_format(row_or_columns: Any) -> Kind:
    """Return the kind of a row, a list of column names or a `datasets.Dataset`.

    `rollouts` and `stepwise` share `prompt` and `completions`; `correctness` or `labels` tells them apart.
    Extra columns are allowed. Raises :class:`DataFormatError` when no kind matches (naming the missing
    columns and suggesting close names) or when several kinds match.

    Example:

    ```python
    >>> detect_format({"prompt": "1+1=", "completion": "2", "label": True})
    'unpaired'
    >>> detect_format(["prompt", "completions", "labels"])
    'stepwise'

    ```
    """
    columns = _columns_of(row_or_columns)
    present = set(columns)
    matches = [kind for kind, cols in FORMATS.items() if present.issuperset(cols)]
    if len(matches) == 1:
        return matches[0]  # type: ignore[return-value]
    if matches:
        raise DataFormatError(
            f"columns {sorted(columns)} match several dataset formats ({', '.join(matches)}); "
            "remove the extra columns, or pass the kind to validate_dataset(..., kind=...)"
        )
    raise DataFormatError(_missing_columns_message(columns))


def is_chat(value: Any) -> bool:
    """True when `value` is a list of chat messages (dicts), the conversational form of a prompt/completion.

    Example:

    ```python
    >>> is_chat([{"role": "user", "content": "hi"}]), is_chat("hi")
    (True, False)

    ```
    """
    return isinstance(value, list | tuple) and len(value) > 0 and all(isinstance(m, Mapping) for m in value)


def check_step_separator(step_separator: Any) -> str:
    """The step separator, refused unless it is a non-empty string (the one check, for data, configs, scoring)."""
    if not isinstance(step_separator, str) or not step_separator:
        raise ValueError(f"step_separator must be a non-empty string, got {step_separator!r}")
    return step_separator


def split_steps(text: str, step_separator: str = "\n\n") -> list[str]:
    """Split a response into steps on `step_separator`, keeping the text exactly.

    `step_separator.join(split_steps(text, step_separator)) == text` always holds. Empty or whitespace-only
    pieces (repeated, leading or trailing separators) are merged into the previous step (the next one at the
    start), so every step has a non-whitespace character. Returns `[]` for a whitespace-only text.

    Example:

    ```python
    >>> split_steps("Add 2.\\n\\nGet 5.")
    ['Add 2.', 'Get 5.']
    >>> split_steps("\\n\\nAdd 2.\\n\\n\\n\\nGet 5.\\n\\n")
    ['\\n\\nAdd 2.\\n\\n', 'Get 5.\\n\\n']

    ```
    """
    check_step_separator(step_separator)
    steps: list[str] = []
    pending: str | None = None  # leading whitespace-only pieces, waiting for the first real step
    for piece in text.split(step_separator):
        if piece.strip():
            steps.append(piece if pending is None else pending + step_separator + piece)
            pending = None
        elif steps:
            steps[-1] += step_separator + piece
        else:
            pending = piece if pending is None else pending + step_separator + piece
    return steps


def check_label(value: Any, column: str, index: int | None = None, item: int | None = None) -> float:
    """Validate one label and return it as a float in [0, 1]."""
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, numbers.Integral):
        if value in (0, 1):
            return float(value)
    elif isinstance(value, numbers.Real) and not math.isnan(value) and 0.0 <= value <= 1.0:
        return float(value)
    raise DataFormatError(f"{_where(column, index, item)}: expected {_LABEL_EXPECTED}, got {_found(value)}")


def check_prompt(value: Any, column: str = "prompt", index: int | None = None) -> None:
    """Validate a prompt: a string, or a non-empty list of `{"role": str, "content": str}` messages."""
    if isinstance(value, str):
        _check_text(value, _where(column, index))
        return
    if is_chat(value):
        for m, message in enumerate(value):
            role, content = message.get("role"), message.get("content")
            if not isinstance(role, str) or not isinstance(content, str):
                raise DataFormatError(
                    f"{_where(column, index)}, message {m}: expected {{'role': str, 'content': str}}, "
                    f"got {_found(dict(message))}"
                )
            _check_text(role, f"{_where(column, index)}, message {m} role")
            _check_text(content, f"{_where(column, index)}, message {m} content")
        return
    raise DataFormatError(
        f"{_where(column, index)}: expected a string or a list of chat messages "
        f"[{{'role': ..., 'content': ...}}], got {_found(value)}"
    )


def _check_step(step: Any, column: str, index: int | None, item: int | None, k: int) -> None:
    if not isinstance(step, str):
        raise DataFormatError(f"{_where(column, index, item, k)}: expected a step string, got {_found(step)}")
    if not step.strip():
        what = "empty string" if not step else "whitespace only"
        raise DataFormatError(
            f"{_where(column, index, item, k)}: expected a step with a non-whitespace character, "
            f"got {step!r} ({what}); remove the step or merge it into its neighbour"
        )
    _check_text(step, _where(column, index, item, k))


def check_steps(value: Any, column: str, index: int | None = None, item: int | None = None) -> list[str]:
    """Validate an explicit list of step strings (non-empty, each step with a non-whitespace character); return
    it as a list.
    """
    if not isinstance(value, list | tuple) or not value:
        raise DataFormatError(
            f"{_where(column, index, item)}: expected a non-empty list of step strings, got {_found(value)}"
        )
    for k, step in enumerate(value):
        _check_step(step, column, index, item, k)
    return list(value)


def check_completion(
    value: Any, column: str, index: int | None = None, item: int | None = None, step_separator: str = "\n\n"
) -> list[str]:
    """Validate a completion (a string, a list of step strings or one assistant message) and return its steps.

    The steps are those of :func:`split_steps` (for a message: of its content), split here once: the tokenizers
    render from them rather than splitting again.
    """
    if isinstance(value, str):
        steps = split_steps(value, step_separator)
        if not steps:
            what = "empty string" if not value else "whitespace only"
            raise DataFormatError(
                f"{_where(column, index, item)}: expected a non-empty completion, got {value!r} ({what})"
            )
        _check_text(value, _where(column, index, item))
        return steps
    if is_chat(value):
        message = value[0]
        if (
            len(value) != 1
            or message.get("role") != "assistant"
            or not isinstance(message.get("content"), str)
        ):
            raise DataFormatError(
                f"{_where(column, index, item)}: expected one assistant message "
                f"[{{'role': 'assistant', 'content': str}}], got {_found(list(map(dict, value)))}"
            )
        steps = split_steps(message["content"], step_separator)
        if not steps:
            raise DataFormatError(
                f"{_where(column, index, item)}: expected a non-empty assistant message content, "
                f"got {message['content']!r}"
            )
        _check_text(message["content"], f"{_where(column, index, item)} content")
        return steps
    if isinstance(value, list | tuple) and value:
        return check_steps(value, column, index, item)
    raise DataFormatError(
        f"{_where(column, index, item)}: expected {_COMPLETION_EXPECTED}, got {_found(value)}"
    )


def _check_list(value: Any, column: str, index: int | None, what: str) -> None:
    if not isinstance(value, list | tuple) or not value:
        raise DataFormatError(
            f"{_where(column, index)}: expected a non-empty list of {what}, got {_found(value)}"
        )


def validate_row(
    row: Mapping[str, Any], kind: str, index: int | None = None, *, step_separator: str = "\n\n"
) -> dict[str, Any]:
    """Check that `row` is a valid row of `kind` and return the steps of its completions, split once.

    Raises :class:`DataFormatError` naming the column otherwise; `index` is the row's position in its dataset,
    quoted in error messages. The result maps each completion column to its steps (as :func:`check_completion`
    returns them; for rollouts, one list of steps per completion).

    Example:

    ```python
    >>> validate_row({"prompt": "1+1=", "completion": "Add.\\n\\n2", "label": 1}, "unpaired")
    {'completion': ['Add.', '2']}
    >>> validate_row({"prompt": "1+1=", "completion": "2", "label": "yes"}, "unpaired", index=3)
    Traceback (most recent call last):
    ...
    trl_implicit_prm.data.formats.DataFormatError: column 'label' row 3: expected bool, 0/1 or a float in [0, 1], got 'yes' (str)

    ```
    """
    _check_kind(kind)
    if not isinstance(row, Mapping):
        raise DataFormatError(f"row {index}: expected a dict of columns, got {_found(row)}")
    missing = [c for c in FORMATS[kind] if c not in row]
    if missing:
        where = f"row {index}: " if index is not None else ""
        raise DataFormatError(where + _missing_columns_message(list(row.keys()), kind))
    check_prompt(row["prompt"], "prompt", index)
    if kind in ("paired", "unpaired"):
        columns = ("chosen", "rejected") if kind == "paired" else ("completion",)
        steps = {c: check_completion(row[c], c, index, step_separator=step_separator) for c in columns}
        if kind == "unpaired":
            check_label(row["label"], "label", index)
        return steps
    if kind == "rollouts":
        return {"completions": _check_rollout(row["completions"], row["correctness"], index, step_separator)}
    steps, labels = check_steps(row["completions"], "completions", index), row["labels"]  # stepwise
    _check_list(labels, "labels", index, "step labels")
    _check_one_label_each(labels, "labels", index, len(steps), "step of 'completions'", "steps")
    check_partial(row.get("partial"), index)
    return {"completions": steps}


def check_partial(value: Any, index: int | None = None) -> bool:
    """A stepwise row's optional `partial` flag as a bool; None (the column absent from the row) is False."""
    if value is None or isinstance(value, bool | np.bool_):
        return bool(value)
    raise DataFormatError(
        f"{_where('partial', index)}: expected a bool (steps begin a longer response), got {_found(value)}"
    )


def _check_one_label_each(labels: Any, column: str, index: int | None, n: int, per: str, unit: str) -> None:
    """`labels` (a list) holds `n` labels, one per `per`, and each is a valid label."""
    if len(labels) != n:
        raise DataFormatError(
            f"{_where(column, index)}: expected one label per {per} ({n} {unit}), got {len(labels)} labels"
        )
    for k, label in enumerate(labels):
        check_label(label, column, index, k)


def _check_rollout(
    completions: Any, correctness: Any, index: int | None, step_separator: str
) -> list[list[str]]:
    """A rollout row's completions and labels, one label per completion; the steps of every completion."""
    _check_list(completions, "completions", index, "completions")
    _check_list(correctness, "correctness", index, "labels")
    steps = [
        check_completion(completion, "completions", index, i, step_separator=step_separator)
        for i, completion in enumerate(completions)
    ]
    _check_one_label_each(correctness, "correctness", index, len(completions), "completion", "completions")
    return steps


def validate_dataset(
    dataset: Any, kind: str | None = None, *, step_separator: str = "\n\n", batch_size: int = 1000
) -> Kind:
    """Validate every row of a `datasets.Dataset` (or a list of dicts) and return its kind.

    The kind is detected from the columns when not given. The first bad row raises :class:`DataFormatError`.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"prompt": ["1+1="], "chosen": ["2"], "rejected": ["3"]})
    >>> validate_dataset(ds)
    'paired'

    ```
    """
    if isinstance(dataset, list):
        if kind is None and not dataset:
            raise DataFormatError(
                "cannot detect the format of an empty list of rows; pass validate_dataset(rows, kind=...)"
            )
        kind = kind or detect_format(dataset[0])
        _check_kind(kind)
        for i, row in enumerate(dataset):
            validate_row(row, kind, i, step_separator=step_separator)
        return kind  # type: ignore[return-value]
    kind = kind or detect_format(dataset)
    _check_kind(kind)
    if any(c not in dataset.column_names for c in FORMATS[kind]):
        raise DataFormatError(_missing_columns_message(list(dataset.column_names), kind))
    columns = list(FORMATS[kind]) + [c for c in OPTIONAL_COLUMNS.get(kind, ()) if c in dataset.column_names]
    start = 0
    for batch in dataset.select_columns(columns).iter(batch_size=batch_size):
        n = len(batch[columns[0]])
        for i in range(n):
            validate_row({c: batch[c][i] for c in columns}, kind, start + i, step_separator=step_separator)
        start += n
    return kind  # type: ignore[return-value]
