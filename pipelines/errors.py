"""Errors the CLI turns into exit code 2 and a single line on stderr."""


class UserError(Exception):
    """Bad usage, config or input: the user can fix it; exit code 2."""


class ConfigError(UserError):
    """The composed config is invalid (unknown key, wrong type, unknown group option)."""
