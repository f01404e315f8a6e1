"""Reading and writing data files: invalid UTF-8, NaN and lone surrogates are reported with file:line (or the
row), and the results files are strict JSON with the non-finite values counted."""

from __future__ import annotations

import json
import math

import pytest

from trl_implicit_prm.data import DataFormatError, validate_dataset, validate_row
from trl_implicit_prm.data.formats import check_completion, check_prompt, find_lone_surrogate
from trl_implicit_prm.data.jsonl import read_json_rows
from trl_implicit_prm.evaluation import read_bon_candidates, read_process_records, write_results_json


def _strict(text: str):
    def refuse(name):
        raise AssertionError(f"{name} in a strict JSON file")

    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------------------------------ lone surrogates
def test_validation_rejects_lone_surrogates_naming_the_row():
    with pytest.raises(
        DataFormatError, match=r"column 'prompt' row 3: expected Unicode text, got a lone surrogate"
    ):
        validate_row({"prompt": "bad \udcff", "completion": "x", "label": 1}, "unpaired", index=3)
    with pytest.raises(
        DataFormatError, match=r"column 'completions' row 1, step 1: .*lone surrogate '\\udcff'"
    ):
        validate_dataset(
            [
                {"prompt": "p", "completions": ["a", "b"], "labels": [1, 0]},
                {"prompt": "p", "completions": ["a", "b\udcff"], "labels": [1, 0]},
            ]
        )
    with pytest.raises(DataFormatError, match=r"column 'prompt' row 0, message 0 content: .*lone surrogate"):
        check_prompt([{"role": "user", "content": "\ud800"}], "prompt", 0)
    with pytest.raises(
        DataFormatError, match=r"column 'chosen' row 2: .*lone surrogate '\\udfff' at character 1"
    ):
        check_completion("a\udfff", "chosen", 2)
    with pytest.raises(DataFormatError, match=r"column 'chosen' row 2 content: .*lone surrogate"):
        check_completion([{"role": "assistant", "content": "\udc80"}], "chosen", 2)
    check_completion(
        "ünïcödé ✓ 😀", "chosen", 2
    )  # real non-ASCII text is fine (a pair, not a lone surrogate)
    assert find_lone_surrogate({"a": [1, {"b": "x\udcffy"}]}) == "['a'][1]['b'], character 1 ('\\udcff')"


# ----------------------------------------------------------------------------------------- the JSONL reader
def test_jsonl_reader_reports_each_bad_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"a": 1}\n'  # 1: a BOM is fine
        b'{"a": "\xc3"}\n'  # 2: truncated UTF-8
        b'{"a": Infinity}\n'  # 3: not strict JSON
        b'{"a": "\\ud800"}\n'  # 4: lone surrogate
        b"\n"
        b'{"a": "line\xe2\x80\xa8sep"}\r\n'  # 6: U+2028 inside a string, CRLF ending
        b'{"a": }\n'
    )  # 7: not JSON
    out = read_json_rows(path)
    assert out.rows == [(1, {"a": 1}), (6, {"a": "line\u2028sep"})] and out.unit == "line"
    assert [b.number for b in out.bad] == [2, 3, 4, 7]
    assert out.bad[0].reason.startswith("not valid UTF-8: byte 0xc3 at byte 8 of the line")
    assert "Infinity is not valid JSON" in out.bad[1].reason and "lone surrogate" in out.bad[2].reason
    assert out.bad[3].reason.startswith("invalid JSON")
    array = path.with_suffix(".json")
    array.write_bytes(b'[{"a": 1},\n {"a": "\xff"}]')
    with pytest.raises(DataFormatError, match=r"rows\.json:2: not valid UTF-8"):
        read_json_rows(array)


def test_evaluation_readers_skip_unreadable_lines_with_their_number(tmp_path):
    path = tmp_path / "steps.jsonl"
    good = json.dumps({"problem": "p", "steps": ["a"], "label": -1}).encode()
    path.write_bytes(
        good
        + b"\n"
        + b'{"problem": "\xe9", "steps": ["a"], "label": 0}\n'
        + json.dumps({"problem": "p", "steps": ["\udcff"], "label": 0}).encode()
        + b"\n"
        + good
        + b"\n"
    )
    loaded = read_process_records(path)
    assert len(loaded) == 2 and loaded.lines == [1, 4]
    assert [(row.line, row.reason.split(":")[0]) for row in loaded.skipped] == [
        (2, "not valid UTF-8"),
        (3, "a lone surrogate at ['steps'][0], character 0 ('\\udcff')"),
    ]
    bon = tmp_path / "bon.jsonl"
    bon.write_bytes(
        b'{"problem": "p", "reference": 1, "candidates": ["x"], "score": NaN}\n'
        + json.dumps({"problem": "p", "reference": 1, "candidates": ["\ud800"]}).encode()
        + b"\n"
    )
    loaded = read_bon_candidates(bon)
    assert len(loaded) == 0 and [row.line for row in loaded.skipped] == [1, 2]


# ---------------------------------------------------------------------------------------------- results files
def test_results_json_writes_non_finite_values_as_null_and_counts_them(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    out = tmp_path / "r.json"
    payload = write_results_json(
        out,
        {"f1": math.nan, "scores": [1.0, -math.inf], "ok": 0.5},
        model="m",
        data_files=[data],
        beta=0.1,
        aggregation="min",
        threshold=None,
    )
    written = _strict(out.read_text())
    assert written["results"] == {"f1": None, "scores": [1.0, None], "ok": 0.5}
    assert written["non_finite"] == {"count": 2, "fields": ["results.f1", "results.scores[1]"]}
    assert payload["non_finite"]["count"] == 2


# ---------------------------------------------------------------------------------------------------- recipes
def test_recipe_readers_name_the_bad_lines(tmp_path, monkeypatch):
    from trl_implicit_prm.scripts import utils as common  # what the training recipes load data with

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(
        b'{"prompt": "p", "completion": "a", "label": 1}\n{"prompt": "\xff", "completion": "a"}\n'
        b'{"prompt": "p", "completion": NaN, "label": 1}\n'
    )
    with pytest.raises(DataFormatError, match=r"2 unreadable row\(s\)") as info:
        common.check_json_file(rows)
    assert f"{rows}:2: not valid UTF-8" in str(info.value) and f"{rows}:3: NaN is not valid JSON" in str(
        info.value
    )
    with pytest.raises(DataFormatError, match=r"rows\.jsonl:2: not valid UTF-8"):
        common.load_data(str(rows))  # before `datasets` sees the file
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(json.dumps({"prompt": "\udcff"}).encode() + b"\n")
    with pytest.raises(DataFormatError, match=r"train\.jsonl:1: a lone surrogate"):
        common.load_data(str(folder))
