"""The exceptions of stage 2: each message is the one line the command line prints."""

from __future__ import annotations


class ClassifyError(Exception):
    """A run of stage 2 that cannot go on; ``str(exc)`` is one line naming the file or setting
    and the fix.

    ``python -m classify`` prints it after ``classify: error:`` and exits with status 1.
    Feature files that cannot be used raise :class:`features.FeatureFileError` instead (also
    status 1).
    """


class SettingsError(ClassifyError, ValueError):
    """Settings that make no sense (alone or together); ``python -m classify`` prints its usage
    and the message, and exits with status 2."""


class PredictError(ClassifyError):
    """A model or input that cannot be used; the message is one line for the user."""


def named(setting: str) -> str:
    """A setting as both audiences know it: ``test_size (--test-size)``."""
    return f"{setting} (--{setting.replace('_', '-')})"


def check_count(setting: str, value: object) -> None:
    """Raise :class:`SettingsError` unless ``value`` is a whole number of at least 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SettingsError(f"{named(setting)} must be a whole number of at least 1, got {value!r}")


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (a library's error can run to many), or its type's
    name when it has none: what a one-line error quotes of it.

    Examples
    --------
    >>> first_line(ValueError("bad layer\\nTraceback of the graph ..."))
    'bad layer'
    >>> first_line(KeyError())
    'KeyError'
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
