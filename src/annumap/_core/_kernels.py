"""Numba kernels of the layout (compiled once, cached on disk).

**Semantics: umap-learn's serial SGD, in colour order.** umap-learn's layout is one serial sweep
per epoch over the edges of the symmetric graph, row by row: for a due edge (i, j), i and j both
move (``y_i += alpha g``, ``y_j -= alpha g``, ``g = clip(c(d) (y_i - y_j))``, umap-learn's
``move_other``), then i alone is pushed away from its negative samples, one after the other,
each seen from i's updated position. Every update reads the positions as they are at that
moment. :func:`sgd_epoch_2d` and :func:`sgd_epoch` (any dimension) run exactly these updates,
row by row, in another order: the vertices are split into colour classes
(:func:`distance2_colouring`) in which no two vertices are adjacent or share a neighbour, and the
classes run one after the other. The rows of one class touch disjoint positions (a row writes its
vertex and that vertex's neighbours), so they run in parallel and their result does not depend on
the order in which threads take them: the embedding is the same for any number of threads, and
it is the embedding of a serial sweep that visits the rows class by class. Small classes (the
tail that high-degree vertices force) run on the calling thread, which changes nothing but the
overhead.

One difference from umap-learn remains: a negative sample ``k`` is read from ``snap``, the
positions as they were when the class started, not as they are at that moment (a row of the
class may be moving ``k`` at the same time; reading the snapshot keeps the result
thread-independent). After each class, the positions it moved (its vertices and their
neighbours) are copied to ``snap``. (Reading the negatives from the start of the *epoch*
instead expands small layouts: pbmc68k's 700 cells spread to a coordinate range of 27-54
against umap-learn's 15-20 from the same init.) A draw
of i itself exerts no force (umap-learn: distance 0, no step). Negatives come from the
counter-based generator of :mod:`._rng`, keyed by (seed, epoch, edge, draw).

Why not vertex ownership. The first kernel let each vertex own its row and take both halves of
every pair update itself, reading its neighbours from the previous pass (4 passes per epoch).
Measured on CBMC (same graph and init, 3 seeds), it drew clusters about half as wide relative to
their spacing and twice the coordinate range of umap-learn's (ratio within/between 0.05-0.08 vs
0.10-0.15, range 59-69 vs 26-32). The cause is the missing ``move_other``: a vertex that is
kicked by a negative sample pulls itself back against neighbours that are frozen for the pass, so
the kick never spreads to the neighbourhood as umap-learn's pair updates spread it; the
attraction acts like a spring to fixed anchors, not a pair interaction that conserves the pair's
centre. Reading everything from the start of the epoch (the array layout of :mod:`.gpu`) or
deferring the neighbour's half of the step to the neighbour's own turn spreads the kick but
overshoots (ratio 0.14-0.15, clusters too loose). Moving both ends at once, as here, matches
umap-learn (ratio 0.10-0.17, range 26-31). Figures: docs/design.md and benchmarks/look.py.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._numba import njit
from ._rng import DRAW_BITS, GOLDEN, MIX1, MIX2

__all__ = ["distance2_colouring", "sgd_epoch", "sgd_epoch_2d"]

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


@njit
def distance2_colouring(indptr, indices):  # pragma: no cover - numba
    """Greedy colouring in vertex order: no two vertices within distance 2 share a colour.

    Vertex ``v`` gets the smallest colour used neither by a neighbour nor by a neighbour's
    neighbour that is already coloured. Returns int64 colours; their number is at least the
    largest degree plus one. Serial and deterministic; cost ``sum(degree ** 2)``.
    """
    n = indptr.size - 1
    colour = np.full(n, -1, dtype=np.int64)
    banned = np.full(n + 1, -1, dtype=np.int64)  # banned[c] == v: colour c is taken near v
    for v in range(n):
        for e in range(indptr[v], indptr[v + 1]):
            u = indices[e]
            if colour[u] >= 0:
                banned[colour[u]] = v
            for f in range(indptr[u], indptr[u + 1]):
                w = indices[f]
                if w != v and colour[w] >= 0:
                    banned[colour[w]] = v
        c = 0
        while banned[c] == v:
            c += 1
        colour[v] = c
    return colour


@njit(inline="always")
def _sync(i, indptr, indices, Y, snap):  # pragma: no cover - numba
    """Copy the positions row ``i`` may have written (``i`` and its neighbours) to ``snap``."""
    for d in range(Y.shape[1]):
        snap[i, d] = Y[i, d]
    for e in range(indptr[i], indptr[i + 1]):
        j = indices[e]
        for d in range(Y.shape[1]):
            snap[j, d] = Y[j, d]


@njit(inline="always")
def _row_2d(
    i,
    indptr,
    indices,
    eps,
    eps_neg,
    next_sample,
    next_negative,
    Y,
    snap,
    a,
    b,
    att,
    rep,
    lr,
    epoch,
    key,
):  # pragma: no cover - numba
    n = Y.shape[0]
    one = np.float32(1.0)
    small = np.float32(0.001)
    zero = np.float32(0.0)
    y0 = Y[i, 0]
    y1 = Y[i, 1]
    for e in range(indptr[i], indptr[i + 1]):
        if next_sample[e] > epoch:
            continue
        j = indices[e]
        dx = y0 - Y[j, 0]
        dy = y1 - Y[j, 1]
        d2 = dx * dx + dy * dy
        if d2 > zero:
            pb = d2**b
            c = att * pb / (d2 * (a * pb + one))
            gx = _clip(c * dx) * lr
            gy = _clip(c * dy) * lr
            y0 += gx
            y1 += gy
            Y[j, 0] -= gx
            Y[j, 1] -= gy
        next_sample[e] += eps[e]
        n_neg = int((epoch - next_negative[e]) / eps_neg[e])
        if n_neg <= 0:
            continue
        for t in range(n_neg):
            k = _negative(key, e, t, n)
            if k == i:
                continue
            dx = y0 - snap[k, 0]
            dy = y1 - snap[k, 1]
            d2 = dx * dx + dy * dy
            if d2 > zero:
                c = rep / ((small + d2) * (a * d2**b + one))
                y0 += _clip(c * dx) * lr
                y1 += _clip(c * dy) * lr
        next_negative[e] += n_neg * eps_neg[e]
    Y[i, 0] = y0
    Y[i, 1] = y1


@njit(parallel=True, fastmath=True)
def sgd_epoch_2d(
    bounds,
    parallel,
    indptr,
    indices,
    epochs_per_sample,
    epochs_per_negative,
    next_sample,
    next_negative,
    Y,
    snap,
    a,
    b,
    gamma,
    alpha,
    epoch,
    key,
):  # pragma: no cover - numba
    """One SGD epoch of a 2-D layout, in place on ``Y`` (n, 2) float32 (module docstring).

    The vertices are numbered by colour class: class ``c`` is ``bounds[c]:bounds[c + 1]``, run
    over threads when ``parallel[c]``, else on the calling thread. Edge ``e`` is due when
    ``next_sample[e] <= epoch``; it then draws ``int((epoch - next_negative[e]) /
    epochs_per_negative[e])`` negative samples, read from ``snap``: ``Y`` as it was when the
    class started (``snap`` must equal ``Y`` on entry; each class copies what it moved).
    Attraction ``-2ab d^(2(b-1)) / (1 + a d^(2b))``, repulsion ``2 gamma b / ((0.001 + d^2)(1 +
    a d^(2b)))``, each component clipped to [-4, 4], then scaled by ``alpha``.
    """
    a32 = np.float32(a)
    b32 = np.float32(b)
    att = np.float32(-2.0 * a * b)
    rep = np.float32(2.0 * gamma * b)
    lr = np.float32(alpha)
    for c in range(bounds.size - 1):
        if parallel[c]:
            for i in prange(bounds[c], bounds[c + 1]):
                _row_2d(
                    i, indptr, indices, epochs_per_sample, epochs_per_negative, next_sample,
                    next_negative, Y, snap, a32, b32, att, rep, lr, epoch, key,
                )  # fmt: skip
        else:
            for i in range(bounds[c], bounds[c + 1]):
                _row_2d(
                    i, indptr, indices, epochs_per_sample, epochs_per_negative, next_sample,
                    next_negative, Y, snap, a32, b32, att, rep, lr, epoch, key,
                )  # fmt: skip
        # the class is done: what it moved becomes what the next class's negatives see
        if parallel[c]:
            for i in prange(bounds[c], bounds[c + 1]):
                _sync(i, indptr, indices, Y, snap)
        else:
            for i in range(bounds[c], bounds[c + 1]):
                _sync(i, indptr, indices, Y, snap)


@njit(inline="always")
def _row(
    i,
    indptr,
    indices,
    eps,
    eps_neg,
    next_sample,
    next_negative,
    Y,
    snap,
    a,
    b,
    att,
    rep,
    lr,
    epoch,
    key,
):  # pragma: no cover - numba
    n, dim = Y.shape
    one = np.float32(1.0)
    small = np.float32(0.001)
    zero = np.float32(0.0)
    for e in range(indptr[i], indptr[i + 1]):
        if next_sample[e] > epoch:
            continue
        j = indices[e]
        d2 = zero
        for d in range(dim):
            diff = Y[i, d] - Y[j, d]
            d2 += diff * diff
        if d2 > zero:
            pb = d2**b
            c = att * pb / (d2 * (a * pb + one))
            for d in range(dim):
                g = _clip(c * (Y[i, d] - Y[j, d])) * lr
                Y[i, d] += g
                Y[j, d] -= g
        next_sample[e] += eps[e]
        n_neg = int((epoch - next_negative[e]) / eps_neg[e])
        if n_neg <= 0:
            continue
        for t in range(n_neg):
            k = _negative(key, e, t, n)
            if k == i:
                continue
            d2 = zero
            for d in range(dim):
                diff = Y[i, d] - snap[k, d]
                d2 += diff * diff
            if d2 > zero:
                c = rep / ((small + d2) * (a * d2**b + one))
                for d in range(dim):
                    Y[i, d] += _clip(c * (Y[i, d] - snap[k, d])) * lr
        next_negative[e] += n_neg * eps_neg[e]


@njit(parallel=True, fastmath=True)
def sgd_epoch(
    bounds,
    parallel,
    indptr,
    indices,
    epochs_per_sample,
    epochs_per_negative,
    next_sample,
    next_negative,
    Y,
    snap,
    a,
    b,
    gamma,
    alpha,
    epoch,
    key,
):  # pragma: no cover - numba
    """:func:`sgd_epoch_2d` for any dimension (``Y`` is (n, dim) float32)."""
    a32 = np.float32(a)
    b32 = np.float32(b)
    att = np.float32(-2.0 * a * b)
    rep = np.float32(2.0 * gamma * b)
    lr = np.float32(alpha)
    for c in range(bounds.size - 1):
        if parallel[c]:
            for i in prange(bounds[c], bounds[c + 1]):
                _row(
                    i, indptr, indices, epochs_per_sample, epochs_per_negative, next_sample,
                    next_negative, Y, snap, a32, b32, att, rep, lr, epoch, key,
                )  # fmt: skip
        else:
            for i in range(bounds[c], bounds[c + 1]):
                _row(
                    i, indptr, indices, epochs_per_sample, epochs_per_negative, next_sample,
                    next_negative, Y, snap, a32, b32, att, rep, lr, epoch, key,
                )  # fmt: skip
        # the class is done: what it moved becomes what the next class's negatives see
        if parallel[c]:
            for i in prange(bounds[c], bounds[c + 1]):
                _sync(i, indptr, indices, Y, snap)
        else:
            for i in range(bounds[c], bounds[c + 1]):
                _sync(i, indptr, indices, Y, snap)
