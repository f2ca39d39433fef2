"""Neighbours from any object with the scikit-learn ``KNeighborsTransformer`` API."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ._common import ensure_self_first

__all__ = ["transformer_knn"]


def transformer_knn(X, n_neighbors: int, transformer) -> tuple[np.ndarray, np.ndarray]:
    """Run ``transformer.fit_transform(X)`` and read ``n_neighbors`` (self included) per row.

    The transformer must return a sparse (n_obs, n_obs) distance matrix with at least
    ``n_neighbors - 1`` stored neighbours per row (scikit-learn's returns ``n_neighbors + 1``
    including the point itself); stored zeros count as neighbours (duplicate points).
    """
    graph = transformer.fit_transform(X)
    if not sparse.issparse(graph) or graph.shape != (X.shape[0], X.shape[0]):
        msg = (
            f"transformer {type(transformer).__name__}.fit_transform returned "
            f"{type(graph).__name__} of shape {getattr(graph, 'shape', None)}; expected a sparse "
            f"({X.shape[0]}, {X.shape[0]}) distance matrix."
        )
        raise TypeError(msg)
    graph = sparse.csr_matrix(graph)
    graph.sort_indices()
    n = graph.shape[0]
    indices = np.zeros((n, n_neighbors), dtype=np.int64)
    distances = np.zeros((n, n_neighbors), dtype=np.float32)
    counts = np.diff(graph.indptr)
    for i in range(n):
        cols = graph.indices[graph.indptr[i] : graph.indptr[i + 1]]
        vals = graph.data[graph.indptr[i] : graph.indptr[i + 1]]
        keep = cols != i
        cols, vals = cols[keep], vals[keep]
        if cols.size < n_neighbors - 1:
            msg = (
                f"transformer returned {counts[i]} stored neighbours for row {i}; "
                f"n_neighbors={n_neighbors} needs at least {n_neighbors - 1} besides the point "
                "itself."
            )
            raise ValueError(msg)
        order = np.argsort(vals, kind="stable")[: n_neighbors - 1]
        indices[i, 0] = i
        indices[i, 1:], distances[i, 1:] = cols[order], vals[order]
    return ensure_self_first(indices, distances)
