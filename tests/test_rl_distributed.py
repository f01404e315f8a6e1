"""PRIME under `accelerate launch --num_processes 2` with DeepSpeed ZeRO-3 on CPU: the same 2 steps as one process.

Both runs train on the same fixed rollouts (tests/scripts/train_prime_tiny.py feeds them through TRL's
`rollout_func`), 4 completions per step: 2 per process against 4 in one. The PRM is a ZeRO-3 engine of its own and
its reference a ZeRO-3 inference engine; the advantages are computed on the batch gathered over processes. They
differ only in float32 summation order, so the logged losses agree to 1e-5 and the saved PRMs to 1e-4.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from trl_implicit_prm import ProcessRewardComputer

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "scripts" / "train_prime_tiny.py"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(launcher: list[str], model: Path, out: Path, per_device: int) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    cmd = [
        *launcher,
        str(SCRIPT),
        "--model",
        str(model),
        "--output",
        str(out),
        "--per-device-batch",
        str(per_device),
    ]
    log = out.with_suffix(".log")
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=600)
    assert proc.returncode == 0, log.read_text()[-4000:]
    return json.loads((out / "losses.json").read_text())


def test_prime_zero3_two_processes_match_one_process(tiny_dir, tmp_path):
    model = tiny_dir / "llama"
    single = _run([sys.executable], model, tmp_path / "single", 4)
    zero3 = _run(
        [
            str(BIN / "accelerate"),
            "launch",
            "--config_file",
            str(REPO / "recipes" / "accelerate" / "zero3.yaml"),
            "--num_processes",
            "2",
            "--mixed_precision",
            "no",
            "--main_process_port",
            str(_free_port()),
        ],
        model,
        tmp_path / "zero3",
        2,
    )
    assert zero3["world_size"] == 2 and zero3["zero_stage"] == 3 and single["world_size"] == 1
    assert len(single["logs"]) == len(zero3["logs"]) == 2
    for one, two in zip(single["logs"], zero3["logs"], strict=True):
        assert one.keys() == two.keys()
        for key in one:
            assert two[key] == pytest.approx(one[key], abs=1e-5), key
    # the PRM moved (step 2's loss differs from step 1's, ln 2 at the start) and both saves hold the same PRM
    assert abs(single["logs"][1]["prm/loss"] - single["logs"][0]["prm/loss"]) > 1e-4
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "single" / "prm").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "zero3" / "prm").state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    assert (
        max(
            (a[k] - v).abs().max().item()
            for k, v in AutoModelForCausalLM.from_pretrained(model).state_dict().items()
        )
        > 1e-4
    )
    scored = ProcessRewardComputer.from_pretrained(tmp_path / "zero3" / "prm").score_one(
        "Q1: 2 + 3?\n", "2 + 3 = 5.\n\nSo 5."
    )
    assert len(scored.step_rewards) == 2 and torch.isfinite(torch.tensor(scored.step_rewards)).all()
