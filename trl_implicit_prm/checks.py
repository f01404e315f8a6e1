"""Checks of numbers that every entry point (configs, the reward computer, the CLI) validates the same way."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["check_beta", "is_finite_positive"]


def is_finite_positive(value: Any) -> bool:
    """Whether `value` is a real number (not a bool) that is finite and > 0."""
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def check_beta(beta: Any, where: str = "beta") -> float:
    """`beta` as a float, or a ValueError naming `where`: β must be finite and > 0.

    `nan <= 0` is False, so a plain `beta <= 0` check lets NaN through (training then logs loss 0 and saves NaN
    weights); infinity makes every reward ±inf. Both are refused here.

    Example:

    ```python
    >>> check_beta(0.05)
    0.05
    >>> check_beta(float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: beta must be a finite number > 0 (the scale of r = β·log(πθ/πref)), got nan

    ```
    """
    if not is_finite_positive(beta):
        raise ValueError(
            f"{where} must be a finite number > 0 (the scale of r = β·log(πθ/πref)), got {beta!r}"
        )
    return float(beta)
