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
