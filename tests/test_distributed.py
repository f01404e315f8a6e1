"""Real multi-process training: `accelerate launch --num_processes 2` with DeepSpeed ZeRO-3 (reference sharded) and
with DDP, on CPU. The saved checkpoints must give the step rewards of a single-process run of the same steps.

Tolerance: both runs see the same 4 rows per optimizer step (2 per process vs 4 in one process, sequential
order) and differ only in float32 summation order (gradient all-reduce vs one sum), ~1e-7 relative. Adam can
amplify that for weights whose gradient is ~0 (its update is bounded by lr = 1e-3 per step), so we allow step
rewards to differ by 1e-4 — two orders of magnitude below the change that the two training steps make to them.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_implicit_prm import ProcessRewardComputer
from trl_implicit_prm.data import tokenize_example
from trl_implicit_prm.distributed import WEIGHT_FILES
from trl_implicit_prm.logps import completion_logps
from trl_implicit_prm.rewards import step_rewards

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "scripts" / "train_tiny.py"
BIN = Path(sys.executable).parent
BETA = 0.1  # the script's β

pytestmark = pytest.mark.distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], log: Path, expect_ok: bool = True) -> int:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=600)
    if expect_ok:
        assert proc.returncode == 0, log.read_text()[-4000:]
    return proc.returncode


def _command(
    model_dir: Path, out: Path, trainer: str, launcher: list[str], per_device: int, *extra: str
) -> list[str]:
    """The script's command line: 2 steps unless `extra` says otherwise (the last `--steps` wins)."""
    return [
        *launcher,
        str(SCRIPT),
        *("--trainer", trainer, "--model", str(model_dir), "--output", str(out), "--steps", "2"),
        *("--per-device-batch", str(per_device), *extra),
    ]


def _train(
    model_dir: Path, out: Path, trainer: str, launcher: list[str], per_device: int, *extra: str
) -> dict:
    _run(_command(model_dir, out, trainer, launcher, per_device, *extra), out.with_suffix(".log"))
    return json.loads((out / "losses.json").read_text())


def _accelerate(config: str, port: int) -> list[str]:
    return [
        str(BIN / "accelerate"),
        "launch",
        "--config_file",
        str(REPO / "recipes" / "accelerate" / config),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--main_process_port",
        str(port),
    ]


def _step_rewards(checkpoint: Path, reference: Path) -> torch.Tensor:
    tok = AutoTokenizer.from_pretrained(checkpoint)
    policy = AutoModelForCausalLM.from_pretrained(checkpoint)
    ref = AutoModelForCausalLM.from_pretrained(reference)
    out = []
    for prompt, completion in [
        ("Q3: 4 + 5?\n", "4 + 5 = 9.\n\nThe answer is 9."),
        ("Q9: 3 + 6?\n", "3 + 6 = 10.\n\nThe answer is 10."),
        ("Q1: 2 + 3?\n", "2 + 3 = 5.\n\nSo 5.\n\nThe answer is 5."),
    ]:
        ex = tokenize_example(tok, prompt, completion)
        ids, cmask = torch.tensor([ex["input_ids"]]), torch.tensor([ex["completion_mask"]])
        attn = torch.ones_like(ids)
        with torch.no_grad():
            ratio = completion_logps(policy, ids, attn, cmask) - completion_logps(ref, ids, attn, cmask)
        out.append(step_rewards(BETA * ratio, torch.tensor([ex["step_index"]])).flatten())
    return torch.cat(out)


def _script_eval_rows() -> list[dict]:
    """The rows the script evaluates on with `--eval`."""
    spec = importlib.util.spec_from_file_location("train_tiny", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.rows("ce")[: module.EVAL_ROWS]


def _per_row_reward_metrics(checkpoint: Path, rows: list[dict]) -> dict[str, float]:
    """rewards/positive, negative and accuracies of unpaired rows, from the checkpoint's outcome rewards."""
    prc = ProcessRewardComputer.from_pretrained(checkpoint, device="cpu")
    rewards = [
        r.outcome_reward for r in prc.score([r["prompt"] for r in rows], [r["completion"] for r in rows])
    ]
    positive = [r["label"] >= 0.5 for r in rows]
    pos = [x for x, p in zip(rewards, positive, strict=True) if p]
    neg = [x for x, p in zip(rewards, positive, strict=True) if not p]
    correct = sum((x > 0) == p for x, p in zip(rewards, positive, strict=True))
    return {
        "positive": sum(pos) / len(pos),
        "negative": sum(neg) / len(neg),
        "accuracies": correct / len(rows),
    }


@pytest.fixture(scope="module")
def base_model(tiny_dir) -> Path:
    return tiny_dir / "llama"


@pytest.fixture(scope="module")
def single_process(base_model, tmp_path_factory) -> dict[str, Path]:
    """The reference runs: one process, 4 rows per step."""
    root = tmp_path_factory.mktemp("single")
    out = {}
    for trainer in ("ce", "dpo"):
        _train(base_model, root / trainer, trainer, [sys.executable], per_device=4)
        out[trainer] = root / trainer
    return out


@pytest.mark.parametrize("trainer", ["ce", "dpo"])
def test_zero3_two_processes_match_single_process(trainer, base_model, single_process, tmp_path):
    out = tmp_path / f"zero3-{trainer}"
    info = _train(base_model, out, trainer, _accelerate("zero3.yaml", _free_port()), per_device=2)
    assert info["world_size"] == 2 and info["deepspeed"] and info["zero_stage"] == 3
    assert info["ref_sharded"], "the reference model should be partitioned by ZeRO-3"
    single = json.loads((single_process[trainer] / "losses.json").read_text())
    assert info["losses"] == pytest.approx(single["losses"], abs=1e-5)
    distributed = _step_rewards(out, base_model)
    reference = _step_rewards(single_process[trainer], base_model)
    untrained = _step_rewards(base_model, base_model)
    assert (reference - untrained).abs().max() > 1e-3  # training moved the rewards
    torch.testing.assert_close(distributed, reference, atol=1e-4, rtol=0)
    assert "2412.01981" in (out / "README.md").read_text()


def test_ddp_two_processes_match_single_process(base_model, single_process, tmp_path):
    out = tmp_path / "ddp-ce"
    info = _train(base_model, out, "ce", _accelerate("multi_gpu.yaml", _free_port()), 2, "--eval")
    assert info["world_size"] == 2 and not info["deepspeed"]
    single = json.loads((single_process["ce"] / "losses.json").read_text())
    assert info["losses"] == pytest.approx(single["losses"], abs=1e-5)
    torch.testing.assert_close(
        _step_rewards(out, base_model), _step_rewards(single_process["ce"], base_model), atol=1e-4, rtol=0
    )
    # Evaluation on 5 rows, 2 per process: the padded duplicates of the last step are not counted, and the
    # metrics are the per-row values of the saved checkpoint.
    truth = _per_row_reward_metrics(out, _script_eval_rows())
    for metric, value in truth.items():
        assert info["eval"][f"eval_rewards/{metric}"] == pytest.approx(value, abs=1e-5), metric


def test_zero3_precomputed_reference_matches_the_live_single_process_run(
    base_model, single_process, tmp_path
):
    """Paired rows with different step counts on the two processes: the precomputed per-step reference log-probs
    are padded, gathered and split back per example correctly (losses equal the live reference's)."""
    out = tmp_path / "zero3-dpo-precomputed"
    info = _train(base_model, out, "dpo", _accelerate("zero3.yaml", _free_port()), 2, "--precompute")
    assert info["world_size"] == 2 and info["deepspeed"] and not info["ref_sharded"]  # no reference kept
    single = json.loads((single_process["dpo"] / "losses.json").read_text())
    assert info["losses"] == pytest.approx(single["losses"], abs=1e-5)


@pytest.mark.parametrize(("config", "trainer"), [("zero3.yaml", "ce"), ("multi_gpu.yaml", "dpo")])
def test_a_killed_two_process_run_resumes_to_the_uninterrupted_weights(base_model, tmp_path, config, trainer):
    """Two processes (ZeRO-3, DDP) killed right after the step-2 checkpoint, then resumed from it: the same
    losses and the same saved weights as the run that was never interrupted (optimizer, scheduler, data order
    and the sharded engine state come back from the checkpoint)."""
    opts = ("--steps", "4", "--save-steps", "2")
    full = _train(base_model, tmp_path / "full", trainer, _accelerate(config, _free_port()), 2, *opts)
    killed = tmp_path / "resumed"
    kill = ("--kill-after-save", "2")
    launcher = _accelerate(config, _free_port())
    rc = _run(
        _command(base_model, killed, trainer, launcher, 2, *opts, *kill), tmp_path / "killed.log", False
    )
    assert rc != 0 and (killed / "checkpoint-2").is_dir() and not (killed / "losses.json").exists()
    at_kill = load_file(killed / "checkpoint-2" / "model.safetensors")
    resume = ("--resume-from", str(killed / "checkpoint-2"))
    resumed = _train(base_model, killed, trainer, _accelerate(config, _free_port()), 2, *opts, *resume)
    assert (full["steps_run"], resumed["steps_run"]) == (4, 2)  # the resumed launch started at step 2
    assert len(resumed["losses"]) == 4 and resumed["losses"] == pytest.approx(full["losses"], abs=1e-6)
    final, uninterrupted = (
        load_file(killed / "model.safetensors"),
        load_file(tmp_path / "full" / "model.safetensors"),
    )
    assert final.keys() == uninterrupted.keys()
    for name, value in final.items():
        torch.testing.assert_close(value, uninterrupted[name], atol=1e-6, rtol=0, msg=name)
    assert any(not torch.equal(final[k], at_kill[k]) for k in final)  # steps 3 and 4 did train


def test_zero3_config_without_the_gather_flag_refuses_to_train(base_model, tmp_path):
    """A user's DeepSpeed JSON without `stage3_gather_16bit_weights_on_model_save` would save no weights (only
    `global_stepN/`): the trainer refuses at start, naming the flag, before any training or saving."""
    ds_config = tmp_path / "ds_zero3.json"
    ds_config.write_text(
        json.dumps(
            {
                "zero_optimization": {"stage": 3},
                "train_batch_size": "auto",
                "train_micro_batch_size_per_gpu": "auto",
                "gradient_accumulation_steps": "auto",
            }
        )
    )
    launch = yaml.safe_load((REPO / "recipes" / "accelerate" / "zero3.yaml").read_text())
    launch["deepspeed_config"] = {"deepspeed_config_file": str(ds_config), "zero3_init_flag": True}
    launch.pop("mixed_precision")  # the JSON config decides it; `--mixed_precision no` would conflict
    config = tmp_path / "zero3-user.yaml"
    config.write_text(yaml.safe_dump(launch))
    out = tmp_path / "out"
    launcher = [
        str(BIN / "accelerate"),
        "launch",
        "--config_file",
        str(config),
        "--num_processes",
        "2",
        "--main_process_port",
        str(_free_port()),
    ]
    log = tmp_path / "refused.log"
    code = _run(
        [*launcher, str(SCRIPT), "--trainer", "ce", "--model", str(base_model), "--output", str(out)],
        log,
        expect_ok=False,
    )
    text = log.read_text()
    assert code != 0, f"trained and saved without weights: {sorted(p.name for p in out.rglob('*'))}"
    assert "stage3_gather_16bit_weights_on_model_save: true` (it is missing)" in text
    assert not (out / "implicit_prm.json").exists()


def test_deepspeed_only_checkpoint_fails_to_load_and_the_conversion_it_names_works(base_model, tmp_path):
    """A real 2-process ZeRO-3 run writes DeepSpeed's sharded checkpoint next to what transformers' fallback leaves
    (config, tokenizer, implicit_prm.json, no weights). Loading it fails with what it is and the command to
    convert it; running that command gives weights whose step rewards equal those of the gathered save."""
    out, only_ds = tmp_path / "zero3-ce", tmp_path / "deepspeed-only"
    _run(
        [
            *_accelerate("zero3.yaml", _free_port()),
            str(SCRIPT),
            "--trainer",
            "ce",
            "--model",
            str(base_model),
            "--output",
            str(out),
            "--steps",
            "2",
            "--deepspeed-checkpoint",
            str(only_ds),
        ],
        tmp_path / "train.log",
    )
    for f in out.iterdir():
        if f.is_file() and f.name not in WEIGHT_FILES:
            shutil.copy(f, only_ds / f.name)
    assert (only_ds / "global_step2").is_dir() and not any((only_ds / w).exists() for w in WEIGHT_FILES)
    with pytest.raises(OSError, match=r"holds a DeepSpeed ZeRO checkpoint \(global_step2/") as err:
        ProcessRewardComputer.from_pretrained(str(only_ds), device="cpu")
    from trl_implicit_prm import CEConfig, CETrainer

    args = CEConfig(output_dir=str(tmp_path / "again"), use_cpu=True, bf16=False, report_to=[])
    with pytest.raises(OSError, match=r"holds a DeepSpeed ZeRO checkpoint \(global_step2/"):
        CETrainer(str(only_ds), args=args, train_dataset=_one_row())
    command = f"python -m deepspeed.utils.zero_to_fp32 {only_ds} {only_ds} --safe_serialization"
    assert command in str(err.value)
    _run([sys.executable, *command.split()[1:]], tmp_path / "convert.log")
    torch.testing.assert_close(
        _step_rewards(only_ds, base_model), _step_rewards(out, base_model), atol=1e-6, rtol=0
    )
    result = ProcessRewardComputer.from_pretrained(str(only_ds), device="cpu").score_one(
        "Q1: 2 + 3?\n", "2 + 3 = 5.\n\nThe answer is 5."
    )
    assert len(result.step_rewards) == 2 and all(math.isfinite(r) for r in result.step_rewards)


def _one_row():
    from datasets import Dataset

    return Dataset.from_list([{"prompt": "Q: 1 + 1?\n", "completion": "1 + 1 = 2.", "label": 1.0}])
