"""The embedding similarity curve ``1 / (1 + a * d**(2b))`` fitted to ``min_dist``, ``spread``."""

from __future__ import annotations

import numpy as np

__all__ = ["find_ab"]


def _curve(x: np.ndarray, a: float, b: float) -> np.ndarray:
    return 1.0 / (1.0 + a * x ** (2.0 * b))


def find_ab(spread: float = 1.0, min_dist: float = 0.5) -> tuple[float, float]:
    """Least-squares ``(a, b)`` so that ``1 / (1 + a x^(2b))`` approximates the target curve.

    The target is 1 for ``x < min_dist`` and ``exp(-(x - min_dist) / spread)`` beyond, sampled on
    300 points of ``[0, 3 * spread]`` (umap-learn's ``find_ab_params``; for spread 1 and
    min_dist 0.5 it gives a = 0.583, b = 1.334).
    """
    from scipy.optimize import curve_fit

    x = np.linspace(0.0, 3.0 * spread, 300)
    y = np.where(x < min_dist, 1.0, np.exp(-(x - min_dist) / spread))
    (a, b), _ = curve_fit(_curve, x, y, p0=(1.0, 1.0))
    return float(a), float(b)
