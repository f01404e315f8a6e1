"""The error a subcommand raises for bad user input; `trl_implicit_prm.cli.main` prints it and exits 2."""

from __future__ import annotations


class CommandError(Exception):
    """Bad input from the user (a flag, a data file, a model that cannot be used): the message says what to pass.

    The command line prints `trl-implicit-prm <command>: error: <message>` without a traceback (with
    `--verbose`, the traceback too) and exits with status 2.
    """
