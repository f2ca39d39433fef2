"""Exact (brute-force) k-nearest neighbours with chunked float32 BLAS and bounded memory.

For the BLAS metrics (euclidean, sqeuclidean, cosine, correlation) a float32 matrix product ranks
candidates; the ``k + margin`` best candidates of each row are then re-measured in float64 and
sorted, so the returned distances are exact and the order equals a float64 brute-force search.
Other metrics are evaluated chunk by chunk with :func:`sklearn.metrics.pairwise_distances`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import prange
from scipy import sparse

from .._numba import njit, threads
from ._common import row_order

__all__ = ["BLAS_METRICS", "exact_knn", "exact_query_knn"]

BLAS_METRICS = frozenset({"euclidean", "l2", "sqeuclidean", "cosine", "correlation"})
#: Bytes of one chunk's distance block (rows x n_obs x 4); bounds the memory of the search.
CHUNK_BYTES = 256 * 2**20
#: Sparse euclidean input up to this size (as dense float64) is densified and centred.
DENSE_BYTES = 2 * 2**30
#: Extra candidates re-measured in float64 to absorb float32 rounding in the ranking.
_MARGIN = 8


@njit(parallel=True)
def _top_candidates(block, col_sq, scale, self_cols, n_cand, out_idx):  # pragma: no cover
    """Per row, the ``n_cand`` columns of smallest score ``col_sq[c] + scale * block[r, c]``.

    With ``col_sq`` the squared norms and ``scale = -2`` the score ranks euclidean distances; with
    zeros and ``scale = -1`` cosine distances; with zeros and ``scale = 1`` ready distances.
    Column ``self_cols[row]`` (the row's own point) always comes first; ties keep the lower column.
    """
    n_rows, n_cols = block.shape
    for r in prange(n_rows):
        best_v = np.empty(n_cand, dtype=block.dtype)
        best_i = np.empty(n_cand, dtype=np.int64)
        self_col = self_cols[r]
        best_i[0] = self_col
        best_v[0] = -np.inf
        filled = 1
        thresh = np.inf
        for c in range(n_cols):
            v = col_sq[c] + scale * block[r, c]
            if v >= thresh or c == self_col:
                continue
            if filled < n_cand:
                pos = filled
                filled += 1
            else:
                pos = n_cand - 1
            while pos > 1 and best_v[pos - 1] > v:
                best_v[pos] = best_v[pos - 1]
                best_i[pos] = best_i[pos - 1]
                pos -= 1
            best_v[pos] = v
            best_i[pos] = c
            if filled == n_cand:
                thresh = best_v[n_cand - 1]
        for t in range(n_cand):
            out_idx[r, t] = best_i[t]


def _prepare(X: np.ndarray | sparse.csr_matrix, metric: str):
    """The float32 matrix to rank with, its float64 twin, squared norms (float64) and the unit.

    Euclidean data is centred and scaled by a power of two (exact in floating point) so that
    its largest magnitude is about 1: float32 squared norms neither overflow nor underflow.
    Distances computed on the result are multiplied by ``unit`` to give the original ones.
    """
    if sparse.issparse(X):
        small = 8.0 * X.shape[0] * X.shape[1] <= DENSE_BYTES
        if metric == "correlation" or (small and metric in ("euclidean", "l2", "sqeuclidean")):
            # dense, so that it can be centred: a large common offset would otherwise cancel
            # catastrophically in the float32 ranking |x|^2 + |y|^2 - 2 x.y
            X = np.asarray(X.toarray())
        else:
            X = sparse.csr_matrix(X, dtype=np.float64)
    X64 = np.asarray(X, dtype=np.float64) if not sparse.issparse(X) else X
    if not sparse.issparse(X64):
        if metric in ("euclidean", "l2", "sqeuclidean"):
            X64 = X64 - X64.mean(axis=0)  # translation-invariant; shrinks rounding error
        elif metric == "correlation":
            X64 = X64 - X64.mean(axis=1, keepdims=True)
    if metric in ("cosine", "correlation"):
        norms = np.sqrt(
            np.asarray(X64.multiply(X64).sum(1)).ravel()
            if sparse.issparse(X64)
            else np.einsum("ij,ij->i", X64, X64)
        )
        norms[norms == 0] = 1.0  # zero vectors: distance 1 to everything, as sklearn
        X64 = (
            (sparse.diags(1 / norms) @ X64).tocsr()
            if sparse.issparse(X64)
            else X64 / norms[:, None]
        )
    unit = 1.0
    if metric in ("euclidean", "l2", "sqeuclidean"):
        values = X64.data if sparse.issparse(X64) else X64
        biggest = float(np.abs(values).max()) if values.size else 0.0
        if biggest > 0 and np.isfinite(biggest):
            exponent = int(np.frexp(biggest)[1])
            unit = float(np.ldexp(1.0, exponent))
            if sparse.issparse(X64):
                X64 = X64.copy()
                X64.data = np.ldexp(X64.data, -exponent)
            else:
                X64 = np.ldexp(X64, -exponent)
    sq = (
        np.asarray(X64.multiply(X64).sum(1)).ravel()
        if sparse.issparse(X64)
        else np.einsum("ij,ij->i", X64, X64)
    )
    X32 = X64.astype(np.float32)
    return X32, X64, sq, unit


def _measure(X64, sq, rows: np.ndarray, cand: np.ndarray, metric: str) -> np.ndarray:
    """Float64 distances between each row and its candidates (``cand`` is rows x n_cand)."""
    rep = np.repeat(rows, cand.shape[1])
    flat = cand.ravel()
    if sparse.issparse(X64):
        dot = np.asarray(X64[rep].multiply(X64[flat]).sum(1)).ravel()
    else:
        dot = np.einsum("ij,ij->i", X64[rep], X64[flat])
    if metric in ("cosine", "correlation"):
        d = 1.0 - dot
        d[rep == flat] = 0.0
        return np.maximum(d, 0.0).reshape(cand.shape)
    if sparse.issparse(X64):
        d2 = sq[rep] + sq[flat] - 2 * dot
    else:
        diff = X64[rep] - X64[flat]
        d2 = np.einsum("ij,ij->i", diff, diff)
    d2 = np.maximum(d2, 0.0).reshape(cand.shape)
    return d2 if metric == "sqeuclidean" else np.sqrt(d2)


def _order(idx: np.ndarray, dist: np.ndarray, rows: np.ndarray, k: int):
    """Sort each row by (distance, index) with the row itself first; keep ``k`` columns.

    Equal distances (duplicate points) go by index, not by the candidates' order, which comes
    from float32 scores that BLAS may round differently for another thread count.
    """
    is_self = idx == rows[:, None]
    key = np.where(is_self, -1.0, dist)
    order = row_order(key, idx)[:, :k]
    return np.take_along_axis(idx, order, 1), np.take_along_axis(dist, order, 1)


def exact_knn(
    X: np.ndarray | sparse.spmatrix,
    n_neighbors: int,
    *,
    metric: str = "euclidean",
    metric_kwds: dict[str, Any] | None = None,
    n_jobs: int | None = None,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-nearest neighbours of the rows of ``X`` among all rows of ``X``.

    Parameters
    ----------
    X
        (n_obs, n_features) dense or sparse data.
    n_neighbors
        Neighbours per row, the row itself included (it is column 0, also for duplicates).
    metric, metric_kwds
        A BLAS metric (``BLAS_METRICS``) or a metric of :func:`sklearn.metrics.pairwise_distances`.
    n_jobs
        Threads for BLAS and the candidate selection (None = all).
    rows
        Only search for these rows (default: all).

    Returns
    -------
    indices, distances
        (n_rows, n_neighbors) int64 indices and float32 distances, ascending per row.
    """
    from threadpoolctl import threadpool_limits

    n_obs = X.shape[0]
    k = int(n_neighbors)
    rows = np.arange(n_obs) if rows is None else np.asarray(rows, dtype=np.int64)
    out_idx = np.empty((rows.size, k), dtype=np.int64)
    out_dist = np.empty((rows.size, k), dtype=np.float32)
    chunk = max(1, min(rows.size, CHUNK_BYTES // (4 * max(n_obs, 1))))
    with threads(n_jobs) as n_threads, threadpool_limits(n_threads):
        if metric in BLAS_METRICS:
            X32, X64, sq, unit = _prepare(X, metric)
            scale = unit**2 if metric == "sqeuclidean" else unit
            sq32 = sq.astype(np.float32)
            zeros = np.zeros_like(sq32)
            if not sparse.issparse(X32):
                X32T = X32.T
                buffer = np.empty((chunk, n_obs), dtype=np.float32)
            n_cand = min(n_obs, k + _MARGIN)
            for start in range(0, rows.size, chunk):
                sel = rows[start : start + chunk]
                if sparse.issparse(X32):
                    block = np.asarray((X32[sel] @ X32.T).toarray())
                else:
                    block = np.matmul(X32[sel], X32T, out=buffer[: sel.size])
                if metric in ("cosine", "correlation"):
                    cand = _candidates(block, sel, n_cand, zeros, -1.0)
                else:
                    cand = _candidates(block, sel, n_cand, sq32, -2.0)
                dist = _measure(X64, sq, sel, cand, metric) * scale
                out_idx[start : start + sel.size], d = _order(cand, dist, sel, k)
                out_dist[start : start + sel.size] = d
        else:
            from sklearn.metrics import pairwise_distances

            Xf = X if sparse.issparse(X) else np.asarray(X, dtype=np.float64)
            for start in range(0, rows.size, chunk):
                sel = rows[start : start + chunk]
                D = pairwise_distances(Xf[sel], Xf, metric=metric, **(metric_kwds or {}))
                cand = _candidates(D, sel, k, np.zeros(n_obs, dtype=D.dtype), 1.0)
                dist = np.take_along_axis(D, cand, 1)
                out_idx[start : start + sel.size], d = _order(cand, dist, sel, k)
                out_dist[start : start + sel.size] = d
    return out_idx, out_dist


def _candidates(block, sel, n_cand: int, col_sq, scale: float) -> np.ndarray:
    """Indices of the ``n_cand`` lowest scores per row with the row itself first."""
    cand = np.empty((sel.size, n_cand), dtype=np.int64)
    _top_candidates(np.ascontiguousarray(block), col_sq, scale, sel, n_cand, cand)
    return cand


def exact_query_knn(
    X_ref: np.ndarray | sparse.spmatrix,
    X_query: np.ndarray | sparse.spmatrix,
    n_neighbors: int,
    *,
    metric: str = "euclidean",
    metric_kwds: dict[str, Any] | None = None,
    n_jobs: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-nearest neighbours of the rows of ``X_query`` among the rows of ``X_ref``.

    The same search as :func:`exact_knn` (float32 BLAS ranking, float64 re-measure of the
    ``k + margin`` best candidates) between two matrices: no row is its own neighbour, a query
    equal to a reference row gets it at distance 0. Ties keep the lower reference index.

    Parameters
    ----------
    X_ref
        (n_ref, n_features) reference data, dense or sparse.
    X_query
        (n_query, n_features) query data, dense or sparse.
    n_neighbors
        Reference neighbours per query row (at most ``n_ref``).
    metric, metric_kwds
        A BLAS metric (``BLAS_METRICS``) or a metric of :func:`sklearn.metrics.pairwise_distances`.
    n_jobs
        Threads for BLAS and the candidate selection (None = all).

    Returns
    -------
    indices, distances
        (n_query, n_neighbors) int64 reference indices and float32 distances, ascending per row.
    """
    from threadpoolctl import threadpool_limits

    n_ref, n_query = X_ref.shape[0], X_query.shape[0]
    k = int(n_neighbors)
    if not 1 <= k <= n_ref:
        msg = f"n_neighbors must be in [1, n_ref={n_ref}], got {n_neighbors}."
        raise ValueError(msg)
    if X_query.shape[1] != X_ref.shape[1]:
        msg = f"X_query has {X_query.shape[1]} features, X_ref {X_ref.shape[1]}."
        raise ValueError(msg)
    out_idx = np.empty((n_query, k), dtype=np.int64)
    out_dist = np.empty((n_query, k), dtype=np.float32)
    chunk = max(1, min(max(n_query, 1), CHUNK_BYTES // (4 * n_ref)))
    no_self = np.full(chunk, -1, dtype=np.int64)
    with threads(n_jobs) as n_threads, threadpool_limits(n_threads):
        if metric in BLAS_METRICS:
            either_sparse = sparse.issparse(X_ref) or sparse.issparse(X_query)
            stacked = (
                sparse.vstack([sparse.csr_matrix(X_ref), sparse.csr_matrix(X_query)]).tocsr()
                if either_sparse
                else np.vstack([np.asarray(X_ref), np.asarray(X_query)])
            )
            # prepared together: the same centring/normalisation for both sides
            X32, X64, sq, unit = _prepare(stacked, metric)
            unit = unit**2 if metric == "sqeuclidean" else unit
            R32T = X32[:n_ref].T
            col = np.zeros(n_ref, dtype=np.float32)
            scale = -1.0
            if metric not in ("cosine", "correlation"):
                col, scale = sq[:n_ref].astype(np.float32), -2.0
            n_cand = min(n_ref, k + _MARGIN)
            for start in range(0, n_query, chunk):
                sel = np.arange(start, min(n_query, start + chunk), dtype=np.int64)
                rows = n_ref + sel
                block = X32[rows] @ R32T
                block = np.asarray(block.toarray() if sparse.issparse(block) else block)
                cand = _candidates(block, no_self[: sel.size], n_cand + 1, col, scale)[:, 1:]
                dist = _measure(X64, sq, rows, cand, metric) * unit
                out_idx[sel], out_dist[sel] = _order(cand, dist, rows, k)
        else:
            from sklearn.metrics import pairwise_distances

            R = X_ref if sparse.issparse(X_ref) else np.asarray(X_ref, dtype=np.float64)
            Q = X_query if sparse.issparse(X_query) else np.asarray(X_query, dtype=np.float64)
            zeros = np.zeros(n_ref, dtype=np.float64)
            for start in range(0, n_query, chunk):
                sel = np.arange(start, min(n_query, start + chunk), dtype=np.int64)
                D = pairwise_distances(Q[sel], R, metric=metric, **(metric_kwds or {}))
                D = np.asarray(D, dtype=np.float64)
                cand = _candidates(D, no_self[: sel.size], k + 1, zeros, 1.0)[:, 1:]
                dist = np.take_along_axis(D, cand, 1)
                out_idx[sel], out_dist[sel] = _order(cand, dist, np.full(sel.size, -1), k)
    return out_idx, out_dist
