"""User-fixable errors: one clear line, exit status 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake the user can fix (recipe key, path, value); the CLI prints it as one line and exits 2."""


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The valid choice nearest to `name`, or None when nothing is close."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown(what: str, name: str, choices: Iterable[str]) -> UserError:
    """A UserError for an unknown name, suggesting the closest valid one and listing the others."""
    choices = sorted(choices)
    near = closest(name, choices)
    hint = f"; did you mean {near!r}?" if near else ""
    return UserError(f"unknown {what} {name!r}{hint} (valid: {', '.join(choices)})")
