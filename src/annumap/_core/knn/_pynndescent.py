"""Approximate k-nearest neighbours with pynndescent's NN-descent, called directly.

The index is built with umap-learn's sizing (``n_trees = min(64, 5 + round(sqrt(n) / 20))``,
``n_iters = max(5, round(log2(n)))``). We call :class:`pynndescent.NNDescent` rather than its
transformer, whose ``csr_array`` output breaks scanpy 1.11 on SciPy 1.17.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse

from ._common import ensure_self_first

__all__ = ["pynndescent_knn"]


def pynndescent_knn(
    X: np.ndarray | sparse.spmatrix,
    n_neighbors: int,
    *,
    metric: str = "euclidean",
    metric_kwds: dict[str, Any] | None = None,
    random_state: int = 0,
    n_jobs: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """NN-descent neighbours of every row of ``X``; the row itself is column 0.

    Returns (n_obs, n_neighbors) int64 indices and float32 distances, ascending per row.
    Rows that NN-descent left incomplete (index -1) are completed by an exact search.
    """
    from pynndescent import NNDescent

    from .._numba import resolve_n_jobs

    n_obs = X.shape[0]
    n_trees = min(64, 5 + round(np.sqrt(n_obs) / 20.0))
    n_iters = max(5, round(np.log2(n_obs)))
    data = X.astype(np.float32) if sparse.issparse(X) else np.asarray(X, dtype=np.float32)
    index = NNDescent(
        data,
        n_neighbors=n_neighbors,
        metric=metric,
        metric_kwds=metric_kwds or {},
        random_state=random_state,
        n_trees=n_trees,
        n_iters=n_iters,
        max_candidates=60,
        low_memory=True,
        n_jobs=resolve_n_jobs(n_jobs),
        verbose=False,
        compressed=False,
    )
    indices, distances = index.neighbor_graph
    indices = np.asarray(indices, dtype=np.int64)
    distances = np.asarray(distances, dtype=np.float32)
    broken = np.flatnonzero((indices < 0).any(axis=1) | ~np.isfinite(distances).all(axis=1))
    if broken.size:
        from ._exact import exact_knn

        fix_i, fix_d = exact_knn(
            X, n_neighbors, metric=metric, metric_kwds=metric_kwds, n_jobs=n_jobs, rows=broken
        )
        indices[broken], distances[broken] = fix_i, fix_d
    return ensure_self_first(indices, distances)
