"""Train an implicit PRM with the cross-entropy loss (CETrainer) on outcome labels.

Data: unpaired rows (`prompt`, `completion`, `label`), rollouts (`prompt`, `completions`, `correctness`) or
pairs; see docs/data.md. `loss_type: kto` trains KTO on the same data (paper Table 1); `rollouts_balance:
dataset|instruction` balances rollout rows first.

    accelerate launch --config_file recipes/accelerate/zero3.yaml recipes/train_ce.py \
        --config recipes/configs/llama3.1-8b-ce.yaml

The same run as `trl-implicit-prm train ce --config ...`: both call `trl_implicit_prm.scripts.train.main`,
which parses the config (`scripts.utils.parse_args`), loads the data (`scripts.utils.load_train_eval`), builds
the trainer (`scripts.train.build_trainer`) and trains, saves and evaluates (`scripts.utils.train_and_save`).
To change a stage, copy this file and call those functions yourself.
"""

from trl_implicit_prm.scripts.train import main

if __name__ == "__main__":
    main("ce")
