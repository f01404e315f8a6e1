"""Command-line arguments that load a ProcessRewardComputer, shared by the model-using subcommands."""

from __future__ import annotations

import argparse
import sys
from typing import Any


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


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --ref-model, --reference-free, --beta, --separator, --chat-prompt, --prompt-separator,
    --append-eos, --batch-size, --dtype, --device."""
    parser.add_argument("--model", required=True, help="checkpoint directory, hub id or PEFT adapter directory")
    parser.add_argument("--ref-model", default=None,
                        help="reference model (default: the one recorded with the checkpoint; for an adapter, "
                             "its base model with adapters disabled)")
    parser.add_argument("--reference-free", action="store_true", default=None,
                        help="score without a reference (rho = log pi_theta)")
    parser.add_argument("--beta", type=float, default=None, help="beta (default: checkpoint metadata, else 0.05)")
    parser.add_argument("--separator", default=None,
                        help=r"step separator, backslash escapes allowed: '\n\n' (default: checkpoint metadata, "
                             r"else '\n\n')")
    parser.add_argument("--chat-prompt", action=argparse.BooleanOptionalAction, default=None,
                        help="render string prompts (a ProcessBench 'problem') as one user message with the chat "
                             "template (--chat-prompt) or as plain text (--no-chat-prompt); default: as in "
                             "training, from the checkpoint's implicit_prm.json")
    parser.add_argument("--prompt-separator", default=None,
                        help=r"plain-text prompts end with this before the response, backslash escapes allowed "
                             r"(e.g. '\n'); default: the one recorded with the checkpoint")
    parser.add_argument("--append-eos", action=argparse.BooleanOptionalAction, default=None,
                        help="append the EOS token to every response (its last step); default: as in training, "
                             "from the checkpoint's implicit_prm.json")
    parser.add_argument("--batch-size", type=int, default=None, help="at most this many responses per batch")
    parser.add_argument("--dtype", default=None, help="model dtype, e.g. bfloat16 (default: the checkpoint's)")
    parser.add_argument("--device", default=None, help="device (default: cuda if available, else cpu)")


def computer_from_args(args: argparse.Namespace, **overrides: Any) -> Any:
    """The ProcessRewardComputer the model arguments describe, rendering prompts as asked (else as in training)."""
    from trl_implicit_prm.data.rendering import override_prompt_format
    from trl_implicit_prm.inference import ProcessRewardComputer

    separator = unescape(args.prompt_separator) if args.prompt_separator is not None else None
    if args.chat_prompt and separator is not None:
        print("--prompt-separator applies to plain-text prompts; do not combine it with --chat-prompt",
              file=sys.stderr)
        raise SystemExit(2)
    prc = ProcessRewardComputer.from_pretrained(
        args.model, ref_model=args.ref_model, reference_free=args.reference_free, beta=args.beta,
        step_separator=unescape(args.separator) if args.separator is not None else None,
        batch_size=args.batch_size, dtype=args.dtype, device=args.device, append_eos=args.append_eos,
        **overrides,
    )
    prc.prompt_format = override_prompt_format(prc.prompt_format, chat_prompt=args.chat_prompt,
                                               prompt_separator=separator, tokenizer=prc.tokenizer)
    return prc
