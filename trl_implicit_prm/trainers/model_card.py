"""The model card of a saved implicit PRM: what the checkpoint is, how to score with it, what it was trained on.

:func:`render_model_card` is a pure function of the checkpoint's metadata (`implicit_prm.json`) and the training
facts; :func:`write_model_card` collects those from a trainer and writes `README.md` into the directory being
saved, and only there (never into `args.output_dir` when saving elsewhere).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trl_implicit_prm.modeling import ADAPTER_BASE

DEFAULT_SEPARATOR = "\n\n"

__all__ = ["OBJECTIVES", "render_model_card", "write_model_card"]

OBJECTIVES = {
    ("ImplicitPRMTrainer", "dpo"): "DPO on correct × incorrect response pairs (paper §3, Eq. 4)",
    ("ImplicitPRMTrainer", "nca"): "NCA on correct × incorrect response pairs",
    ("CETrainer", "ce"): "cross-entropy on outcome labels, σ(r(y)) as the probability of a correct response",
    ("CETrainer", "kto"): "KTO on outcome labels",
    ("StepKTOTrainer", "step"): "KTO on step labels (each step's implicit reward)",
    ("StepKTOTrainer", "q"): "KTO on step labels (the cumulative q-value at each step)",
}

_KNOWN_FIELDS = (
    "beta",
    "reference_free",
    "reference_model",
    "step_separator",
    "trainer",
    "loss_type",
    "prompt_format",
    "append_eos",
)


def _value(value: Any) -> str:
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _metric(value: Any) -> str:
    if isinstance(value, float):
        return "—" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def render_model_card(
    metadata: Mapping[str, Any],
    *,
    model_name: str,
    model_path: str,
    base_model: str | None,
    data_kind: str,
    num_train_rows: int | None,
    dataset_name: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    tags: Sequence[str] = (),
    paper: Mapping[str, str] | None = None,
    base_model_is_local: bool = False,
) -> str:
    """The README.md text of a checkpoint (YAML front matter for the Hub, then Markdown).

    `model_path` is what the scoring snippet loads (the Hub id, or the checkpoint folder).
    """
    reference_text, ref_argument = _reference(metadata)
    lines = [
        *_front_matter(base_model, base_model_is_local, tags),
        "",
        f"# {model_name}",
        "",
        "An **implicit process reward model** (PRM) trained with `trl-implicit-prm`: an outcome reward model "
        "whose reward is "
        "r(y) = β·log(πθ(y)/πref(y)); summed over the tokens of one step, the same log-ratio is that step's "
        "reward, so it scores every step without step labels. It is not a chat or text-generation model.",
        "",
        *_settings_table(metadata, base_model, reference_text),
        "",
        "These are recorded in `implicit_prm.json`; `ProcessRewardComputer.from_pretrained` reads them, so score "
        "with the same reference, β, separator and prompt rendering as in training.",
        "",
        *_scoring_section(model_path, ref_argument),
        "",
        "## Training data",
        "",
        f"- format: `{data_kind}` rows"
        + (f", {num_train_rows} after preparation" if num_train_rows is not None else ""),
    ]
    if dataset_name:
        lines.append(f"- dataset: `{dataset_name}`")
    if metrics:
        lines += ["", "## Final metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_metric(v)} |" for k, v in metrics.items()]
    if paper:
        lines += [
            "",
            "## Citation",
            "",
            f"[{paper.get('title')}](https://huggingface.co/papers/{paper.get('id')}):",
        ]
        lines += ["", "```bibtex", paper.get("citation", ""), "```"]
    return "\n".join(lines) + "\n"


def _reference(metadata: Mapping[str, Any]) -> tuple[str, str | None]:
    """How the card names the reference, and the `from_pretrained` argument that scores against it."""
    reference = metadata.get("reference_model")
    if metadata.get("reference_free"):
        return "none (reference-free: r = β·log πθ(y))", "reference_free=True"
    if reference == ADAPTER_BASE:
        return "the adapter's base model, with the adapters disabled", None
    if reference:
        return f"`{reference}`", f"ref_model={json.dumps(reference)}"
    return (
        "not recorded (it was given in memory): pass the reference you trained with",
        'ref_model="<the reference model you trained with>"',
    )


def _front_matter(base_model: str | None, base_model_is_local: bool, tags: Sequence[str]) -> list[str]:
    """The YAML front matter the Hub reads."""
    front = ["---", "library_name: transformers"]
    if base_model and not base_model_is_local:  # the Hub's `base_model` must be a Hub id
        front.append(f"base_model: {base_model}")
    if tags:
        front.append("tags:")
        front.extend(f"- {tag}" for tag in sorted(set(tags)))
    return [*front, "---"]


def _settings_table(metadata: Mapping[str, Any], base_model: str | None, reference_text: str) -> list[str]:
    """Objective, base model, reference, β, separator, prompt rendering, EOS and any other recorded field."""
    trainer = metadata.get("trainer") or "unknown trainer"
    loss = metadata.get("loss_type")
    objective = OBJECTIVES.get((trainer, loss), f"{trainer}, loss {loss!r}")
    lines = [
        "| | |",
        "|---|---|",
        f"| objective | {objective} |",
        f"| base model (πθ at the start) | {f'`{base_model}`' if base_model else 'not recorded (loaded in memory)'} |",
        f"| reference πref | {reference_text} |",
        f"| β | {_value(metadata.get('beta'))} |",
        f"| step separator | {_value(metadata.get('step_separator', DEFAULT_SEPARATOR))} |",
    ]
    if "prompt_format" in metadata:
        lines.append(f"| prompt rendering | {_value(metadata['prompt_format'])} |")
    else:
        lines.append(
            "| prompt rendering | a string prompt as given; a chat prompt with the tokenizer's chat template "
            "(generation prompt added) |"
        )
    if "append_eos" in metadata:
        lines.append(f"| EOS appended to responses | {_value(metadata['append_eos'])} |")
    lines += [
        f"| {key} | {_value(metadata[key])} |"
        for key in sorted(k for k in metadata if k not in _KNOWN_FIELDS)
    ]
    return lines


def _scoring_section(model_path: str, ref_argument: str | None) -> list[str]:
    """How to score with the checkpoint, in Python and from the command line."""
    return [
        "## Scoring",
        "",
        "```python",
        "from trl_implicit_prm import ProcessRewardComputer",
        "",
        f"prc = ProcessRewardComputer.from_pretrained({json.dumps(model_path)}"
        + (f", {ref_argument}" if ref_argument else "")
        + ")",
        f"steps = {json.dumps(['2 + 3 = 5.', 'The answer is 5.'])}",
        'result = prc.score_one("What is 2 + 3?\\n", steps)',
        "print(result.step_rewards, result.outcome_reward)   # one reward per step; they sum to the outcome reward",
        "```",
        "",
        "From the command line: `trl-implicit-prm score --model <this folder> --input rows.jsonl --output "
        "scored.jsonl` (add `accelerate launch --num_processes N -m trl_implicit_prm.cli` in front to score on N "
        "GPUs).",
    ]


def _final_metrics(log_history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The last training loss and the last value of each evaluation metric in the trainer's log history."""
    out: dict[str, Any] = {}
    for entry in log_history:
        for key, value in entry.items():
            if (key.startswith("eval_") or key in ("loss", "train_loss")) and isinstance(value, int | float):
                out[key] = value
        if "step" in entry:
            out["global step"] = entry["step"]
    return out


def write_model_card(
    trainer: Any,
    output_dir: str | os.PathLike,
    *,
    model_name: str,
    metadata: Mapping[str, Any],
    dataset_name: str | None = None,
    tags: Sequence[str] = (),
) -> Path:
    """Write `output_dir/README.md` for `trainer`'s model (main process only; returns the path)."""
    train = getattr(trainer, "train_dataset", None)
    hub_id = getattr(trainer.args, "hub_model_id", None)
    base_model = getattr(trainer, "_model_id", None)
    card = render_model_card(
        metadata,
        model_name=model_name,
        model_path=hub_id or str(Path(output_dir).resolve()),
        base_model=base_model,
        base_model_is_local=base_model is not None and Path(base_model).exists(),
        data_kind=getattr(trainer, "data_kind", "") or "unknown",
        num_train_rows=len(train) if train is not None and hasattr(train, "__len__") else None,
        dataset_name=dataset_name,
        metrics=_final_metrics(trainer.state.log_history),
        tags=[*getattr(trainer, "_tag_names", []), *tags],
        paper=getattr(trainer, "_paper", None),
    )
    path = Path(output_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(card, encoding="utf-8")
    return path
