"""The one argument parser of the utility commands: every mistake is one line and exit status 2."""

from __future__ import annotations

import argparse
from typing import NoReturn

from bigtrain.errors import UserError


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one-line UserErrors (exit status 2 through the bigtrain command)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Raise the parse error as a UserError instead of printing usage and exiting."""
        raise UserError(f"{self.prog}: {message}")


def subcommands(parser: argparse.ArgumentParser, helps: dict[str, str]) -> dict[str, OneLineParser]:
    """A required sub-command of `parser` (its name lands in `args.command`); a parser for each, by name."""
    names = "{" + ",".join(helps) + "}"
    # The metavar names the choices in "the following arguments are required" instead of the dest.
    sub = parser.add_subparsers(dest="command", required=True, metavar=names, parser_class=OneLineParser)
    return {name: sub.add_parser(name, help=text, description=text) for name, text in helps.items()}
