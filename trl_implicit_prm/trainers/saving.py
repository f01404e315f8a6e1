"""What a trainer's checkpoint records: `implicit_prm.json` (β, the reference, the separator, the prompt
rendering) and the PRM model card, written by every save (:class:`CheckpointRecordMixin` of the trainers).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from datasets import Dataset

from trl_implicit_prm.data.rendering import measure_prompt_format
from trl_implicit_prm.explicit import IMPLICIT_KIND
from trl_implicit_prm.modeling import write_metadata

logger = logging.getLogger(__name__)


class CheckpointRecordMixin:
    """`save_model` and checkpoints also write `implicit_prm.json` and the model card (mixed into the trainers'
    base, before `transformers.Trainer`); needs `self.reference`, `self.args` and `self._rendering`.
    """

    def _implicit_prm_metadata(self) -> dict[str, Any]:
        reference = self.reference.describe()
        if reference is None and self.reference.kind != "none":
            logger.warning(
                "The reference model was given in memory without a path, so the checkpoint cannot record it: "
                "pass ref_model=... to ProcessRewardComputer.from_pretrained when scoring with this checkpoint."
            )
        return {
            "kind": IMPLICIT_KIND,
            "beta": self.args.beta,
            "reference_free": self.args.reference_free,
            "reference_model": reference,
            "step_separator": self.args.step_separator,
            "trainer": type(self).__name__,
            "loss_type": getattr(self.args, "loss_type", None) or getattr(self.args, "step_reward", None),
            **self._rendering,
        }

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
        *,
        output_dir: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Write a PRM model card (see `trainers/model_card.py`) to `output_dir` (default `args.output_dir`)."""
        if not self.is_world_process_zero():
            return
        from trl_implicit_prm.trainers.model_card import write_model_card

        output_dir = output_dir or self.args.output_dir
        metadata = metadata if metadata is not None else self._implicit_prm_metadata()
        write_model_card(
            self,
            output_dir,
            model_name=model_name or Path(output_dir).name,
            metadata=metadata,
            dataset_name=dataset_name,
            tags=[tags] if isinstance(tags, str) else list(tags or ()),
        )

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save weights that load (ZeRO-3: gathered or refused) and the implicit-PRM metadata."""
        super().save_model(output_dir, _internal_call)
        output_dir = output_dir or self.args.output_dir
        if self.is_world_process_zero():
            metadata = self._implicit_prm_metadata()
            write_metadata(output_dir, **metadata)
            # Written into output_dir only: args.output_dir's own README.md is left alone.
            self.create_model_card(model_name=Path(output_dir).name, output_dir=output_dir, metadata=metadata)

    def _save_checkpoint(self, model, trial):
        if self.args.hub_model_id is None:
            model_name = Path(self.args.output_dir).name
        else:
            model_name = self.args.hub_model_id.split("/")[-1]
        self.create_model_card(model_name=model_name)
        super()._save_checkpoint(model, trial)


def training_rendering(dataset: Dataset, tokenizer: Any, args: Any) -> dict[str, Any]:
    """`prompt_format` (measured from the training prompts) and `append_eos` for implicit_prm.json; nothing
    for a dataset that was already tokenized (its rendering is unknown), `prompt_format` left out when the
    prompts mix strings and chats.
    """
    if "prompt" not in dataset.column_names:
        logger.warning(
            "The training dataset is already tokenized, so the checkpoint cannot record how its prompts were "
            "rendered nor whether its completions end with EOS: pass both when scoring with it (see "
            "docs/inference.md)."
        )
        return {}
    prompts = (
        p for batch in dataset.select_columns(["prompt"]).iter(batch_size=1000) for p in batch["prompt"]
    )
    prompt_format = measure_prompt_format(prompts, tokenizer)
    out: dict[str, Any] = {"append_eos": args.append_eos}
    if prompt_format is not None:
        out["prompt_format"] = prompt_format.to_metadata()
    return out
