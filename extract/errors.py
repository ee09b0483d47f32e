"""The exceptions of stage 1: each message is the one line the command line prints."""

from __future__ import annotations


class ExtractError(Exception):
    """A run that cannot go on; ``str(exc)`` is one line naming the file or setting and the fix.

    ``python -m extract`` prints it after ``extract: error:`` and exits with status 1.
    """


class DatasetError(ExtractError):
    """A dataset that cannot be found or listed; the message is one line for the user."""


class SettingsError(ExtractError, ValueError):
    """Settings that make no sense (alone or together); ``python -m extract`` exits with 2."""


class ExtractInterrupted(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C); the rows committed so far stay in the output.

    A ``KeyboardInterrupt``, so a notebook stops as it does for any interrupt; its message
    says what was kept and how to continue. ``python -m extract`` exits with status 130.
    """
