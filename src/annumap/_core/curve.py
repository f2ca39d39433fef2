"""The embedding similarity curve ``1 / (1 + a * d**(2b))`` fitted to ``min_dist``, ``spread``."""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["find_ab"]


def _curve(x: np.ndarray, a: float, b: float) -> np.ndarray:
    # the optimiser may try b < 0 (0 ** negative) or huge a * x ** 2b: inf there is harmless
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return 1.0 / (1.0 + a * x ** (2.0 * b))


#: Largest acceptable gap between the fitted curve and its target on the 300 points. The
#: usual fits stay near 0.1 (a step at min_dist cannot be matched exactly); a failed fit is
#: far off (e.g. spread=1e6 converges to a curve of scale 1: gap 0.99).
_MAX_GAP = 0.2


def _fit(spread: float, min_dist: float) -> tuple[float, float, bool]:
    """umap-learn's least-squares fit; the flag says whether it is usable.

    Usable: ``a, b > 0`` and finite, the optimiser moved from its start point (no "covariance
    could not be estimated" warning, which marks a flat objective), and the curve follows its
    target within :data:`_MAX_GAP`.
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    x = np.linspace(0.0, 3.0 * spread, 300)
    y = np.where(x < min_dist, 1.0, np.exp(-(x - min_dist) / spread))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OptimizeWarning)
        try:
            (a, b), _ = curve_fit(_curve, x, y, p0=(1.0, 1.0))
        except RuntimeError:  # no convergence within curve_fit's evaluation budget
            return np.nan, np.nan, False
    degenerate = any(issubclass(w.category, OptimizeWarning) for w in caught)
    valid = bool(np.isfinite(a) and np.isfinite(b) and a > 0 and b > 0 and not degenerate)
    usable = valid and float(np.abs(_curve(x, a, b) - y).max()) <= _MAX_GAP
    return float(a), float(b), usable


def find_ab(spread: float = 1.0, min_dist: float = 0.5) -> tuple[float, float]:
    """Least-squares ``(a, b)`` so that ``1 / (1 + a x^(2b))`` approximates the target curve.

    The target is 1 for ``x < min_dist`` and ``exp(-(x - min_dist) / spread)`` beyond, sampled on
    300 points of ``[0, 3 * spread]`` (umap-learn's ``find_ab_params``; for spread 1 and
    min_dist 0.5 it gives a = 0.583, b = 1.334).

    For extreme scales (e.g. ``spread=1e-3`` or ``min_dist`` close to a large ``spread``) the
    direct fit diverges to ``b < 0`` or stalls at its start point; the problem is then solved in
    units of ``spread`` (``x / spread``, where it is well conditioned) and ``a`` mapped back as
    ``a' / spread**(2b)``, the same curve. Raises a ValueError naming ``spread`` and
    ``min_dist`` if no valid ``a, b > 0`` is found.
    """
    a, b, usable = _fit(spread, min_dist)
    if usable:
        return a, b
    a1, b, usable = _fit(1.0, min_dist / spread)
    if usable:
        with np.errstate(over="ignore", under="ignore", divide="ignore"):
            a = np.float64(a1) / np.float64(spread) ** (2.0 * b)
        if np.isfinite(a) and a > 0:
            return float(a), float(b)
    msg = (
        f"could not fit the embedding curve for spread={spread!r}, min_dist={min_dist!r}; "
        "choose values of a more usual scale or pass a and b directly."
    )
    raise ValueError(msg)
