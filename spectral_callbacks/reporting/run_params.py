"""The value of a run parameter (e.g. weight decay), to plot a metric against it across runs.

Looked up, in order: in the settings stored in the run file, in the files Lightning writes next
to it (``hparams.yaml`` of its loggers, ``config.yaml`` of LightningCLI), then in the run label
(``l2_0.0005``, ``weight_decay=1e-4``, ``lr1e-3``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .compare import LabeledRun

__all__ = [
    "HPARAM_FILES",
    "label_number",
    "numeric_parameters",
    "parameter_values",
    "run_parameter",
    "stored_parameter",
]

HPARAM_FILES = ("hparams.yaml", "config.yaml")
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_SEPARATORS = r"[_=,:\s]+"
# Lightning's logger versions (lightning_logs/version_3) are counters, not parameters.
_IGNORED_COMPONENT = re.compile(r"version_\d+")


def run_parameter(run: LabeledRun, name: str | None = None) -> tuple[str | None, float] | None:
    """``(name, value)`` of a run parameter, or None when no source gives a number.

    Without ``name``, only the label is read, and the name is the word before its number (None
    when there is none).

    Raises:
        ValueError: ``name`` is ambiguous in a stored file (several different values).
    """
    if name is not None:
        value = stored_parameter(run.reader.config, name)
        for file_name in HPARAM_FILES:
            if value is None:
                value = stored_parameter(_load_yaml(run.reader.path.parent / file_name), name)
        if value is not None:
            return name, value
    found = label_number(run.label, name)
    if found is None:
        return None
    return (name or found[0]), found[1]


def stored_parameter(settings: Mapping[str, Any] | None, name: str) -> float | None:
    """A number in nested settings: at the dotted path ``name``, else under the key ``name``.

    >>> stored_parameter({"model": {"init_args": {"weight_decay": 5e-4}}}, "weight_decay")
    0.0005
    >>> stored_parameter({"optimizer": {"lr": "0.1"}}, "optimizer.lr")
    0.1

    Raises:
        ValueError: the key occurs at several places with different values.
    """
    if not isinstance(settings, Mapping):
        return None
    node: Any = settings
    for key in name.split("."):
        node = node.get(key) if isinstance(node, Mapping) else None
    if node is not None:
        return _number(node)
    found = {path: value for path, value in _leaves(settings, ()) if path[-1] == name}
    values = {_number(value) for value in found.values()} - {None}
    if len(values) > 1:
        places = ", ".join(f"{'.'.join(path)}={value!r}" for path, value in found.items())
        raise ValueError(f"Parameter {name!r} is ambiguous ({places}); pass a dotted name to --param.")
    return values.pop() if values else None


def label_number(label: str, name: str | None = None) -> tuple[str | None, float] | None:
    """A number in a run label, and the word before it.

    With ``name``, the number right after it (``wd1e-4``, ``l2_0.0005``, ``weight_decay=0.1``);
    otherwise, or if ``name`` is not in the label, the only number standing alone between
    separators (``_ = , : /``). Lightning's ``version_N`` components are ignored.

    >>> label_number("l2_0.0005")
    ('l2', 0.0005)
    >>> label_number("runs/lr1e-3_bs32", "lr")
    ('lr', 0.001)
    >>> label_number("mlp/version_0") is None
    True
    """
    if name:
        match = re.search(rf"(?<![A-Za-z0-9]){re.escape(name)}[=_:-]?({_NUMBER})(?![\d.])", label, re.I)
        if match:
            return name, float(match.group(1))
    found = []
    for component in label.split("/"):
        if _IGNORED_COMPONENT.fullmatch(component):
            continue
        for match in re.finditer(rf"(?:^|{_SEPARATORS})({_NUMBER})(?={_SEPARATORS}|$)", component):
            before = re.split(r"[=,:\s]+", component[: match.start()])[-1]
            found.append((before or None, float(match.group(1))))
    return found[0] if len(found) == 1 else None


def parameter_values(
    runs: Sequence[LabeledRun], name: str | None = None
) -> tuple[str, dict[str, float], list[str]]:
    """The parameter of every run that has one: axis name, ``{run label: value}`` and the runs without."""
    values: dict[str, float] = {}
    names: set[str | None] = set()
    without = []
    for run in runs:
        found = run_parameter(run, name)
        if found is None or not math.isfinite(found[1]):
            without.append(run.label)
            continue
        names.add(found[0])
        values[run.label] = found[1]
    if name is None:
        name = names.pop() if len(names) == 1 and None not in names else "number in the run label"
    return name, values, without


def numeric_parameters(run_directory: Path, label: str) -> dict[str, float]:
    """Every run parameter a plot could use: ``{name: value}``, sorted by name.

    The numeric settings of the files Lightning writes next to the run file, under the last key
    of their path (a key that has different values at several places is left out, as
    :func:`stored_parameter` refuses it), then the number in the run label under the word before it.
    """
    values: dict[str, set[float]] = {}
    for file_name in HPARAM_FILES:
        for path, value in _leaves(_load_yaml(run_directory / file_name), ()):
            number = _number(value)
            if number is not None and math.isfinite(number):
                values.setdefault(path[-1], set()).add(number)
    found = {name: numbers.pop() for name, numbers in values.items() if len(numbers) == 1}
    in_label = label_number(label)
    if in_label is not None and in_label[0] and in_label[0] not in found and math.isfinite(in_label[1]):
        found[in_label[0]] = in_label[1]
    return dict(sorted(found.items()))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and re.fullmatch(_NUMBER, value.strip()):
        return float(value)
    return None


def _leaves(node: Any, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    if isinstance(node, Mapping):
        return [leaf for key, child in node.items() for leaf in _leaves(child, (*path, str(key)))]
    return [(path, node)] if path else []


def _load_yaml(path: Path) -> Any:
    """A YAML file's content, or None if it is absent, unreadable or PyYAML is not installed."""
    if not path.is_file():
        return None
    try:
        import yaml
    except ImportError:
        return None

    class _Loader(yaml.SafeLoader):
        """Safe loading that reads Python-tagged values (Lightning's hparams) as None."""

    _Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # a safe loader
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return None
