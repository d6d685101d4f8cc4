"""Which exceptions raised while a LightningCLI command runs are the user's doing, as one line each."""

from __future__ import annotations

import os

from bigtrain.errors import UserError
from bigtrain.lightning_compat import building_trainer
from bigtrain.parse_errors import one_line


def as_user_error(err: BaseException) -> BaseException:
    """The UserError behind `err` (or Lightning's verdict on a setting, as one); else `err` itself."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, UserError):
            return cause
        cause = cause.__cause__ or cause.__context__
    if type(err).__name__ == "ArgumentError":
        return UserError(one_line(str(err)))
    return _lightning_user_error(err) or err


def _lightning_user_error(err: BaseException) -> UserError | None:
    """Lightning's verdicts on user settings as one line: what it raises while the Trainer is built from the
    trainer settings (accelerator, devices, strategy, precision, limits), and checkpoints torch.load refused
    to unpickle. An error raised in bigtrain's own code stays a traceback: that is a bug."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from bigtrain.checkpoints.load import is_refusal, unsafe_error

    if is_refusal(err):
        return unsafe_error(None, err)
    frames = []
    tb = err.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code)
        tb = tb.tb_next
    building = building_trainer(frames)
    raised_by_lightning = bool(frames) and f"{os.sep}lightning{os.sep}" in frames[-1].co_filename
    setting = (MisconfigurationException, ValueError, TypeError, ImportError)
    if not (building and raised_by_lightning and isinstance(err, setting)):
        return None
    message = " ".join(str(err).split())
    if "But your machine only has: []" in message:
        message += " (no such device here: use --trainer.accelerator cpu, or run where it exists)"
    return UserError(f"invalid trainer setting: {message}")
