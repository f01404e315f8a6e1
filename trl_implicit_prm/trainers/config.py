"""Configurations of the implicit-PRM trainers.

Each config subclasses TRL's trainer configuration base (a `transformers.TrainingArguments`), so every
`TrainingArguments` field is available and `TrlParser` / `HfArgumentParser` build them from YAML and the command
line. As in TRL, `bf16` defaults to `True` unless `fp16` is set; on a machine without GPU pass `use_cpu=True`
(and `bf16=False` for exact float32 arithmetic).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from trl.trainer.base_config import _BaseConfig

from trl_implicit_prm.checks import check_beta, is_finite_positive
from trl_implicit_prm.data.formats import check_step_separator

__all__ = [
    "CEConfig",
    "ExplicitPRMConfig",
    "ImplicitPRMBaseConfig",
    "ImplicitPRMConfig",
    "StepDataConfig",
    "StepKTOConfig",
]


@dataclass
class StepDataConfig(_BaseConfig):
    r"""Fields shared by every trainer on step-split data: tokenization with step spans, and model loading.

    Parameters:
        > Data

        step_separator (`str`, defaults to `"\n\n"`):
            Separator that splits string completions into steps; it belongs to the step before it.
        append_eos (`bool`, defaults to `True`):
            Append the tokenizer's EOS token to string completions (unless they already end with it), in their
            last step, as TRL's DPOTrainer and KTOTrainer do; assistant-message completions keep what the chat
            template renders. Recorded in `implicit_prm.json`, so that scoring appends it too.
        max_length (`int` or `None`, defaults to `1024`):
            Maximum tokens of prompt + completion. The prompt is kept and the completion end cut; rows whose
            prompt alone is longer are dropped, with a logged count.
        pad_to_multiple_of (`int` or `None`, defaults to `None`):
            Pad batches to a multiple of this length.
        dataset_num_proc (`int` or `None`, defaults to `None`):
            Processes used to tokenize the datasets.

        > Models

        model_init_kwargs (`dict` or `None`, defaults to `None`):
            Keyword arguments of `from_pretrained` when `model` (and the reference) are given as a path or hub id.
        disable_dropout (`bool`, defaults to `True`):
            Disable dropout in the trained model (and the reference, if any), so that rewards are deterministic.
    """

    _VALID_DICT_FIELDS: ClassVar[list[str]] = [*_BaseConfig._VALID_DICT_FIELDS, "model_init_kwargs"]

    step_separator: str = field(
        default="\n\n",
        metadata={
            "help": "Separator splitting string completions into steps; it belongs to the step before it."
        },
    )
    append_eos: bool = field(
        default=True,
        metadata={
            "help": "Append the EOS token to string completions (in their last step), as TRL's DPO/KTO "
            "trainers do; recorded in implicit_prm.json so that scoring appends it too."
        },
    )
    max_length: int | None = field(
        default=1024,
        metadata={
            "help": "Maximum tokens of prompt + completion; the completion end is cut, the prompt kept."
        },
    )
    pad_to_multiple_of: int | None = field(
        default=None, metadata={"help": "Pad each batch to a multiple of this length."}
    )
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Number of processes used to tokenize the datasets."}
    )
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments of from_pretrained when the model is given as a path or hub id."
        },
    )
    disable_dropout: bool = field(
        default=True,
        metadata={
            "help": "Disable dropout in the trained model (and reference) so rewards are deterministic."
        },
    )

    def __post_init__(self) -> None:
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length must be >= 2 or None, got {self.max_length}")
        check_step_separator(self.step_separator)
        super().__post_init__()


@dataclass
class ImplicitPRMBaseConfig(StepDataConfig):
    r"""Fields shared by every implicit-PRM trainer: the reward parameterisation, plus [`StepDataConfig`]'s.

    Parameters:
        > Reward parameterisation

        beta (`float`, defaults to `0.05`):
            Scale β of the implicit reward `r = β·log(πθ/πref)` (paper §4.1 uses 0.05).
        reference_free (`bool`, defaults to `False`):
            Treat the reference as uniform (`r = β·log πθ`, paper §5.5.2): no reference model is loaded.
        precompute_ref_log_probs (`bool`, defaults to `False`):
            Compute the reference log-probs of every step once before training and drop the reference model,
            so that no reference is in memory while training.
        precompute_ref_batch_size (`int` or `None`, defaults to `None`):
            Batch size of the precomputation pass; `per_device_train_batch_size` when unset.
    """

    learning_rate: float = field(
        default=5e-7, metadata={"help": "Initial learning rate of AdamW (paper §4.1: 5e-7 for Llama-3.1-8B)."}
    )
    beta: float = field(
        default=0.05,
        metadata={"help": "Scale β of the implicit reward r = β·log(πθ/πref) (paper §4.1: 0.05)."},
    )
    reference_free: bool = field(
        default=False,
        metadata={"help": "Treat the reference as uniform (r = β·log πθ, paper §5.5.2): no reference model."},
    )
    precompute_ref_log_probs: bool = field(
        default=False,
        metadata={
            "help": "Compute reference log-probs once before training and keep no reference model in memory."
        },
    )
    precompute_ref_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Batch size of the reference precomputation; per_device_train_batch_size when unset."
        },
    )

    def __post_init__(self) -> None:
        check_beta(self.beta)
        if self.reference_free and self.precompute_ref_log_probs:
            raise ValueError(
                "precompute_ref_log_probs=True has no reference to precompute when reference_free=True"
            )
        super().__post_init__()


@dataclass
class ImplicitPRMConfig(ImplicitPRMBaseConfig):
    """Configuration of [`ImplicitPRMTrainer`] (paired data; DPO or NCA objective).

    Parameters:
        loss_type (`str`, defaults to `"dpo"`):
            `"dpo"`: `−log σ(r_w − r_l)`; `"nca"`: `−log σ(r_w) − ½log σ(−r_w) − ½log σ(−r_l)`.
        max_pairs_per_prompt (`int` or `None`, defaults to `None`):
            When rollouts or unpaired rows are turned into pairs, keep at most this many (correct, incorrect) pairs
            per instruction, drawn without replacement under `seed`; `None` keeps every pair (with 8 rollouts per
            instruction, up to 16 pairs).
    """

    loss_type: str = field(
        default="dpo", metadata={"help": "Objective on pairs: 'dpo' or 'nca'.", "choices": ["dpo", "nca"]}
    )
    max_pairs_per_prompt: int | None = field(
        default=None,
        metadata={
            "help": "At most this many (correct, incorrect) pairs per instruction when rollouts or unpaired "
            "rows are paired (seeded sampling); None keeps every pair."
        },
    )

    def __post_init__(self) -> None:
        if self.loss_type not in ("dpo", "nca"):
            raise ValueError(
                f"loss_type must be 'dpo' or 'nca' for ImplicitPRMConfig, got {self.loss_type!r}"
            )
        if self.max_pairs_per_prompt is not None and (
            isinstance(self.max_pairs_per_prompt, bool)
            or not isinstance(self.max_pairs_per_prompt, int)
            or self.max_pairs_per_prompt < 1
        ):
            raise ValueError(
                f"max_pairs_per_prompt must be a positive integer or None, got {self.max_pairs_per_prompt!r}"
            )
        super().__post_init__()


@dataclass
class _KTOFields:
    """KTO weights and reference point, shared by the CE (kto) and step-KTO configurations."""

    desirable_weight: float = field(
        default=1.0, metadata={"help": "KTO weight λ_D of the desirable (positive) term."}
    )
    undesirable_weight: float = field(
        default=1.0, metadata={"help": "KTO weight λ_U of the undesirable (negative) term."}
    )
    kto_reference_point: str = field(
        default="mismatched",
        metadata={
            "help": "KTO reference point z0: 'mismatched' estimates max(0, mean β·log-ratio) on the batch's "
            "prompts paired with other rows' completions (one extra forward of policy and reference); 'zero' "
            "uses z0 = 0.",
            "choices": ["mismatched", "zero"],
        },
    )


@dataclass
class CEConfig(ImplicitPRMBaseConfig, _KTOFields):
    """Configuration of [`CETrainer`] (unpaired, possibly imbalanced and soft-labelled data).

    Parameters:
        loss_type (`str`, defaults to `"ce"`):
            `"ce"`: cross-entropy `−[l·log σ(r) + (1−l)·log σ(−r)]`; `"kto"`: KTO on the same data.
        desirable_weight, undesirable_weight, kto_reference_point:
            KTO settings, used only with `loss_type="kto"`.
    """

    loss_type: str = field(
        default="ce",
        metadata={"help": "Objective on unpaired labels: 'ce' or 'kto'.", "choices": ["ce", "kto"]},
    )

    def __post_init__(self) -> None:
        if self.loss_type not in ("ce", "kto"):
            raise ValueError(f"loss_type must be 'ce' or 'kto' for CEConfig, got {self.loss_type!r}")
        if self.loss_type == "kto":
            _check_kto(self)
        super().__post_init__()


@dataclass
class StepKTOConfig(ImplicitPRMBaseConfig, _KTOFields):
    """Configuration of [`StepKTOTrainer`] (second-stage training on step labels).

    Parameters:
        loss_type (`str`, defaults to `"kto"`):
            `"kto"`: step-level KTO, `λ_D·(1 − σ(v_k − z0))` on desirable steps, `λ_U·(1 − σ(z0 − v_k))` on
            undesirable ones; `"ce"`: step-level cross-entropy `−[l_k·log σ(v_k) + (1−l_k)·log σ(−v_k)]` (the
            paper's released Stage-2 models). Either is averaged over the labelled steps of the batch.
        step_reward (`str` or `None`, defaults to `None`):
            The implicit quantity `v_k` of each labelled step: `"step"` is the step reward `r^k`, `"q"` the
            cumulative q-value at the step's end. `None` picks the loss's natural one: `"step"` for KTO, `"q"`
            for CE.
        desirable_weight, undesirable_weight, kto_reference_point:
            KTO settings, used only with `loss_type="kto"`.
    """

    loss_type: str = field(
        default="kto",
        metadata={"help": "Objective on step labels: 'kto' or 'ce'.", "choices": ["kto", "ce"]},
    )
    step_reward: str | None = field(
        default=None,
        metadata={
            "help": "Quantity each labelled step's loss uses: the step reward r^k ('step') or the cumulative q "
            "at its end ('q'); None: 'step' for loss_type='kto', 'q' for loss_type='ce'."
        },
    )

    def __post_init__(self) -> None:
        if self.loss_type not in ("kto", "ce"):
            raise ValueError(f"loss_type must be 'kto' or 'ce' for StepKTOConfig, got {self.loss_type!r}")
        if self.step_reward is None:
            self.step_reward = "step" if self.loss_type == "kto" else "q"
        if self.step_reward not in ("step", "q"):
            raise ValueError(f"step_reward must be 'step', 'q' or None, got {self.step_reward!r}")
        if self.loss_type == "kto":
            _check_kto(self)
        super().__post_init__()


@dataclass
class ExplicitPRMConfig(StepDataConfig):
    r"""Configuration of [`ExplicitPRMTrainer`] (a discriminative PRM: a classifier at each step's last token).

    The data and model fields are [`StepDataConfig`]'s, as for the implicit trainers (the same tokenization with
    step spans); there is no β and no reference model.

    Parameters:
        train_on_last_step_only (`bool`, defaults to `False`):
            Train on the label of each row's last labelled step only (TRL's former `PRMTrainer` option);
            by default every labelled step is trained on.
    """

    learning_rate: float = field(default=1e-5, metadata={"help": "Initial learning rate of AdamW."})
    train_on_last_step_only: bool = field(
        default=False,
        metadata={"help": "Train on each row's last labelled step only; default: on every labelled step."},
    )


def _check_kto(config: Any) -> None:
    if config.kto_reference_point not in ("mismatched", "zero"):
        raise ValueError(
            f"kto_reference_point must be 'mismatched' or 'zero', got {config.kto_reference_point!r}"
        )
    for name in ("desirable_weight", "undesirable_weight"):
        if not is_finite_positive(getattr(config, name)):
            raise ValueError(f"{name} must be a finite number > 0, got {getattr(config, name)!r}")
    if config.kto_reference_point == "mismatched" and config.per_device_train_batch_size < 2:
        raise ValueError(
            "kto_reference_point='mismatched' pairs each prompt with another row's completion of the same batch, "
            f"which needs per_device_train_batch_size >= 2 (got {config.per_device_train_batch_size}); raise it, "
            "or set kto_reference_point='zero'"
        )
    if config.kto_reference_point == "mismatched" and config.per_device_eval_batch_size < 2:
        raise ValueError(
            "kto_reference_point='mismatched' estimates z0 on each evaluation batch too, which needs "
            f"per_device_eval_batch_size >= 2 (got {config.per_device_eval_batch_size}); raise it, or set "
            "kto_reference_point='zero'"
        )
    if (
        config.precompute_ref_log_probs
        and config.kto_reference_point == "mismatched"
        and not config.reference_free
    ):
        raise ValueError(
            "kto_reference_point='mismatched' needs reference log-probs of prompt/completion pairs formed at each "
            "step, which cannot be precomputed: set kto_reference_point='zero' or precompute_ref_log_probs=False"
        )
