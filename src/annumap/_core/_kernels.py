"""Numba kernels of the layout (compiled once, cached on disk).

:func:`sgd_epoch_2d` and :func:`sgd_epoch` (any dimension) run one epoch of UMAP's stochastic
gradient descent, parallel over vertices and deterministic: iteration ``i`` owns vertex ``i`` and
writes only ``out[i]`` and the sampling state of the edges in row ``i`` of the symmetric graph;
every other vertex is read from ``prev``, the previous epoch's positions; negative samples come
from the counter-based generator of :mod:`._rng`. The result does not depend on the number of
threads.

**Attraction.** umap-learn stores each pair twice, (i, j) and (j, i), samples both in the same
epochs, and moves both ends of a sampled edge. For vertex i that is, in sequence: a step
``g1 = clip(c(r) r)`` along ``r = y_i - y_j`` (edge (i, j), which moves j by ``-g1`` too), then a
step ``g2 = clip(c(r2) r2)`` at the new difference ``r2 = r + 2 alpha g1`` (edge (j, i)). Here
vertex i takes both steps itself, computing ``r2`` as umap-learn's order would leave it, so the
pair dynamics (including their stability at large learning rates) are umap-learn's, while only
vertex i is written. (A plain doubled step ``2 alpha g1`` overshoots at ``alpha`` near 1.)

**Passes.** Reading the other vertices from the start of the epoch (a Jacobi sweep) lags
behind umap-learn's in-place updates. The driver splits each epoch into passes over
interleaved parts of every row (each pass's edges stored contiguously), each pass reading the
positions the previous one wrote: the lag shrinks with the same work (about 5% more time at
50k cells). Measured with 4 passes on
MNIST 70k (same graph, init and epochs): trustworthiness 0.938 -> 0.946 and kNN preservation
0.084 -> 0.088 (umap-learn: 0.946, 0.089), fuzzy cross-entropy 6% lower.

**Repulsion.** The negative samples of one positive sample are evaluated at the same position of
i and applied together (a mini-batch of about ``negative_sample_rate`` independent gradients),
which lets the CPU overlap them; coefficients ``2 gamma b / ((0.001 + d^2)(1 + a d^(2b)))``,
each component clipped to [-4, 4]; a draw equal to i itself is skipped.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._numba import njit
from ._rng import DRAW_BITS, GOLDEN, MIX1, MIX2

__all__ = ["sgd_epoch", "sgd_epoch_2d"]

_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)
_S32 = np.uint64(32)


@njit(inline="always")
def _negative(key, edge, draw, n):  # pragma: no cover - numba
    """Vertex index in [0, n) for (epoch key, edge, draw): splitmix64 of a counter."""
    z = key + ((np.uint64(edge) << DRAW_BITS) | np.uint64(draw)) * GOLDEN
    z = (z ^ (z >> _S30)) * MIX1
    z = (z ^ (z >> _S27)) * MIX2
    z = z ^ (z >> _S31)
    return np.int64(((z >> _S32) * np.uint64(n)) >> _S32)


@njit(inline="always")
def _clip(v):  # pragma: no cover - numba
    return min(max(v, np.float32(-4.0)), np.float32(4.0))


@njit(parallel=True, fastmath=True)
def sgd_epoch_2d(
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
):  # pragma: no cover - numba
    """One pass of an SGD epoch of a 2-D layout: reads ``prev`` (n, 2), writes ``out``.

    The pass handles the edges ``indptr[i]:indptr[i + 1]`` of each vertex ``i`` (the driver
    splits every row into interleaved passes, each reading the positions the previous one
    wrote). Edge ``e`` is due when ``next_sample[e] <= epoch``; it then draws
    ``int((epoch - next_negative[e]) / epochs_per_negative[e])`` negative samples.
    """
    n = prev.shape[0]
    a32 = np.float32(a)
    b32 = np.float32(b)
    att = np.float32(-2.0 * a * b)
    rep = np.float32(2.0 * gamma * b)
    lr = np.float32(alpha)
    lr2 = np.float32(2.0 * alpha)
    one = np.float32(1.0)
    eps = np.float32(0.001)
    zero = np.float32(0.0)
    for i in prange(n):
        y0 = prev[i, 0]
        y1 = prev[i, 1]
        for e in range(indptr[i], indptr[i + 1]):
            if next_sample[e] > epoch:
                continue
            j = indices[e]
            # attraction: i's two steps of the pair update (see the module docstring)
            dx = y0 - prev[j, 0]
            dy = y1 - prev[j, 1]
            d2 = dx * dx + dy * dy
            gx = zero
            gy = zero
            if d2 > zero:
                pb = d2**b32
                c = att * pb / (d2 * (a32 * pb + one))
                gx = _clip(c * dx)
                gy = _clip(c * dy)
            rx = dx + lr2 * gx
            ry = dy + lr2 * gy
            d2 = rx * rx + ry * ry
            if d2 > zero:
                pb = d2**b32
                c = att * pb / (d2 * (a32 * pb + one))
                gx += _clip(c * rx)
                gy += _clip(c * ry)
            y0 += lr * gx
            y1 += lr * gy
            next_sample[e] += epochs_per_sample[e]
            # repulsion: the negative samples due with this sample, as one mini-batch
            n_neg = int((epoch - next_negative[e]) / epochs_per_negative[e])
            if n_neg <= 0:
                continue
            sx = zero
            sy = zero
            for t in range(n_neg):
                k = _negative(key, e, t, n)
                dx = y0 - prev[k, 0]
                dy = y1 - prev[k, 1]
                d2 = dx * dx + dy * dy
                if d2 > zero and k != i:
                    c = rep / ((eps + d2) * (a32 * d2**b32 + one))
                    sx += _clip(c * dx)
                    sy += _clip(c * dy)
            y0 += lr * sx
            y1 += lr * sy
            next_negative[e] += n_neg * epochs_per_negative[e]
        out[i, 0] = y0
        out[i, 1] = y1


@njit(parallel=True, fastmath=True)
def sgd_epoch(
    indptr,
    indices,
    epochs_per_sample,
    epochs_per_negative,
    next_sample,
    next_negative,
    prev,
    out,
    work,
    a,
    b,
    gamma,
    alpha,
    epoch,
    key,
):  # pragma: no cover - numba
    """:func:`sgd_epoch_2d` for any dimension; ``work`` is (n, 3 * dim) float32 scratch."""
    n, dim = prev.shape
    a32 = np.float32(a)
    b32 = np.float32(b)
    att = np.float32(-2.0 * a * b)
    rep = np.float32(2.0 * gamma * b)
    lr = np.float32(alpha)
    lr2 = np.float32(2.0 * alpha)
    one = np.float32(1.0)
    eps = np.float32(0.001)
    zero = np.float32(0.0)
    for i in prange(n):
        y = out[i]
        r = work[i, :dim]
        g = work[i, dim : 2 * dim]
        s = work[i, 2 * dim :]
        for d in range(dim):
            y[d] = prev[i, d]
        for e in range(indptr[i], indptr[i + 1]):
            if next_sample[e] > epoch:
                continue
            j = indices[e]
            d2 = zero
            for d in range(dim):
                r[d] = y[d] - prev[j, d]
                d2 += r[d] * r[d]
            c = zero
            if d2 > zero:
                pb = d2**b32
                c = att * pb / (d2 * (a32 * pb + one))
            d2 = zero
            for d in range(dim):
                g[d] = _clip(c * r[d])
                r[d] += lr2 * g[d]
                d2 += r[d] * r[d]
            c = zero
            if d2 > zero:
                pb = d2**b32
                c = att * pb / (d2 * (a32 * pb + one))
            for d in range(dim):
                y[d] += lr * (g[d] + _clip(c * r[d]))
            next_sample[e] += epochs_per_sample[e]
            n_neg = int((epoch - next_negative[e]) / epochs_per_negative[e])
            if n_neg <= 0:
                continue
            for d in range(dim):
                s[d] = zero
            for t in range(n_neg):
                k = _negative(key, e, t, n)
                if k == i:
                    continue
                d2 = zero
                for d in range(dim):
                    diff = y[d] - prev[k, d]
                    d2 += diff * diff
                if d2 > zero:
                    c = rep / ((eps + d2) * (a32 * d2**b32 + one))
                    for d in range(dim):
                        s[d] += _clip(c * (y[d] - prev[k, d]))
            for d in range(dim):
                y[d] += lr * s[d]
            next_negative[e] += n_neg * epochs_per_negative[e]
