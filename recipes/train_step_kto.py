"""Second-stage training of an implicit PRM on step labels with step-level KTO (StepKTOTrainer, paper §5.3).

Data: stepwise rows (`prompt`, `completions` = the list of steps, `labels` = one bool per step); see
docs/data.md. Start from a checkpoint trained by train_ce.py or train_dpo.py (`model_name_or_path`) and keep
the original reference (`ref_model_name_or_path`, e.g. Llama-3.1-8B-Instruct), so that the step rewards keep
measuring the log-ratio to it.

    accelerate launch --config_file recipes/accelerate/zero3.yaml recipes/train_step_kto.py \
        --config recipes/configs/llama3.1-8b-step-kto.yaml
"""

from __future__ import annotations

from common import load_train_eval, parse_args, train_and_save
from trl import get_peft_config

from trl_implicit_prm import StepKTOConfig, StepKTOTrainer


def main() -> None:
    script_args, training_args, model_args = parse_args(StepKTOConfig)
    with training_args.main_process_first(desc="loading the datasets"):
        train_dataset, eval_dataset = load_train_eval(script_args)
    trainer = StepKTOTrainer(
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
