"""Errors caused by the user's input, which the CLI reports as one line and exit code 2.

Shared by every layer that reads user input (config schema, data, models' checkpoints, methods,
engine), so it depends on nothing.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the input (config, paths, checkpoints, data), not a bug.

    The command line prints ``tskd-fast: error: <message>`` without a traceback and exits with 2;
    the message must say what is wrong and, where there is a fixed set of choices, list them.
    """


class ConfigError(UserError):
    """An invalid config: unknown key, wrong type, unknown method/model/dataset, bad override."""
