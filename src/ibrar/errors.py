"""The one exception type for bad input a user can fix (a config key, a path, a checkpoint, an argument).

The `ibrar` command prints such an error as one line and exits with code 2; any other exception is a bug
and keeps its traceback (exit code 1).
"""


class IbrarError(Exception):
    """Bad input: the message names the problem and the fix."""


class InputError(IbrarError, ValueError):
    """Bad input that is also a ValueError for code calling the library (a missing run folder, a bad name)."""
