"""Settings declared once: a frozen dataclass whose fields are a call's keywords, each field's
metadata its command-line option.

A stage declares its settings as a dataclass of fields ``name: type = field(default=...,
metadata=option(help, *flags, ...))``. From that one declaration:

* :func:`add_arguments_from` builds the ``argparse`` options (dest: the field's name, default:
  the field's default);
* :func:`keywords_from` maps parsed arguments back to the call's keywords;
* :func:`option_table_of` renders the Markdown table of the docs.

The dataclass's ``__post_init__`` checks the values, so a notebook's call and the command line
refuse the same settings with the same one line. This module depends on nothing of the
project (the standard library only): both stages import it.

Examples
--------
>>> import argparse
>>> from dataclasses import dataclass, field
>>> @dataclass(frozen=True)
... class Settings:
...     size: int = field(default=8, metadata=option("images per call", metavar="N", text=whole))
>>> parser = argparse.ArgumentParser()
>>> add_arguments_from(Settings, parser)
>>> keywords_from(Settings, parser.parse_args(["--size", "4"]))
{'size': 4}
>>> print(option_table_of(Settings))
| option | keyword | default | what it does |
| --- | --- | --- | --- |
| `--size` | `size` | `8` | images per call |
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "add_arguments_from",
    "flags_of",
    "keywords_from",
    "named",
    "number",
    "option",
    "option_fields",
    "option_table_of",
    "whole",
]

#: What :func:`option` may take as a function of no arguments, called when a parser or table is
#: made: choices (and the help naming them) that registries extend after the declaration.
Deferred = Callable[[], Any]


def option(help: str | Deferred, *flags: str, metavar: str | Deferred | None = None,
           text: Callable[[str], Any] | None = None, action: str | None = None, nargs: str | None = None,
           choices: Sequence[Any] | Deferred | None = None, group: str | None = None) -> dict[str, Any]:
    """The command-line side of a setting, as a dataclass field's metadata.

    Parameters
    ----------
    help : str or callable
        The option's help (and the docs table's "what it does").
    *flags : str
        Its flags; none gives ``--<name>`` with dashes.
    metavar, action, nargs, choices
        As :meth:`argparse.ArgumentParser.add_argument` takes them.
    text : callable, optional
        Text to value (argparse's ``type``), e.g. :func:`whole`; whether the value is allowed is
        for the settings' own checks to say, once.
    group : str, optional
        The title of the argument group that shows the option in ``--help``.

    ``help``, ``metavar`` and ``choices`` may each be a function of no arguments, called when a
    parser or table is made, so that entries registered after the declaration show.

    Examples
    --------
    >>> option("images per call", "--batch-size", "-b", metavar="N", text=whole)["flags"]
    ('--batch-size', '-b')
    """
    return {"flags": flags, "help": help, "metavar": metavar, "text": text, "action": action,
            "nargs": nargs, "choices": choices, "group": group}


def _now(value: Any) -> Any:
    """A deferred part of an option (see :func:`option`), as of now."""
    return value() if callable(value) else value


def option_fields(settings: type) -> list[dataclasses.Field]:
    """The fields of the dataclass ``settings`` declared with :func:`option`, in order (a field
    without one is a keyword of the call only, left out of the parser and the table).

    Examples
    --------
    >>> from dataclasses import dataclass, field
    >>> @dataclass
    ... class Settings:
    ...     seed: int = field(default=0, metadata=option("the seed"))
    ...     hook: object = None
    >>> [f.name for f in option_fields(Settings)]
    ['seed']
    """
    return [f for f in dataclasses.fields(settings) if "flags" in f.metadata]


def flags_of(setting: dataclasses.Field) -> tuple[str, ...]:
    """A field's command-line flags: as declared, else ``--<name>`` with dashes.

    Examples
    --------
    >>> from dataclasses import dataclass, field
    >>> @dataclass
    ... class Settings:
    ...     test_size: float = field(default=0.25, metadata=option("held out"))
    >>> flags_of(option_fields(Settings)[0])
    ('--test-size',)
    """
    return setting.metadata["flags"] or (f"--{setting.name.replace('_', '-')}",)


def _default(setting: dataclasses.Field) -> Any:
    if setting.default_factory is not dataclasses.MISSING:
        return setting.default_factory()
    return setting.default


def add_arguments_from(settings: type, parser: argparse.ArgumentParser, *,
                       groups: Mapping[str, str] | None = None) -> None:
    """Add every option field of the dataclass ``settings`` to ``parser`` (dest: the field's
    name, default: its default, a tuple as a list as argparse gives one). A field's ``group``
    is made an argument group once, described by ``groups[title]`` where given.

    Examples
    --------
    >>> from dataclasses import dataclass, field
    >>> @dataclass(frozen=True)
    ... class Settings:
    ...     progress: bool = field(default=True, metadata=option("no bar", "--quiet", action="store_false"))
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments_from(Settings, parser)
    >>> parser.parse_args(["--quiet"]).progress, parser.parse_args([]).progress
    (False, True)
    """
    made: dict[str, argparse._ArgumentGroup] = {}
    for setting in option_fields(settings):
        meta = setting.metadata
        target: argparse._ActionsContainer = parser
        if meta.get("group"):
            title = meta["group"]
            if title not in made:
                made[title] = parser.add_argument_group(title, (groups or {}).get(title))
            target = made[title]
        extra = {key: meta[key] for key in ("action", "nargs") if meta.get(key) is not None}
        extra.update({key: _now(meta[key]) for key in ("metavar", "choices") if meta.get(key) is not None})
        if meta.get("text") is not None:
            extra["type"] = meta["text"]
        default = _default(setting)
        default = list(default) if isinstance(default, tuple) else default
        target.add_argument(*flags_of(setting), dest=setting.name, default=default, help=_now(meta["help"]),
                            **extra)


def keywords_from(settings: type, args: argparse.Namespace) -> dict[str, Any]:
    """The call's keywords from ``args`` parsed by a parser :func:`add_arguments_from` built
    (checked when the call makes its settings).

    Examples
    --------
    >>> from dataclasses import dataclass, field
    >>> @dataclass
    ... class Settings:
    ...     seed: int = field(default=0, metadata=option("the seed", text=whole))
    >>> keywords_from(Settings, argparse.Namespace(seed=3, dataset="x"))
    {'seed': 3}
    """
    return {setting.name: getattr(args, setting.name) for setting in option_fields(settings)}


def option_table_of(settings: type) -> str:
    """The Markdown table of the option fields of ``settings``: flags, keyword, default,
    meaning. A ``store_false`` flag says the value it gives.

    Examples
    --------
    >>> from dataclasses import dataclass, field
    >>> @dataclass
    ... class Settings:
    ...     models: tuple = field(default=("a", "b"), metadata=option("models", "--model", "-m"))
    ...     progress: bool = field(default=True, metadata=option("no bar", "--quiet", action="store_false"))
    >>> print("\\n".join(option_table_of(Settings).splitlines()[2:]))
    | `--model`, `-m` | `models` | `a, b` | models |
    | `--quiet` (`False`) | `progress` | `True` | no bar |
    """
    rows = ["| option | keyword | default | what it does |", "| --- | --- | --- | --- |"]
    for setting in option_fields(settings):
        meta = setting.metadata
        default = _default(setting)
        shown = ", ".join(map(str, default)) if isinstance(default, tuple) else default
        flags = ", ".join(f"`{flag}`" for flag in flags_of(setting))
        if meta.get("action") == "store_false":
            flags += " (`False`)"
        what = str(_now(meta["help"])).replace("|", "\\|")  # a | would end the cell
        rows.append(f"| {flags} | `{setting.name}` | `{shown}` | {what} |")
    return "\n".join(rows)


def named(setting: str) -> str:
    """A setting as both audiences know it, for one-line errors: keyword and flag.

    Examples
    --------
    >>> named("batch_size")
    'batch_size (--batch-size)'
    """
    return f"{setting} (--{setting.replace('_', '-')})"


# Text to values only: whether a value is allowed is for the settings' checks to say.
def whole(text: str) -> int:
    """A whole number from an option's text (an :class:`argparse.ArgumentTypeError` if not).

    Examples
    --------
    >>> whole("12")
    12
    """
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def number(text: str) -> float:
    """A real number from an option's text (an :class:`argparse.ArgumentTypeError` if not).

    Examples
    --------
    >>> number("1.5")
    1.5
    """
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
