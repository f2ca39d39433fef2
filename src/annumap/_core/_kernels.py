"""Numba kernels of the layout (compiled once, cached on disk).

:func:`sgd_epoch` runs one epoch of UMAP's stochastic gradient descent, parallel over vertices
and deterministic: iteration ``i`` owns vertex ``i`` and writes only ``out[i]`` and the sampling
state of the edges in row ``i`` of the (symmetric) graph; every other vertex is read from
``prev``, the previous epoch's positions; negative samples come from the counter-based generator
of :mod:`._rng`. The result therefore does not depend on the number of threads.

umap-learn moves both ends of each sampled edge and keeps every pair as two directed edges, so a
vertex receives two attraction updates per pair and sampling period. Here each end moves only
itself, with the attraction step doubled (``attract_scale = 2``): the expected attraction and
repulsion per epoch equal umap-learn's.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._numba import njit
from ._rng import DRAW_BITS, GOLDEN, MIX1, MIX2

__all__ = ["sgd_epoch"]

_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)
_S32 = np.uint64(32)


@njit(inline="always")
def _negative(key, edge, draw, n):  # pragma: no cover - numba
    z = key + ((np.uint64(edge) << DRAW_BITS) | np.uint64(draw)) * GOLDEN
    z = (z ^ (z >> _S30)) * MIX1
    z = (z ^ (z >> _S27)) * MIX2
    z = z ^ (z >> _S31)
    return np.int64(((z >> _S32) * np.uint64(n)) >> _S32)


@njit(inline="always")
def _clip(v):  # pragma: no cover - numba
    if v > 4.0:
        return 4.0
    if v < -4.0:
        return -4.0
    return v


@njit(parallel=True, fastmath=False)
def sgd_epoch(
    indptr,
    indices,
    epochs_per_sample,
    epochs_per_negative,
    next_sample,
    next_negative,
    prev,
    out,
    a,
    b,
    gamma,
    alpha,
    epoch,
    key,
    attract_scale,
):  # pragma: no cover - numba
    """One SGD epoch; reads ``prev`` (n, dim), writes ``out`` (n, dim) and the edge state.

    Edge ``e`` of row ``i`` is due when ``next_sample[e] <= epoch``: vertex ``i`` is pulled
    towards ``prev[indices[e]]`` (coefficient ``-2ab d^(2(b-1)) / (1 + a d^(2b))``, each component
    clipped to [-4, 4], step ``attract_scale * alpha``) and pushed away from the negative samples
    due by then (coefficient ``2 gamma b / ((0.001 + d^2)(1 + a d^(2b)))``, step ``alpha``).
    """
    n_vertices, dim = prev.shape
    for i in prange(n_vertices):
        for d in range(dim):
            out[i, d] = prev[i, d]
        for e in range(indptr[i], indptr[i + 1]):
            if next_sample[e] > epoch:
                continue
            j = indices[e]
            d2 = 0.0
            for d in range(dim):
                diff = out[i, d] - prev[j, d]
                d2 += diff * diff
            if d2 > 0.0:
                pb = d2**b
                coef = -2.0 * a * b * (pb / d2) / (a * pb + 1.0)
                step = attract_scale * alpha
                for d in range(dim):
                    out[i, d] += step * _clip(coef * (out[i, d] - prev[j, d]))
            next_sample[e] += epochs_per_sample[e]

            n_neg = int((epoch - next_negative[e]) / epochs_per_negative[e])
            for t in range(n_neg):
                k = _negative(key, e, t, n_vertices)
                if k == i:
                    continue
                d2 = 0.0
                for d in range(dim):
                    diff = out[i, d] - prev[k, d]
                    d2 += diff * diff
                if d2 > 0.0:
                    pb = d2**b
                    coef = 2.0 * gamma * b / ((0.001 + d2) * (a * pb + 1.0))
                    for d in range(dim):
                        out[i, d] += alpha * _clip(coef * (out[i, d] - prev[k, d]))
            if n_neg > 0:
                next_negative[e] += n_neg * epochs_per_negative[e]
