"""Numba kernels of :mod:`annumap._core.transform` (compiled once, cached on disk).

- :func:`transform_epoch`: one SGD epoch that moves only the query points; the reference is
  fixed. Iteration ``i`` owns query point ``i`` and the sampling state of its edges, and reads
  only itself and the (read-only) reference, so the result does not depend on the number of
  threads. Negative samples are reference points drawn by the counter-based generator of
  :mod:`._rng` keyed by (seed, epoch, edge, draw).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._kernels import _negative as _draw
from ._numba import njit

__all__ = ["draw_reference", "transform_epoch"]


@njit
def draw_reference(key, edges, draws, n):  # pragma: no cover - numba
    """The reference indices the kernel draws for (edge, draw) pairs (for tests)."""
    out = np.empty(edges.size, dtype=np.int64)
    for t in range(edges.size):
        out[t] = _draw(key, edges[t], draws[t], n)
    return out


@njit(inline="always")
def _clip(v):  # pragma: no cover - numba
    if v > 4.0:
        return 4.0
    if v < -4.0:
        return -4.0
    return v


@njit(parallel=True, fastmath=False)
def transform_epoch(
    indptr,
    indices,
    epochs_per_sample,
    epochs_per_negative,
    next_sample,
    next_negative,
    reference,
    Y,
    a,
    b,
    gamma,
    alpha,
    epoch,
    key,
):  # pragma: no cover - numba
    """One epoch: move each query point ``Y[i]`` (in place); ``reference`` is never written.

    Edge ``e`` (row ``i`` of the query-to-reference CSR graph) is due when
    ``next_sample[e] <= epoch``: ``Y[i]`` is pulled towards ``reference[indices[e]]``
    (coefficient ``-2ab d^(2(b-1)) / (1 + a d^(2b))``) and pushed away from the reference points
    drawn as negatives by then (coefficient ``2 gamma b / ((0.001 + d^2)(1 + a d^(2b)))``); each
    component of a step is clipped to [-4, 4] and scaled by ``alpha`` (umap-learn's update
    without ``move_other``). As in the layout kernel, an edge's negatives are all seen from the
    position after its positive sample and their steps are summed in draw order.
    """
    n_query, dim = Y.shape
    n_ref = reference.shape[0]
    for i in prange(n_query):
        step = np.empty(dim, dtype=Y.dtype)
        for e in range(indptr[i], indptr[i + 1]):
            if next_sample[e] > epoch:
                continue
            j = indices[e]
            d2 = 0.0
            for d in range(dim):
                diff = Y[i, d] - reference[j, d]
                d2 += diff * diff
            if d2 > 0.0:
                pb = d2**b
                coef = -2.0 * a * b * (pb / d2) / (a * pb + 1.0)
                for d in range(dim):
                    Y[i, d] += alpha * _clip(coef * (Y[i, d] - reference[j, d]))
            next_sample[e] += epochs_per_sample[e]

            n_neg = int((epoch - next_negative[e]) / epochs_per_negative[e])
            if n_neg <= 0:
                continue
            step[:] = 0.0
            for t in range(n_neg):
                k = _draw(key, e, t, n_ref)
                d2 = 0.0
                for d in range(dim):
                    diff = Y[i, d] - reference[k, d]
                    d2 += diff * diff
                if d2 > 0.0:
                    pb = d2**b
                    coef = 2.0 * gamma * b / ((0.001 + d2) * (a * pb + 1.0))
                    for d in range(dim):
                        step[d] += alpha * _clip(coef * (Y[i, d] - reference[k, d]))
            for d in range(dim):
                Y[i, d] += step[d]
            next_negative[e] += n_neg * epochs_per_negative[e]
