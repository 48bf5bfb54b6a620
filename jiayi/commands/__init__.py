"""Subcommands of the ``jiayi`` command line."""
