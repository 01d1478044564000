"""Confidence intervals used by every audit test: Wilson for rates, percentile bootstrap for AUC.

Rates (a DCR share, an attack success rate, a copy rate) are binomial proportions; the Wilson score
interval keeps close to its nominal coverage at small counts and at rates near 0 or 1, where the
textbook normal (Wald) interval fails. The singling-out risk combines two Wilson rates as Anonymeter
(Giomi et al. 2023, ``anonymeter.stats.confidence``) does: the rates are the Wilson centres, the risk
is ``(attack - control) / (1 - control)`` and its error the first-order propagation of the two Wilson
half-widths, clipped to ``[0, 1]`` (with a more conservative upper bound, see :class:`Risk`).
Statistics without a closed-form interval (an AUC over patients) use a stratified percentile
bootstrap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import sqrt

import numpy as np
from scipy.stats import norm

from monai_pso.errors import ConfigurationError


def z_value(confidence: float) -> float:
    """The two-sided normal quantile of a ``confidence`` level (1.96 for 0.95).

    Examples
    --------
    >>> round(z_value(0.95), 3)
    1.96
    """
    if not 0.0 < confidence < 1.0:
        raise ConfigurationError(f"confidence={confidence!r}: must lie strictly between 0 and 1")
    return float(norm.ppf(0.5 * (1.0 + confidence)))


@dataclass(frozen=True)
class Rate:
    """A binomial proportion with its Wilson score interval.

    Parameters
    ----------
    successes
        Count of successes; may be a half-integer (ties counted half).
    trials
        Number of trials (> 0).
    confidence
        Coverage of :attr:`ci`.

    Examples
    --------
    >>> r = Rate(30, 40)
    >>> r.value, tuple(round(b, 3) for b in r.ci)
    (0.75, (0.598, 0.858))
    """

    successes: float
    trials: int
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.trials <= 0:
            raise ValueError("a rate needs at least one trial")
        if not 0 <= self.successes <= self.trials:
            raise ValueError(f"successes ({self.successes}) must lie in [0, trials={self.trials}]")

    @property
    def value(self) -> float:
        """The observed proportion ``successes / trials``."""
        return self.successes / self.trials

    @property
    def centre(self) -> float:
        """Centre of the Wilson interval (the observed proportion shrunk towards 0.5)."""
        z2 = z_value(self.confidence) ** 2
        return (self.successes + 0.5 * z2) / (self.trials + z2)

    @property
    def half_width(self) -> float:
        """Half-width of the Wilson interval."""
        z = z_value(self.confidence)
        n, k = self.trials, self.successes
        return z / (n + z * z) * sqrt(k * (n - k) / n + 0.25 * z * z)

    @property
    def ci(self) -> tuple[float, float]:
        """The Wilson score interval, within ``[0, 1]``."""
        return (max(0.0, self.centre - self.half_width), min(1.0, self.centre + self.half_width))

    def to_dict(self) -> dict[str, float | int | list[float]]:
        return {"value": self.value, "ci": list(self.ci), "successes": self.successes, "trials": self.trials}


@dataclass(frozen=True)
class Risk:
    """Excess success of an attack over its control, with an interval, as Anonymeter reports it.

    ``value`` and ``ci`` are clipped to ``[0, 1]``; ``residual`` keeps the sign (negative when the
    control patients were singled out more often than the training patients). One deliberate
    departure from Anonymeter: the upper bound is ``max(residual, 0) + error``, not ``residual + error``.
    When the control attack happens to do better than the attack, Anonymeter's upper bound drops to 0,
    which would claim a risk of exactly 0 with 95% confidence; ours never claims a bound tighter than
    the measurement's own error.

    Examples
    --------
    >>> risk = Risk.from_rates(Rate(12, 40), Rate(2, 40))
    >>> round(risk.value, 2), risk.ci[0] > 0
    (0.25, True)
    """

    value: float
    ci: tuple[float, float]
    residual: float
    error: float

    @classmethod
    def from_rates(cls, attack: Rate, control: Rate) -> Risk:
        """``(a - c) / (1 - c)`` on the Wilson centres, error propagated to first order."""
        a, c = attack.centre, control.centre
        residual = (a - c) / (1.0 - c)
        error = sqrt((attack.half_width / (1.0 - c)) ** 2 + (control.half_width * (1.0 - a) / (1.0 - c) ** 2) ** 2)
        clip = lambda x: min(max(x, 0.0), 1.0)  # noqa: E731
        return cls(clip(residual), (clip(residual - error), clip(max(residual, 0.0) + error)), residual, error)

    def to_dict(self) -> dict[str, float | list[float]]:
        return {"value": self.value, "ci": list(self.ci), "residual": self.residual, "error": self.error}


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` range of bootstrap replicates (NaN replicates ignored).

    Examples
    --------
    >>> [round(b, 6) for b in percentile_interval(np.arange(101.0), 0.9)]
    [5.0, 95.0]
    """
    tail = 50.0 * (1.0 - confidence)
    low, high = np.nanpercentile(np.asarray(replicates, dtype=np.float64), [tail, 100.0 - tail])
    return float(low), float(high)


def stratified_bootstrap(
    groups: tuple[np.ndarray, ...],
    statistic: Callable[..., np.ndarray],
    n_resamples: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Replicates of ``statistic`` over resamples drawn with replacement within each group.

    Parameters
    ----------
    groups
        1D arrays (e.g. member and non-member scores, one value per patient); each is resampled to
        its own size, so the group sizes stay fixed.
    statistic
        Vectorised: takes one ``(n_resamples, len(group))`` array per group, returns ``(n_resamples,)``.
    n_resamples, seed
        Number of replicates and the seed of the resampling.

    Examples
    --------
    >>> reps = stratified_bootstrap((np.arange(10.0),), lambda x: x.mean(axis=1), 200)
    >>> reps.shape, bool(2.0 < reps.mean() < 7.0)
    ((200,), True)
    """
    rng = np.random.default_rng(seed)
    resampled = [np.asarray(g)[rng.integers(0, len(g), size=(n_resamples, len(g)))] for g in groups]
    return np.asarray(statistic(*resampled), dtype=np.float64)
