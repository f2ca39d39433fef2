"""Quality measures of an embedding, for tests and benchmarks (not used by the layout)."""

from __future__ import annotations

import numpy as np
from scipy import sparse

__all__ = ["fuzzy_cross_entropy", "global_shape", "knn_preservation"]


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


def global_shape(
    Y: np.ndarray,
    labels: np.ndarray,
    X: np.ndarray | None = None,
    *,
    n_pairs: int = 20_000,
    n_silhouette: int = 5_000,
    seed: int = 0,
) -> dict[str, float]:
    """Statistics of an embedding's global shape, to compare it with another on the same data.

    - ``range``: the largest extent of ``Y`` along a coordinate axis (``max(ptp(Y, axis=0))``);
    - ``within_between``: median distance between two random points of the same label divided
      by the median distance between two random points of different labels (``n_pairs``
      uniform random pairs): small when clusters are tight relative to their spacing;
    - ``silhouette``: the labels' silhouette score in ``Y`` (on ``n_silhouette`` random points);
    - ``centroid_spearman`` (when ``X`` is given): Spearman correlation between the pairwise
      distances of the label centroids in ``X`` and in ``Y``.

    Pairs and subsamples come from ``numpy.random.default_rng(seed)``, so two embeddings of the
    same points are compared on the same pairs.
    """
    from scipy.stats import spearmanr
    from sklearn.metrics import silhouette_score

    Y = np.asarray(Y, dtype=np.float64)
    labels = np.asarray(labels)
    n = Y.shape[0]
    rng = np.random.default_rng(seed)
    i = rng.integers(n, size=n_pairs)
    j = rng.integers(n, size=n_pairs)
    keep = i != j
    i, j = i[keep], j[keep]
    d = np.linalg.norm(Y[i] - Y[j], axis=1)
    same = labels[i] == labels[j]
    out = {
        "range": float(np.max(np.ptp(Y, axis=0))),
        "within_between": float(np.median(d[same]) / np.median(d[~same])),
    }
    sub = np.arange(n) if n <= n_silhouette else np.sort(rng.choice(n, n_silhouette, replace=False))
    out["silhouette"] = float(silhouette_score(Y[sub], labels[sub]))
    if X is not None:
        X = np.asarray(X, dtype=np.float64)
        groups = np.unique(labels)
        cx = np.stack([X[labels == g].mean(axis=0) for g in groups])
        cy = np.stack([Y[labels == g].mean(axis=0) for g in groups])
        iu = np.triu_indices(groups.size, 1)
        dx = np.linalg.norm(cx[:, None] - cx[None], axis=2)[iu]
        dy = np.linalg.norm(cy[:, None] - cy[None], axis=2)[iu]
        out["centroid_spearman"] = float(spearmanr(dx, dy)[0])
    return out
