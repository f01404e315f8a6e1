"""The `trl-implicit-prm` command: one subcommand per module in `trl_implicit_prm.commands`.

Each command module defines `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`.

User errors (a :class:`~trl_implicit_prm.commands._errors.CommandError`, a
:class:`~trl_implicit_prm.data.DataFormatError`, a missing or unreadable file) are printed as
`trl-implicit-prm <command>: error: <message>` on stderr with exit status 2, like argparse's own errors, and
without a traceback unless `--verbose` is given. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

COMMANDS = ("demo", "train", "score", "eval_steps", "eval_bon", "convert", "eval_processbench", "search")


def build_parser() -> argparse.ArgumentParser:
    """The `trl-implicit-prm` argument parser, one sub-command per task."""
    parser = argparse.ArgumentParser(
        prog="trl-implicit-prm",
        description="Implicit process reward models: train on outcome labels, score every step.",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log at INFO level, and show the traceback of a user error",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"trl_implicit_prm.commands.{name}")
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run, _prog=cmd.prog)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean bad user input, not a bug in the library."""
    from trl_implicit_prm.commands._errors import CommandError
    from trl_implicit_prm.data import DataFormatError

    return (
        CommandError,
        DataFormatError,
        FileNotFoundError,
        IsADirectoryError,
        NotADirectoryError,
        PermissionError,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; user errors print a message and return 2, without a traceback."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args._run(args) or 0)
    except user_errors() as err:
        if args.verbose:
            traceback.print_exc()
        message = (
            str(err)
            if not isinstance(err, OSError) or not err.filename
            else f"{err.strerror}: {err.filename}"
        )
        print(f"{args._prog}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
