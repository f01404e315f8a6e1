"""Second-stage training of an implicit PRM on step labels with step-level KTO (StepKTOTrainer, paper §5.3).

Data: stepwise rows (`prompt`, `completions` = the list of steps, `labels` = one bool per step); see
docs/data.md. Start from a checkpoint trained by train_ce.py or train_dpo.py (`model_name_or_path`) and keep
the original reference (`ref_model_name_or_path`, e.g. Llama-3.1-8B-Instruct), so that the step rewards keep
measuring the log-ratio to it.

    accelerate launch --config_file recipes/accelerate/zero3.yaml recipes/train_step_kto.py \
        --config recipes/configs/llama3.1-8b-step-kto.yaml

The same run as `trl-implicit-prm train step-kto --config ...`; the stages are listed in recipes/train_ce.py.
"""

from trl_implicit_prm.scripts.train import main

if __name__ == "__main__":
    main("step-kto")
