"""Graph weights from kNN: UMAP's fuzzy simplicial set, and scanpy's Gaussian kernel.

:func:`fuzzy_simplicial_set` computes, for each point i with itself in column 0 of its kNN row:

- ``rho_i``: the smallest non-zero neighbour distance (``local_connectivity = 1``),
- ``sigma_i``: by bisection (64 steps, tolerance 1e-5) so that the sum over the k-1 non-self
  neighbours of ``exp(-max(0, d_ij - rho_i) / sigma_i)`` equals ``log2(k)``, floored at
  ``1e-3 * mean(d_i)`` (the global mean distance when ``rho_i == 0``),
- ``w_ij = exp(-max(0, d_ij - rho_i) / sigma_i)`` (1 at or below ``rho_i``; self excluded),

then the fuzzy union ``P = W + W^T - W * W^T``. On the same kNN this equals umap-learn's
``fuzzy_simplicial_set`` to float32 rounding (tested against it).
"""

from __future__ import annotations

import numpy as np
from numba import prange
from scipy import sparse

from ._numba import njit

__all__ = [
    "fuzzy_simplicial_set",
    "gauss_connectivities",
    "gauss_dense",
    "knn_to_csr",
    "smooth_knn_dist",
]

_N_ITER = 64
_TOLERANCE = 1e-5
_MIN_DIST_SCALE = 1e-3


@njit(parallel=True)
def _smooth_knn_dist(distances, target, mean_all, local):  # pragma: no cover - numba
    n, k = distances.shape
    rho = np.zeros(n, dtype=np.float32)
    sigma = np.zeros(n, dtype=np.float32)
    for i in prange(n):
        # rho: first non-zero distance (rows are sorted ascending); 0 without local connectivity
        for j in range(k):
            if local and distances[i, j] > 0.0:
                rho[i] = distances[i, j]
                break
        lo = 0.0
        hi = np.inf
        mid = 1.0
        for _ in range(_N_ITER):
            psum = 0.0
            for j in range(1, k):
                d = distances[i, j] - rho[i]
                psum += np.exp(-(d / mid)) if d > 0.0 else 1.0
            if np.abs(psum - target) < _TOLERANCE:
                break
            if psum > target:
                hi = mid
                mid = (lo + hi) / 2.0
            else:
                lo = mid
                mid = mid * 2.0 if hi == np.inf else (lo + hi) / 2.0
        sigma[i] = mid
        if rho[i] > 0.0:
            mean_i = 0.0
            for j in range(k):
                mean_i += distances[i, j]
            floor = _MIN_DIST_SCALE * (mean_i / k)
        else:
            floor = _MIN_DIST_SCALE * mean_all
        if sigma[i] < floor:
            sigma[i] = floor
    return sigma, rho


@njit(parallel=True)
def _memberships(indices, distances, sigma, rho):  # pragma: no cover - numba
    n, k = indices.shape
    out = np.zeros((n, k), dtype=np.float32)
    for i in prange(n):
        for j in range(k):
            if indices[i, j] == i or indices[i, j] < 0:
                continue
            d = distances[i, j] - rho[i]
            out[i, j] = 1.0 if (d <= 0.0 or sigma[i] == 0.0) else np.exp(-(d / sigma[i]))
    return out


def smooth_knn_dist(
    distances: np.ndarray, *, local_connectivity: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row ``sigma`` and ``rho`` (float32) of sorted kNN distances, as umap-learn's.

    ``rho`` is the first non-zero distance (``local_connectivity=1``, the graph's) or 0
    (``local_connectivity=0``, what umap-learn's ``transform`` uses for query rows, whose
    column 0 is the nearest reference point). ``sigma`` solves ``sum_{j>=1} exp(-max(0, d_ij -
    rho_i) / sigma_i) = log2(k)`` by bisection (64 steps, tolerance 1e-5; a distance at or
    below ``rho`` counts 1), floored at 1e-3 times the row's mean distance (the global mean
    when ``rho == 0``).
    """
    if local_connectivity not in (0, 1):
        msg = f"local_connectivity must be 0 or 1, got {local_connectivity!r}."
        raise ValueError(msg)
    d = np.ascontiguousarray(distances, dtype=np.float32)
    target = float(np.log2(d.shape[1]))
    return _smooth_knn_dist(d, target, float(np.mean(d)), bool(local_connectivity))


def knn_to_csr(indices: np.ndarray, values: np.ndarray, n_obs: int) -> sparse.csr_matrix:
    """CSR matrix of the non-self columns (1..k-1) of a kNN table, zeros kept as entries."""
    idx = np.ascontiguousarray(indices[:, 1:])
    k1 = idx.shape[1]
    indptr = np.arange(0, n_obs * k1 + 1, k1, dtype=np.int64)
    index_dtype = np.int32 if n_obs < 2**31 and indptr[-1] < 2**31 else np.int64
    mat = sparse.csr_matrix(
        (
            np.ascontiguousarray(values[:, 1:], dtype=np.float32).ravel(),
            idx.astype(index_dtype).ravel(),
            indptr.astype(index_dtype),
        ),
        shape=(n_obs, n_obs),
    )
    mat.has_sorted_indices = False
    return mat


def fuzzy_simplicial_set(indices: np.ndarray, distances: np.ndarray) -> sparse.csr_matrix:
    """UMAP connectivities from a kNN table (self in column 0): symmetric CSR, float32.

    Returns the fuzzy union of the directed membership graph, with a zero diagonal, sorted
    indices and no stored zeros.
    """
    n_obs = indices.shape[0]
    d = np.ascontiguousarray(distances, dtype=np.float32)
    sigma, rho = smooth_knn_dist(d)
    w = _memberships(np.ascontiguousarray(indices, dtype=np.int64), d, sigma, rho)
    W = knn_to_csr(indices, w, n_obs)
    W.sum_duplicates()
    W.eliminate_zeros()
    Wt = W.T.tocsr()
    P = (W + Wt - W.multiply(Wt)).tocsr()
    P.setdiag(0)
    P.eliminate_zeros()
    P.sort_indices()
    return P.astype(np.float32)


def gauss_connectivities(indices: np.ndarray, distances: np.ndarray) -> sparse.csr_matrix:
    """Scanpy's Gaussian kernel (Coifman et al. 2005; Haghverdi et al. 2016) on the kNN graph.

    ``sigma_i**2`` is the median squared distance to the k-1 neighbours of i; the weight of an
    edge of the symmetrised kNN graph is ``sqrt(2 s_i s_j / (s_i**2 + s_j**2)) *
    exp(-d_ij**2 / (s_i**2 + s_j**2))``.
    """
    n_obs, k = indices.shape
    d_sq = np.asarray(distances[:, 1:], dtype=np.float64) ** 2
    sig_sq = np.median(d_sq, axis=1)
    sig = np.sqrt(sig_sq)
    rows = np.repeat(np.arange(n_obs, dtype=np.int64), k - 1)
    cols = np.asarray(indices[:, 1:], dtype=np.int64).ravel()
    dd = d_sq.ravel()
    # union of both directions; where both exist their distances agree (same metric)
    r2 = np.concatenate([rows, cols])
    c2 = np.concatenate([cols, rows])
    d2 = np.concatenate([dd, dd])
    keep = r2 != c2
    r2, c2, d2 = r2[keep], c2[keep], d2[keep]
    _, first = np.unique(r2 * n_obs + c2, return_index=True)
    r2, c2, d2 = r2[first], c2[first], d2[first]
    den = sig_sq[r2] + sig_sq[c2]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.sqrt(2 * sig[r2] * sig[c2] / den) * np.exp(-d2 / den)
    w = np.where(den > 0, w, 1.0)  # all-duplicate neighbourhoods: identical points
    W = sparse.csr_matrix((w.astype(np.float32), (r2, c2)), shape=(n_obs, n_obs))
    W.sort_indices()
    return W


def gauss_dense(
    X: np.ndarray | sparse.spmatrix,
    distances: np.ndarray,
    *,
    metric: str = "euclidean",
    metric_kwds: dict | None = None,
    chunk: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """Scanpy's ``knn=False`` Gaussian kernel over all pairs, stored as scanpy stores it.

    ``sigma_i**2`` is a quarter of the squared distance to the (k-1)-th neighbour (the last
    column of the kNN ``distances``, self in column 0); weights at or below 1e-14 are set to 0.
    Returns two dense float32 (n_obs, n_obs) arrays, as ``scanpy.pp.neighbors(knn=False)``
    stores them: the weights, with 1 on the diagonal (the kernel at distance 0), and all
    pairwise distances (0 on the diagonal). Temporaries are bounded by ``chunk`` rows.
    """
    from sklearn.metrics import pairwise_distances

    n_obs = X.shape[0]
    sig_sq = np.asarray(distances[:, -1], dtype=np.float64) ** 2 / 4
    sig = np.sqrt(sig_sq)
    W = np.empty((n_obs, n_obs), dtype=np.float32)
    D = np.empty((n_obs, n_obs), dtype=np.float32)
    for start in range(0, n_obs, chunk):
        stop = min(n_obs, start + chunk)
        d = np.asarray(
            pairwise_distances(X[start:stop], X, metric=metric, **(metric_kwds or {})),
            dtype=np.float64,
        )
        d[np.arange(stop - start), np.arange(start, stop)] = 0.0
        d_sq = d**2
        den = sig_sq[start:stop, None] + sig_sq[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.sqrt(2 * np.outer(sig[start:stop], sig) / den) * np.exp(-d_sq / den)
        w = np.where(den > 0, w, 1.0)  # identical points whose neighbours are all duplicates
        w[w <= 1e-14] = 0.0
        W[start:stop] = w
        D[start:stop] = d
    return W, D
