"""The errors a user can cause or must act on: each is printed as one line, no traceback.

`app.run` prints `<label>: <message>` on stderr and exits with `exit_status`; anything
else that escapes is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input, or a stop the user must act on; its message is one line."""

    label = "error"
    exit_status = 2


class ConfigError(UserError, ValueError):
    """A bad config value, flag, workdir or missing input; the message names the field."""

    label = "config error"


class CheckpointError(UserError):
    """A checkpoint that cannot be read or written; the message names the path and cause."""

    label = "checkpoint error"


class DivergedError(UserError, FloatingPointError):
    """The loss or the parameters became NaN or Inf; names the step and the last good
    checkpoint. Exit status 1: the input was valid, the run failed."""

    label = "error"
    exit_status = 1
