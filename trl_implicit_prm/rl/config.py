"""Configuration of :class:`~trl_implicit_prm.rl.PRIMETrainer`: TRL's `GRPOConfig` plus the implicit PRM."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from trl_implicit_prm.checks import check_beta
from trl_implicit_prm.logps import LOGPS_METHODS
from trl_implicit_prm.rl.advantages import CREDIT_ASSIGNMENTS, GRANULARITIES

__all__ = ["PRIME_REFERENCES", "PRM_UPDATES", "PRIMEConfig"]

PRM_UPDATES = ("before", "after", "none")
PRIME_REFERENCES = ("copy", "policy")


@dataclass
class PRIMEConfig(GRPOConfig):
    r"""Configuration of :class:`PRIMETrainer`: every `GRPOConfig` field (data, generation including vLLM, the policy
    loss) plus the implicit PRM, its online update and the advantage estimator.

    PRIME: Cui et al., 2025, "Process Reinforcement through Implicit Rewards" (https://arxiv.org/abs/2502.01456);
    min-form credit: Cheng et al., 2025, "Stop Summation" (https://arxiv.org/abs/2504.15275). Defaults follow
    PRIME's recipe (β 0.05, PRM lr 1e-6, grad clip 10, coefficients 5 and 5, accuracy in [0.2, 0.8]). GRPO's own
    `beta` (a KL penalty) is unrelated to `prm_beta`.

    Example:

    ```python
    >>> from trl_implicit_prm.rl import PRIMEConfig
    >>> args = PRIMEConfig(output_dir="prime-doc", use_cpu=True, bf16=False, credit_assignment="min")
    >>> args.prm_beta, args.prm_update, args.granularity
    (0.05, 'before', 'token')

    ```
    """

    prm_beta: float = field(
        default=0.05, metadata={"help": "Scale β of the implicit PRM's rewards β·log(πφ/πref) (PRIME: 0.05)."}
    )
    prm_reference: str = field(
        default="copy",
        metadata={
            "help": "The PRM's reference: 'copy' (a frozen copy of the initial PRM, or `prm_ref_model` when "
            "given) or 'policy' (the policy's log-probs at generation time, no extra model)."
        },
    )
    prm_update: str = field(
        default="before",
        metadata={
            "help": "Online PRM update on each batch's outcome labels: 'before' (update, then score the batch "
            "with the updated PRM), 'after' (score with the update pass's rewards), or 'none' (frozen PRM)."
        },
    )
    prm_learning_rate: float = field(default=1e-6, metadata={"help": "AdamW learning rate of the PRM."})
    prm_weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay of the PRM."})
    prm_max_grad_norm: float = field(default=10.0, metadata={"help": "Gradient-norm clip of the PRM update."})
    prm_micro_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Rollouts per PRM/reference forward and backward (must divide the rollouts each process "
            "scores per generation); None: all at once."
        },
    )
    step_separator: str = field(
        default="\n\n",
        metadata={"help": "Separator splitting decoded completions into steps (step granularity)."},
    )
    granularity: str = field(
        default="token",
        metadata={
            "help": "Process rewards on every token ('token', PRIME) or at each step's last token ('step')."
        },
    )
    credit_assignment: str = field(
        default="sum",
        metadata={
            "help": "How process rewards become returns: 'sum' (PRIME), 'min' (PURE strict min-form) or "
            "'softmin' (PURE with softmin_temperature)."
        },
    )
    softmin_temperature: float = field(
        default=0.1, metadata={"help": "Temperature T of 'softmin' (PURE: 0.1)."}
    )
    process_reward_coef: float = field(
        default=5.0,
        metadata={"help": "Weight of the process rewards' leave-one-out advantage (0 drops them)."},
    )
    outcome_reward_coef: float = field(
        default=5.0,
        metadata={"help": "Weight of the verifier outcome's leave-one-out advantage (0 drops it)."},
    )
    whiten_advantages: bool = field(default=True, metadata={"help": "Whiten the advantages over the batch."})
    accuracy_lower_bound: float = field(
        default=0.2, metadata={"help": "Drop prompts whose group accuracy is below this (PRIME: 0.2)."}
    )
    accuracy_upper_bound: float = field(
        default=0.8, metadata={"help": "Drop prompts whose group accuracy is above this (PRIME: 0.8)."}
    )
    oversample_factor: int = field(
        default=1,
        metadata={
            "help": "Prompts drawn per generation, as a multiple of those the batch needs (PRIME oversamples). "
            "All are generated and verified; the batch is filled with the first groups whose accuracy lies in "
            "the bounds, the rest are dropped (logged as prime/groups_dropped). When too few groups pass, the "
            "batch is topped up with dropped groups that carry no loss (logged as prime/groups_short, with a "
            "warning). 1: no oversampling, filtered groups stay in the batch with no loss."
        },
    )
    prm_logps_method: str = field(
        default="auto", metadata={"help": f"Backend of the PRM's log-probs, one of {LOGPS_METHODS}."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_beta(self.prm_beta, "prm_beta")
        choices = {
            "prm_reference": PRIME_REFERENCES,
            "prm_update": PRM_UPDATES,
            "granularity": GRANULARITIES,
            "credit_assignment": CREDIT_ASSIGNMENTS,
            "prm_logps_method": LOGPS_METHODS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not self.softmin_temperature > 0:
            raise ValueError(f"softmin_temperature must be > 0, got {self.softmin_temperature}")
        if not 0.0 <= self.accuracy_lower_bound <= self.accuracy_upper_bound <= 1.0:
            raise ValueError(
                "accuracy bounds must satisfy 0 <= accuracy_lower_bound <= accuracy_upper_bound <= 1, got "
                f"[{self.accuracy_lower_bound}, {self.accuracy_upper_bound}]"
            )
        if not self.prm_learning_rate > 0 and self.prm_update != "none":
            raise ValueError(
                f"prm_learning_rate must be > 0 (or prm_update='none'), got {self.prm_learning_rate}"
            )
        if not isinstance(self.oversample_factor, int) or self.oversample_factor < 1:
            raise ValueError(f"oversample_factor must be an integer >= 1, got {self.oversample_factor!r}")
        if self.prm_micro_batch_size is not None and self.prm_micro_batch_size < 1:
            raise ValueError(
                f"prm_micro_batch_size must be a positive integer or None, got {self.prm_micro_batch_size}"
            )
        if not self.step_separator:
            raise ValueError("step_separator must be a non-empty string")
