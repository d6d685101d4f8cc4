"""What `bigtrain fit` can refuse before torch and Lightning are imported (which takes seconds)."""

from __future__ import annotations

from pathlib import Path

from bigtrain.config_files import check_config_files, option_values
from bigtrain.errors import UserError
from bigtrain.recipes import find


def check_before_lightning(args: list[str]) -> None:
    """Mistakes found without torch or Lightning (whose imports take seconds): an unknown `--recipe`, a
    `--config` file that does not exist or is not valid YAML."""
    for name in option_values(args, "--recipe"):
        find(name)
    for value in option_values(args, "--config", "-c"):
        # jsonargparse also takes a YAML or JSON string as the value; only a plain word is a path.
        if not Path(value).is_file() and not any(c in value for c in ":{}[]\n"):
            raise UserError(f"--config {value!r}: no such file")
    check_config_files(args)
