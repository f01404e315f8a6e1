"""Multi-process runs: ZeRO-3 saves that write loadable weights, DeepSpeed-only checkpoints, and an orderly exit.

- `check_zero3_saves_weights`: under ZeRO-3 the weights exist only as shards; `save_model` writes them only when
  DeepSpeed's `stage3_gather_16bit_weights_on_model_save` is true. Without it transformers writes a DeepSpeed
  checkpoint (`global_stepN/`) and no weights, and says "Model saved". The trainers refuse to start instead.
- `check_not_deepspeed_only`: loading such a directory says what it is and how to convert it.
- `end_distributed_run`: the end of a training script (see its docstring for why it ends the process).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Files `from_pretrained` loads weights from (plain and sharded); a PEFT adapter's.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)
GATHER_FLAG = "stage3_gather_16bit_weights_on_model_save"
_GATHER_FLAG_OLD = "stage3_gather_fp16_weights_on_model_save"  # DeepSpeed's deprecated spelling


# ------------------------------------------------------------------------------------------------ ZeRO-3 saving
def zero3_gathers_weights_on_save(deepspeed_config: dict[str, Any]) -> bool:
    """Whether a DeepSpeed config makes the engine gather 16-bit weights on save (as DeepSpeed reads it)."""
    zero = deepspeed_config.get("zero_optimization") or {}
    value = zero.get(GATHER_FLAG, zero.get(_GATHER_FLAG_OLD, False))
    return value is True


def check_zero3_saves_weights(deepspeed_plugin: Any, peft: bool) -> None:
    """Refuse a ZeRO-3 run whose saves would write no weights (its DeepSpeed config lacks the gather flag).

    PEFT adapters are exempt: transformers gathers the trainable adapter weights under ZeRO-3 without the flag.
    We refuse rather than gather regardless of the flag, because a user who set it to false may have meant it
    (gathering an 8B model puts 16 GB on rank 0's CPU), and the fix is one line of config.
    """
    if deepspeed_plugin is None or deepspeed_plugin.zero_stage != 3 or peft:
        return
    config = deepspeed_plugin.deepspeed_config or {}
    if zero3_gathers_weights_on_save(config):
        return
    zero = config.get("zero_optimization") or {}
    found = repr(zero[GATHER_FLAG]) if GATHER_FLAG in zero else "missing"
    raise ValueError(
        f"DeepSpeed ZeRO-3 without `{GATHER_FLAG}: true` (it is {found}) would save no model weights: save_model "
        "and every checkpoint would hold only DeepSpeed's sharded `global_stepN/` state, which cannot be scored. "
        f'Add `"{GATHER_FLAG}": true` to the "zero_optimization" section of your DeepSpeed JSON config, or '
        "`zero3_save_16bit_model: true` under `deepspeed_config` in the accelerate config "
        "(recipes/accelerate/zero3.yaml has it)."
    )


# ------------------------------------------------------------------------------------------------------ loading
def deepspeed_checkpoint_tag(path: str | os.PathLike) -> str | None:
    """The DeepSpeed checkpoint folder (`global_stepN`) in a local directory that holds no model weights, else None."""
    root = Path(path)
    if not root.is_dir() or any((root / name).is_file() for name in WEIGHT_FILES):
        return None
    latest = root / "latest"
    if latest.is_file():
        tag = latest.read_text().strip()
        if (root / tag).is_dir():
            return tag
    tags = sorted(d.name for d in root.glob("global_step*") if d.is_dir() and any(d.glob("*model_states.pt")))
    return tags[-1] if tags else None


def check_not_deepspeed_only(path: str | os.PathLike) -> None:
    """Raise a clear OSError when `path` holds a DeepSpeed ZeRO checkpoint and no weights to load."""
    tag = deepspeed_checkpoint_tag(path)
    if tag is None:
        return
    raise OSError(
        f"{path} holds a DeepSpeed ZeRO checkpoint ({tag}/: the sharded training state) and no model weights "
        f"({WEIGHT_FILES[0]} or {WEIGHT_FILES[2]}); it was saved under ZeRO-3 without `{GATHER_FLAG}: true`. "
        f"Convert it into weights in the same directory with `python -m deepspeed.utils.zero_to_fp32 {path} {path} "
        "--safe_serialization` (or the zero_to_fp32.py script DeepSpeed saved next to it), then load it again."
    )


# ---------------------------------------------------------------------------------------------------- the end
def end_distributed_run(trainer: Any) -> None:
    """End a training script: wait for every process, finish the trackers, destroy the process group, and in a
    multi-process run end the process here with exit status 0.

    Why the process ends here: `destroy_process_group()` does not stop gloo's worker threads (torch's
    `ProcessGroupGloo` has no `shutdown`; its threads are joined only when the C++ object is freed), and DeepSpeed
    (groups kept on the engine, the optimizer and every ZeRO-3 parameter) and DDP (the reducer) still reference
    the groups, so the threads outlive the script. During interpreter finalization they can drop the last
    reference to a finished collective's tensors, which needs the GIL; Python <= 3.13 ends a thread that asks for
    the GIL after finalization began with `pthread_exit`, and unwinding through a `noexcept` C++ destructor calls
    `std::terminate`: "terminate called without an active exception", SIGABRT, and torchrun then kills the other
    ranks. A barrier does not prevent it: the default group's barrier does not order the work of DeepSpeed's
    own groups, and the threads still run at finalization. So, after the barrier and the teardown, we run the
    `atexit` handlers and flush the streams ourselves, while the interpreter is whole, and leave with
    `os._exit(0)`, which skips finalization. A single-process run returns normally.

    Call it last: nothing that needs the other processes (train, evaluate, save_model, push_to_hub) works after.
    """
    accelerator = trainer.accelerator
    multi_process = accelerator.num_processes > 1
    if multi_process:
        accelerator.wait_for_everyone()  # no rank leaves while another still saves or communicates
    # transformers >= 5.18: Trainer.end() finishes the trackers and destroys the process group
    end = getattr(trainer, "end", None)
    if callable(end):
        end()
    else:
        accelerator.end_training()
    if not multi_process:
        return
    logger.info(
        "process %d of %d: process group destroyed, exiting",
        accelerator.process_index,
        accelerator.num_processes,
    )
    import atexit

    atexit._run_exitfuncs()  # what a normal exit would run (logging.shutdown, trackers, multiprocessing)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)
