"""Train an implicit PRM on pairs with the DPO objective, or NCA with `loss_type: nca` (ImplicitPRMTrainer).

Data: pairs (`prompt`, `chosen`, `rejected`), or rollouts / unpaired rows, which become every correct ×
incorrect pair of an instruction (instructions with one class only are dropped, with a count); see docs/data.md.

    accelerate launch --config_file recipes/accelerate/zero3.yaml recipes/train_dpo.py \
        --config recipes/configs/llama3.1-8b-dpo.yaml            # add --loss_type nca for NCA

The same run as `trl-implicit-prm train dpo --config ...`; the stages are listed in recipes/train_ce.py.
"""

from trl_implicit_prm.scripts.train import main

if __name__ == "__main__":
    main("dpo")
