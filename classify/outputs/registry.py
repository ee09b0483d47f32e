"""The outputs of a stage-2 run: :class:`Output` and :func:`register_output`.

An output writes what it renders of each model's :class:`~classify.evaluation.results.ModelResult`
(its :class:`~classify.evaluation.evaluation.Evaluation`, search and provenance) to the
destination the run was given for it: ``train_and_evaluate(..., outputs={"name": destination})``,
or for the built-ins their own keywords and flags (``json=``/``--json``, ``save=``/``--save``,
``plots=``/``--plots``). A new output is one class and one call::

    from classify import Output, register_output

    class Accuracy(Output):
        name = "accuracy"

        def write(self, result, destination, several):
            path = self.per_model(destination, result.name, several)
            path.write_text(f"{result.evaluation.accuracy:.4f}\\n")
            return path

    register_output(Accuracy())
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import SettingsError


class Output:
    """One kind of output; subclasses set :attr:`name` and override :meth:`write` (and
    :meth:`open` or :meth:`write_all` where they need them)."""

    #: The key of ``outputs=`` (the built-ins: also a keyword of ``train_and_evaluate``).
    name: str = ""
    #: Whether it shows :meth:`~classify.ModelResult.label_issues`: a run asking for it finds
    #: them for each model before any output writes (so ``--json`` records them too).
    needs_label_issues: bool = False

    def open(self, destination: str | os.PathLike) -> Path:
        """Check (or create) ``destination`` before any search starts, so a bad one fails in
        one line at once; returns the destination the writes get."""
        return Path(destination)

    def write(self, result: Any, destination: Path, several: bool) -> Path | None:
        """Write what this output renders of one model's ``result``; ``several`` says the run
        has more than one model. Returns the file written (or None)."""
        raise NotImplementedError

    def write_all(self, results: Mapping[str, Any], destination: Path) -> None:
        """After every model: write what spans them all (nothing by default)."""

    @staticmethod
    def per_model(destination: Path, model: str, several: bool) -> Path:
        """``destination``, or with several models ``<stem>.<model><suffix>`` beside it.

        Examples
        --------
        >>> Output.per_model(Path("f17.json"), "rf", True), Output.per_model(Path("f17.json"), "rf", False)
        (PosixPath('f17.rf.json'), PosixPath('f17.json'))
        """
        if not several:
            return destination
        return destination.with_name(f"{destination.stem}.{model}{destination.suffix}")


_REGISTRY: dict[str, Output] = {}


#: Every registered output, by name.
OUTPUTS: Mapping[str, Output] = MappingProxyType(_REGISTRY)  # a read-only, live view


def register_output(output: Output, *, replace: bool = False) -> Output:
    """Add ``output`` under ``output.name``; returns it. A name taken already is refused in one
    line unless ``replace``.

    Examples
    --------
    >>> class Nothing(Output):
    ...     name = "nothing"
    ...     def write(self, result, destination, several):
    ...         return None
    >>> "nothing" in OUTPUTS, register_output(Nothing()).name in OUTPUTS
    (False, True)
    >>> unregister_output("nothing")
    """
    if not output.name:
        raise SettingsError(f"{type(output).__name__} has no name; set its name attribute")
    if output.name in _REGISTRY and not replace:
        raise SettingsError(f"an output named {output.name!r} is registered already; pass replace=True")
    _REGISTRY[output.name] = output
    return output


def unregister_output(name: str) -> None:
    """Remove the output ``name`` (a no-op when it is not there).

    Examples
    --------
    >>> unregister_output("not-registered")
    >>> list(OUTPUTS)
    ['json', 'save', 'plots', 'label_issues', 'html']
    """
    _REGISTRY.pop(name, None)


def open_outputs(destinations: Mapping[str, str | os.PathLike | None]) -> dict[str, Path]:
    """The run's outputs by name, each destination checked by its :meth:`Output.open`; None
    destinations are left out, unknown names refused in one line.

    Examples
    --------
    >>> open_outputs({"json": "f17.json", "save": None})
    {'json': PosixPath('f17.json')}
    """
    opened = {}
    for name, destination in destinations.items():
        if destination is None:
            continue
        if name not in _REGISTRY:
            raise SettingsError(f"unknown output (outputs=) {name!r}; choose from {', '.join(_REGISTRY)}")
        opened[name] = _REGISTRY[name].open(destination)
    return opened
