"""Reading JSONL (or JSON-array) files line by line, so that every bad line is reported as `file:line`.

A file whose first non-blank byte is `[` is one JSON array (its rows are numbered by item); anything else is
JSONL, one JSON value per line (numbered by line; blank lines are ignored; a UTF-8 byte-order mark is allowed).
A line is bad when it is not valid UTF-8, not valid JSON, uses the non-standard constants `NaN`, `Infinity` or
`-Infinity` (they would be written back as invalid JSON), or holds a string with a lone surrogate such as
`"\\udcff"` (not Unicode text: tokenizers and UTF-8 writers fail on it). Bad JSONL lines are returned, not
raised, so that the caller decides whether to stop or to skip and count them; a JSON array that cannot be read
raises :class:`~trl_implicit_prm.data.DataFormatError` naming its line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .formats import DataFormatError, find_lone_surrogate

__all__ = ["BadLine", "JsonRows", "read_json_rows"]


@dataclass(frozen=True)
class BadLine:
    """A line (item of a JSON array) that could not be read: its 1-based number and why."""

    number: int
    reason: str


@dataclass
class JsonRows:
    """The rows of a file as `(number, value)` pairs, the bad lines, and the numbering unit ("line" or "item")."""

    rows: list[tuple[int, Any]]
    bad: list[BadLine]
    unit: str


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (strict JSON has no NaN or Infinity; write null instead)")


def _parse(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_constant)


def _surrogate_reason(value: Any) -> str | None:
    where = find_lone_surrogate(value)
    if where is None:
        return None
    return f"a lone surrogate at {where}: not Unicode text (a broken escape or a wrong encoding)"


def _utf8_reason(raw: bytes, err: UnicodeDecodeError) -> str:
    return f"not valid UTF-8: byte 0x{raw[err.start]:02x} at byte {err.start + 1} of the line"


def _read_array(data: bytes, path: Path) -> JsonRows:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        start = data.rfind(b"\n", 0, err.start) + 1
        raise DataFormatError(
            f"{path}:{line}: not valid UTF-8: byte 0x{data[err.start]:02x} at byte {err.start - start + 1} "
            "of the line"
        ) from None
    try:
        rows = _parse(text)
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}: invalid JSON array at line {err.lineno}: {err.msg}") from None
    except ValueError as err:
        raise DataFormatError(f"{path}: invalid JSON array: {err}") from None
    if not isinstance(rows, list):
        raise DataFormatError(f"{path}: expected a JSON array of objects, got {type(rows).__name__}")
    out, bad = [], []
    for number, row in enumerate(rows, start=1):
        reason = _surrogate_reason(row)
        if reason is None:
            out.append((number, row))
        else:
            bad.append(BadLine(number, reason))
    return JsonRows(out, bad, "item")


def read_json_rows(path: str | os.PathLike) -> JsonRows:
    """Every row of a JSONL file or JSON array with its number, and every bad line with the reason.

    Example:

    ```python
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "rows.jsonl"
    >>> _ = path.write_bytes(b'{"a": 1}\\n\\n{"a": NaN}\\n{"a": "\\xff"}\\n{"a": "\\\\udcff"}\\n')
    >>> out = read_json_rows(path)
    >>> out.rows
    [(1, {'a': 1})]
    >>> for bad in out.bad:
    ...     print(bad.number, bad.reason)
    3 NaN is not valid JSON (strict JSON has no NaN or Infinity; write null instead)
    4 not valid UTF-8: byte 0xff at byte 8 of the line
    5 a lone surrogate at ['a'], character 0 ('\\udcff'): not Unicode text (a broken escape or a wrong encoding)

    ```
    """
    path = Path(path)
    data = path.read_bytes()
    if data.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] == b"[":
        return _read_array(data, path)
    rows, bad = [], []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            bad.append(BadLine(number, _utf8_reason(raw, err)))
            continue
        try:
            value = _parse(line)
        except json.JSONDecodeError as err:
            bad.append(BadLine(number, f"invalid JSON: {err.msg} (column {err.colno})"))
            continue
        except ValueError as err:
            bad.append(BadLine(number, str(err)))
            continue
        reason = _surrogate_reason(value)
        if reason is None:
            rows.append((number, value))
        else:
            bad.append(BadLine(number, reason))
    return JsonRows(rows, bad, "line")
