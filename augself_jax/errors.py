"""The one error type for bad user input (config fields, flags, missing data)."""


class ConfigError(ValueError):
    """A bad config value or missing input; its message is one line naming the field."""
