"""Spectral alerts: rules over each snapshot's layer rows that say when the spectra turn bad.

A rule fires when its condition starts to hold for a layer, and not again until it has cleared,
so that a layer that stays bad is reported once. Never on a layer's first analyzed snapshot: a
condition that already holds there (a random initialization's alpha above 6) was not caused by
training and is taken as the layer's starting state.

* ``rank_collapse``: ``rank_loss`` reaches ``max(1, rank_loss_fraction * M)`` singular values
  below the rank tolerance where it was below that, or ``lambda_min`` falls by more than
  ``lambda_min_drop`` since the previous snapshot: singular values vanishing, as under too strong
  weight decay (Feng et al., "Rank diminishing in deep neural networks", NeurIPS 2022; Galanti
  and Poggio, "SGD noise and implicit low-rank bias in deep neural networks", 2022). The
  fraction keeps a square layer's one smallest singular value, which random fluctuation puts
  below the float32 tolerance now and then, from raising it.
* ``alpha_range``: the power-law exponent leaves ``[low, high]`` (default ``[2, 6]``): below 2
  the layer is very heavy-tailed, typical of over-fitting or too large a learning rate; above 6
  it has learned few correlations (Martin and Mahoney, "Implicit self-regularization in deep
  neural networks", JMLR 2021; Martin, Peng and Mahoney, Nature Communications 2021).
* ``spectral_norm_growth``: the largest eigenvalue grows by more than ``spectral_norm_growth``
  per epoch between snapshots (``factor ** epochs``), a sign of unstable training.
* ``traps``: correlation traps appear (``num_traps`` from 0 to more), which needs the run's
  ``randomize=True`` (Martin and Mahoney, "Heavy-tailed universality predicts trends in test
  accuracies", SDM 2021, for traps).

The rules are plain data (:class:`SpectralMonitor`, checked on creation, stored with the run's
settings); :class:`MonitorState` holds what each needs from the previous snapshot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..spectra import LayerSpectrum
from .options import check_number

__all__ = ["Alert", "MonitorState", "SpectralMonitor"]

RULES = ("rank_collapse", "alpha_range", "spectral_norm_growth", "traps")
_EXPLANATIONS = {
    "rank_collapse": "singular values are vanishing (too strong weight decay or regularization?)",
    "alpha_range": "alpha outside [{low:g}, {high:g}]: below, very heavy-tailed (over-fitting or too "
    "large a learning rate?); above, few learned correlations (under-trained?)",
    "spectral_norm_growth": "the largest eigenvalue grows faster than {growth:g}x per epoch "
    "(unstable training?)",
    "traps": "correlation traps appeared: large elements that shuffling does not remove",
}


@dataclass(frozen=True)
class Alert:
    """One rule firing for one layer at one snapshot."""

    rule: str
    layer: str
    epoch: int
    step: int
    metric: str
    value: float
    previous: float
    explanation: str = field(default="", compare=False)

    def message(self) -> str:
        """One sentence naming the layer, the snapshot, the metric and its values."""
        return (
            f"{self.rule} in layer {self.layer} at epoch {self.epoch} (step {self.step}): "
            f"{self.metric} = {self.value:.4g}, was {self.previous:.4g}; {self.explanation}"
        )


@dataclass(frozen=True)
class SpectralMonitor:
    """Which alerts to raise, and whether an alert stops training.

    Args:
        rank_collapse: watch ``rank_loss`` and ``lambda_min``.
        rank_loss_fraction: the share of a layer's ``M`` singular values that must fall below the
            rank tolerance (at least one), in ``(0, 1]``.
        lambda_min_drop: the factor by which ``lambda_min`` must fall between two snapshots, > 1,
            or None to watch ``rank_loss`` only.
        alpha_range: ``(low, high)`` with ``0 < low < high``, or None.
        spectral_norm_growth: the factor per epoch, > 1, or None.
        traps: watch ``num_traps`` (computed when the run has ``randomize=True``).
        stop: stop training once an alert arrives, as ``EarlyStopping`` does.

    Raises:
        ValueError: an invalid value, named with what is allowed.
    """

    rank_collapse: bool = True
    rank_loss_fraction: float = 0.01
    lambda_min_drop: float | None = 1e3
    alpha_range: tuple[float, float] | None = (2.0, 6.0)
    spectral_norm_growth: float | None = 2.0
    traps: bool = True
    stop: bool = False

    def __post_init__(self) -> None:
        for name in ("rank_collapse", "traps", "stop"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"Invalid value for {name}={getattr(self, name)!r}: expected True or False.")
        if not check_number(self.rank_loss_fraction, 0, 1) and self.rank_loss_fraction != 1:
            raise ValueError(
                f"Invalid value for rank_loss_fraction={self.rank_loss_fraction!r}: "
                "expected a number in (0, 1]."
            )
        for name in ("lambda_min_drop", "spectral_norm_growth"):
            value = getattr(self, name)
            if value is not None and not check_number(value, 1, math.inf):
                raise ValueError(f"Invalid value for {name}={value!r}: expected None or a factor > 1.")
        if self.alpha_range is not None:
            bounds = tuple(self.alpha_range) if isinstance(self.alpha_range, (tuple, list)) else ()
            if (
                len(bounds) != 2
                or not all(check_number(b, 0, math.inf) for b in bounds)
                or bounds[0] >= bounds[1]
            ):
                raise ValueError(
                    f"Invalid value for alpha_range={self.alpha_range!r}: expected None or (low, high) "
                    "with 0 < low < high, e.g. (2, 6)."
                )
            object.__setattr__(self, "alpha_range", (float(bounds[0]), float(bounds[1])))

    def state(self) -> MonitorState:
        """A fresh watcher of one run's snapshots with these rules."""
        return MonitorState(self)


@dataclass
class _Seen:
    """What the rules need of a layer's previous analyzed snapshot."""

    epoch: int
    values: dict[str, float]
    firing: set[str]


class MonitorState:
    """The rules of a :class:`SpectralMonitor` applied to one run's snapshots, in order."""

    def __init__(self, monitor: SpectralMonitor):
        self.monitor = monitor
        self._seen: dict[str, _Seen] = {}

    def check(self, epoch: int, step: int, spectra: Sequence[LayerSpectrum]) -> list[Alert]:
        """The alerts this snapshot raises, layer by layer in model order."""
        alerts = []
        for spectrum in spectra:
            if spectrum.status == "skipped":
                continue
            values = {name: float(getattr(spectrum, name, math.nan)) for name in _WATCHED}
            seen = self._seen.get(spectrum.name)
            firing = set()
            for rule, metric, value, previous in self._conditions(spectrum, values, seen, epoch):
                firing.add(rule)
                if seen is not None and rule not in seen.firing:
                    explanation = self._explain(rule)
                    alerts.append(
                        Alert(rule, spectrum.name, epoch, step, metric, value, previous, explanation)
                    )
            self._seen[spectrum.name] = _Seen(epoch, values, firing)
        return alerts

    def _conditions(
        self, spectrum: LayerSpectrum, now: dict[str, float], seen: _Seen | None, epoch: int
    ) -> list[tuple[str, str, float, float]]:
        """``(rule, metric, value, previous)`` of every rule whose condition holds now (those
        comparing with the previous snapshot only when there is one)."""
        monitor, held = self.monitor, []
        before = seen.values if seen is not None else dict.fromkeys(_WATCHED, math.nan)
        if monitor.rank_collapse:
            threshold = max(1.0, monitor.rank_loss_fraction * spectrum.M)
            if now["rank_loss"] >= threshold:
                held.append(("rank_collapse", "rank_loss", now["rank_loss"], before["rank_loss"]))
            elif (
                monitor.lambda_min_drop is not None
                and now["lambda_min"] * monitor.lambda_min_drop < before["lambda_min"]
            ):
                held.append(("rank_collapse", "lambda_min", now["lambda_min"], before["lambda_min"]))
        if monitor.alpha_range is not None and math.isfinite(now["alpha"]):
            low, high = monitor.alpha_range
            if not low <= now["alpha"] <= high:
                held.append(("alpha_range", "alpha", now["alpha"], before["alpha"]))
        if monitor.spectral_norm_growth is not None and seen is not None:
            factor = monitor.spectral_norm_growth ** max(1, epoch - seen.epoch)
            if now["spectral_norm"] > factor * before["spectral_norm"]:
                held.append(
                    ("spectral_norm_growth", "spectral_norm", now["spectral_norm"], before["spectral_norm"])
                )
        if monitor.traps and now["num_traps"] > 0:
            held.append(("traps", "num_traps", now["num_traps"], before["num_traps"]))
        return held

    def _explain(self, rule: str) -> str:
        low, high = self.monitor.alpha_range or (math.nan, math.nan)
        return _EXPLANATIONS[rule].format(
            low=low, high=high, growth=self.monitor.spectral_norm_growth or math.nan
        )


_WATCHED = ("rank_loss", "lambda_min", "alpha", "spectral_norm", "num_traps")
