"""User-facing errors: the CLI prints their message and exits with status 2, never a stack trace.

Raise these for anything the user can fix (a config key, a data row, a path); let real bugs raise normally.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input; the message must say which file/row/field or key is wrong."""

    exit_code = 2


class ConfigError(UserError):
    """A bad config file or override (unknown key, wrong type, missing required value)."""


class DataError(UserError):
    """A bad data file or row (names the file, the 1-based row and the field)."""
