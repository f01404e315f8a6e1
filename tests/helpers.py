"""Helpers shared by test modules (`from helpers import ...`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def cpu_args(cls: type, tmp_path: Path, **settings: Any) -> Any:
    """A trainer config `cls` for a tiny CPU run in `tmp_path/out`: float32, no reports, no checkpoints, no
    progress bars; `settings` (the test's sizes, rates, β) add to or override these.
    """
    base = dict(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
    )
    return cls(**{**base, **settings})
