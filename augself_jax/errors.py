"""The errors a user can cause or must act on: each is printed as one line, no traceback;
and the config checks every section shares, in one message style: `<field>: <value> <what
is wrong>; allowed: <what is>` (each section checks its own fields with these, next to the
code that reads them).

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


def one_of(field: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{field}: '{value}' is unknown; allowed: {', '.join(map(str, allowed))}")


def positive(field: str, value, *, allow_default: bool = False) -> None:
    """A positive integer (or -1, "the method's default", where `allow_default`)."""
    if allow_default and value == -1:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        extra = " or -1 (the method's default)" if allow_default else ""
        raise ConfigError(f"{field}: {value!r} must be a positive integer{extra}")


def in_range(field: str, value, lo: float, hi: float) -> None:
    if not lo <= float(value) <= hi:
        raise ConfigError(f"{field}: {value} is outside [{lo}, {hi}]")
