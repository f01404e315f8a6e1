"""An implicit PRM as one scalar reward for TRL's stock `GRPOTrainer(reward_funcs=[...])`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trl_implicit_prm.data.formats import is_chat
from trl_implicit_prm.inference import ProcessRewardComputer
from trl_implicit_prm.rewards import AGGREGATIONS

__all__ = ["ImplicitPRMReward"]


def _text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    if is_chat(completion):
        return completion[0]["content"]
    raise TypeError(
        f"a completion must be a string or a list holding one assistant message, got {type(completion).__name__}"
    )


class ImplicitPRMReward:
    """A reward function scoring each completion with an implicit PRM's aggregated step rewards (Yuan et al., 2024,
    "Free Process Rewards without Process Labels", https://arxiv.org/abs/2412.01981).

    `model` is a checkpoint path (rendering, β, reference and separator read from its `implicit_prm.json`, as
    :meth:`ProcessRewardComputer.from_pretrained` does) or a ready :class:`ProcessRewardComputer`; prompts are
    rendered as the PRM's training rendered them. The score is `aggregation` of the step rewards (`"min"` by
    default, the paper's choice; `"sum"` is the outcome reward). Completions longer than the computer's
    `max_length` are scored on the part that fits (`truncation=True`; pass `truncation=False` to raise instead);
    a completion with no visible character has no step and gets `None`, which TRL treats as unscorable.

    Example:

    ```python
    >>> from trl_implicit_prm import ProcessRewardComputer
    >>> from trl_implicit_prm.rl import ImplicitPRMReward
    >>> from trl_implicit_prm.tiny import build_model, build_tokenizer
    >>> tok = build_tokenizer()
    >>> prm = ProcessRewardComputer(build_model("llama", tok), tok, ref_model=build_model("llama", tok, seed=1))
    >>> reward = ImplicitPRMReward(prm)
    >>> scores = reward(prompts=["3 + 4 = ?\\n"] * 2, completions=["3 + 4 = 7.\\n\\nSo 7.", "  "])
    >>> reward.__name__, isinstance(scores[0], float), scores[1]
    ('implicit_prm_min', True, None)

    ```
    """

    def __init__(
        self, model: Any, *, aggregation: str = "min", truncation: bool = True, **computer_kwargs: Any
    ) -> None:
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        if isinstance(model, ProcessRewardComputer):
            if computer_kwargs:
                raise ValueError(
                    f"{sorted(computer_kwargs)} configure a computer built from a path; a ready "
                    "ProcessRewardComputer was given, so set them when building it"
                )
            self.computer = model
        else:
            self.computer = ProcessRewardComputer.from_pretrained(model, **computer_kwargs)
        self.aggregation = aggregation
        self.truncation = truncation
        self.__name__ = f"implicit_prm_{aggregation}"  # TRL names the logged reward after it

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        """One scalar reward per completion: the aggregated implicit step rewards (None where unscorable)."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        scored = [i for i, c in enumerate(completions) if _text(c).strip()]
        results = self.computer.score(
            [prompts[i] for i in scored], [completions[i] for i in scored], truncation=self.truncation
        )
        out: list[float | None] = [None] * len(completions)
        for i, result in zip(scored, results, strict=True):
            out[i] = result.aggregate(self.aggregation)
        return out
