"""PRIME under `accelerate launch --num_processes 2` with DeepSpeed ZeRO-3 and ZeRO-2 on CPU: the same 2 steps as
one process, for a full policy, a LoRA policy and the oversampled accuracy filter.

All runs train on the same fixed rollouts (tests/scripts/train_prime_tiny.py feeds them through TRL's
`rollout_func`), 4 completions per step: 2 per process against 4 in one. The PRM is a DeepSpeed engine of its own
(the run's ZeRO stage) and its reference an inference engine; the advantages are computed on the batch gathered
over processes. The `resume` case restarts from a step-1 checkpoint (the PRM engine's weights and optimizer
state come back from it) and must reproduce the uninterrupted run. With oversampling, the kept groups of a generation lie on the second process and are moved to
both. The runs differ only in float32 summation order, so the logged losses and gradient norms (policy and PRM)
agree to 1e-5 and the saved PRMs to 1e-4. Each launch runs the four cases one after the other (one start-up).
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


CASES = "full,lora,resume,oversample"


def _run(launcher: list[str], model: Path, out: Path, per_device: int) -> dict:
    """Every case of tests/scripts/train_prime_tiny.py in one launch; `{case: losses.json}`."""
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
        "--cases",
        CASES,
    ]
    log = out.with_suffix(".log")
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=600)
    assert proc.returncode == 0, log.read_text()[-4000:]
    return {case: json.loads((out / case / "losses.json").read_text()) for case in CASES.split(",")}


def _launch(stage: int) -> list[str]:
    return [
        str(BIN / "accelerate"),
        "launch",
        "--config_file",
        str(REPO / "recipes" / "accelerate" / f"zero{stage}.yaml"),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--main_process_port",
        str(_free_port()),
    ]


def _prm(path: Path) -> dict:
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


@pytest.fixture(scope="module")
def single(tiny_dir, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("prime-single")
    return _run([sys.executable], tiny_dir / "llama", out, 4), out


@pytest.mark.parametrize("stage", [3, 2])
def test_prime_deepspeed_two_processes_match_one_process(tiny_dir, tmp_path, single, stage):
    model = tiny_dir / "llama"
    (one, one_dir), two = single, _run(_launch(stage), model, tmp_path / f"zero{stage}", 2)
    initial = _prm(model)
    for case in CASES.split(","):
        a, b = one[case], two[case]
        assert b["world_size"] == 2 and b["zero_stage"] == stage and a["world_size"] == 1
        assert a["peft"] == b["peft"] == (case == "lora")
        assert len(a["logs"]) == len(b["logs"]) == 2
        for x, y in zip(a["logs"], b["logs"], strict=True):
            assert x.keys() == y.keys()
            for key in x:
                assert y[key] == pytest.approx(x[key], abs=1e-5), (case, key)
        # oversample: in each step 2 of the 4 drawn groups fail the filter and the batch is full of kept groups
        if case == "oversample":
            assert [h["prime/groups_dropped"] for h in b["logs"]] == [2.0, 2.0]
            assert [h["prime/kept_fraction"] for h in b["logs"]] == [1.0, 1.0]
        # the PRM moved (step 2's loss differs from step 1's, ln 2 at the start) and both saves hold the same PRM
        assert abs(a["logs"][1]["prm/loss"] - a["logs"][0]["prm/loss"]) > 1e-4
        p1, p2 = _prm(one_dir / case / "prm"), _prm(tmp_path / f"zero{stage}" / case / "prm")
        assert max((p1[k] - p2[k]).abs().max().item() for k in p1) < 1e-4
        assert max((p1[k] - v).abs().max().item() for k, v in initial.items()) > 1e-4
    # resumed from the step-1 checkpoint (PRM weights and optimizer state from it): the uninterrupted run's numbers
    out = tmp_path / f"zero{stage}"
    for x, y in zip(two["full"]["logs"], two["resume"]["logs"], strict=True):
        assert all(y[k] == pytest.approx(x[k], abs=1e-6) for k in x)
    p1, p2 = _prm(out / "full" / "prm"), _prm(out / "resume" / "prm")
    assert max((p1[k] - p2[k]).abs().max().item() for k in p1) < 1e-6
    assert (
        out / "resume" / "whole" / "checkpoint-1" / "prm" / "engine"
    ).is_dir()  # the PRM engine's own state
    scored = ProcessRewardComputer.from_pretrained(tmp_path / f"zero{stage}" / "full" / "prm").score_one(
        "Q1: 2 + 3?\n", "2 + 3 = 5.\n\nSo 5."
    )
    assert len(scored.step_rewards) == 2 and torch.isfinite(torch.tensor(scored.step_rewards)).all()
