"""The training tasks, one implementation each: `ce`, `dpo`, `step-kto` and `prime` (RL, `scripts/prime.py`).

Reached as `accelerate launch recipes/train_ce.py --config file.yaml` (the recipe calls :func:`main` with its
task) and as `trl-implicit-prm train ce --config file.yaml` (the subcommand does the same). A run is four
stages: parse the config and overrides (:func:`~trl_implicit_prm.scripts.utils.parse_args`), load the
training and evaluation sets (:func:`~trl_implicit_prm.scripts.utils.load_train_eval`), build the trainer
(:func:`build_trainer`), then train, save, evaluate and push (:func:`~trl_implicit_prm.scripts.utils.train_and_save`).

    >>> sorted(TASKS)
    ['ce', 'dpo', 'prime', 'step-kto']
    >>> TASKS["step-kto"].trainer
    'StepKTOTrainer'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trl_implicit_prm.scripts.prime import PRIMERecipeArguments, build_prime_trainer
from trl_implicit_prm.scripts.utils import (
    CERecipeArguments,
    RecipeArguments,
    load_train_eval,
    parse_args,
    train_and_save,
)


@dataclass(frozen=True)
class Task:
    """A training task: its trainer and config class (names in `trl_implicit_prm`) and script arguments."""

    trainer: str
    config: str
    script_arguments: type


TASKS = {
    "ce": Task("CETrainer", "CEConfig", CERecipeArguments),
    "dpo": Task("ImplicitPRMTrainer", "ImplicitPRMConfig", RecipeArguments),
    "step-kto": Task("StepKTOTrainer", "StepKTOConfig", RecipeArguments),
    "prime": Task("PRIMETrainer", "PRIMEConfig", PRIMERecipeArguments),
}


def _task(name: str) -> Task:
    key = name.replace("_", "-")
    if key not in TASKS:
        raise ValueError(f"unknown training task {name!r}; pass one of {sorted(TASKS)}")
    return TASKS[key]


def _balanced_rollouts(train_dataset: Any, script_args: CERecipeArguments, training_args: Any) -> Any:
    """The CE task's `rollouts_balance`: rollout rows become balanced unpaired rows (paper Table 1)."""
    from trl_implicit_prm.data import detect_format, rollouts_to_unpaired

    if detect_format(train_dataset) != "rollouts":
        raise ValueError(
            "rollouts_balance needs rollout rows (prompt, completions, correctness); the training "
            f"set has columns {train_dataset.column_names}"
        )
    return rollouts_to_unpaired(
        train_dataset,
        balance=script_args.rollouts_balance,
        seed=training_args.seed,
        step_separator=training_args.step_separator,
    )


def build_trainer(task: str, script_args: RecipeArguments, training_args: Any, model_args: Any) -> Any:
    """The task's trainer on the datasets `script_args` names, with LoRA when `model_args.use_peft`."""
    from trl import get_peft_config

    import trl_implicit_prm

    spec = _task(task)
    if spec.trainer == "PRIMETrainer":
        return build_prime_trainer(script_args, training_args, model_args)
    with training_args.main_process_first(desc="loading the datasets"):
        train_dataset, eval_dataset = load_train_eval(script_args)
    if getattr(script_args, "rollouts_balance", None):
        train_dataset = _balanced_rollouts(train_dataset, script_args, training_args)
    return getattr(trl_implicit_prm, spec.trainer)(
        model=model_args.model_name_or_path,
        ref_model=script_args.ref_model_name_or_path,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
    )


def main(task: str, argv: Sequence[str] | None = None) -> dict[str, float]:
    """Run the training task `task` ('ce', 'dpo', 'step-kto' or 'prime') on `--config file.yaml` plus overrides
    (`argv`, default: the command line); returns the train and eval metrics.
    """
    import trl_implicit_prm

    spec = _task(task)
    config_class = getattr(trl_implicit_prm, spec.config)
    script_args, training_args, model_args = parse_args(config_class, spec.script_arguments, argv)
    trainer = build_trainer(task, script_args, training_args, model_args)
    return train_and_save(trainer, script_args)
