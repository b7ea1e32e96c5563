"""Typed errors for user mistakes: the CLI prints their message on one line and exits 2."""


class UserError(Exception):
    """A mistake in what the user gave us (a file, a field, a value), not a bug in ssnbench."""


class DatasetError(UserError):
    """A Derm7pt release (real or synthetic) is missing, malformed or inconsistent."""


class ConfigError(UserError):
    """A suite file is malformed: the message names the file, the key path and what was expected."""
