"""Precomputed reference log-probs (`precompute_ref_log_probs=True`): one pass of the reference over every
dataset before training writes per-step sums as columns (`ref_step_logps`; paired: `ref_chosen_step_logps`,
`ref_rejected_step_logps`), then the reference model is let go (:meth:`Reference.without_model`).
"""

from __future__ import annotations

import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm


class ReferencePrecomputeMixin:
    """Mixed into the trainers' base; needs `self.reference`, `self.model`, `self.accelerator`, the datasets
    and `self.data_collator`.
    """

    def _precompute_reference(self) -> None:
        """Add per-step reference log-probs to the datasets, then let the reference model go."""
        self.train_dataset = self._with_reference_logps(self.train_dataset, "train")
        if isinstance(self.eval_dataset, dict):
            self.eval_dataset = {k: self._with_reference_logps(v, k) for k, v in self.eval_dataset.items()}
        elif self.eval_dataset is not None:
            self.eval_dataset = self._with_reference_logps(self.eval_dataset, "eval")
        self.reference = self.reference.without_model()

    def _with_reference_logps(self, dataset: Dataset, name: str) -> Dataset:
        batch_size = self.args.precompute_ref_batch_size or self.args.per_device_train_batch_size
        loader = self.accelerator.prepare(
            DataLoader(dataset, batch_size=batch_size, collate_fn=self.data_collator, shuffle=False)
        )
        rows: list[list[float]] = []
        paired = "chosen_input_ids" in dataset.column_names
        for batch in tqdm(
            loader, desc=f"Reference log-probs ({name})", disable=not self.accelerator.is_local_main_process
        ):
            k = max(1, int(batch["num_steps"].max().item()))
            steps = self.reference.step_logps(batch, k, self.model, self.accelerator.unwrap_model)
            n = batch["num_steps"]
            if paired:  # rows are [chosen..., rejected...]: keep each example's pair together, [B, 2, K]
                half = steps.size(0) // 2
                steps = torch.stack([steps[:half], steps[half:]], dim=1)
                n = torch.stack([n[:half], n[half:]], dim=1)
            # Other processes may have more steps: pad the step axis (the last one) before gathering.
            steps = self.accelerator.pad_across_processes(steps, dim=steps.dim() - 1, pad_index=0.0)
            steps, n = self.accelerator.gather_for_metrics((steps, n))
            for row, count in zip(steps.cpu(), n.cpu(), strict=True):
                if paired:
                    rows.append([row[0][: int(count[0])].tolist(), row[1][: int(count[1])].tolist()])
                else:
                    rows.append(row[: int(count)].tolist())
        if paired:
            columns = {
                "ref_chosen_step_logps": [r[0] for r in rows],
                "ref_rejected_step_logps": [r[1] for r in rows],
            }
        else:
            columns = {"ref_step_logps": rows}
        for col, values in columns.items():
            dataset = dataset.add_column(col, values)
        return dataset
