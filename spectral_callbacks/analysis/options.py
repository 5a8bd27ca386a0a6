"""How each matrix is analyzed: one typed, validated object from the callback (or the command
line) to the analysis process and into the run file."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..spectra import FIX_FINGERS
from ..spectra.esd import GRAM_RTOL, METHODS
from ..spectra.matrices import DEFAULT_MIN_EVALS

__all__ = ["DEFAULT_MIN_EVALS", "SpectrumOptions", "check_integer", "check_number"]


@dataclass(frozen=True)
class SpectrumOptions:
    """ESD conventions and how eigenvalues are computed; every value checked on creation.

    Attributes:
        min_evals: matrices with fewer eigenvalues are skipped.
        normalize: ``None`` (ESD of ``W^T W``, WeightWatcher's) or ``"N"`` (of ``W^T W / N``).
        conv2d_norm: halve conv2d eigenvalues, as WeightWatcher does.
        xmax: ``None`` (untruncated power law), ``"max"`` (truncated at the largest eigenvalue)
            or a number.
        esd_method: ``"auto"``, ``"gram"`` or ``"svd"`` (``method`` of
            :mod:`spectral_callbacks.spectra.esd`).
        gram_rtol: relative error allowed on any eigenvalue the Gram path keeps.
        fix_fingers: ``None`` or ``"clip_xmax"`` (WeightWatcher's option: the power law refitted
            without the outlying top eigenvalues; ``num_fingers`` and ``raw_alpha`` columns).
        detX: also compute the ERG / SETOL condition (``detX_*``, ``ERG_gap`` columns).
        randomize: also shuffle each matrix's elements and compare spectra (correlation traps:
            ``rand_*``, ``num_traps`` columns), with generators seeded by ``randomize_seed`` and
            the matrix's name, so that a layer's shuffle is the same in every run.
        randomize_seed: an integer >= 0.

    Raises:
        ValueError: an invalid value, named with what is allowed.
    """

    min_evals: int = DEFAULT_MIN_EVALS
    normalize: str | None = None
    conv2d_norm: bool = True
    xmax: float | str | None = None
    esd_method: str = "auto"
    gram_rtol: float = GRAM_RTOL
    fix_fingers: str | None = None
    detX: bool = False  # noqa: N815 - WeightWatcher's option name
    randomize: bool = False
    randomize_seed: int = 0

    def __post_init__(self) -> None:
        check_integer("min_evals", self.min_evals, 1)
        if self.normalize not in (None, "N"):
            raise ValueError(f"Invalid value for normalize={self.normalize!r}: expected None or 'N'.")
        if not isinstance(self.conv2d_norm, bool):
            raise ValueError(f"Invalid value for conv2d_norm={self.conv2d_norm!r}: expected True or False.")
        if not (self.xmax is None or self.xmax == "max" or check_number(self.xmax, 0, math.inf)):
            raise ValueError(f"Invalid value for xmax={self.xmax!r}: expected None, 'max' or a number > 0.")
        if self.esd_method not in METHODS:
            raise ValueError(f"Invalid value for esd_method={self.esd_method!r}: expected one of {METHODS}.")
        if not check_number(self.gram_rtol, 0, 1):
            raise ValueError(
                f"Invalid value for gram_rtol={self.gram_rtol!r}: expected a number in (0, 1), "
                f"e.g. {GRAM_RTOL}."
            )

        if self.fix_fingers not in FIX_FINGERS:
            raise ValueError(
                f"Invalid value for fix_fingers={self.fix_fingers!r}: expected one of {FIX_FINGERS}."
            )
        if self.fix_fingers is not None and self.xmax is not None:
            raise ValueError(
                f"Invalid value for xmax={self.xmax!r}: fix_fingers={self.fix_fingers!r} chooses xmax "
                "itself; pass xmax=None with it."
            )
        for name in ("detX", "randomize"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"Invalid value for {name}={getattr(self, name)!r}: expected True or False.")
        check_integer("randomize_seed", self.randomize_seed, 0)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`spectral_callbacks.analysis.model.analyze_weights`."""
        kwargs = asdict(self)
        kwargs["method"] = kwargs.pop("esd_method")
        return kwargs

    @classmethod
    def of(cls, source: Any) -> SpectrumOptions:
        """The options named as this class's fields among ``source``'s attributes (the
        callbacks' settings, post-hoc options)."""
        return cls(**{name: getattr(source, name) for name in cls.__dataclass_fields__})

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SpectrumOptions:
        """The options among a run file's stored settings; missing ones at their defaults, so run
        files written before an option existed read."""
        return cls(**{key: value for key, value in config.items() if key in cls.__dataclass_fields__})


def check_number(value: Any, low: float, high: float) -> bool:
    """Whether ``value`` is a real number (not a bool) strictly between ``low`` and ``high``."""
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    return numeric and low < value < high


def check_integer(name: str, value: Any, low: int) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is an integer (not a bool) >= ``low``."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise ValueError(f"Invalid value for {name}={value!r}: expected an integer >= {low}.")
