"""RL with implicit process rewards (PRIMETrainer): PRIME, or PURE's min-form credit assignment.

Data: rows with a `prompt` (string or chat messages) and the ground-truth `answer` (column `answer_column`); the
verifier gives 1.0 when the completion's final answer (`\\boxed{...}` or "The answer is ...") equals it, else 0.0.
See docs/rl.md.

    accelerate launch --config_file recipes/accelerate/zero3.yaml recipes/train_prime.py \
        --config recipes/configs/qwen2.5-math-7b-prime.yaml

The same run as `trl-implicit-prm train prime --config ...`: both call `trl_implicit_prm.scripts.train.main`,
which parses the config, loads the data and builds the trainer (`scripts.prime.build_prime_trainer`, with the
verifier `scripts.prime.make_verifier`), then trains and saves (`scripts.utils.train_and_save`). To change a
stage, copy this file and call those functions yourself.
"""

from trl_implicit_prm.scripts.train import main

if __name__ == "__main__":
    main("prime")
