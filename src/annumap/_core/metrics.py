"""Quality measures of an embedding, for tests and benchmarks (not used by the layout)."""

from __future__ import annotations

import numpy as np
from scipy import sparse

__all__ = ["fuzzy_cross_entropy", "knn_preservation"]


def fuzzy_cross_entropy(
    graph: sparse.spmatrix,
    Y: np.ndarray,
    a: float,
    b: float,
    *,
    n_negative: int = 20,
    seed: int = 0,
) -> float:
    """UMAP's objective: fuzzy set cross-entropy between ``graph`` and the embedding ``Y``.

    ``sum_ij [p log(p/q) + (1 - p) log((1 - p)/(1 - q))]`` with ``q = 1 / (1 + a d^(2b))``.
    Edge terms are exact; the sum over the non-edges (``p = 0``: ``-log(1 - q)``) is estimated
    from ``n_negative`` uniform random pairs per vertex, scaled to all pairs. Lower is better.
    """
    G = sparse.coo_matrix(graph)
    G = sparse.coo_matrix((G.data[G.row != G.col], (G.row[G.row != G.col], G.col[G.row != G.col])),
                          shape=G.shape)  # fmt: skip
    Y = np.asarray(Y, dtype=np.float64)
    eps = 1e-12

    def q(i, j):
        d2 = np.sum((Y[i] - Y[j]) ** 2, axis=1)
        return 1.0 / (1.0 + a * d2**b)

    p = G.data.astype(np.float64)
    qe = np.clip(q(G.row, G.col), eps, 1 - eps)
    pe = np.clip(p, eps, 1.0)
    edge = np.sum(p * np.log(pe / qe) + (1 - p) * np.log(np.clip(1 - p, eps, 1) / (1 - qe)))
    n = Y.shape[0]
    rng = np.random.default_rng(seed)
    i = np.repeat(np.arange(n), n_negative)
    j = rng.integers(n, size=i.size)
    keep = i != j
    qn = np.clip(q(i[keep], j[keep]), eps, 1 - eps)
    # the non-edge term over all n(n-1) ordered pairs, minus the edges' share
    n_pairs = n * (n - 1) - G.nnz
    non_edge = -np.mean(np.log(1 - qn)) * n_pairs
    return float(edge + non_edge)


def knn_preservation(X: np.ndarray, Y: np.ndarray, k: int = 15) -> float:
    """Mean fraction of each point's k nearest neighbours in ``X`` kept in ``Y`` (exact search)."""
    from .knn._exact import exact_knn

    a, _ = exact_knn(X, k + 1)
    b, _ = exact_knn(np.asarray(Y, dtype=np.float32), k + 1)
    a, b = np.sort(a[:, 1:], axis=1), np.sort(b[:, 1:], axis=1)
    hits = [np.intersect1d(x, y, assume_unique=True).size for x, y in zip(a, b, strict=True)]
    return float(np.mean(hits) / k)
