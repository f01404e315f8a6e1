"""Reading evaluation data (ProcessBench records, best-of-N candidates) and writing results files.

Files are JSONL (one JSON object per line) or a JSON array of objects; the format is decided by content:
a file whose first non-blank character is `[` is a JSON array, anything else is JSONL. Blank JSONL lines
are ignored. Malformed rows (invalid UTF-8 or JSON, `NaN`/`Infinity`, a lone surrogate such as `"\\udcff"` in
any string, or a schema error) are skipped, logged as warnings and returned as :class:`SkippedRow` with their
line number (for a JSON array: the 1-based position of the item), so nothing is dropped without a count.

ProcessBench record schema (other keys, e.g. `id`, `generator`, are kept as they are):

    {"problem": str, "steps": [str, ...], "label": int}     label = earliest wrong step, -1 if none,
                                                             -1 <= label < len(steps)

Best-of-N schema (other keys are kept):

    {"problem": str,
     "reference": str | int | float,          # the reference final answer; "answer" is accepted instead
     "candidates": [                          # or "responses": [str, ...]
         {"response": str | [str, ...],       # the full response, or its steps
          "answer": str | None,               # optional: its final answer; otherwise extracted later
          "scores": {"min": float, ...}},     # optional: precomputed aggregated PRM scores
         ...]}                                # a bare string stands for {"response": <string>}

Rows are returned normalised: `reference` is a string and `candidates` a list of dicts with `response`
and `answer` (None when absent).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl_implicit_prm.data.jsonl import read_json_rows

__all__ = [
    "LoadedRecords",
    "SkippedRow",
    "file_sha256",
    "package_version",
    "read_bon_candidates",
    "read_process_records",
    "strict_json",
    "write_results_json",
]

logger = logging.getLogger(__name__)

_MAX_LOGGED = 10  # individual warnings per file; the rest are summarised


@dataclass(frozen=True)
class SkippedRow:
    """A row that was not loaded: its 1-based line number (item number in a JSON array) and why."""

    line: int
    reason: str


@dataclass
class LoadedRecords(Sequence):
    """Rows read from a file, plus the rows that were skipped. Behaves as a read-only list of the rows."""

    records: list[dict[str, Any]]
    skipped: list[SkippedRow] = field(default_factory=list)
    path: str = ""
    lines: list[int] = field(default_factory=list)  # the line (item) number of each record

    @property
    def n_skipped(self) -> int:
        """Number of records skipped (each with its reason)."""
        return len(self.skipped)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index):
        return self.records[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)


_Validator = Callable[[dict[str, Any]], tuple[dict[str, Any] | None, str | None]]


def _read(path: str | os.PathLike, validate: _Validator, what: str) -> LoadedRecords:
    path = Path(path)
    read = read_json_rows(path)
    unit = read.unit
    numbered = [(bad.number, None, bad.reason) for bad in read.bad] + [(n, row, None) for n, row in read.rows]
    records, lines, skipped = [], [], []
    for number, row, error in sorted(numbered, key=lambda item: item[0]):
        if error is None and not isinstance(row, dict):
            error = "row must be a JSON object"
        if error is None:
            row, error = validate(row)
        if error is None:
            records.append(row)
            lines.append(number)
            continue
        skipped.append(SkippedRow(number, error))
        if len(skipped) <= _MAX_LOGGED:
            logger.warning("%s %s %d: skipped %s: %s", path, unit, number, what, error)
    if skipped:
        logger.warning(
            "%s: skipped %d malformed %s row(s), loaded %d", path, len(skipped), what, len(records)
        )
    return LoadedRecords(records=records, skipped=skipped, path=str(path), lines=lines)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _process_error(row: dict[str, Any]) -> str | None:
    if not isinstance(row.get("problem"), str):
        return "'problem' must be a string"
    steps = row.get("steps")
    if not _is_str_list(steps):
        return "'steps' must be a list of strings"
    label = row.get("label")
    if isinstance(label, bool) or not isinstance(label, int):
        return f"'label' must be an integer, got {label!r}"
    if not steps and label != -1:
        return f"no steps but label {label} (must be -1)"
    if not -1 <= label < len(steps):
        return f"label {label} out of range [-1, {len(steps) - 1}] for {len(steps)} steps"
    return None


def _validate_process(row: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    error = _process_error(row)
    return (None, error) if error else (row, None)


def read_process_records(path: str | os.PathLike) -> LoadedRecords:
    """Read ProcessBench-format records (`problem`, `steps`, `label`); malformed rows are skipped with their line.

    Example:

    ```python
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "steps.jsonl"
    >>> _ = path.write_text('{"problem": "p", "steps": ["a", "b"], "label": 1}\\n{"problem": "p", "steps": ["a"], "label": 3}\\n')
    >>> loaded = read_process_records(path)
    >>> len(loaded), loaded.n_skipped, loaded.skipped[0].line
    (1, 1, 2)

    ```
    """
    return _read(path, _validate_process, "process record")


def _normalise_candidate(candidate: Any, index: int) -> tuple[dict[str, Any] | None, str | None]:
    if isinstance(candidate, str):
        return {"response": candidate, "answer": None}, None
    if not isinstance(candidate, dict):
        return None, f"candidate {index} must be an object or a string"
    response = candidate.get("response")
    if not (isinstance(response, str) or _is_str_list(response)):
        return None, f"candidate {index}: 'response' must be a string or a list of step strings"
    answer = candidate.get("answer")
    if answer is not None and not isinstance(answer, str):
        if isinstance(answer, bool) or not isinstance(answer, int | float):
            return None, f"candidate {index}: 'answer' must be a string, a number or null"
        answer = str(answer)
    scores = candidate.get("scores")
    if scores is not None and not (
        isinstance(scores, dict)
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in scores.values())
    ):
        return None, f"candidate {index}: 'scores' must map names to numbers"
    return {**candidate, "response": response, "answer": answer}, None


_NO_REFERENCE = "missing reference answer: set 'reference' (or 'answer') to a non-empty string or a number"


def _validate_bon(row: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    if not isinstance(row.get("problem"), str):
        return None, "'problem' must be a string"
    reference = row.get("reference", row.get("answer"))
    valid_type = isinstance(reference, str | int | float) and not isinstance(reference, bool)
    if not valid_type or not str(reference).strip():
        return None, _NO_REFERENCE
    if "candidates" in row:
        raw = row["candidates"]
    elif "responses" in row:
        raw = row["responses"]
        if not _is_str_list(raw):
            return None, "'responses' must be a list of strings"
    else:
        return None, "no 'candidates' (or 'responses') list"
    if not isinstance(raw, list) or not raw:
        return None, "'candidates' must be a non-empty list"
    candidates = []
    for index, candidate in enumerate(raw):
        normalised, error = _normalise_candidate(candidate, index)
        if error:
            return None, error
        candidates.append(normalised)
    out = {key: value for key, value in row.items() if key != "responses"}
    return {**out, "reference": str(reference), "candidates": candidates}, None


def read_bon_candidates(path: str | os.PathLike) -> LoadedRecords:
    """Read best-of-N problems (schema in the module docstring); malformed rows are skipped with their line.

    Example:

    ```python
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "bon.jsonl"
    >>> _ = path.write_text('{"problem": "1+1?", "answer": 2, "responses": ["\\\\boxed{2}", "3"]}\\n{"problem": "x"}\\n')
    >>> loaded = read_bon_candidates(path)
    >>> loaded[0]["reference"], loaded[0]["candidates"][1], loaded.n_skipped, loaded.skipped[0].line
    ('2', {'response': '3', 'answer': None}, 1, 2)

    ```
    """
    return _read(path, _validate_bon, "best-of-N problem")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_version() -> str:
    """The installed `trl-implicit-prm` version, else the package's `__version__`, else "unknown"."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trl-implicit-prm")
    except PackageNotFoundError:
        pass
    try:
        import trl_implicit_prm

        return str(trl_implicit_prm.__version__)
    except (ImportError, AttributeError):
        return "unknown"


def _jsonable(value: Any, where: str = "", nulled: list[str] | None = None) -> Any:
    """Convert results to plain JSON: objects with `to_dict`, dataclasses, numpy scalars/arrays, paths.

    A NaN or infinite float becomes None; its place (a dotted path) is appended to `nulled`.
    """
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return _jsonable(value.to_dict(), where, nulled)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value), where, nulled)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}" if where else str(k), nulled) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v, f"{where}[{i}]", nulled) for i, v in enumerate(value)]
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return _jsonable(value.tolist(), where, nulled)
    if isinstance(value, float) and not math.isfinite(value):
        if nulled is not None:
            nulled.append(where)
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def strict_json(value: Any) -> tuple[Any, list[str]]:
    """`value` as plain, strict JSON data (see :func:`write_results_json`) and the dotted paths of the NaN or
    infinite numbers it held, which are now None.

    Example:

    ```python
    >>> strict_json({"f1": float("nan"), "scores": [1.0, float("-inf")]})
    ({'f1': None, 'scores': [1.0, None]}, ['f1', 'scores[1]'])

    ```
    """
    nulled: list[str] = []
    return _jsonable(value, "", nulled), nulled


def write_results_json(
    path: str | os.PathLike,
    results: Mapping[str, Any],
    *,
    model: str,
    data_files: Sequence[str | os.PathLike],
    beta: float | None,
    aggregation: str | Sequence[str] | None,
    threshold: float | None,
    skipped: Sequence[SkippedRow] | Mapping[str, Sequence[SkippedRow]] = (),
) -> dict[str, Any]:
    """Write `results` with everything needed to reproduce them; returns the written payload.

    The file records the model name, each data file with its SHA-256, β, the aggregation, the threshold,
    the skipped rows (count and rows; pass a mapping `{data file: rows}` for several files), a UTC
    timestamp and the package version. Result objects with a `to_dict()` (e.g.
    :class:`ProcessErrorResult`) and dataclasses are converted. The file is strict JSON: a NaN or infinite
    number (an F1 that is undefined because a split has no erroneous records, a `-inf` score of a candidate
    with nothing to score) is written as null, and the places are listed under `"non_finite"`
    (`{"count": n, "fields": [dotted paths]}`) and logged.
    """
    if isinstance(skipped, Mapping):
        skipped_rows = [
            {"file": str(file), "line": row.line, "reason": row.reason}
            for file, rows in skipped.items()
            for row in rows
        ]
    else:
        skipped_rows = [{"line": row.line, "reason": row.reason} for row in skipped]
    payload = {
        "model": model,
        "data_files": [{"path": os.fspath(file), "sha256": file_sha256(file)} for file in data_files],
        "beta": beta,
        "aggregation": aggregation
        if aggregation is None or isinstance(aggregation, str)
        else list(aggregation),
        "threshold": threshold,
        "skipped": {"count": len(skipped_rows), "rows": skipped_rows},
        "results": results,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "package_version": package_version(),
    }
    nulled: list[str] = []
    payload = _jsonable(payload, "", nulled)
    payload["non_finite"] = {"count": len(nulled), "fields": nulled}
    if nulled:
        shown = ", ".join(nulled[:_MAX_LOGGED]) + (", ..." if len(nulled) > _MAX_LOGGED else "")
        logger.warning("%s: %d non-finite value(s) written as null: %s", path, len(nulled), shown)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(payload, indent=2, allow_nan=False, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return payload
