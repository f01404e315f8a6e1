"""Data-parallel scoring: `accelerate launch --num_processes 2` of `trl-implicit-prm score` on CPU.

Two processes give byte-identical output to one (every row is scored in the same batch whatever the number of
processes); a run killed with SIGKILL mid-way and started again completes with every row exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from trl_implicit_prm.cli import main
from trl_implicit_prm.inference.sharding import DistributedContext, assign_batches, read_parts, score_to_file

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
N_ROWS = 300

pytestmark = pytest.mark.distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }


def _launch(args: list[str]) -> list[str]:
    return [
        str(BIN / "accelerate"),
        "launch",
        "--config_file",
        str(REPO / "recipes" / "accelerate" / "multi_gpu.yaml"),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "trl_implicit_prm.cli",
        *args,
    ]


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> Path:
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("dp") / "rows.jsonl"
    with path.open("w") as f:
        for i in range(N_ROWS):
            a, b = rng.randint(1, 99), rng.randint(1, 99)
            steps = [f"{a} + {b} = {a + b}."] * rng.randint(1, 6) + [f"The answer is {a + b}."]
            f.write(json.dumps({"id": i, "prompt": f"Q{i}: {a} + {b}?\n", "steps": steps}) + "\n")
    return path


def _score_args(tiny_dir: Path, rows: Path, out: Path, batch_size: int) -> list[str]:
    return [
        "score",
        "--model",
        str(tiny_dir / "llama"),
        "--ref-model",
        str(tiny_dir / "llama-ref"),
        "--input",
        str(rows),
        "--output",
        str(out),
        "--batch-size",
        str(batch_size),
        "--device",
        "cpu",
    ]


@pytest.fixture(scope="module")
def one_process(tiny_dir, rows_file) -> dict[int, bytes]:
    """The one-process outputs (in this process), for the two batch sizes the tests use."""
    out = {}
    for batch_size in (1, 4):
        path = rows_file.with_name(f"single-{batch_size}.jsonl")
        assert main(_score_args(tiny_dir, rows_file, path, batch_size)) == 0
        out[batch_size] = path.read_bytes()
    return out


def test_two_processes_give_byte_identical_output(tiny_dir, rows_file, one_process, tmp_path):
    out = tmp_path / "two.jsonl"
    proc = subprocess.run(
        _launch(_score_args(tiny_dir, rows_file, out, 4)),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "scored 300 response(s)" in proc.stdout and "with 2 processes" in proc.stdout
    assert out.read_bytes() == one_process[4]
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == list(range(N_ROWS))
    assert not out.with_name("two.jsonl.parts").exists()


def _complete_lines(parts: Path) -> int:
    total = 0
    for p in parts.glob("rank*.jsonl"):
        with contextlib.suppress(FileNotFoundError):
            total += p.read_bytes().count(b"\n")
    return total


def test_killed_run_resumes_with_every_row_exactly_once(tiny_dir, rows_file, one_process, tmp_path, capsys):
    out = tmp_path / "killed.jsonl"
    parts = tmp_path / "killed.jsonl.parts"
    proc = subprocess.Popen(
        _launch(_score_args(tiny_dir, rows_file, out, 1)),
        cwd=REPO,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    try:
        while _complete_lines(parts) < 20:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no rows written within 300 s"
            time.sleep(0.01)
    finally:  # SIGKILL the launcher and both workers (torchrun starts each worker in a session of its own)
        workers = psutil.Process(proc.pid).children(recursive=True)
        for p in [psutil.Process(proc.pid), *workers]:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        psutil.wait_procs(workers, timeout=60)
    assert not out.exists()
    done_before = len(read_parts(parts))
    assert 20 <= done_before < N_ROWS
    # Restart (one process this time: the parts do not depend on the number of processes).
    assert main(_score_args(tiny_dir, rows_file, out, 1)) == 0
    printed = capsys.readouterr().out
    assert f"({done_before} already done by an earlier run)" in printed
    assert out.read_bytes() == one_process[1]  # every row once, in input order, the same bytes
    assert not parts.exists()


class _FakeComputer:
    """Scores are the row's length: enough to test the bookkeeping without a model."""

    max_batch_tokens, batch_size = 100, 2

    def score_encoded(self, rows, show_progress=False):
        return [r.length for r in rows]


class _Row:
    def __init__(self, length):
        self.length = length


def _ctx(rank=0, world=1):
    return DistributedContext(rank, world, "cpu", lambda: None)


def test_assign_batches_balances_padded_tokens():
    lengths = [10, 9, 8, 2, 2, 2, 2]
    batches = [[0], [1], [2], [3, 4, 5, 6]]  # costs 10, 9, 8, 8
    assert assign_batches(batches, lengths, 2) == [[0, 3], [1, 2]]  # 18 and 17 tokens
    assert assign_batches(batches, lengths, 1) == [[0, 1, 2, 3]]
    assert assign_batches([], lengths, 3) == [[], [], []]


def test_a_line_cut_by_a_kill_is_rescored_and_other_runs_are_refused(tmp_path):
    rows = [_Row(n) for n in (5, 3, 4, 1)]
    out = tmp_path / "o.jsonl"
    parts = tmp_path / "o.jsonl.parts"
    parts.mkdir()
    manifest = {"input_sha256": "abc", "rows": 4}
    (parts / "manifest.json").write_text(json.dumps(manifest))
    # A killed run: row 0 (batch [0, 2]) complete, row 2 cut mid-line.
    (parts / "rank1.jsonl").write_text('0\t"five"\n2\t"fo')
    assert read_parts(parts) == {0: '"five"'}
    counts = score_to_file(
        _FakeComputer(), rows, out, lambda i, r: json.dumps(r), manifest={"input_sha256": "abc"}, ctx=_ctx()
    )
    assert counts == {"rows": 4, "scored_here": 3, "resumed": 1}
    assert out.read_text() == '"five"\n3\n4\n1\n'  # row 0 kept from the earlier run, not written twice
    parts.mkdir()
    (parts / "manifest.json").write_text(json.dumps({"input_sha256": "other", "rows": 4}))
    with pytest.raises(ValueError, match=r"different \['input_sha256'\]"):
        score_to_file(
            _FakeComputer(),
            rows,
            out,
            lambda i, r: json.dumps(r),
            manifest={"input_sha256": "abc"},
            ctx=_ctx(),
        )


def test_eval_bon_with_two_processes_matches_one(tiny_dir, rows_file, tmp_path):
    rng = random.Random(1)
    problems = []
    for i in range(40):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        cands = [f"{a} + {b} = {a + b + d}.\n\nThe answer is \\boxed{{{a + b + d}}}." for d in (0, 1, 0, 2)]
        problems.append(
            {"problem": f"Q{i}: {a} + {b}?\n", "reference": str(a + b), "candidates": [*cands, ""]}
        )
    data = tmp_path / "cands.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in problems))

    def args(out):
        return [
            "eval-bon",
            "--model",
            str(tiny_dir / "llama"),
            "--ref-model",
            str(tiny_dir / "llama-ref"),
            "--data",
            str(data),
            "--output",
            str(out),
            "--aggregations",
            "min",
            "sum",
            "--device",
            "cpu",
        ]

    assert main(args(tmp_path / "one.json")) == 0  # one process, the in-memory path
    proc = subprocess.run(
        _launch(args(tmp_path / "two.json")),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert two["results"] == one["results"]  # the same scores, selections and curves
    assert (
        len((tmp_path / "two.json.candidate_scores.jsonl").read_text().splitlines()) == 40 * 4
    )  # "" unscored


def test_score_recipe_without_html_uses_the_resumable_writer(tiny_dir, rows_file, one_process, tmp_path):
    """recipes/score.py (no html_file) writes the same bytes as the command and resumes the same way."""
    import contextlib as _contextlib
    import io
    import runpy

    out = tmp_path / "recipe.jsonl"
    parts = tmp_path / "recipe.jsonl.parts"
    argv = [
        str(REPO / "recipes" / "score.py"),
        "--model_name_or_path",
        str(tiny_dir / "llama"),
        "--ref_model_name_or_path",
        str(tiny_dir / "llama-ref"),
        "--input_file",
        str(rows_file),
        "--output_file",
        str(out),
        "--batch_size",
        "4",
        "--device",
        "cpu",
    ]
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = argv
    sys.path.insert(0, str(REPO / "recipes"))
    try:
        with _contextlib.redirect_stdout(io.StringIO()) as printed:
            runpy.run_path(argv[0], run_name="__main__")
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    assert f"scored {N_ROWS} response(s)" in printed.getvalue()
    assert out.read_bytes() == one_process[4] and not parts.exists()
