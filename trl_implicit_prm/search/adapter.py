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
    """search-and-learn's PRM interface over an implicit (or explicit) PRM.

    `complete="auto"` (the default) reads search-and-learn's convention: its generator stops a step at the
    separator and keeps it in the text (`stop=["\\n\\n"], include_stop_str_in_output=True`), while a finished
    beam ends at EOS or the token limit without it. So a response that ends with the PRM's step separator is
    scored as a prefix (no EOS, as in the whole response), and any other as a whole response (EOS appended where
    the checkpoint's training appended it). `complete=True` or `False` scores every response one way.
    `values`: `"step_rewards"` (`r^k`) or `"q"` (`q` at the end of each step).

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

    def __init__(self, computer: Any, *, values: str = "step_rewards", complete: bool | str = "auto") -> None:
        if values not in ("step_rewards", "q"):
            raise ValueError(f"values must be 'step_rewards' or 'q', got {values!r}")
        if complete not in ("auto", True, False):
            raise ValueError(f"complete must be 'auto', True or False, got {complete!r}")
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
        finished = [self._finished(r, i) for r, (i, _) in zip(responses, where, strict=True)]
        scored: list[Any] = [None] * len(responses)
        for complete in (False, True):
            picked = [n for n, f in enumerate(finished) if f is complete]
            if picked:
                results = self.computer.score(
                    [prompts[n] for n in picked], [responses[n] for n in picked], complete=complete
                )
                for n, result in zip(picked, results, strict=True):
                    scored[n] = result
        out: list[list[list[float]]] = [[[] for _ in answers] for answers in outputs]
        for (i, j), result in zip(where, scored, strict=True):
            out[i][j] = list(result.step_rewards if self.values == "step_rewards" else result.q_values)
        return out

    def _finished(self, response: Any, question: int) -> bool:
        """Whether `response` is scored as a whole response (see the class docstring)."""
        if self.complete != "auto":
            return bool(self.complete)
        if not isinstance(response, str):
            raise TypeError(
                f"outputs[{question}] holds a list of steps: with complete='auto' a response must be the text "
                "search-and-learn generated (a step prefix ends with the separator); pass complete=True or False"
            )
        return not response.endswith(self.computer.step_separator)
