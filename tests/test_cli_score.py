"""`trl-implicit-prm score`: JSONL in, JSONL out (+ HTML), malformed rows reported with line numbers."""

from __future__ import annotations

import argparse
import json

import pytest

from trl_implicit_prm.cli import main
from trl_implicit_prm.commands import score as score_cmd
from trl_implicit_prm.commands._models import unescape
from trl_implicit_prm.inference import ProcessRewardComputer


def run_score(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    score_cmd.add_arguments(parser)
    return score_cmd.run(parser.parse_args(argv))


def write_jsonl(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


ROWS = [
    {"prompt": "What is 2 + 3?\n", "response": "2 + 3 = 5.\n\nThe answer is 5.", "id": "a"},
    {"prompt": [{"role": "user", "content": "What is 4 * 2?"}], "steps": ["4 * 2 = 8.", "So 8."], "id": "b"},
    {"prompt": "Say <hi>.\n", "response": "<hi> & bye", "id": "c", "min": "old"},
]


def test_score_command_writes_scores_and_html(tiny_dir, tmp_path, capsys):
    inp = write_jsonl(tmp_path / "rows.jsonl", [ROWS[0], "", ROWS[1], ROWS[2]])
    out, page = tmp_path / "out" / "scored.jsonl", tmp_path / "report.html"
    rc = main(
        [
            "score",
            "--model",
            str(tiny_dir / "llama"),
            "--ref-model",
            str(tiny_dir / "llama-ref"),
            "--beta",
            "0.5",
            "--input",
            str(inp),
            "--output",
            str(out),
            "--html",
            str(page),
            "--dtype",
            "float32",
            "--separator",
            r"\n\n",
            "--device",
            "cpu",
        ]
    )  # through the `trl-implicit-prm` entry point
    assert rc == 0 and "scored 3 response(s)" in capsys.readouterr().out
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in scored] == ["a", "b", "c"]
    prc = ProcessRewardComputer.from_pretrained(
        tiny_dir / "llama", ref_model=tiny_dir / "llama-ref", beta=0.5, device="cpu"
    )
    expected = prc.score([r["prompt"] for r in ROWS], [r.get("response", r.get("steps")) for r in ROWS])
    for row, exp in zip(scored, expected, strict=True):
        assert row["step_rewards"] == pytest.approx(exp.step_rewards, abs=1e-6)
        assert row["q_values"] == pytest.approx(exp.q_values, abs=1e-6)
        assert row["outcome_reward"] == pytest.approx(sum(exp.step_rewards), abs=1e-5)
        assert row["min"] == pytest.approx(min(exp.step_rewards)) and row["truncated"] is False
        assert row["last"] == pytest.approx(exp.q_values[-1])
    assert [len(r["step_rewards"]) for r in scored] == [2, 2, 1]
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "&lt;hi&gt; &amp; bye" in html and "<hi>" not in html


def test_malformed_rows_are_reported_with_line_numbers(tiny_dir, tmp_path, capsys):
    lines = [
        ROWS[0],
        "{not json",
        ["a list"],
        {"response": "x"},
        {"prompt": "p", "response": "x", "steps": ["x"]},
        {"prompt": "p", "response": ["x"]},
        {"prompt": "p", "steps": "x"},
        ROWS[1],
    ]
    inp = write_jsonl(tmp_path / "rows.jsonl", lines)
    out = tmp_path / "scored.jsonl"
    argv = ["--model", str(tiny_dir / "llama"), "--reference-free", "--input", str(inp), "--output", str(out)]
    assert run_score(argv) == 2
    err = capsys.readouterr().err
    for line_no, what in [
        (2, "invalid JSON"),
        (3, "expected a JSON object"),
        (4, "missing 'prompt'"),
        (5, "expected exactly one of 'response' (a string) or 'steps' (a list of strings), found both"),
        (6, "'response' must be a string"),
        (7, "'steps' must be a list"),
    ]:
        assert f"rows.jsonl:{line_no}: {what}" in err, (line_no, what)
    assert "6 invalid row(s)" in err and not out.exists()

    assert run_score([*argv, "--skip-invalid"]) == 0
    assert len(out.read_text().splitlines()) == 2


def test_rows_invalid_for_the_model_are_reported(tiny_dir, tmp_path, capsys):
    inp = write_jsonl(
        tmp_path / "rows.jsonl",
        [
            ROWS[0],
            {"prompt": "p", "response": " "},
            {"prompt": "p", "steps": ["ok", ""]},
            {"prompt": "p", "response": "word " * 300},
        ],
    )
    out = tmp_path / "scored.jsonl"
    argv = [
        "--model",
        str(tiny_dir / "llama"),
        "--reference-free",
        "--input",
        str(inp),
        "--output",
        str(out),
        "--max-length",
        "64",
    ]
    assert run_score(argv) == 2
    err = capsys.readouterr().err
    assert "rows.jsonl:2:" in err and "non-empty completion" in err
    assert "rows.jsonl:3:" in err and "step 1" in err
    assert "rows.jsonl:4: prompt + response take" in err and "more than --max-length 64" in err
    assert "pass --truncation" in err and "truncation=True" not in err and "responses[" not in err
    assert run_score([*argv, "--truncation", "--skip-invalid"]) == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["truncated"] for r in scored] == [False, True]


def test_unescape():
    assert unescape(r"\n\n") == "\n\n" and unescape(r"a\tb\\n") == "a\tb\\n"
