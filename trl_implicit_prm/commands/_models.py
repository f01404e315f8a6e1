"""Command-line arguments that load a ProcessRewardComputer, shared by the model-using subcommands.

The subcommands check everything they can before loading a model: the flags (:func:`finite_float`,
:func:`positive_finite_float`, :func:`check_device_and_dtype`), then the data, with the tokenizer, step
separator and length limit the computer will use (:func:`preflight`, which loads no weights). Loading errors
that come from the user's input (a missing model or reference, a vocabulary mismatch) are raised as
:class:`~trl_implicit_prm.commands._errors.CommandError`.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from trl_implicit_prm.commands._errors import CommandError


def unescape(text: str) -> str:
    r"""Interpret `\n`, `\t`, `\r` and `\\` in a command-line separator."""
    out, i = [], 0
    table = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in table:
            out.append(table[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def finite_float(text: str) -> float:
    """An argparse type: a finite number (`nan`, `inf` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_finite_float(text: str) -> float:
    """An argparse type: a finite number > 0 (for β)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (lengths, batch sizes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --ref-model, --reference-free, --beta, --separator, --chat-prompt, --prompt-separator,
    --append-eos, --batch-size, --dtype, --device.
    """
    parser.add_argument(
        "--model", required=True, help="checkpoint directory, hub id or PEFT adapter directory"
    )
    parser.add_argument(
        "--ref-model",
        default=None,
        help="reference model (default: the one recorded with the checkpoint; for an adapter, "
        "its base model with adapters disabled)",
    )
    parser.add_argument(
        "--reference-free",
        action="store_true",
        default=None,
        help="score without a reference (rho = log pi_theta)",
    )
    parser.add_argument(
        "--beta",
        type=positive_finite_float,
        default=None,
        help="beta (default: checkpoint metadata, else 0.05)",
    )
    parser.add_argument(
        "--separator",
        default=None,
        help=r"step separator, backslash escapes allowed: '\n\n' (default: checkpoint metadata, "
        r"else '\n\n')",
    )
    parser.add_argument(
        "--chat-prompt",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="render string prompts (a ProcessBench 'problem') as one user message with the chat "
        "template (--chat-prompt) or as plain text (--no-chat-prompt); default: as in "
        "training, from the checkpoint's implicit_prm.json",
    )
    parser.add_argument(
        "--prompt-separator",
        default=None,
        help=r"plain-text prompts end with this before the response, backslash escapes allowed "
        r"(e.g. '\n'); default: the one recorded with the checkpoint",
    )
    parser.add_argument(
        "--append-eos",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="append the EOS token to every response (its last step); default: as in training, "
        "from the checkpoint's implicit_prm.json",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=None, help="at most this many responses per batch"
    )
    parser.add_argument(
        "--dtype", default=None, help="model dtype, e.g. bfloat16 (default: the checkpoint's)"
    )
    parser.add_argument("--device", default=None, help="device (default: cuda if available, else cpu)")


def add_score_argument(parser: argparse.ArgumentParser) -> None:
    """`--score`: which per-step number the step-error commands threshold."""
    parser.add_argument(
        "--score",
        choices=["step", "q-sigmoid"],
        default="step",
        help="per-step score: the step reward, or sigmoid of the cumulative q at the step's end",
    )


def check_device_and_dtype(args: argparse.Namespace) -> None:
    """Refuse a `--device` that does not exist on this machine and a `--dtype` torch does not know."""
    import torch

    from trl_implicit_prm.inference.loading import resolve_dtype

    if args.dtype is not None:
        try:
            resolve_dtype(args.dtype)
        except ValueError:
            raise CommandError(
                f"--dtype {args.dtype!r}: not a torch dtype; pass e.g. bfloat16, float16, float32 or auto"
            ) from None
    if args.device is None:
        return
    try:
        device = torch.device(args.device)
    except (RuntimeError, ValueError) as err:
        raise CommandError(
            f"--device {args.device!r}: not a device ({err}); pass e.g. cpu, cuda or cuda:0"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CommandError(
                f"--device {args.device!r}: CUDA is not available on this machine; pass --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CommandError(
                f"--device {args.device!r}: this machine has {torch.cuda.device_count()} CUDA "
                f"device(s), numbered from 0"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise CommandError(
            f"--device {args.device!r}: MPS is not available on this machine; pass --device cpu"
        )


@dataclass
class Preflight:
    """What scoring will use, known before any weights are loaded: tokenizer, separator and length limit."""

    tokenizer: Any
    step_separator: str
    max_length: int | None
    max_length_from_flag: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    prompt_format: Any = None  # data.rendering.PromptFormat: as in training, or as the flags ask
    append_eos: bool = False

    def limit_text(self) -> str:
        """How the length limit is named in messages."""
        if self.max_length_from_flag:
            return f"--max-length {self.max_length}"
        return f"the model's limit of {self.max_length} tokens (set with --max-length)"


def _model_location(model: str) -> tuple[str, bool]:
    """(location, is local); a local-looking path that does not exist is a CommandError."""
    path = Path(model).expanduser()
    if path.exists():
        return str(path), True
    if model.startswith(("/", ".", "~")) or model.count("/") > 1 or not model.strip():
        raise CommandError(
            f"--model {model!r}: no such directory (expected a checkpoint directory, a PEFT "
            "adapter directory or a hub id)"
        )
    return model, False


def preflight(args: argparse.Namespace) -> Preflight:
    """Check the device and dtype flags, then load the tokenizer and model config (no weights) of `--model`.

    The separator is `--separator`, else the checkpoint's recorded one, else "\\n\\n"; the length limit is
    `--max-length`, else the smaller of the model's position limit and the tokenizer's `model_max_length`
    (what :class:`~trl_implicit_prm.ProcessRewardComputer` uses by default).
    """
    from transformers import AutoConfig

    from trl_implicit_prm.inference.computer import DEFAULT_SEPARATOR, default_max_length
    from trl_implicit_prm.modeling import METADATA_FILE, is_adapter_dir, load_tokenizer, read_metadata

    check_device_and_dtype(args)
    location, local = _model_location(args.model)
    metadata = read_metadata(location) if local and Path(location).is_dir() else {}
    sources = [location]
    if local and is_adapter_dir(location):
        from peft import PeftConfig

        sources.append(PeftConfig.from_pretrained(location).base_model_name_or_path)
    tokenizer, failures = None, []
    for source in sources:
        try:
            tokenizer = load_tokenizer(source)
            break
        except (OSError, ValueError, TypeError) as err:
            failures.append(f"{source}: {err}")
    if tokenizer is None:
        raise CommandError(f"--model {args.model!r}: no tokenizer could be loaded ({'; '.join(failures)})")
    max_length = getattr(args, "max_length", None)
    if max_length is None:
        try:
            config = AutoConfig.from_pretrained(sources[-1])
        except (OSError, ValueError) as err:
            raise CommandError(f"--model {args.model!r}: no model config could be loaded ({err})") from None
        max_length = default_max_length(SimpleNamespace(config=config), tokenizer)
    separator = (
        unescape(args.separator)
        if args.separator is not None
        else metadata.get("step_separator", DEFAULT_SEPARATOR)
    )
    prompt_format, append_eos = _rendering(args, metadata, str(Path(location) / METADATA_FILE), tokenizer)
    return Preflight(
        tokenizer,
        separator,
        max_length,
        getattr(args, "max_length", None) is not None,
        metadata,
        prompt_format,
        append_eos,
    )


def _rendering(
    args: argparse.Namespace, metadata: dict[str, Any], source: str, tokenizer: Any
) -> tuple[Any, bool]:
    """(prompt format, append EOS): as recorded with the checkpoint, unless the rendering flags say otherwise."""
    from trl_implicit_prm.data.rendering import (
        append_eos_from_metadata,
        override_prompt_format,
        prompt_format_from_metadata,
    )

    chat = getattr(args, "chat_prompt", None)
    separator = getattr(args, "prompt_separator", None)
    separator = unescape(separator) if separator is not None else None
    if chat and separator is not None:
        raise CommandError(
            "--prompt-separator applies to plain-text prompts; do not combine it with --chat-prompt"
        )
    try:
        recorded = prompt_format_from_metadata(metadata, source)
        eos = getattr(args, "append_eos", None)
        append_eos = eos if eos is not None else append_eos_from_metadata(metadata, source)
    except ValueError as err:
        raise CommandError(str(err)) from None
    return override_prompt_format(
        recorded, chat_prompt=chat, prompt_separator=separator, tokenizer=tokenizer
    ), append_eos


def computer_from_args(args: argparse.Namespace, pre: Preflight | None = None, **overrides: Any) -> Any:
    """The ProcessRewardComputer the model arguments describe (with the preflight's tokenizer and limits).

    Loading errors caused by the input (missing model or reference, vocabulary mismatch, both a reference and
    `--reference-free`) become :class:`CommandError`.
    """
    from trl_implicit_prm.inference import ProcessRewardComputer

    if pre is None:
        pre = preflight(args)
    overrides = {
        "tokenizer": pre.tokenizer,
        "max_length": pre.max_length,
        "append_eos": pre.append_eos,
        **overrides,
    }
    separator = pre.step_separator
    try:
        prc = ProcessRewardComputer.from_pretrained(
            args.model,
            ref_model=args.ref_model,
            reference_free=args.reference_free,
            beta=args.beta,
            step_separator=separator,
            batch_size=args.batch_size,
            dtype=args.dtype,
            device=args.device,
            **overrides,
        )
    except (ValueError, OSError) as err:
        raise CommandError(str(err)) from err
    prc.prompt_format = pre.prompt_format  # what the rows were checked with (`encode_checked`)
    return prc
