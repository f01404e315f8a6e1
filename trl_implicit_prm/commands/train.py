"""`trl-implicit-prm train ce|dpo|step-kto|prime --config file.yaml [--key value ...]`: train.

The same code as `recipes/train_ce.py`, `recipes/train_dpo.py`, `recipes/train_step_kto.py` and `recipes/train_prime.py`
(:func:`trl_implicit_prm.scripts.train.main`): the YAML config and every override are parsed by TRL's
`TrlParser` into the script arguments, the trainer's config and TRL's `ModelConfig`. Under several processes:
`accelerate launch --config_file recipes/accelerate/zero3.yaml -m trl_implicit_prm.cli train ce --config ...`.
"""

from __future__ import annotations

import argparse

from trl_implicit_prm.commands._errors import CommandError

NAME = "train"
HELP = "train an implicit PRM (ce, dpo, step-kto) or a policy with it (prime) from a YAML config, as the recipes do"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `train` command's arguments to `parser`."""
    parser.add_argument(
        "task",
        choices=["ce", "dpo", "step-kto", "prime"],
        help="which trainer: CE, DPO/NCA, step KTO, or PRIME (RL with the implicit PRM, docs/rl.md)",
    )
    parser.add_argument(
        "options",
        nargs=argparse.REMAINDER,
        help="--config file.yaml and overrides such as --learning_rate 1e-6 (the recipes' keys)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the `train` command; return the exit status."""
    from trl_implicit_prm.scripts.train import main

    if not args.options:
        raise CommandError(
            f"train {args.task}: pass --config file.yaml (see recipes/configs/) and/or overrides"
        )
    main(args.task, args.options)
    return 0
