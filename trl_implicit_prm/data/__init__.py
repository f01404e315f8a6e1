"""Data layer: dataset formats, rollout helpers, tokenization with step spans, and the collator.

rows ──validate──> paired | unpaired | rollouts | stepwise
public datasets (Math-Shepherd, PRM800K, ProcessBench, rollouts files) ──convert_*──> stepwise | rollouts
rollouts ──rollouts_to_pairs / rollouts_to_unpaired──> paired / unpaired
rows ──tokenize_dataset──> token ids + completion mask + step index per token ──ImplicitPRMCollator──> batch
"""

from .collator import ImplicitPRMCollator
from .converters import (
    Conversion,
    DroppedRow,
    convert_math_shepherd,
    convert_prm800k,
    convert_processbench,
    convert_rollouts,
    read_source,
)
from .formats import DataFormatError, detect_format, split_steps, validate_dataset, validate_row
from .rollouts import rollouts_to_pairs, rollouts_to_unpaired
from .tokenize import PromptTooLongError, tokenize_dataset, tokenize_example

__all__ = [
    "Conversion",
    "DataFormatError",
    "DroppedRow",
    "ImplicitPRMCollator",
    "PromptTooLongError",
    "convert_math_shepherd",
    "convert_prm800k",
    "convert_processbench",
    "convert_rollouts",
    "detect_format",
    "read_source",
    "rollouts_to_pairs",
    "rollouts_to_unpaired",
    "split_steps",
    "tokenize_dataset",
    "tokenize_example",
    "validate_dataset",
    "validate_row",
]
