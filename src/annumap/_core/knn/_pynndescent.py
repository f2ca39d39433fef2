"""Approximate k-nearest neighbours with pynndescent's NN-descent, called directly.

The index is built with umap-learn's sizing (:func:`index_settings`), the one place these
settings live: the kNN graph of ``pp.neighbors`` and the transform's query index both use it.
We call :class:`pynndescent.NNDescent` rather than its transformer, whose ``csr_array`` output
breaks scanpy 1.11 on SciPy 1.17.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse

from ._common import ensure_self_first

__all__ = ["index_settings", "pynndescent_knn", "pynndescent_query_knn"]


def index_settings(n_obs: int) -> dict[str, Any]:
    """umap-learn 0.5's ``NNDescent`` settings for an index of ``n_obs`` points.

    ``n_trees = min(64, 5 + round(sqrt(n) / 20))``, ``n_iters = max(5, round(log2(n)))``,
    ``max_candidates = 60``, ``low_memory = True``, ``compressed = False``.
    """
    return {
        "n_trees": min(64, 5 + round(np.sqrt(n_obs) / 20.0)),
        "n_iters": max(5, round(np.log2(n_obs))),
        "max_candidates": 60,
        "low_memory": True,
        "compressed": False,
    }


def _index(data, n_neighbors, *, metric, metric_kwds, random_state, n_jobs):
    from pynndescent import NNDescent

    from .._numba import resolve_n_jobs

    return NNDescent(
        data,
        n_neighbors=n_neighbors,
        metric=metric,
        metric_kwds=metric_kwds or {},
        random_state=random_state,
        n_jobs=resolve_n_jobs(n_jobs),
        verbose=False,
        **index_settings(data.shape[0]),
    )


def _float32(X):
    return (
        sparse.csr_matrix(X, dtype=np.float32)
        if sparse.issparse(X)
        else np.asarray(X, dtype=np.float32)
    )


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
    index = _index(
        _float32(X),
        n_neighbors,
        metric=metric,
        metric_kwds=metric_kwds,
        random_state=random_state,
        n_jobs=n_jobs,
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


def pynndescent_query_knn(
    X_ref: np.ndarray | sparse.spmatrix,
    X_query: np.ndarray | sparse.spmatrix,
    n_neighbors: int,
    *,
    metric: str = "euclidean",
    metric_kwds: dict[str, Any] | None = None,
    random_state: int = 0,
    n_jobs: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_neighbors`` nearest reference rows of each query row from a pynndescent index.

    The index of ``X_ref`` is built with :func:`index_settings` (``n_neighbors`` at least 15, as
    umap-learn) and queried with umap-learn's ``epsilon``: 0.12, or 0.24 for angular metrics.
    """
    ref = _float32(X_ref)
    query = _float32(X_query)
    if not sparse.issparse(ref) and sparse.issparse(query):
        query = query.toarray()
    index = _index(
        ref,
        min(max(n_neighbors, 15), ref.shape[0] - 1),
        metric=metric,
        metric_kwds=metric_kwds,
        random_state=random_state,
        n_jobs=n_jobs,
    )
    epsilon = 0.24 if getattr(index, "_angular_trees", False) else 0.12
    idx, dist = index.query(query, k=n_neighbors, epsilon=epsilon)
    return np.asarray(idx, dtype=np.int64), np.asarray(dist, dtype=np.float32)
