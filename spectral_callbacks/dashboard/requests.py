"""Checking the dashboard's request parameters before anything reads a file.

Every endpoint declares the parameters it takes; a request with another parameter, a repeated
one, a value too long, a number that is not an integer or a name the run files do not hold is
refused with :class:`InvalidRequestError`, whose message names the parameter and what to send instead.
Names are only ever compared with the names found in the run files, never used as paths.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence

from ..spectra import METRIC_NAMES

__all__ = [
    "DEFAULT_METRIC",
    "MAX_NAME_LENGTH",
    "InvalidRequestError",
    "checked_arguments",
    "integer",
    "metric",
    "one_of",
]

MAX_NAME_LENGTH = 1024
DEFAULT_METRIC = "alpha"
_INTEGER = re.compile(r"[+-]?\d{1,15}")


class InvalidRequestError(ValueError):
    """A request parameter the dashboard refuses; the message says which and why."""


def checked_arguments(
    arguments: Mapping[str, Sequence[str]], required: Collection[str], optional: Collection[str] = ()
) -> dict[str, str]:
    """The request's parameters as ``{name: value}``, after checking their names and counts.

    Raises:
        InvalidRequestError: a required parameter is missing, an unknown one is present, one is given
            more than once or is longer than :data:`MAX_NAME_LENGTH` characters.
    """
    allowed = set(required) | set(optional)
    unknown = sorted(set(arguments) - allowed)
    if unknown:
        expected = ", ".join(sorted(allowed)) or "none"
        raise InvalidRequestError(f"Unknown parameter {unknown[0][:64]!r}; this endpoint takes: {expected}.")
    checked = {}
    for name, values in arguments.items():
        if len(values) != 1:
            raise InvalidRequestError(f"Parameter {name!r} is given {len(values)} times; give it once.")
        value = values[0]
        if len(value) > MAX_NAME_LENGTH or "\x00" in value:
            raise InvalidRequestError(f"Parameter {name!r} is not a name the run files could hold.")
        checked[name] = value
    missing = [name for name in sorted(required) if name not in checked]
    if missing:
        raise InvalidRequestError(f"Missing parameter {missing[0]!r}.")
    return checked


def integer(name: str, value: str | None) -> int | None:
    """An integer parameter (a step or an epoch), or None when absent.

    Raises:
        InvalidRequestError: the value is not a decimal integer.
    """
    if value is None:
        return None
    if not _INTEGER.fullmatch(value):
        raise InvalidRequestError(
            f"Parameter {name!r} must be an integer of at most 15 digits, not {value[:64]!r}."
        )
    return int(value)


def one_of(name: str, value: str, choices: Sequence[str], what: str) -> str:
    """``value`` if it is one of ``choices``.

    Raises:
        InvalidRequestError: it is not; the message lists (the first few of) the choices.
    """
    if value in choices:
        return value
    shown = ", ".join(choices[:12]) + (f", ... ({len(choices)} in all)" if len(choices) > 12 else "")
    shown = shown or "(none)"
    raise InvalidRequestError(f"Unknown {what}: {value[:200]!r} (parameter {name!r}); known: {shown}.")


def metric(value: str | None) -> str:
    """A metric name (default alpha).

    Raises:
        InvalidRequestError: not a stored metric.
    """
    return one_of("metric", DEFAULT_METRIC if value is None else value, list(METRIC_NAMES), "metric")
