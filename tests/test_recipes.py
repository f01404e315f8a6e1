"""The recipes as users run them: every training script with the tiny CPU config, in one process and under
`accelerate launch` with DeepSpeed ZeRO-3 on 2 CPU processes (subprocesses); the checkpoints score with
ProcessRewardComputer; score.py and evaluate.py on tiny inputs (run as `__main__` in this process, to save the
start-up time); and every YAML config parses into its trainer's config with the paper's
values (the 8B ones without loading any weight).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import os
import re
import runpy
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import write_jsonl as _write_jsonl

from trl_implicit_prm.scripts import utils as common  # what the recipes run
from trl_implicit_prm.scripts.utils import CERecipeArguments

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
CONFIGS = RECIPES / "configs"
TINY = CONFIGS / "tiny-cpu.yaml"
BIN = Path(sys.executable).parent
TRAIN_SCRIPTS = {"ce": "train_ce.py", "dpo": "train_dpo.py", "step_kto": "train_step_kto.py"}
TRAINER_NAMES = {"ce": "CETrainer", "dpo": "ImplicitPRMTrainer", "step_kto": "StepKTOTrainer"}
TRAINING_ROWS = {
    "ce": 16,
    "dpo": 8,
    "step_kto": 8,
}  # 8 rollouts of 2 responses -> 16 rows / 8 pairs; 8 step rows


def _load(name: str):
    """A recipe module, loaded from its file (the recipes folder is not put on sys.path: it has an evaluate.py)."""
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


from trl_implicit_prm.scripts.prime import PRIMERecipeArguments, make_verifier  # noqa: E402


# ------------------------------------------------------------------------------------------------------ helpers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], log: Path, cache: Path) -> str:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(cache),
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "WANDB_DISABLED": "true",
    }
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=600)
    text = log.read_text()
    assert proc.returncode == 0, f"{' '.join(cmd)}\n...\n{text[-4000:]}"
    return text


def _run_script(script: str, *argv: str) -> str:
    """Run a (non-distributed) recipe as `python recipes/SCRIPT ARGV...` would, in this process; returns stdout."""
    saved = sys.argv
    sys.argv = [str(RECIPES / script), *argv]
    try:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            runpy.run_path(str(RECIPES / script), run_name="__main__")
    finally:
        sys.argv = saved
    return out.getvalue()


def _launcher(kind: str) -> list[str]:
    if kind == "single":
        return [sys.executable]
    return [
        str(BIN / "accelerate"),
        "launch",
        "--config_file",
        str(RECIPES / "accelerate" / "zero3.yaml"),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--main_process_port",
        str(_free_port()),
    ]


def _problems(n: int = 8):
    for i in range(n):
        a, b = i % 7 + 1, i % 5 + 2
        yield i, a, b, f"Q{i}: {a} + {b}?\n"


# ----------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Rollouts (CE and DPO), step labels (step KTO, and evaluation), ProcessBench and best-of-N files."""
    root = tmp_path_factory.mktemp("recipe-data")
    rollouts, steps, bench, bon = [], [], [], []
    for i, a, b, prompt in _problems():
        good, bad = (
            [f"{a} + {b} = {a + b}.", f"The answer is {a + b}."],
            [f"{a} + {b} = {a + b + 1}.", f"The answer is {a + b + 1}."],
        )
        rollouts.append(
            {
                "prompt": prompt,
                "completions": ["\n\n".join(good), "\n\n".join(bad)],
                "correctness": [True, False],
            }
        )
        steps.append(
            {
                "prompt": prompt,
                "completions": good if i % 2 else bad,
                "labels": [True, True] if i % 2 else [False, False],
            }
        )
        bench.append({"problem": prompt, "steps": good if i % 2 else bad, "label": -1 if i % 2 else 0})
        bon.append(
            {
                "problem": prompt,
                "reference": str(a + b),
                "candidates": ["\n\n".join(bad), "\n\n".join(good), {"response": good, "answer": str(a + b)}],
            }
        )
    return {
        "rollouts": _write_jsonl(root / "rollouts.jsonl", rollouts),
        "steps": _write_jsonl(root / "steps.jsonl", steps),
        "bench_dev": _write_jsonl(root / "bench_dev.jsonl", bench[:4]),
        "bench_test": _write_jsonl(root / "bench_test.jsonl", bench[4:]),
        "bon": _write_jsonl(root / "bon.jsonl", bon),
    }


@pytest.fixture(scope="module")
def trained(tiny_dir, data, tmp_path_factory):
    """`train(recipe, launcher)` runs a training recipe (once per pair) and returns its output directory."""
    root = tmp_path_factory.mktemp("recipe-runs")
    done: dict[tuple[str, str], Path] = {}

    def train(recipe: str, launcher: str) -> Path:
        if (recipe, launcher) not in done:
            out = root / f"{recipe}-{launcher}"
            dataset = data["steps"] if recipe == "step_kto" else data["rollouts"]
            # the two doors of one task: the recipe script, and the `train` command (DPO in one process)
            door = (
                ["-m", "trl_implicit_prm.cli", "train", "dpo"]
                if (recipe, launcher) == ("dpo", "single")
                else [str(RECIPES / TRAIN_SCRIPTS[recipe])]
            )
            cmd = [
                *_launcher(launcher),
                *door,
                "--config",
                str(TINY),
                "--model_name_or_path",
                str(tiny_dir / "llama"),
                "--dataset_name",
                str(dataset),
                "--output_dir",
                str(out),
            ]
            if recipe == "ce" and launcher == "single":  # a step-labelled eval set gives the step metrics
                cmd += ["--eval_dataset_name", str(data["steps"])]
            _run(cmd, root / f"{recipe}-{launcher}.log", root / "cache")
            done[recipe, launcher] = out
        return done[recipe, launcher]

    return train


def _score_one(checkpoint: Path):
    from trl_implicit_prm import ProcessRewardComputer

    prm = ProcessRewardComputer.from_pretrained(str(checkpoint), device="cpu")
    return prm, prm.score_one("Q1: 2 + 3?\n", "2 + 3 = 5.\n\nSo 5.\n\nThe answer is 5.")


def _epoch(checkpoint: Path) -> float:
    return json.loads((checkpoint / "trainer_state.json").read_text())["epoch"]


# --------------------------------------------------------------------------------------------- training runs
@pytest.mark.distributed
@pytest.mark.parametrize("launcher", ["single", "zero3"])
@pytest.mark.parametrize("recipe", ["ce", "dpo", "step_kto"])
def test_training_recipe_gives_a_scoring_checkpoint(recipe, launcher, trained):
    out = trained(recipe, launcher)
    meta = json.loads((out / "implicit_prm.json").read_text())
    assert meta["trainer"] == TRAINER_NAMES[recipe] and meta["beta"] == 0.1  # β of tiny-cpu.yaml
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert "2412.01981" in (out / "README.md").read_text()  # the model card cites the paper
    prm, result = _score_one(out)
    assert prm.beta == 0.1 and not prm.reference_free
    assert len(result.step_rewards) == 3 and all(math.isfinite(r) for r in result.step_rewards)
    assert result.outcome_reward == pytest.approx(sum(result.step_rewards), abs=1e-6)
    # 2 steps of 2 rows per process: the 2-process run went through twice as much of the data
    processes = 2 if launcher == "zero3" else 1
    assert _epoch(out) == pytest.approx(processes * 2 * 2 / TRAINING_ROWS[recipe])


def test_single_process_ce_run_evaluates_on_step_labels(trained):
    out = trained("ce", "single")
    metrics = json.loads((out / "all_results.json").read_text())
    assert "eval_loss" in metrics and "eval_steps/acc_erroneous" in metrics and "train_loss" in metrics


def test_lora_recipe_saves_an_adapter_that_scores_against_its_base(tiny_dir, data, tmp_path):
    out = tmp_path / "lora"
    _run(
        [
            sys.executable,
            str(RECIPES / "train_ce.py"),
            "--config",
            str(TINY),
            "--model_name_or_path",
            str(tiny_dir / "llama"),
            "--dataset_name",
            str(data["rollouts"]),
            "--output_dir",
            str(out),
            "--use_peft",
            "true",
            "--lora_r",
            "4",
            "--lora_alpha",
            "8",
            "--rollouts_balance",
            "instruction",
        ],
        tmp_path / "lora.log",
        tmp_path / "cache",
    )
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    prm, result = _score_one(out)
    assert prm.adapter_reference and len(result.step_rewards) == 3


# ----------------------------------------------------------------------------------------- score and evaluate
def test_score_recipe_writes_scored_rows_and_html(trained, tmp_path):
    checkpoint = trained("ce", "single")
    rows = _write_jsonl(
        tmp_path / "rows.jsonl",
        [
            {"id": "a", "prompt": "Q1: 2 + 3?\n", "response": "2 + 3 = 5.\n\nThe answer is 5."},
            {
                "id": "b",
                "prompt": [{"role": "user", "content": "Q2: 1 + 1?"}],
                "steps": ["1 + 1 = 3.", "So 3."],
            },
            {"id": "c", "prompt": "Q3: 4 + 4?\n", "steps": ["4 + 4 = 8.", "So 8.", "The answer is 8."]},
        ],
    )
    out, html = tmp_path / "scored.jsonl", tmp_path / "scored.html"
    _run_script(
        "score.py",
        "--model_name_or_path",
        str(checkpoint),
        "--input_file",
        str(rows),
        "--output_file",
        str(out),
        "--html_file",
        str(html),
        "--device",
        "cpu",
    )
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in scored] == ["a", "b", "c"]
    assert [len(r["step_rewards"]) for r in scored] == [2, 2, 3]
    for r in scored:
        assert r["min"] == min(r["step_rewards"]) and r["outcome_reward"] == pytest.approx(
            sum(r["step_rewards"])
        )
        assert r["truncated"] is False
    assert "first error?" in html.read_text()


def test_evaluate_recipe_tunes_on_one_split_and_writes_json_and_plots(trained, data, tmp_path):
    checkpoint = trained("ce", "single")
    out = tmp_path / "eval"
    log = _run_script(
        "evaluate.py",
        "--model_name_or_path",
        str(checkpoint),
        "--process_files",
        f"dev={data['bench_dev']}",
        f"test={data['bench_test']}",
        "--tune_on",
        "dev",
        "--bon_file",
        str(data["bon"]),
        "--aggregations",
        "min",
        "sum",
        "--device",
        "cpu",
        "--output_dir",
        str(out),
    )
    steps = json.loads((out / "eval_steps.json").read_text())  # as `trl-implicit-prm eval-steps` writes it
    assert steps["results"]["tuned_on"] == "dev"
    splits = steps["results"]["splits"]
    assert splits["dev"]["oracle"] and not splits["test"]["oracle"]
    assert splits["test"]["n_erroneous"] == 2 and splits["test"]["n_correct"] == 2
    bon = json.loads((out / "eval_bon.json").read_text())
    assert bon["results"]["ns"] == [1, 2]
    assert {"prm:min", "prm:sum", "majority", "weighted:min"} <= set(bon["results"]["accuracy"])
    assert (
        steps["beta"] == bon["beta"] == 0.1 and len(steps["data_files"]) == 2 and len(bon["data_files"]) == 1
    )
    assert (out / "best_of_n.png").stat().st_size > 1000 and (
        out / "f1_vs_threshold.png"
    ).stat().st_size > 1000
    assert "oracle threshold" in log


def test_score_and_evaluate_recipes_agree_with_the_commands_on_an_empty_step(tiny_dir, data, tmp_path):
    """The recipes are doors to the commands: an empty step is skipped and counted by both (the recipe used to
    crash on it), and the outputs are the same bytes / the same results."""
    from trl_implicit_prm.cli import main

    model = ["--ref_model_name_or_path", str(tiny_dir / "llama-ref"), "--device", "cpu"]
    flags = [
        "--model",
        str(tiny_dir / "llama"),
        "--ref-model",
        str(tiny_dir / "llama-ref"),
        "--device",
        "cpu",
    ]
    bench = data["bench_dev"].read_text().splitlines()
    bench.append(json.dumps({"problem": "Q9: 1 + 1?\n", "steps": ["1 + 1 = 2.", ""], "label": -1}))
    dev = _write_jsonl(tmp_path / "dev.jsonl", [json.loads(line) for line in bench])
    recipe_out, command_out = tmp_path / "recipe", tmp_path / "command.json"
    log = _run_script(
        "evaluate.py",
        "--model_name_or_path",
        str(tiny_dir / "llama"),
        *model,
        "--process_files",
        f"dev={dev}",
        f"test={data['bench_test']}",
        "--tune_on",
        "dev",
        "--output_dir",
        str(recipe_out),
    )
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["eval-steps", *flags, "--data", f"dev={dev}", f"test={data['bench_test']}",
                     "--tune-on", "dev", "--output", str(command_out)]) == 0  # fmt: skip
    by_recipe, by_command = (json.loads(p.read_text()) for p in (recipe_out / "eval_steps.json", command_out))
    assert by_recipe["results"] == by_command["results"] and by_recipe["skipped"] == by_command["skipped"]
    assert "skipped rows 1" in log and by_recipe["skipped"]["count"] == 1
    rows = _write_jsonl(
        tmp_path / "rows.jsonl",
        [
            {"prompt": "Q1: 2 + 3?\n", "steps": ["2 + 3 = 5.", ""]},
            {"prompt": "Q2: 1 + 1?\n", "response": "So 2."},
        ],
    )
    io_flags = [
        "--input_file",
        str(rows),
        "--output_file",
        str(tmp_path / "recipe.jsonl"),
        "--skip_invalid",
        "true",
    ]
    _run_script("score.py", "--model_name_or_path", str(tiny_dir / "llama"), *model, *io_flags)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["score", *flags, "--input", str(rows), "--output", str(tmp_path / "cmd.jsonl"),
                     "--skip-invalid"]) == 0  # fmt: skip
    scored = (tmp_path / "recipe.jsonl").read_bytes()
    assert scored == (tmp_path / "cmd.jsonl").read_bytes() and scored.count(b"\n") == 1
    with pytest.raises(SystemExit) as stopped, contextlib.redirect_stderr(io.StringIO()) as err:
        _run_script("score.py", "--model_name_or_path", str(tiny_dir / "llama"), *model, *io_flags[:4])
    assert stopped.value.code == 2 and "nothing scored" in err.getvalue()


# ------------------------------------------------------------------------------------------- configs (no run)
def _config_classes(name: str):
    from trl_implicit_prm import CEConfig, ImplicitPRMConfig, PRIMEConfig, StepKTOConfig

    if name == "tiny-cpu.yaml":
        return [
            (CEConfig, CERecipeArguments),
            (ImplicitPRMConfig, common.RecipeArguments),
            (StepKTOConfig, common.RecipeArguments),
        ]
    kinds = {
        "-ce": (CEConfig, CERecipeArguments),
        "-dpo": (ImplicitPRMConfig, common.RecipeArguments),
        "-step-kto": (StepKTOConfig, common.RecipeArguments),
        "-prime": (PRIMEConfig, PRIMERecipeArguments),
    }
    return [pair for suffix, pair in kinds.items() if re.search(rf"{suffix}(-lora)?\.yaml$", name)]


ALL_CONFIGS = sorted(p.name for p in CONFIGS.glob("*.yaml"))
PAPER_CONFIGS = ["llama3.1-8b-ce.yaml", "llama3.1-8b-dpo.yaml", "llama3.1-8b-step-kto.yaml"]


def _parse(name: str, config_class, script_class, *overrides: str):
    return common.parse_args(config_class, script_class, ["--config", str(CONFIGS / name), *overrides])


def test_every_config_is_known():
    known = {"llama3.1-8b-ce-lora.yaml", "tiny-cpu.yaml", "qwen2.5-math-7b-prime.yaml"}
    assert set(PAPER_CONFIGS) | known == set(ALL_CONFIGS)
    for name in ALL_CONFIGS:
        assert _config_classes(name), f"{name}: which trainer is it for?"


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_config_parses_into_its_trainer_config(name):
    overrides = [
        "--use_cpu",
        "true",
    ]  # this machine has no GPU: TrainingArguments refuses bf16 without use_cpu
    if name == "tiny-cpu.yaml":
        overrides += ["--model_name_or_path", "tiny", "--dataset_name", "rows.jsonl"]
    for config_class, script_class in _config_classes(name):
        script_args, args, model_args = _parse(name, config_class, script_class, *overrides)
        assert isinstance(args, config_class) and isinstance(script_args, script_class)
        assert args.model_init_kwargs["dtype"] == model_args.dtype


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_hold_the_paper_values(name):
    ((config_class, script_class),) = _config_classes(name)
    script_args, args, model_args = _parse(name, config_class, script_class, "--use_cpu", "true")
    processes = yaml.safe_load((RECIPES / "accelerate" / "zero3.yaml").read_text())["num_processes"]
    assert processes == 8
    assert args.beta == 0.05 and args.learning_rate == 5e-7 and args.num_train_epochs == 1
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps * processes == 64
    assert args.max_length == 8192 and args.bf16 and args.gradient_checkpointing
    llama = "meta-llama/Llama-3.1-8B-Instruct"  # the policy's initialisation and the reference (§4.1)
    assert (script_args.ref_model_name_or_path or model_args.model_name_or_path) == llama
    assert args.model_init_kwargs["dtype"] == "bfloat16" and not model_args.use_peft
    assert not args.reference_free and not args.precompute_ref_log_probs
    # every paper value says where it comes from
    lines = {line.split(":")[0]: line for line in (CONFIGS / name).read_text().splitlines() if ":" in line}
    for key in (
        "beta",
        "learning_rate",
        "num_train_epochs",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "max_length",
        "bf16",
    ):
        assert "§" in lines[key], f"{name}: {key} has no paper section"
    if name.endswith("step-kto.yaml"):  # stage two starts from the DPO recipe's output
        assert model_args.model_name_or_path == "outputs/llama3.1-8b-implicit-prm-dpo"
        assert args.per_device_train_batch_size >= 2  # KTO's mismatched z0 needs another row on the device


def test_lora_config_is_one_gpu_and_says_it_is_not_from_the_paper():
    from trl import get_peft_config

    from trl_implicit_prm import CEConfig

    _, args, model_args = _parse("llama3.1-8b-ce-lora.yaml", CEConfig, CERecipeArguments, "--use_cpu", "true")
    peft = get_peft_config(model_args)
    assert peft.r == 64 and peft.target_modules == "all-linear"
    assert 1e-5 <= args.learning_rate <= 5e-5 and args.beta == 0.05
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 64
    text = (CONFIGS / "llama3.1-8b-ce-lora.yaml").read_text()
    assert "NOT the paper's setting" in text
    for key in ("lora_r", "learning_rate"):
        assert "not from the paper" in next(line for line in text.splitlines() if line.startswith(key + ":"))


def test_prime_config_holds_the_prime_values():
    from trl_implicit_prm import PRIMEConfig

    name = "qwen2.5-math-7b-prime.yaml"
    script_args, args, model_args = _parse(name, PRIMEConfig, PRIMERecipeArguments, "--use_cpu", "true")
    processes = yaml.safe_load((RECIPES / "accelerate" / "zero3.yaml").read_text())["num_processes"]
    assert processes == 8 and args.learning_rate == 5e-7 and args.num_generations == 4
    assert args.prm_learning_rate == 1e-6 and args.prm_beta == 0.05 and args.prm_max_grad_norm == 10.0
    assert (args.process_reward_coef, args.outcome_reward_coef) == (5.0, 5.0)
    assert (args.accuracy_lower_bound, args.accuracy_upper_bound) == (
        0.2,
        0.8,
    ) and args.oversample_factor == 4
    assert args.beta == 0.0 and args.bf16 and model_args.dtype == "bfloat16"
    rollouts = args.per_device_train_batch_size * args.gradient_accumulation_steps * processes
    assert rollouts % args.num_generations == 0
    assert (args.per_device_train_batch_size * args.steps_per_generation) % args.prm_micro_batch_size == 0
    lines = {line.split(":")[0]: line for line in (CONFIGS / name).read_text().splitlines() if ":" in line}
    for key in (
        "learning_rate",
        "num_generations",
        "prm_learning_rate",
        "prm_beta",
        "prm_max_grad_norm",
        "oversample_factor",
    ):
        assert "PRIME" in lines[key], f"{name}: {key} does not say it is PRIME's"
    assert script_args.answer_column == "answer"


def test_prime_verifier_grades_final_answers():
    verifier = make_verifier("answer")
    completions = [
        "3 + 4 = 7.\n\nThe answer is 7.",
        "So \\boxed{8}.",
        [{"role": "assistant", "content": "It is 7."}],
    ]
    assert verifier(completions, answer=["7", "7", "7"]) == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="no 'answer' column"):
        verifier(completions, solution=["7"] * 3)


def test_train_prime_command_and_recipe_are_one_task(tiny_dir, tmp_path):
    """`trl-implicit-prm train prime` runs the recipe's code: one RL step, then a PRM checkpoint that scores."""
    from trl_implicit_prm import ProcessRewardComputer
    from trl_implicit_prm.scripts.train import TASKS

    assert TASKS["prime"].trainer == "PRIMETrainer"
    assert 'main("prime")' in (RECIPES / "train_prime.py").read_text()
    rows = [{"prompt": f"Q{i}: {i} + 2?\n", "answer": str(i + 2)} for i in range(4)]
    data = _write_jsonl(tmp_path / "prompts.jsonl", rows)
    out = tmp_path / "out"
    flags = {
        "max_steps": 1,
        "per_device_train_batch_size": 2,
        "num_generations": 2,
        "max_completion_length": 8,
    }
    cmd = [sys.executable, "-m", "trl_implicit_prm.cli", "train", "prime", "--model_name_or_path"]
    cmd += [
        str(tiny_dir / "llama"),
        "--dataset_name",
        str(data),
        "--output_dir",
        str(out),
        "--use_cpu",
        "true",
    ]
    cmd += ["--bf16", "false", "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1"]
    cmd += [str(x) for key, value in flags.items() for x in (f"--{key}", value)]
    _run(cmd, tmp_path / "prime.log", tmp_path / "cache")
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 1
    prm = ProcessRewardComputer.from_pretrained(str(out / "prm"), device="cpu")
    result = prm.score_one(rows[0]["prompt"], "0 + 2 = 2.\n\nThe answer is 2.")
    assert len(result.step_rewards) == 2 and all(math.isfinite(r) for r in result.step_rewards)


def test_tiny_config_runs_on_cpu_and_needs_a_model():
    from trl_implicit_prm import CEConfig

    _, args, _ = _parse(
        "tiny-cpu.yaml", CEConfig, CERecipeArguments, "--model_name_or_path", "m", "--dataset_name", "d.jsonl"
    )
    assert args.use_cpu and not args.bf16 and args.max_steps == 2 and args.step_separator == "\n\n"
    _, args, _ = _parse(
        "tiny-cpu.yaml",
        CEConfig,
        CERecipeArguments,
        "--model_name_or_path",
        "m",
        "--dataset_name",
        "d.jsonl",
        "--step_separator",
        r"\n",
    )  # as typed in a shell
    assert args.step_separator == "\n"
    with pytest.raises(SystemExit):
        _parse("tiny-cpu.yaml", CEConfig, CERecipeArguments, "--dataset_name", "d.jsonl")


# ----------------------------------------------------------------------------------------------- data loading
def test_load_data_reads_local_files_and_says_what_is_wrong(data, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    loaded = common.load_data(str(data["rollouts"]))
    assert list(loaded) == ["train"] and len(loaded["train"]) == 8
    with pytest.raises(FileNotFoundError, match="looks like a local file"):
        common.load_data(str(tmp_path / "missing.jsonl"))
    (tmp_path / "rows.txt").write_text("x")
    with pytest.raises(ValueError, match=r"unsupported file type '\.txt'"):
        common.load_data(str(tmp_path / "rows.txt"))
    args = CERecipeArguments(dataset_name=str(data["rollouts"]), dataset_train_split="training")
    with pytest.raises(ValueError, match="no split 'training'"):
        common.load_train_eval(args)
    args = CERecipeArguments(dataset_name=str(data["rollouts"]), eval_dataset_name=str(data["steps"]))
    train, evaluation = common.load_train_eval(args)
    assert len(train) == 8 and evaluation.column_names == ["prompt", "completions", "labels"]
