"""Subcommands of the `trl-implicit-prm` command line (see `trl_implicit_prm.cli`)."""
