"""Numba kernels of the layout (compiled once, cached on disk).

**Semantics: umap-learn's serial SGD, in colour order.** umap-learn's layout is one serial sweep
per epoch over the edges of the symmetric graph, row by row: for a due edge (i, j), i and j both
move (``y_i += alpha g``, ``y_j -= alpha g``, ``g = clip(c(d) (y_i - y_j))``, umap-learn's
``move_other``), then i alone is pushed away from its negative samples, one after the other,
each seen from i's updated position. :func:`sgd_epoch` runs these updates, row by row, in
another order: the vertices are split into colour classes (:func:`distance2_colouring`) in
which no two vertices are adjacent or share a neighbour, and the classes run one after the
other. The rows of one class touch disjoint positions (a row writes its vertex and that vertex's
neighbours), so they run in parallel and their result does not depend on the order in which
threads take them: the embedding is the same for any number of threads, and it is the embedding
of a serial sweep that visits the rows class by class.

Two differences from umap-learn remain. A negative sample ``k`` is read as it was when the
class started, not as it is at that moment (a row of the class may be moving ``k`` at the same
time; reading the class-start positions keeps the result thread-independent). (Reading the
negatives from the start of the *epoch* instead expands small layouts: pbmc68k's 700 cells
spread to a coordinate range of 27-54 against umap-learn's 15-20 from the same init.) And the
negatives of one positive sample are all seen from i's position after that sample, their steps
summed in draw order and added once, instead of each from the position the previous one left
(a negative's push is small and nearly independent of the others': on the five data sets of
``benchmarks/look.py`` the global-shape statistics stay inside scanpy's band, CBMC's
within/between ratio moved from the band's upper edge, 0.162, to 0.124, scanpy's seeds
0.116-0.143). The draws no longer wait for one another, which took
~20% off a layout (below). A draw of i itself exerts no force (umap-learn: distance 0, no
step). Negatives come from the counter-based generator of :mod:`._rng`, keyed by (seed, epoch,
edge, draw).

**How it runs fast.** The row loop is latency-bound: every update of a row depends on the
previous one (distance, power, division, clip, step). Measured on MNIST 50k (200 epochs, 386M
sample updates, one thread, ``benchmarks/profile_layout.py``), against the kernel before
(``powf``, one row at a time, a snapshot copied after each class): 12.5 s -> 9.2 s.

- ``d^(2b)`` is :func:`_pow`: ``2^(e b)`` from a 256-entry table indexed by the float's
  exponent, times a degree-5 polynomial of the mantissa fitted to ``m^b`` (relative error
  below 1e-6, against float32's 6e-8; :func:`pow_table`). With ``powf`` the same kernel took
  ~40% longer.
- In 2-D, two rows of a class run interleaved, sample by sample (:func:`_rows_2d`): they touch
  disjoint positions, so the result is the same, and the processor overlaps their two
  dependency chains (~1.2x).
- An edge's negatives are independent of each other (:func:`_repel_all_2d`): the chain of a
  row is one attraction and one sum per positive sample, not six dependent updates. One
  thread, same graph and init, this kernel and the one before alternating in one process
  (thread CPU time, medians of 3): Gaussian mixture 50k 14.6 -> 11.5 s. The sum is not
  reassociated (``fastmath`` without ``reassoc``): with it LLVM vectorises the draws (gathers),
  but differently where it inlines the row code into the parallel and the serial run of a
  class, and the embedding changed with ``n_jobs``.
- Each row prefetches what its next due edge will read (the neighbour's row and the negatives'
  rows of the class-start buffer, :func:`_fetch`) before it repels from the current edge's
  negatives. With two threads most of those rows were just written by the other core (a
  class moves its rows' neighbours all over the buffer), and a read waited for the line to
  come across; the prefetch overlaps that wait with the current edge's arithmetic. Measured
  with the epoch kernel alone (200 epochs, same graph, colouring and init, the kernel with and
  without the prefetch alternating in one process, medians of 3, 2-core Intel Xeon, same
  embedding in every run): 2 threads, Gaussian mixture 50k 5.92 -> 4.23 s, MNIST 50k 4.26 ->
  3.21 s; one thread 3-4% slower (7.00 -> 7.27 s, 6.39 -> 6.59 s: a tie, the cost of hashing
  each draw twice). Prefetching the negatives alone gave 5.56 -> 4.60 s; adding a write
  prefetch of the neighbour's row in ``W``, 5.70 -> 4.13 s (no better: not kept).
- Nothing in a row's loop branches one way or the other at random. A row lists its due edges
  first, without a branch (:func:`_due_list`: every edge is written, the count advances for a
  due one), and copies the neighbours it owns from a list per row (:func:`copy_lists`), not by
  testing a flag per edge: about a third of the edges are due in an epoch and a fifth are
  copied, in no order the branch predictor can learn, and the scan that stopped at each due
  edge and the flag test cost a misprediction each. Same embedding; the epoch kernel alone
  (200 epochs, same graph, colouring and init, this kernel and the one before alternating in
  one process, medians of 3, 2-core Intel Xeon): 2 threads, Gaussian mixture 50k 4.91 ->
  4.22 s, the 100k anisotropic mixture of ``benchmarks/e2e.py`` 9.54 -> 8.77 s; one thread
  7.29 -> 6.09 s and 16.54 -> 14.51 s.
- Positions live in two buffers, ``S[0]`` and ``S[1]``: a class reads one (the positions as
  the class started: what its negatives see) and writes the other, so the snapshot costs no
  second parallel region per class. A row writes its vertex and copies the neighbours it owns
  that the previous class may have moved; the class copies the rest of what the previous class
  owned (:func:`copy_lists`); everything else is equal in both buffers already.
- A class is cut into pieces of equal expected work (``layout.class_pieces``), fixed whatever
  the thread count (the pairing of rows, hence every rounding, is the same for any
  ``n_jobs``); threads take pieces, so a class of hubs and leaves is still balanced.

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
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from ._numba import njit, prefetch
from ._rng import DRAW_BITS, GOLDEN, MIX1, MIX2

__all__ = ["copy_lists", "distance2_colouring", "pow_table", "sgd_epoch"]

#: fastmath flags of the epoch kernel: every flag but ``reassoc``. Reassociation would let LLVM
#: reorder the sum of a row's negative steps differently where it inlines the row code (the
#: parallel and the serial run of a class), and the result would depend on ``n_jobs``.
_FAST = {"nnan", "ninf", "nsz", "arcp", "contract", "afn"}

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


# ---------------------------------------------------------------- d^(2b) without powf


@intrinsic
def _bits(typingctx, x):  # pragma: no cover - compile time
    """The bits of a float32 as an int32 (a bit cast, no conversion)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _float(typingctx, x):  # pragma: no cover - compile time
    """The float32 whose bits are the int32 ``x`` (a bit cast, no conversion)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


#: Where the mantissa polynomial's coefficients start in a :func:`pow_table`.
_POLY = 256
#: The smallest normal float32: smaller (subnormal) arguments are raised to it.
_TINY = np.float32(np.finfo(np.float32).tiny)


def pow_table(b: float) -> np.ndarray:
    """The float32 table of :func:`_pow` for the exponent ``b`` (262 entries).

    Entries 0-255: ``2^((E - 127) b)`` for each biased float32 exponent ``E`` (capped at the
    largest float32); entries 256-261: the coefficients of a degree-5 polynomial in ``m - 1.5``
    fitted to ``m^b`` on ``[1, 2)`` (least squares on 64 Chebyshev nodes). ``x^b`` is then the
    table entry of ``x``'s exponent times the polynomial of its mantissa ``m``; the relative
    error is below 1e-6 for ``b`` in [0.5, 2].
    """
    e = np.arange(256, dtype=np.float64) - 127.0
    big = float(np.finfo(np.float32).max)
    with np.errstate(over="ignore"):
        scale = np.minimum(np.exp2(e * float(b)), big)
    nodes = np.cos(np.pi * (np.arange(64) + 0.5) / 64) * 0.5 + 1.5
    coef = np.polynomial.polynomial.polyfit(nodes - 1.5, nodes ** float(b), 5)
    return np.concatenate([scale, coef]).astype(np.float32)


@njit(inline="always")
def _pow(x, table):  # pragma: no cover - numba
    """``x ** b`` for a float32 ``x > 0``, with ``table = pow_table(b)``."""
    bits = _bits(max(x, _TINY))
    mant = (bits & 0x7FFFFF) | 0x3F800000
    u = _float(mant) - np.float32(1.5)
    u2 = u * u
    p = (table[_POLY] + table[_POLY + 1] * u) + u2 * (
        (table[_POLY + 2] + table[_POLY + 3] * u) + u2 * (table[_POLY + 4] + table[_POLY + 5] * u)
    )
    return table[bits >> 23] * p


# ---------------------------------------------------------------- the colouring and its copies


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


@njit
def copy_lists(bounds, indptr, indices):  # pragma: no cover - numba
    """What each class copies from the read buffer to the write buffer.

    On vertices numbered by class (class ``c`` is ``bounds[c]:bounds[c + 1]``), class ``c``
    owns its vertices and their neighbours; the previous class (cyclically: the last one, for
    class 0) may have moved what it owned. Of that, class ``c`` copies what it does not own
    itself (``idx[ptr[c]:ptr[c + 1]]``, increasing), and each of its rows copies the neighbours
    it owns (row ``i``: ``own_idx[own_ptr[i]:own_ptr[i + 1]]``, in edge order) and writes its
    own vertex. What neither names is equal in both buffers already (the previous class did not
    own it). Returns ``(ptr, idx, own_ptr, own_idx)``. The rows' lists are lists, not a flag per
    edge, so that a row's copy loop has no branch that goes one way or the other at random.
    """
    n = indptr.size - 1
    n_classes = bounds.size - 1
    ptr = np.zeros(n_classes + 1, dtype=np.int64)
    stale = np.zeros(indices.size, dtype=np.bool_)
    # a class owns disjoint sets {i} + N(i), so all classes together own n + nnz entries: the
    # lists, a part of those, fit in that
    out = np.empty(n + indices.size, dtype=np.int64)
    mark = np.full(n, -1, dtype=np.int64)
    fill = 0
    for c in range(n_classes):  # mark[x] == c: class c - 1 owns x, class c does not
        prev = (c - 1) % n_classes
        for i in range(bounds[prev], bounds[prev + 1]):
            mark[i] = c
            for e in range(indptr[i], indptr[i + 1]):
                mark[indices[e]] = c
        for i in range(bounds[c], bounds[c + 1]):
            mark[i] = -1  # a row always writes its own vertex
            for e in range(indptr[i], indptr[i + 1]):
                j = indices[e]
                if mark[j] == c:
                    stale[e] = True  # owned by class c too: the row copies it
                    mark[j] = -1
        for i in range(bounds[prev], bounds[prev + 1]):
            if mark[i] == c:
                out[fill] = i
                fill += 1
            for e in range(indptr[i], indptr[i + 1]):
                if mark[indices[e]] == c:
                    out[fill] = indices[e]
                    fill += 1
        ptr[c + 1] = fill
        out[ptr[c] : fill].sort()
    idx = out[:fill].copy()
    own_ptr = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        own_ptr[i + 1] = own_ptr[i]
        for e in range(indptr[i], indptr[i + 1]):
            own_ptr[i + 1] += stale[e]
    own_idx = np.empty(own_ptr[n], dtype=np.int64)
    for i in range(n):
        m = own_ptr[i]
        for e in range(indptr[i], indptr[i + 1]):
            if stale[e]:
                own_idx[m] = indices[e]
                m += 1
    return ptr, idx, own_ptr, own_idx


# ---------------------------------------------------------------- one row, or two interleaved


@njit(inline="always")
def _own(i, own_ptr, own_idx, R, W):  # pragma: no cover - numba
    """Copy to ``W`` what row ``i`` owns and the previous class may have moved (and ``i``)."""
    for d in range(R.shape[1]):
        W[i, d] = R[i, d]
    for e in range(own_ptr[i], own_ptr[i + 1]):
        j = own_idx[e]
        for d in range(R.shape[1]):
            W[j, d] = R[j, d]


@njit(inline="always")
def _due_list(lo, hi, next_sample, epoch, out):  # pragma: no cover - numba
    """The edges of ``lo:hi`` due in ``epoch``, in order, into ``out``; returns their number.

    Without a branch: every edge is written, and the count advances for a due one only (which
    edges are due looks random to the branch predictor; a scan that stops at each cost a
    misprediction per due edge).
    """
    m = 0
    for p in range(lo, hi):
        out[m] = p
        m += np.int64(next_sample[p] <= epoch)
    return m


@njit(inline="always")
def _attraction(d2, a, table, att):  # pragma: no cover - numba
    """The attraction coefficient ``-2ab d^(2(b-1)) / (1 + a d^(2b))`` at ``d2 > 0``."""
    pb = _pow(d2, table)
    return att * pb / (d2 * (a * pb + np.float32(1.0)))


@njit(inline="always")
def _repulsion(d2, a, table, rep):  # pragma: no cover - numba
    """The repulsion coefficient ``2 gamma b / ((0.001 + d^2)(1 + a d^(2b)))`` at ``d2 > 0``."""
    return rep / ((np.float32(0.001) + d2) * (a * _pow(d2, table) + np.float32(1.0)))


@njit(inline="always")
def _attract_2d(y0, y1, j, R, W, a, table, att, lr):  # pragma: no cover - numba
    """The positive sample of edge (i, j) from i at ``(y0, y1)``: both ends move."""
    ex = R[j, 0]
    ey = R[j, 1]
    dx = y0 - ex
    dy = y1 - ey
    d2 = dx * dx + dy * dy
    if d2 > np.float32(0.0):
        c = _attraction(d2, a, table, att)
        gx = _clip(c * dx) * lr
        gy = _clip(c * dy) * lr
        y0 += gx
        y1 += gy
        W[j, 0] = ex - gx
        W[j, 1] = ey - gy
    return y0, y1


@njit(inline="always")
def _repel_2d(y0, y1, k, R, a, table, rep, lr):  # pragma: no cover - numba
    """The step of i at ``(y0, y1)`` away from a negative ``k`` (read as the class started)."""
    dx = y0 - R[k, 0]
    dy = y1 - R[k, 1]
    d2 = dx * dx + dy * dy
    if d2 > np.float32(0.0):
        c = _repulsion(d2, a, table, rep)
        return _clip(c * dx) * lr, _clip(c * dy) * lr
    return np.float32(0.0), np.float32(0.0)


@njit(inline="always")
def _repel_all_2d(y0, y1, i, p, count, R, a, table, rep, lr, key):  # pragma: no cover - numba
    """``y`` after the ``count`` negatives of edge ``p`` of row ``i``, all seen from ``y``.

    The steps are independent of each other, so the processor overlaps them; they are summed
    in draw order and added once.
    """
    n = R.shape[0]
    s0 = np.float32(0.0)
    s1 = np.float32(0.0)
    for t in range(count):
        x = _negative(key, p, t, n)
        if x != i:
            g0, g1 = _repel_2d(y0, y1, x, R, a, table, rep, lr)
            s0 += g0
            s1 += g1
    return y0 + s0, y1 + s1


@njit(inline="always")
def _negatives(p, epoch, next_negative, eps_neg):  # pragma: no cover - numba
    """How many negatives edge ``p`` draws now; advances its negative-sampling state."""
    n_neg = _n_negatives(p, epoch, next_negative, eps_neg)
    if n_neg > 0:
        next_negative[p] += n_neg * eps_neg[p]
    return n_neg


@njit(inline="always")
def _n_negatives(p, epoch, next_negative, eps_neg):  # pragma: no cover - numba
    """How many negatives edge ``p`` draws now (its sampling state is left as it is)."""
    return max(int((epoch - next_negative[p]) / eps_neg[p]), 0)


@njit(inline="always")
def _fetch(p, count, j, R, key):  # pragma: no cover - numba
    """Prefetch the rows of ``R`` that edge ``p`` will read: neighbour ``j``, its negatives."""
    n = R.shape[0]
    prefetch(R, j, 0)
    for t in range(count):
        prefetch(R, _negative(key, p, t, n), 0)


@njit(inline="always")
def _rows_2d(
    i, k, indptr, indices, own_ptr, own_idx, eps, eps_neg, next_sample, next_negative, R, W,
    a, table, att, rep, lr, epoch, key, da, db,
):  # fmt: skip  # pragma: no cover - numba
    """Rows ``i`` and ``k`` (``k = -1``: none) of one class, interleaved sample by sample.

    The rows touch disjoint positions, so interleaving changes no result; it lets the
    processor overlap two independent chains of dependent updates. Each row lists its due edges
    first (``da``, ``db``: scratch of the row's degree at least); its ``t``-th due edge pairs
    with the other row's ``t``-th. Before a row repels from an edge's negatives it prefetches
    what its next due edge will read (neighbour and negatives: random rows of ``R``, which the
    other core may just have written), so that the loads overlap the current edge's arithmetic.
    """
    _own(i, own_ptr, own_idx, R, W)
    ma = _due_list(indptr[i], indptr[i + 1], next_sample, epoch, da)
    ca = 0
    if ma > 0:
        ca = _n_negatives(da[0], epoch, next_negative, eps_neg)
        _fetch(da[0], ca, indices[da[0]], R, key)
    ya0, ya1 = R[i, 0], R[i, 1]
    mb = 0
    cb = 0
    yb0, yb1 = np.float32(0.0), np.float32(0.0)
    if k >= 0:
        _own(k, own_ptr, own_idx, R, W)
        mb = _due_list(indptr[k], indptr[k + 1], next_sample, epoch, db)
        if mb > 0:
            cb = _n_negatives(db[0], epoch, next_negative, eps_neg)
            _fetch(db[0], cb, indices[db[0]], R, key)
        yb0, yb1 = R[k, 0], R[k, 1]
    pa = 0
    pb = 0
    for t in range(max(ma, mb)):
        na = 0
        nb = 0
        if t < ma:
            pa = da[t]
            ya0, ya1 = _attract_2d(ya0, ya1, indices[pa], R, W, a, table, att, lr)
            next_sample[pa] += eps[pa]
            na = ca
            if na > 0:
                next_negative[pa] += na * eps_neg[pa]
            if t + 1 < ma:
                qa = da[t + 1]
                ca = _n_negatives(qa, epoch, next_negative, eps_neg)
                _fetch(qa, ca, indices[qa], R, key)
        if t < mb:
            pb = db[t]
            yb0, yb1 = _attract_2d(yb0, yb1, indices[pb], R, W, a, table, att, lr)
            next_sample[pb] += eps[pb]
            nb = cb
            if nb > 0:
                next_negative[pb] += nb * eps_neg[pb]
            if t + 1 < mb:
                qb = db[t + 1]
                cb = _n_negatives(qb, epoch, next_negative, eps_neg)
                _fetch(qb, cb, indices[qb], R, key)
        if na > 0:
            ya0, ya1 = _repel_all_2d(ya0, ya1, i, pa, na, R, a, table, rep, lr, key)
        if nb > 0:
            yb0, yb1 = _repel_all_2d(yb0, yb1, k, pb, nb, R, a, table, rep, lr, key)
    W[i, 0] = ya0
    W[i, 1] = ya1
    if k >= 0:
        W[k, 0] = yb0
        W[k, 1] = yb1


@njit(inline="always")
def _row(
    i, indptr, indices, own_ptr, own_idx, eps, eps_neg, next_sample, next_negative, R, W,
    a, table, att, rep, lr, epoch, key, step,
):  # fmt: skip  # pragma: no cover - numba
    """Row ``i`` of a layout of any dimension: its position is updated in place in ``W``.

    ``step`` (dim,) is scratch space for the summed steps of an edge's negatives.
    """
    n, dim = R.shape
    _own(i, own_ptr, own_idx, R, W)
    for p in range(indptr[i], indptr[i + 1]):
        if next_sample[p] > epoch:
            continue
        j = indices[p]
        d2 = np.float32(0.0)
        for d in range(dim):
            diff = W[i, d] - R[j, d]
            d2 += diff * diff
        if d2 > np.float32(0.0):
            c = _attraction(d2, a, table, att)
            for d in range(dim):
                g = _clip(c * (W[i, d] - R[j, d])) * lr
                W[i, d] += g
                W[j, d] = R[j, d] - g
        next_sample[p] += eps[p]
        count = _negatives(p, epoch, next_negative, eps_neg)
        if count == 0:
            continue
        step[:] = 0.0
        for t in range(count):
            x = _negative(key, p, t, n)
            if x == i:
                continue
            d2 = np.float32(0.0)
            for d in range(dim):
                diff = W[i, d] - R[x, d]
                d2 += diff * diff
            if d2 > np.float32(0.0):
                c = _repulsion(d2, a, table, rep)
                for d in range(dim):
                    step[d] += _clip(c * (W[i, d] - R[x, d])) * lr
        for d in range(dim):
            W[i, d] += step[d]


@njit(fastmath=_FAST)
def _piece(
    c, q, n_q, start, stop, copy_ptr, copy_idx, own_ptr, own_idx, indptr, indices, eps, eps_neg,
    next_sample, next_negative, R, W, a, table, att, rep, lr, epoch, key,
):  # fmt: skip  # pragma: no cover - numba
    """Piece ``q`` of ``n_q`` of class ``c``: its share of the class's copies, then its rows.

    One compiled function serves the parallel and the serial runs of a class, so both compute
    with the same instructions.
    """
    dim = R.shape[1]
    lo = copy_ptr[c] + (copy_ptr[c + 1] - copy_ptr[c]) * q // n_q
    hi = copy_ptr[c] + (copy_ptr[c + 1] - copy_ptr[c]) * (q + 1) // n_q
    for s in range(lo, hi):
        x = copy_idx[s]
        for d in range(dim):
            W[x, d] = R[x, d]
    if dim == 2:
        width = 1
        for i in range(start, stop):
            width = max(width, indptr[i + 1] - indptr[i])
        da = np.empty(width, dtype=np.int64)
        db = np.empty(width, dtype=np.int64)
        for i in range(start, stop, 2):
            k = i + 1 if i + 1 < stop else -1
            _rows_2d(
                i, k, indptr, indices, own_ptr, own_idx, eps, eps_neg, next_sample, next_negative,
                R, W, a, table, att, rep, lr, epoch, key, da, db,
            )  # fmt: skip
    else:
        step = np.empty(dim, dtype=np.float32)
        for i in range(start, stop):
            _row(
                i, indptr, indices, own_ptr, own_idx, eps, eps_neg, next_sample, next_negative, R,
                W, a, table, att, rep, lr, epoch, key, step,
            )  # fmt: skip


@njit(parallel=True, fastmath=_FAST)
def sgd_epoch(
    pieces,
    parallel,
    indptr,
    indices,
    class_pieces,
    copy_ptr,
    copy_idx,
    own_ptr,
    own_idx,
    epochs_per_sample,
    epochs_per_negative,
    next_sample,
    next_negative,
    S,
    phase,
    table,
    a,
    b,
    gamma,
    alpha,
    epoch,
    key,
):  # pragma: no cover - numba
    """One SGD epoch of the layout (module docstring), on the buffers ``S`` (2, n, dim) float32.

    The vertices are numbered by colour class; class ``c`` is the pieces ``class_pieces[c]`` to
    ``class_pieces[c + 1] - 1``, piece ``p`` the rows ``pieces[p]:pieces[p + 1]``; its pieces
    run over threads when ``parallel[c]``, else on the calling thread (same result). Class ``c``
    reads ``S[(phase + c) % 2]`` and writes ``S[(phase + c + 1) % 2]``, so after the epoch the
    positions are in ``S[(phase + n_classes) % 2]``; ``copy_ptr, copy_idx, own_ptr,
    own_idx`` are :func:`copy_lists`. Edge ``e`` is due when ``next_sample[e] <= epoch``; it
    then draws ``int((epoch - next_negative[e]) / epochs_per_negative[e])`` negative samples.
    Attraction ``-2ab d^(2(b-1)) / (1 + a d^(2b))``, repulsion ``2 gamma b / ((0.001 +
    d^2)(1 + a d^(2b)))``, each component clipped to [-4, 4], then scaled by ``alpha``; ``table`` is
    :func:`pow_table` of ``b``.
    """
    a32 = np.float32(a)
    att = np.float32(-2.0 * a * b)
    rep = np.float32(2.0 * gamma * b)
    lr = np.float32(alpha)
    for c in range(class_pieces.size - 1):
        side = (phase + c) % 2
        R = S[side]
        W = S[1 - side]
        first = class_pieces[c]
        n_q = class_pieces[c + 1] - first
        if parallel[c]:
            for q in prange(n_q):
                _piece(
                    c, q, n_q, pieces[first + q], pieces[first + q + 1], copy_ptr, copy_idx,
                    own_ptr, own_idx, indptr, indices, epochs_per_sample, epochs_per_negative,
                    next_sample, next_negative, R, W, a32, table, att, rep, lr, epoch, key,
                )  # fmt: skip
        else:
            for q in range(n_q):
                _piece(
                    c, q, n_q, pieces[first + q], pieces[first + q + 1], copy_ptr, copy_idx,
                    own_ptr, own_idx, indptr, indices, epochs_per_sample, epochs_per_negative,
                    next_sample, next_negative, R, W, a32, table, att, rep, lr, epoch, key,
                )  # fmt: skip
