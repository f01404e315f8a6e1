"""The command line refuses bad input cleanly: exit 2, a message naming the flag/file:line, no traceback;
every row is checked before a model is loaded; nothing is dropped without a count; output is strict JSON."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import STEP_RECORDS as RECORDS
from helpers import eval_steps_argv, library_step_rewards
from helpers import write_jsonl as _write

from trl_implicit_prm.cli import main
from trl_implicit_prm.evaluation import evaluate_process_errors


def _strict_json(text: str):
    def refuse(name):
        raise AssertionError(f"{name} in a strict JSON output")

    return json.loads(text, parse_constant=refuse)


def _error_line(err: str, command: str) -> str:
    """The `trl-implicit-prm <command>: error: ...` line of stderr (progress bars may precede it)."""
    lines = [
        line
        for line in err.replace("\r", "\n").splitlines()
        if line.startswith(f"trl-implicit-prm {command}: error: ")
    ]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def weightless(tiny_dir, tmp_path_factory):
    """The llama checkpoint's tokenizer and config without its weights: any attempt to load the model fails."""
    root = tmp_path_factory.mktemp("weightless") / "llama"
    shutil.copytree(tiny_dir / "llama", root, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return root


@pytest.fixture(scope="module")
def other_vocab(tmp_path_factory):
    """A tiny model whose vocabulary differs from the fixture models'."""
    from trl_implicit_prm.tiny import build_model, build_tokenizer

    root = tmp_path_factory.mktemp("vocab") / "model"
    tok = build_tokenizer(vocab_size=400)
    build_model("llama", tok, seed=7).save_pretrained(root)
    tok.save_pretrained(root)
    return root


# ------------------------------------------------------------------------------------------- user errors: exit 2
def test_user_errors_print_a_message_and_exit_2_without_traceback(tiny_dir, other_vocab, tmp_path, capsys):
    rows = _write(tmp_path / "rows.jsonl", [{"prompt": "p", "response": "a"}])
    base = ["score", "--input", str(rows), "--output", str(tmp_path / "out.jsonl")]
    cases = [
        (["--model", str(tiny_dir / "llama")], "no reference model"),  # no metadata, no --ref-model
        (["--model", str(tiny_dir / "llama"), "--ref-model", str(other_vocab)], "vocabulary"),
        (["--model", str(tiny_dir / "llama"), "--ref-model", str(tmp_path / "absent")], "does not exist"),
        (["--model", str(tmp_path / "absent"), "--reference-free"], "--model"),
        (["--model", str(tiny_dir / "llama"), "--reference-free", "--device", "nope"], "--device 'nope'"),
        (
            ["--model", str(tiny_dir / "llama"), "--reference-free", "--device", "cuda:99"],
            "--device 'cuda:99'",
        ),
        (["--model", str(tiny_dir / "llama"), "--reference-free", "--dtype", "float99"], "--dtype 'float99'"),
    ]
    for flags, expected in cases:
        assert main([*base[:1], *flags, *base[1:]]) == 2, flags
        err = capsys.readouterr().err
        assert expected in _error_line(err, "score"), (flags, err)
        assert "Traceback" not in err, flags
    assert not (tmp_path / "out.jsonl").exists()
    # --verbose keeps the traceback for a user error, and the message.
    assert main(["-v", *base[:1], "--model", str(tiny_dir / "llama"), *base[1:]]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "trl-implicit-prm score: error: no reference model" in err


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--beta", "nan"),
        ("--beta", "inf"),
        ("--beta", "-inf"),
        ("--beta", "0"),
        ("--beta", "-1"),
        ("--threshold", "nan"),
        ("--threshold", "inf"),
    ],
)
def test_non_finite_float_flags_are_refused(tiny_dir, tmp_path, capsys, flag, value):
    rows = _write(tmp_path / "rows.jsonl", [{"prompt": "p", "response": "a"}])
    out = tmp_path / "out.jsonl"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "score",
                "--model",
                str(tiny_dir / "llama"),
                "--reference-free",
                "--input",
                str(rows),
                "--output",
                str(out),
                f"{flag}={value}",
            ]
        )
    assert exit_info.value.code == 2 and not out.exists()
    assert f"argument {flag}: expected a finite number" in capsys.readouterr().err


def test_eval_steps_threshold_must_be_finite(tiny_dir, tmp_path, capsys):
    data = _write(tmp_path / "val.jsonl", [{"problem": "p", "steps": ["a"], "label": -1}])
    with pytest.raises(SystemExit) as exit_info:
        main(["eval-steps", "--model", str(tiny_dir / "llama"), "--data", str(data), "--threshold", "nan"])
    assert exit_info.value.code == 2 and "--threshold: expected a finite number" in capsys.readouterr().err


def test_demo_set_refuses_non_finite_numbers(tmp_path, capsys):
    for value in ("NaN", "Infinity", "1e999", "[1, NaN]"):
        assert main(["demo", "--output-dir", str(tmp_path), "--set", f"beta={value}"]) == 2
        err = capsys.readouterr().err
        assert (
            _error_line(err, "demo").startswith("trl-implicit-prm demo: error: --set beta=")
            and "finite" in err
        )
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------------- score: validate up front
def test_score_lists_every_bad_row_before_loading_the_model(weightless, tmp_path, capsys):
    """Structural and content errors, in one pass, with the user's column names; the weights are never needed."""
    lines = [
        {"prompt": "p", "response": "fine"},  # 1
        {"prompt": "p", "response": "  "},  # 2: whitespace-only response
        {"prompt": "p", "steps": ["ok", " "]},  # 3: whitespace-only step
        {"prompt": "p"},  # 4: structural
        {"prompt": "p", "steps": ["ok", "bad \udcff"]},  # 5: lone surrogate in a step
        {"prompt": [{"role": "user", "content": 3}], "response": "x"},  # 6: wrong type in the prompt
        '{"prompt": "p", "response": "x", "score": NaN}',  # 7: not strict JSON
    ]
    inp = _write(tmp_path / "rows.jsonl", lines)
    with (tmp_path / "rows.jsonl").open("ab") as f:
        f.write(b'{"prompt": "p", "response": "caf\xe9"}\n')  # 8: Latin-1, not UTF-8
    out = tmp_path / "scored.jsonl"
    assert (
        main(
            [
                "score",
                "--model",
                str(weightless),
                "--reference-free",
                "--input",
                str(inp),
                "--output",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err and not out.exists()
    expected = {
        2: "column 'response': expected a non-empty completion",
        3: "column 'steps', step 1: expected a step with a non-whitespace character",
        4: "expected exactly one of 'response'",
        5: "lone surrogate",
        6: "column 'prompt', message 0",
        7: "NaN is not valid JSON",
        8: "not valid UTF-8",
    }
    reported = [line for line in err.splitlines() if line.startswith(f"{inp}:")]
    assert [int(line.split(":")[1]) for line in reported] == list(expected)  # in file order, one each
    for line, text in zip(reported, expected.values(), strict=True):
        assert text in line, (line, text)
    assert "responses[" not in err and "7 invalid row(s)" in err


def test_score_skip_invalid_leaves_unreadable_lines_out_with_a_count(tiny_dir, tmp_path, capsys):
    inp = _write(tmp_path / "rows.jsonl", [{"prompt": "p", "response": "one"}])
    with inp.open("ab") as f:
        f.write(b'{"prompt": "p", "response": "\xff\xfe"}\n')
        f.write(json.dumps({"prompt": "p", "response": "x\udcff"}).encode() + b"\n")
        f.write(json.dumps({"prompt": "p", "response": "two"}).encode() + b"\n")
    out = tmp_path / "scored.jsonl"
    assert (
        main(
            [
                "score",
                "--model",
                str(tiny_dir / "llama"),
                "--reference-free",
                "--input",
                str(inp),
                "--output",
                str(out),
                "--skip-invalid",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "left out 2 invalid row(s)" in captured.out
    assert f"{inp}:2: not valid UTF-8" in captured.err and f"{inp}:3: a lone surrogate" in captured.err
    assert [_strict_json(line)["response"] for line in out.read_text().splitlines()] == ["one", "two"]


def test_score_writes_non_finite_scores_as_null_and_counts_them(tiny_dir, tmp_path, capsys):
    """β = 1e308 is finite, but β·log πθ overflows: the output stays strict JSON, with the rows counted."""
    inp = _write(tmp_path / "rows.jsonl", [{"prompt": "Q?\n", "response": "2 + 2 = 4.\n\nSo 4."}])
    out = tmp_path / "scored.jsonl"
    assert (
        main(
            [
                "score",
                "--model",
                str(tiny_dir / "llama"),
                "--reference-free",
                "--beta",
                "1e308",
                "--input",
                str(inp),
                "--output",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert "1 with non-finite scores written as null" in capsys.readouterr().out
    row = _strict_json(out.read_text())
    assert row["step_rewards"] == [None, None] and row["outcome_reward"] is None and row["min"] is None


# ---------------------------------------------------------------------------------------- eval-steps / eval-bon
def test_eval_steps_skips_and_counts_unscorable_records_and_reports_the_held_out_mean(
    tiny_dir, tmp_path, capsys
):
    val = _write(tmp_path / "val.jsonl", RECORDS)
    test = _write(
        tmp_path / "test.jsonl",
        [
            RECORDS[2],
            {"problem": "x", "steps": ["a", ""], "label": -1},  # line 2: empty step
            RECORDS[0],
            {"problem": "x", "steps": ["word " * 200], "label": 0},  # line 4: longer than --max-length
            {"problem": "x", "steps": ["a", "b \udcff"], "label": 1},  # line 5: lone surrogate
            RECORDS[1],
            RECORDS[3],
        ],
    )
    with test.open("ab") as f:
        f.write(b'{"problem": "\xff", "steps": ["a"], "label": 0}\n')  # line 8: not UTF-8
    out = tmp_path / "steps.json"
    assert main(eval_steps_argv(tiny_dir, [val, test], out, "--max-length", "128")) == 0
    printed = capsys.readouterr().out
    result = _strict_json(out.read_text())
    rows = result["skipped"]["rows"]
    assert [(r["file"], r["line"]) for r in rows] == [(str(test), n) for n in (2, 4, 5, 8)]
    assert "step 1" in rows[0]["reason"] and "--max-length 128" in rows[1]["reason"]
    assert "lone surrogate" in rows[2]["reason"] and "UTF-8" in rows[3]["reason"]
    assert f"{test}: skipped 4 row(s), line(s) 2, 4, 5, 8" in printed
    # The held-out split is labelled and the printed mean is over it alone, never the oracle split.
    scores = library_step_rewards(tiny_dir, RECORDS)
    tuned = evaluate_process_errors(RECORDS, scores)
    held = [RECORDS[2], RECORDS[0], RECORDS[1], RECORDS[3]]
    held_out = evaluate_process_errors(
        held, [scores[2], scores[0], scores[1], scores[3]], threshold=tuned.threshold
    )
    assert f"held-out mean F1 {100 * held_out.f1:.1f} over 1 split(s)" in printed
    test_line = next(line for line in printed.splitlines() if line.startswith("test "))
    assert test_line.endswith("(threshold tuned on val)")
    assert "mean_f1" not in result["results"] and result["results"]["mean_f1_held_out"] == pytest.approx(
        held_out.f1
    )
    assert result["results"]["splits"]["test"]["threshold_kind"] == "threshold tuned on val"


def test_eval_steps_refuses_a_split_with_one_class_before_loading_the_model(weightless, tmp_path, capsys):
    val = _write(tmp_path / "val.jsonl", RECORDS)
    only_correct = _write(
        tmp_path / "easy.jsonl", [RECORDS[0], RECORDS[3], {"problem": "x", "steps": [" "], "label": 0}]
    )
    nothing = _write(tmp_path / "none.jsonl", ['{"problem": 1}'])
    for data, what in [(only_correct, "0 erroneous and 2 correct records"), (nothing, "no records left")]:
        assert (
            main(
                [
                    "eval-steps",
                    "--model",
                    str(weightless),
                    "--reference-free",
                    "--data",
                    str(val),
                    str(data),
                    "--output",
                    str(tmp_path / "steps.json"),
                ]
            )
            == 2
        )
        err = capsys.readouterr().err
        assert _error_line(err, "eval-steps").startswith("trl-implicit-prm eval-steps: error: split ")
        assert what in err, err
        assert "needs both erroneous" in err and "Traceback" not in err and "threshold=" not in err


def test_eval_bon_skips_problems_with_too_long_candidates_unless_truncation(tiny_dir, tmp_path, capsys):
    problems = [
        {
            "problem": "2+3?\n",
            "reference": "5",
            "candidates": ["2+3=5\n\nThe answer is \\boxed{5}.", "2+3=6\n\nThe answer is \\boxed{6}."],
        },
        {"problem": "1+1?\n", "reference": "2", "candidates": ["1+1=2. \\boxed{2}", "word " * 200]},
    ]
    data = _write(tmp_path / "cands.jsonl", problems)
    out = tmp_path / "bon.json"
    argv = [
        "eval-bon",
        "--model",
        str(tiny_dir / "gpt2"),
        "--ref-model",
        str(tiny_dir / "gpt2-ref"),
        "--data",
        str(data),
        "--output",
        str(out),
        "--max-length",
        "64",
        "--aggregations",
        "min",
    ]
    assert main(argv) == 0
    assert f"{data}: skipped 1 row(s), line(s) 2" in capsys.readouterr().out
    result = _strict_json(out.read_text())
    assert result["results"]["n_problems"] == 1 and result["skipped"]["rows"][0]["line"] == 2
    assert "candidate 1: prompt + response take" in result["skipped"]["rows"][0]["reason"]
    assert main([*argv, "--truncation"]) == 0
    result = _strict_json(out.read_text())
    assert result["results"]["n_problems"] == 2 and result["skipped"]["count"] == 0
