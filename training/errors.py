"""The project's error types, one place for every stage (data, config, training, serving)."""

from __future__ import annotations


class InputError(Exception):
    """A bad input the user can fix: the message names the file (and line, row or key). The CLI prints it
    without a traceback and exits 2."""


class ConfigError(InputError):
    """A config file or override that does not validate (the message names the file and the key)."""


class InvalidInput(ValueError):
    """A prediction request the caller must fix (served as HTTP 400 with this message)."""
