"""Pieces of the training scripts: argument classes, data loading, model kwargs, the train/save/evaluate tail.

Used by :mod:`trl_implicit_prm.scripts.train` (hence by `recipes/train_*.py` and `trl-implicit-prm train`), and
public for anyone writing their own script in TRL's style:

    >>> from trl_implicit_prm import CEConfig
    >>> from trl_implicit_prm.scripts.utils import parse_args
    >>> script_args, args, model_args = parse_args(
    ...     CEConfig, argv=["--model_name_or_path", "m", "--dataset_name", "rows.jsonl", "--output_dir", "out",
    ...                     "--use_cpu", "true", "--step_separator", "\\n"])
    >>> args.step_separator, args.model_init_kwargs["dtype"]  # '\\n' as typed in a shell; ModelConfig's dtype
    ('\\n', 'float32')
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk
from trl import ModelConfig, ScriptArguments, TrlParser

from trl_implicit_prm.commands._models import unescape
from trl_implicit_prm.data import DataFormatError
from trl_implicit_prm.data.jsonl import read_json_rows
from trl_implicit_prm.distributed import end_distributed_run

logger = logging.getLogger(__name__)

# Local file extension -> `datasets` builder.
DATA_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
_MAX_REPORTED = 20  # bad lines listed in one error


# --------------------------------------------------------------------------------------------------- arguments
@dataclass
class RecipeArguments(ScriptArguments):
    """TRL's `ScriptArguments` (dataset_name, dataset_config, dataset_train_split, dataset_test_split, ...) plus
    what the implicit-PRM recipes add. `dataset_name` is a hub id, a local .json/.jsonl/.parquet/.csv file, a
    folder of such files, or a folder written by `Dataset.save_to_disk`.
    """

    ref_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Reference model πref (path or hub id). Default: the initial policy (a frozen copy, or "
            "the base model with adapters disabled under LoRA)."
        },
    )
    eval_dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A separate evaluation set (same kinds of sources as dataset_name), e.g. step-labelled "
            "rows for step-error metrics. Default: the dataset_test_split of dataset_name, if any."
        },
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom modelling code from the hub when loading the models."}
    )


@dataclass
class CERecipeArguments(RecipeArguments):
    """:class:`RecipeArguments` plus the CE task's rollout balancing."""

    rollouts_balance: str | None = field(
        default=None,
        metadata={
            "help": "Balance correct/incorrect rollouts before training: 'dataset' or 'instruction' "
            "(paper Table 1, CE Dataset-wise / Inst.-wise Balanced). Needs rollout rows."
        },
    )


def parse_args(config_class: type, script_class: type = RecipeArguments, argv: Sequence[str] | None = None):
    """`(script_args, training_args, model_args)` from `--config file.yaml` plus command-line overrides.

    `training_args.model_init_kwargs` is filled from the model arguments (dtype, attention implementation,
    revision, trust_remote_code); values already in `model_init_kwargs` win.
    """
    parser = TrlParser((script_class, config_class, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config(argv)
    if not model_args.model_name_or_path:
        parser.error("model_name_or_path is required (in the YAML config or as --model_name_or_path)")
    if not script_args.dataset_name:
        parser.error("dataset_name is required: a hub id or a local .json/.jsonl/.parquet/.csv file")
    if script_args.dataset_streaming:
        parser.error(
            "dataset_streaming is not supported: the trainers validate and tokenize the whole dataset "
            "before training"
        )
    if model_args.load_in_4bit or model_args.load_in_8bit:
        parser.error(
            "load_in_4bit/load_in_8bit are not supported by these recipes: train LoRA adapters on bf16 "
            "weights instead (see recipes/configs/llama3.1-8b-ce-lora.yaml)"
        )
    # `--step_separator '\n\n'` arrives as backslash-n twice: read escapes as `trl-implicit-prm score` does.
    training_args.step_separator = unescape(training_args.step_separator)
    training_args.model_init_kwargs = {
        # GRPOConfig (PRIME) has its own trust_remote_code field, so that recipe's arguments do not repeat it
        **model_init_kwargs(
            model_args,
            getattr(script_args, "trust_remote_code", None)
            or getattr(training_args, "trust_remote_code", False),
        ),
        **(training_args.model_init_kwargs or {}),
    }
    return script_args, training_args, model_args


def model_init_kwargs(model_args: ModelConfig, trust_remote_code: bool = False) -> dict[str, Any]:
    """`from_pretrained` keyword arguments of the policy and reference, from TRL's `ModelConfig`."""
    kwargs = {
        "revision": model_args.model_revision,
        "dtype": model_args.dtype,
        "attn_implementation": model_args.attn_implementation,
        "trust_remote_code": trust_remote_code or None,
    }
    return {k: v for k, v in kwargs.items() if v is not None}


# -------------------------------------------------------------------------------------------------------- data
def _bad_lines_error(path: str | os.PathLike, bad: Sequence[Any], unit: str) -> DataFormatError:
    where = "" if unit == "line" else "item "
    listed = [f"{path}:{where}{b.number}: {b.reason}" for b in bad[:_MAX_REPORTED]]
    more = [f"... and {len(bad) - _MAX_REPORTED} more"] if len(bad) > _MAX_REPORTED else []
    return DataFormatError(
        f"{len(bad)} unreadable row(s) in {path}; fix them or remove them from the file:\n"
        + "\n".join(listed + more)
    )


def check_json_file(path: str | os.PathLike) -> None:
    """Refuse a local JSON/JSONL data file with lines that are not valid UTF-8 or JSON (`NaN` included) or hold
    a lone surrogate, listing them as `file:line`; `datasets` would fail on them without a line number.
    """
    read = read_json_rows(path)
    if read.bad:
        raise _bad_lines_error(path, read.bad, read.unit)


def load_data(name: str, config: str | None = None) -> DatasetDict:
    """A `DatasetDict` from a hub id, a local data file (split "train"), a folder of files or a saved dataset.

    Local JSON/JSONL files are checked line by line first (:func:`check_json_file`).
    """
    path = Path(name).expanduser()
    if path.is_file():
        builder = DATA_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(
                f"dataset {name!r}: unsupported file type {path.suffix!r}; use one of "
                f"{sorted(DATA_BUILDERS)} or a hub id"
            )
        if builder == "json":
            check_json_file(path)
        return load_dataset(builder, data_files=str(path))
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
            loaded = load_from_disk(str(path))
            return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})
        for file in sorted(path.rglob("*")):
            if file.is_file() and file.suffix.lower() in (".json", ".jsonl"):
                check_json_file(file)
        return load_dataset(str(path), name=config)
    if path.suffix.lower() in DATA_BUILDERS or name.startswith(("/", "./", "../", "~")):
        raise FileNotFoundError(
            f"dataset {name!r} looks like a local file, but there is no such file "
            f"(working directory: {os.getcwd()})"
        )
    return load_dataset(name, name=config)


def _split(data: DatasetDict, split: str, source: str) -> Dataset:
    if split not in data:
        raise ValueError(
            f"dataset {source!r} has no split {split!r}; it has {sorted(data)}. Set "
            "dataset_train_split / dataset_test_split accordingly."
        )
    return data[split]


def load_train_eval(script_args: RecipeArguments) -> tuple[Dataset, Dataset | None]:
    """The training split and the evaluation set (from eval_dataset_name, else the test split if it exists)."""
    data = load_data(script_args.dataset_name, script_args.dataset_config)
    train = _split(data, script_args.dataset_train_split, script_args.dataset_name)
    if script_args.eval_dataset_name:
        evals = load_data(script_args.eval_dataset_name)
        split = (
            script_args.dataset_test_split if script_args.dataset_test_split in evals else next(iter(evals))
        )
        return train, evals[split]
    if script_args.dataset_test_split in data:
        return train, data[script_args.dataset_test_split]
    logger.info(
        "no %r split in %s: training without an evaluation set",
        script_args.dataset_test_split,
        script_args.dataset_name,
    )
    return train, None


def is_local(name: str) -> bool:
    """Whether `name` is a local path (else a Hub id, refused offline by the loaders)."""
    return Path(name).expanduser().exists()


# ---------------------------------------------------------------------------------------------- training tail
def train_and_save(trainer: Any, script_args: RecipeArguments) -> dict[str, float]:
    """Train, save the checkpoint (with `implicit_prm.json`), evaluate if there is an eval set, push if asked, and
    end the run (`end_distributed_run`: in a multi-process run the process exits here, status 0).
    """
    args = trainer.args
    result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    trainer.save_model(args.output_dir)
    trainer.accelerator.print(f"Model saved to {args.output_dir}")
    metrics = dict(result.metrics)
    if trainer.eval_dataset is not None:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    if args.push_to_hub:
        hub_dataset = None if is_local(script_args.dataset_name) else script_args.dataset_name
        trainer.push_to_hub(dataset_name=hub_dataset)
        trainer.accelerator.print(f"Model pushed to https://huggingface.co/{trainer.hub_model_id}")
    # Barrier, trackers, process group; a multi-process run exits here with status 0 (see end_distributed_run).
    end_distributed_run(trainer)
    return metrics
