"""Train an implicit PRM on pairs with the DPO objective, or NCA with `loss_type: nca` (ImplicitPRMTrainer).

Data: pairs (`prompt`, `chosen`, `rejected`), or rollouts / unpaired rows, which become every correct ×
incorrect pair of an instruction (instructions with one class only are dropped, with a count); see docs/data.md.

    accelerate launch --config_file recipes/accelerate/zero3.yaml recipes/train_dpo.py \
        --config recipes/configs/llama3.1-8b-dpo.yaml            # add --loss_type nca for NCA
"""

from __future__ import annotations

from common import load_train_eval, parse_args, train_and_save
from trl import get_peft_config

from trl_implicit_prm import ImplicitPRMConfig, ImplicitPRMTrainer


def main() -> None:
    script_args, training_args, model_args = parse_args(ImplicitPRMConfig)
    with training_args.main_process_first(desc="loading the datasets"):
        train_dataset, eval_dataset = load_train_eval(script_args)
    trainer = ImplicitPRMTrainer(
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
