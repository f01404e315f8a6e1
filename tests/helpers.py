"""Helpers shared by test modules (`from helpers import ...`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import json
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


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """Write `rows` to `path` as JSON Lines, a `str` row as it is (to write a broken line); returns `path`."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# Step-labelled records in the eval-steps format (label: index of the first wrong step, -1 for none).
STEP_RECORDS = [
    {"problem": "2+3*2?\n", "steps": ["2+3=5", "5*2=10. The answer is \\boxed{10}."], "label": -1},
    {"problem": "2+3*2?\n", "steps": ["2+3=6", "6*2=12. The answer is \\boxed{12}."], "label": 0},
    {"problem": "4-1+5?\n", "steps": ["4-1=3", "3+5=9. The answer is \\boxed{9}."], "label": 1},
    {"problem": "4-1+5?\n", "steps": ["4-1=3", "3+5=8. The answer is \\boxed{8}."], "label": -1},
]


def eval_steps_argv(tiny_dir: Path, data: list[Path], out: Path, *extra: str) -> list[str]:
    """`trl-implicit-prm eval-steps` on the tiny llama (reference: llama-ref), threshold tuned on the first file."""
    model, ref = str(tiny_dir / "llama"), str(tiny_dir / "llama-ref")
    files = [str(p) for p in data]
    return ["eval-steps", "--model", model, "--ref-model", ref, "--data", *files, "--tune-on", "val", "--output", str(out), *extra]  # fmt: skip


def library_step_rewards(tiny_dir: Path, records: list[dict]) -> list[list[float]]:
    """The step rewards `ProcessRewardComputer` gives `records` on the tiny llama (reference: llama-ref)."""
    from trl_implicit_prm.inference import ProcessRewardComputer

    prc = ProcessRewardComputer.from_pretrained(tiny_dir / "llama", ref_model=tiny_dir / "llama-ref")
    return [r.step_rewards for r in prc.score([r["problem"] for r in records], [r["steps"] for r in records])]
