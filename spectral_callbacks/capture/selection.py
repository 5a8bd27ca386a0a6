"""Choosing layers by name, regular expression or layer class (shared by every framework)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol, TypeVar

__all__ = ["LayerFilter", "fullmatch_name", "select_layers"]

LayerFilter = None | str | type | Sequence[str | type]


class _Layer(Protocol):
    name: str
    layer_class: type


LayerT = TypeVar("LayerT", bound=_Layer)


def select_layers(found: list[LayerT], layers: LayerFilter, exclude: LayerFilter) -> list[LayerT]:
    """Keep the layers matching ``layers`` (all when ``None``) and not matching ``exclude``.

    A string entry matches a layer whose name equals it or fully matches it as a regular
    expression; a class entry matches layers of that class or a subclass.

    Raises:
        ValueError: an entry matches no layer; the message lists the available names.
    """
    chosen = found if layers is None else [layer for layer in found if _matches(layer, _entries(layers))]
    for entry in _entries(layers) + _entries(exclude):
        if not any(_matches(layer, [entry]) for layer in found):
            names = ", ".join(layer.name for layer in found) or "(none)"
            raise ValueError(
                f"Layer filter {_describe(entry)} matches no analyzable layer. Available: {names}."
            )
    return [layer for layer in chosen if not _matches(layer, _entries(exclude))]


def _entries(value: LayerFilter) -> list[str | type]:
    if value is None:
        return []
    if isinstance(value, (str, type)):
        return [value]
    return list(value)


def _matches(layer: _Layer, entries: list[str | type]) -> bool:
    for entry in entries:
        if isinstance(entry, type):
            if issubclass(layer.layer_class, entry):
                return True
        elif layer.name == entry or fullmatch_name(entry, layer.name):
            return True
    return False


def fullmatch_name(pattern: str, name: str, *, what: str = "Layer filter") -> bool:
    """Whether ``pattern``, a regular expression, matches all of ``name``.

    Raises:
        ValueError: ``pattern`` is not a valid regular expression; the message starts with ``what``.
    """
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error as error:
        raise ValueError(
            f"{what} {pattern!r} is neither a layer name nor a valid regular expression: {error}."
        ) from error


def _describe(entry: str | type) -> str:
    return entry.__name__ if isinstance(entry, type) else repr(entry)
