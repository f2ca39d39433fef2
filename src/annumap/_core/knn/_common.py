"""Helpers shared by the kNN backends."""

from __future__ import annotations

import numpy as np

__all__ = ["ensure_self_first", "row_order"]


def ensure_self_first(indices: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Make each row's own index column 0 (distance 0), keeping the rest in order.

    Approximate searches and duplicate points can put the point itself later in its row, or
    leave it out; then it is moved (or inserted, dropping the farthest neighbour).
    """
    n, k = indices.shape
    own = np.arange(n)
    bad = np.flatnonzero(indices[:, 0] != own)
    if bad.size:
        indices = indices.copy()
        distances = distances.copy()
        for i in bad:
            row_i, row_d = indices[i], distances[i]
            keep = row_i != i
            rest_i, rest_d = row_i[keep][: k - 1], row_d[keep][: k - 1]
            indices[i, 0], distances[i, 0] = i, 0.0
            indices[i, 1 : 1 + rest_i.size], distances[i, 1 : 1 + rest_i.size] = rest_i, rest_d
    distances[:, 0] = 0.0
    return indices, distances


def row_order(key: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Per row, the column order by (``key``, ``idx``): equal keys go by index."""
    return np.lexsort((idx, key), axis=-1)
