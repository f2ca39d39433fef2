"""The kNN of each point from a precomputed distance matrix (``pp.neighbors(distances=...)``)."""

from __future__ import annotations

import numpy as np
from scipy import sparse

__all__ = ["knn_from_distances"]


def knn_from_distances(
    D: np.ndarray | sparse.spmatrix, n_neighbors: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, distances)`` of the ``n_neighbors - 1`` nearest other points, self in column 0.

    ``D`` is a square distance matrix: dense (every off-diagonal entry is a distance) or sparse
    (the stored off-diagonal entries are the candidate neighbours; a stored 0 is a duplicate
    point, an absent entry is no edge). The diagonal is ignored. Each row is sorted by
    distance, ties by column index. A sparse row with fewer than ``n_neighbors - 1`` stored
    neighbours raises a ValueError naming it.
    """
    n = D.shape[0]
    k1 = n_neighbors - 1
    if sparse.issparse(D):
        coo = sparse.coo_matrix(D)
        off = coo.row != coo.col
        rows, cols = coo.row[off].astype(np.int64), coo.col[off].astype(np.int64)
        vals = np.asarray(coo.data[off], dtype=np.float64)
        order = np.lexsort((cols, vals, rows))
        rows, cols, vals = rows[order], cols[order], vals[order]
        counts = np.bincount(rows, minlength=n)
        short = np.flatnonzero(counts < k1)
        if short.size:
            msg = (
                f"distances has {short.size} row(s) with fewer than n_neighbors - 1 = {k1} "
                f"stored neighbours (first: row {short[0]} with {counts[short[0]]}); lower "
                "n_neighbors or store more neighbours per row."
            )
            raise ValueError(msg)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        take = (starts[:, None] + np.arange(k1)[None, :]).ravel()
        nb, nd = cols[take].reshape(n, k1), vals[take].reshape(n, k1)
    else:
        A = np.array(D, dtype=np.float64)
        np.fill_diagonal(A, np.inf)
        part = np.argpartition(A, k1 - 1, axis=1)[:, :k1] if k1 < n else np.argsort(A, axis=1)
        part = part[:, :k1]
        # sort by (distance, column)
        pd = np.take_along_axis(A, part, axis=1)
        order = np.lexsort((part, pd), axis=1)
        nb = np.take_along_axis(part, order, axis=1).astype(np.int64)
        nd = np.take_along_axis(pd, order, axis=1)
    indices = np.hstack([np.arange(n, dtype=np.int64)[:, None], nb])
    dists = np.hstack([np.zeros((n, 1)), nd]).astype(np.float32)
    return indices, dists
