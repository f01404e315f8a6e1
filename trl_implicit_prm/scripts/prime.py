"""The `prime` training task: RL with implicit process rewards (`PRIMETrainer`), PRIME or PURE's min-form credit.

Data: rows with a `prompt` (string or chat messages) and the ground-truth answer (column `answer_column`); the
verifier gives 1.0 when the completion's final answer (`\\boxed{...}` or "The answer is ...") equals it, else 0.0.
Reached as `accelerate launch recipes/train_prime.py --config file.yaml` and as `trl-implicit-prm train prime
--config file.yaml` (both through :func:`trl_implicit_prm.scripts.train.main`). See docs/rl.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trl import ScriptArguments

from trl_implicit_prm.evaluation.answers import answers_equivalent, extract_answer
from trl_implicit_prm.scripts.utils import load_train_eval

__all__ = ["PRIMERecipeArguments", "build_prime_trainer", "make_verifier"]


@dataclass
class PRIMERecipeArguments(ScriptArguments):
    """TRL's `ScriptArguments` plus the PRM's models and the answer column.

    Like :class:`~trl_implicit_prm.scripts.utils.RecipeArguments` without `trust_remote_code`, which
    `PRIMEConfig` (a `GRPOConfig`) already has.
    """

    ref_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "The PRM's frozen reference (path or hub id). Default: a copy of the initial PRM."},
    )
    eval_dataset_name: str | None = field(
        default=None, metadata={"help": "A separate evaluation set. Default: dataset_test_split, if any."}
    )
    prm_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Initial implicit PRM (path or hub id). Default: the initial policy."}
    )
    answer_column: str = field(default="answer", metadata={"help": "Column holding each prompt's answer."})


def _text(completion: Any) -> str:
    return completion if isinstance(completion, str) else completion[-1]["content"]


def make_verifier(answer_column: str) -> Callable[..., list[float]]:
    """A TRL reward function: 1.0 when the completion's final answer equals the row's `answer_column`.

    Example:

    ```python
    >>> verifier = make_verifier("answer")
    >>> verifier(["So 2 + 3 = 5. The answer is 5.", "The answer is 6."], answer=["5", "5"])
    [1.0, 0.0]

    ```
    """

    def verifier(completions: list[Any], **columns: Any) -> list[float]:
        if answer_column not in columns:
            raise ValueError(f"the training set has no {answer_column!r} column (set answer_column)")
        answers = columns[answer_column]
        return [
            float(answers_equivalent(extract_answer(_text(c)), str(a)))
            for c, a in zip(completions, answers, strict=True)
        ]

    verifier.__name__ = "verifier"
    return verifier


def build_prime_trainer(script_args: PRIMERecipeArguments, training_args: Any, model_args: Any) -> Any:
    """A `PRIMETrainer` on the datasets `script_args` names, the verifier as its reward function."""
    from trl import get_peft_config

    from trl_implicit_prm import PRIMETrainer

    with training_args.main_process_first(desc="loading the datasets"):
        train_dataset, eval_dataset = load_train_eval(script_args)
    if script_args.answer_column not in train_dataset.column_names:
        raise ValueError(
            f"the training set has columns {train_dataset.column_names}, no {script_args.answer_column!r}: "
            "give each prompt its ground-truth answer (or set answer_column)"
        )
    return PRIMETrainer(
        model=model_args.model_name_or_path,
        reward_funcs=make_verifier(script_args.answer_column),
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
        prm_model=script_args.prm_model_name_or_path or model_args.model_name_or_path,
        prm_ref_model=script_args.ref_model_name_or_path,
    )
