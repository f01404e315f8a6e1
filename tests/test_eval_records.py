"""Reading evaluation files with per-line validation, and writing reproducible results files."""

from __future__ import annotations

import hashlib
import json
import logging
import math

import pytest

from trl_implicit_prm.evaluation import (
    SkippedRow,
    best_of_n_curve,
    evaluate_process_errors,
    file_sha256,
    read_bon_candidates,
    read_process_records,
    write_results_json,
)

PROCESS_LINES = [
    '{"id": "a", "problem": "1+1?", "steps": ["1+1=3", "so 3"], "label": 0}',  # 1 ok
    '{"problem": "p", "steps": ["s1", "s2"], "label": 2}',  # 2 label out of range
    "",  # 3 blank: ignored, not counted
    '{"problem": "p", "steps": "s1", "label": -1}',  # 4 steps not a list
    '{"problem": "p", "steps": ["s1", 7], "label": -1}',  # 5 a step that is not a string
    '{"problem": "p", "steps": ["s1"], "label": -1',  # 6 invalid JSON
    '{"problem": "p", "steps": [], "label": -1}',  # 7 ok: no steps, all correct
    '{"problem": "p", "steps": [], "label": 0}',  # 8 no steps but a label
    '["not", "an", "object"]',  # 9
    '{"steps": ["s1"], "label": -1}',  # 10 no problem
    '{"problem": "p", "steps": ["s1"], "label": "0"}',  # 11 label not an int
    '{"problem": "p", "steps": ["ok", "fine", "wrong"], "label": -1}',  # 12 ok
]


def test_read_process_records_reports_line_numbers(tmp_path, caplog):
    path = tmp_path / "steps.jsonl"
    path.write_text("\n".join(PROCESS_LINES) + "\n")
    with caplog.at_level(logging.WARNING, logger="trl_implicit_prm.evaluation.records"):
        loaded = read_process_records(path)
    assert len(loaded) == 3 and [r["problem"] for r in loaded] == ["1+1?", "p", "p"]
    assert loaded[0]["id"] == "a"  # extra keys are kept
    assert [row.line for row in loaded.skipped] == [2, 4, 5, 6, 8, 9, 10, 11]
    assert loaded.n_skipped == 8 and loaded.path == str(path)
    reasons = dict((row.line, row.reason) for row in loaded.skipped)
    assert (
        "out of range" in reasons[2] and "list of strings" in reasons[4] and "list of strings" in reasons[5]
    )
    assert reasons[6].startswith("invalid JSON") and "must be -1" in reasons[8]
    assert "JSON object" in reasons[9] and "'problem'" in reasons[10] and "integer" in reasons[11]
    assert "line 2: skipped process record" in caplog.text and "skipped 8 malformed" in caplog.text
    # The loaded rows feed the evaluation directly.
    result = evaluate_process_errors(loaded, [[-1.0, 0.5], [], [0.2, 0.1, 0.3]], threshold=0.0)
    assert result.predictions == [0, -1, -1] and result.f1 == 1.0


def test_read_process_records_json_array(tmp_path):
    rows = [
        {"problem": "p", "steps": ["a"], "label": 0},
        {"problem": "p", "steps": ["a"], "label": -2},
        {"problem": "p", "steps": ["a", "b"], "label": 1},
    ]
    path = tmp_path / "steps.json"
    path.write_text(json.dumps(rows, indent=2))
    loaded = read_process_records(path)
    assert len(loaded) == 2 and loaded.skipped == [SkippedRow(2, "label -2 out of range [-1, 0] for 1 steps")]
    path.write_text('[{"problem": "p",\n "steps": [}')
    with pytest.raises(ValueError, match="invalid JSON array at line 2"):
        read_process_records(path)


def test_read_bon_candidates(tmp_path):
    rows = [
        # 1 full schema; a numeric candidate answer becomes a string
        {
            "problem": "p",
            "reference": "4",
            "candidates": [{"response": ["2+2", "= 4"], "answer": 4}, {"response": "5"}],
        },
        # 2 "responses" list and "answer" as the reference
        {"problem": "q", "answer": 12, "responses": ["\\boxed{12}", "13"]},
        # 3 missing reference
        {"problem": "r", "candidates": [{"response": "1"}]},
        # 4 empty candidates
        {"problem": "s", "reference": "1", "candidates": []},
        # 5 a candidate whose response is a number
        {"problem": "t", "reference": "1", "candidates": [{"response": "1"}, {"response": 1}]},
        # 6 neither candidates nor responses
        {"problem": "u", "reference": "1"},
        # 7 responses that are not strings
        {"problem": "v", "reference": "1", "responses": [["a"]]},
        # 8 scores that are not numbers; 9 bare strings as candidates with precomputed scores elsewhere
        {"problem": "w", "reference": "1", "candidates": [{"response": "1", "scores": {"min": "high"}}]},
        {"problem": "x", "reference": "1", "candidates": ["1", {"response": "2", "scores": {"min": 0.5}}]},
    ]
    path = tmp_path / "bon.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    loaded = read_bon_candidates(path)
    assert [r["problem"] for r in loaded] == ["p", "q", "x"]
    assert loaded[0]["candidates"] == [
        {"response": ["2+2", "= 4"], "answer": "4"},
        {"response": "5", "answer": None},
    ]
    assert loaded[1]["reference"] == "12" and "responses" not in loaded[1]
    assert loaded[1]["candidates"] == [
        {"response": "\\boxed{12}", "answer": None},
        {"response": "13", "answer": None},
    ]
    assert loaded[2]["candidates"][0] == {"response": "1", "answer": None}
    assert [row.line for row in loaded.skipped] == [3, 4, 5, 6, 7, 8]
    reasons = [row.reason for row in loaded.skipped]
    assert "missing reference answer" in reasons[0] and "non-empty" in reasons[1]
    assert reasons[2].startswith("candidate 1: 'response'") and "no 'candidates'" in reasons[3]
    assert "'responses'" in reasons[4] and "'scores'" in reasons[5]
    # The loaded problems feed the curve directly.
    curve = best_of_n_curve(
        loaded[:2], {"min": [[0.3, 0.1], [0.0, 1.0]]}, methods=("prm", "majority"), use_math_verify=False
    )
    # N=1: p "4" right, q "12" right. N=2: p picks c0 (0.3) right, q picks "13" (1.0) wrong.
    assert curve["accuracy"]["prm:min"] == [1.0, 0.5] and curve["accuracy"]["majority"] == [1.0, 1.0]


def test_file_sha256(tmp_path):
    path = tmp_path / "abc.txt"
    path.write_bytes(b"abc")
    assert file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 10_000)  # > one 1 MiB chunk
    assert file_sha256(big) == hashlib.sha256(big.read_bytes()).hexdigest()


def test_write_results_json(tmp_path):
    data = tmp_path / "steps.jsonl"
    data.write_text("\n".join(PROCESS_LINES) + "\n")
    loaded = read_process_records(data)
    result = evaluate_process_errors(loaded, [[-1.0, 0.5], [], [0.2, 0.1, 0.3]])  # tuned here: oracle
    out = tmp_path / "out" / "results.json"
    payload = write_results_json(
        out,
        {"gsm8k": result, "curve": [(0.1, math.nan)]},
        model="tiny-llama",
        data_files=[data],
        beta=0.05,
        aggregation="min",
        threshold=result.threshold,
        skipped=loaded.skipped,
    )
    written = json.loads(
        out.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}")
    )
    assert written == payload
    assert written["model"] == "tiny-llama" and written["beta"] == 0.05 and written["aggregation"] == "min"
    assert written["data_files"] == [{"path": str(data), "sha256": file_sha256(data)}]
    assert written["threshold"] == result.threshold
    assert written["skipped"]["count"] == 8 and written["skipped"]["rows"][0] == {
        "line": 2,
        "reason": loaded.skipped[0].reason,
    }
    assert (
        written["results"]["gsm8k"]["oracle"] is True
        and "oracle" in written["results"]["gsm8k"]["threshold_kind"]
    )
    assert written["results"]["curve"] == [[0.1, None]]  # NaN -> null
    assert written["created"].endswith("+00:00") and isinstance(written["package_version"], str)

    several = write_results_json(
        tmp_path / "several.json",
        {},
        model="m",
        data_files=[],
        beta=None,
        aggregation=("min", "sum"),
        threshold=None,
        skipped={"a.jsonl": [SkippedRow(3, "bad")], "b.jsonl": []},
    )
    assert several["skipped"] == {"count": 1, "rows": [{"file": "a.jsonl", "line": 3, "reason": "bad"}]}
    assert several["aggregation"] == ["min", "sum"]
