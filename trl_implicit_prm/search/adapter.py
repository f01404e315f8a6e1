"""A drop-in PRM for huggingface/search-and-learn: `score(questions, outputs) -> list[list[list[float]]]`.

search-and-learn calls its PRM with the questions and, per question, the candidate responses so far; it expects,
per question and per response, one score per step (steps are split on `"\\n\\n"`), and reduces them with its
`agg_strategy` (`"last"`, `"min"` or `"prod"`). :class:`SearchAndLearnPRM` returns the implicit step rewards
`r^k` of a :class:`~trl_implicit_prm.ProcessRewardComputer` (prompts rendered and EOS handled as the
checkpoint's metadata says). Choose `agg_strategy="min"` (the paper's choice). Step rewards are unbounded
log-ratios, so `"prod"` is meaningless on them, and `"last"` would keep only the last step's reward: for the
q-value at the end (the outcome reward) pass `values="q"` with `"last"`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["SearchAndLearnPRM"]


class SearchAndLearnPRM:
    """search-and-learn's PRM interface over an implicit PRM.

    `complete=False` (the default) scores responses as prefixes of complete steps (no EOS; the separator after
    the last step, which search-and-learn's beams keep as the stop string, is added where it is missing), since
    search-and-learn scores growing beams with the same call. `values`: `"step_rewards"` (`r^k`) or `"q"` (`q` at
    the end of each step).

    Example:

    ```python
    >>> from trl_implicit_prm import ProcessRewardComputer
    >>> from trl_implicit_prm.tiny import build_model, build_tokenizer
    >>> tok = build_tokenizer(vocab_size=400)
    >>> prm = SearchAndLearnPRM(ProcessRewardComputer(build_model("llama", tok), tok, reference_free=True))
    >>> scores = prm.score(["2+3=?"], [["Add 2 and 3.\\n\\nSo 5.", "It is 5."]])
    >>> [len(s) for s in scores[0]]
    [2, 1]

    ```
    """

    def __init__(self, computer: Any, *, values: str = "step_rewards", complete: bool = False) -> None:
        if values not in ("step_rewards", "q"):
            raise ValueError(f"values must be 'step_rewards' or 'q', got {values!r}")
        self.computer = computer
        self.values = values
        self.complete = complete

    def score(self, questions: Sequence[Any], outputs: Sequence[Sequence[str]]) -> list[list[list[float]]]:
        """Per question, per response, one score per step."""
        if len(questions) != len(outputs):
            raise ValueError(f"got {len(questions)} questions but {len(outputs)} lists of outputs")
        prompts, responses, where = [], [], []
        for i, (question, answers) in enumerate(zip(questions, outputs, strict=True)):
            if isinstance(answers, str):
                raise TypeError(f"outputs[{i}] must be a list of responses, got a string")
            for j, answer in enumerate(answers):
                prompts.append(question)
                responses.append(answer)
                where.append((i, j))
        scored = self.computer.score(prompts, responses, complete=self.complete)
        out: list[list[list[float]]] = [[[] for _ in answers] for answers in outputs]
        for (i, j), result in zip(where, scored, strict=True):
            out[i][j] = list(result.step_rewards if self.values == "step_rewards" else result.q_values)
        return out
