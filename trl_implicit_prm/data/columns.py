"""The tokenized columns and row kinds: one place that names them, for tokenization, collator and trainers.

A tokenized row is one of three kinds, told apart by its columns:

- ``paired``: ``chosen_*`` and ``rejected_*`` token columns (``input_ids``, ``completion_mask``, ``step_index``,
  ``num_steps``, ``num_truncated_steps``);
- ``unpaired``: the same token columns without prefix, and ``label``;
- ``stepwise``: the unpaired columns and ``step_labels``.
"""

from __future__ import annotations

from collections.abc import Iterable

from datasets import Features, Value
from datasets import Sequence as ListOf

__all__ = [
    "COMPLETION_COLUMNS",
    "RESPONSE_SUMS",
    "RESPONSE_SUMS_ADVICE",
    "SIDE_PREFIXES",
    "TOKENIZED_COLUMNS",
    "TOKENIZED_KINDS",
    "TOKEN_KEYS",
    "output_features",
    "tokenized_kind",
]

TOKENIZED_KINDS = ("paired", "unpaired", "stepwise")
# The raw column(s) holding each kind's completion(s), and the prefixes of its token columns, in the same order.
COMPLETION_COLUMNS = {
    "paired": ("chosen", "rejected"),
    "unpaired": ("completion",),
    "stepwise": ("completions",),
}
SIDE_PREFIXES = {"paired": ("chosen_", "rejected_"), "unpaired": ("",), "stepwise": ("",)}
# The token columns of one response; the collator needs the first three.
TOKEN_KEYS = ("input_ids", "completion_mask", "step_index")
_SIDE_COLUMNS = (*TOKEN_KEYS, "num_steps", "num_truncated_steps")
# Per-response reference sums: refused everywhere (they cannot give step rewards).
RESPONSE_SUMS = ("ref_logps", "ref_chosen_logps", "ref_rejected_logps")
# What to pass instead, quoted by every refusal of a per-response sum.
RESPONSE_SUMS_ADVICE = (
    "Give per-step sums instead (ref_step_logps; paired: ref_chosen_step_logps and ref_rejected_step_logps, "
    "one float per step), set precompute_ref_log_probs=True, or drop the column."
)
# Every column the collator reads (what the trainers' data loaders keep). The per-response sums are kept so that
# the collator can refuse them with a message instead of their being dropped silently.
TOKENIZED_COLUMNS = (
    *_SIDE_COLUMNS,
    "attention_mask",
    "label",
    "step_labels",
    "ref_step_logps",
    *(prefix + c for prefix in SIDE_PREFIXES["paired"] for c in _SIDE_COLUMNS),
    "ref_chosen_step_logps",
    "ref_rejected_step_logps",
    *RESPONSE_SUMS,
)


def tokenized_kind(columns: Iterable[str]) -> str | None:
    """The kind of a tokenized row or dataset from its column names, or None when it is not tokenized.

    Example:

    ```python
    >>> tokenized_kind(["chosen_input_ids", "rejected_input_ids"]), tokenized_kind(["input_ids", "label"])
    ('paired', 'unpaired')
    >>> tokenized_kind(["input_ids", "step_labels"]), tokenized_kind(["prompt", "completion", "label"])
    ('stepwise', None)

    ```
    """
    columns = set(columns)
    if "chosen_input_ids" in columns or "rejected_input_ids" in columns:
        return "paired"
    if "input_ids" in columns:
        return "stepwise" if "step_labels" in columns else "unpaired"
    return None


def output_features(kind: str) -> Features:
    """The column types of a tokenized dataset of `kind`: ids and step indices int32, `completion_mask` int8,
    labels float64 (exactly as given).
    """
    per_side = {
        "input_ids": ListOf(Value("int32")),
        "completion_mask": ListOf(Value("int8")),
        "step_index": ListOf(Value("int32")),
        "num_steps": Value("int32"),
        "num_truncated_steps": Value("int32"),
    }
    features = {
        prefix + name: feature for prefix in SIDE_PREFIXES[kind] for name, feature in per_side.items()
    }
    if kind in ("unpaired", "stepwise"):
        features["label"] = Value("float64")
    if kind == "stepwise":
        features["step_labels"] = ListOf(Value("float64"))
    return Features(features)
