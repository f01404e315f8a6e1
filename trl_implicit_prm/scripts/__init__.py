"""The training tasks behind `recipes/train_*.py` and `trl-implicit-prm train ce|dpo|step-kto`.

One implementation, two doors: a recipe script calls :func:`~trl_implicit_prm.scripts.train.main` with its task,
and so does the `train` subcommand. :mod:`trl_implicit_prm.scripts.utils` holds the pieces (argument classes,
data loading, the train/save/evaluate tail) for anyone writing their own script.
"""

from trl_implicit_prm.scripts.train import TASKS, build_trainer, main
from trl_implicit_prm.scripts.utils import (
    CERecipeArguments,
    RecipeArguments,
    check_json_file,
    load_data,
    load_train_eval,
    model_init_kwargs,
    parse_args,
    train_and_save,
)

__all__ = [
    "TASKS",
    "CERecipeArguments",
    "RecipeArguments",
    "build_trainer",
    "check_json_file",
    "load_data",
    "load_train_eval",
    "main",
    "model_init_kwargs",
    "parse_args",
    "train_and_save",
]
