"""Train an implicit PRM with the cross-entropy loss (CETrainer) on outcome labels.

Data: unpaired rows (`prompt`, `completion`, `label`), rollouts (`prompt`, `completions`, `correctness`) or
pairs; see docs/data.md. `loss_type: kto` trains KTO on the same data (paper Table 1).

    accelerate launch --config_file recipes/accelerate/zero3.yaml recipes/train_ce.py \
        --config recipes/configs/llama3.1-8b-ce.yaml
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common import RecipeArguments, load_train_eval, parse_args, train_and_save
from trl import get_peft_config

from trl_implicit_prm import CEConfig, CETrainer
from trl_implicit_prm.data import detect_format, rollouts_to_unpaired


@dataclass
class CERecipeArguments(RecipeArguments):
    rollouts_balance: str | None = field(
        default=None,
        metadata={
            "help": "Balance correct/incorrect rollouts before training: 'dataset' or 'instruction' "
            "(paper Table 1, CE Dataset-wise / Inst.-wise Balanced). Needs rollout rows."
        },
    )


def main() -> None:
    script_args, training_args, model_args = parse_args(CEConfig, CERecipeArguments)
    with training_args.main_process_first(desc="loading the datasets"):
        train_dataset, eval_dataset = load_train_eval(script_args)
    if script_args.rollouts_balance:
        if detect_format(train_dataset) != "rollouts":
            raise ValueError(
                "rollouts_balance needs rollout rows (prompt, completions, correctness); the training "
                f"set has columns {train_dataset.column_names}"
            )
        train_dataset = rollouts_to_unpaired(
            train_dataset,
            balance=script_args.rollouts_balance,
            seed=training_args.seed,
            step_separator=training_args.step_separator,
        )
    trainer = CETrainer(
        model=model_args.model_name_or_path,
        ref_model=script_args.ref_model_name_or_path,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
    )
    train_and_save(trainer, script_args)


if __name__ == "__main__":
    main()
