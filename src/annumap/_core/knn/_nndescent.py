"""NN-descent of our own: approximate k-nearest neighbours, deterministic for any thread count.

The search (Dong et al. 2011, as pynndescent) in a *pull* formulation, so that every parallel
loop writes only what its iteration owns and the result does not depend on the thread count or
the scheduling:

1. **Random projection forest** (:func:`_rp_forest`, trees in parallel, each tree serial):
   a node's points are split by the hyperplane halfway between two of its points drawn with the
   counter-based hash of :mod:`.._rng` keyed by (seed, tree, node), down to leaves of at most
   ``leaf_size`` points. A point lies in one leaf per tree, so the thread that joins a leaf
   (all pairs, :func:`_leaf_join`) owns the heaps of its points.
2. **Iterations** on the frozen graph of the previous one: each vertex samples up to
   ``max_candidates`` "new" and "old" candidates among its forward and reverse neighbours
   (priority = hash of (seed, iteration, pair), so the sample is a function of the graph only)
   (:func:`_candidates`); the reverse graph and the candidate lists are transposed in
   parallel over ranges of targets, each range scanning all lists in order (:func:`_transpose`:
   the same CSR for any thread count). Then, batch by batch of vertices
   ``v``, the distances among ``v``'s candidates are measured once into ``v``'s own matrix
   (:func:`_pair_distances`: pairs with at least one new member, rows read from cache), and
   every vertex ``i`` the batch lists (:func:`_batch_members`) reads its row of the matrices of
   the lists it is in and pushes those neighbours into **its own** heap (:func:`_pull`). No
   locks, no order dependence; each pair is measured once, as in the usual formulation.
3. Stop after ``n_iters`` iterations or when fewer than ``delta * n * k`` heap entries changed
   (an integer count: deterministic).
4. **Check, and refine where needed** (:func:`nndescent_settings`): the first search runs with a
   light sizing; the exact neighbours of a few hundred random rows (:func:`_exact_rows`, a
   brute-force scan of those rows) estimate its recall after the forest and after every
   iteration, and where the projected recall falls short of the target (:func:`_falls_short`)
   the heaps grow to the heavy sizing and the iterations go on from what was found. Where the
   forest alone finds few of the neighbours, the light iterations are skipped. The heavy
   iterations end when their projected remaining gain is small (:func:`_levels_off`). Data of
   low intrinsic dimension (PCA of cells, MNIST) stop after the light search; isotropic
   high-dimensional clusters get the heavy one.
5. The final neighbours are re-measured in float64 (:func:`_final_distances`) and sorted, the
   point itself first.

Distances during the search are float32 squared euclidean on the input; cosine and correlation
run as euclidean on unit (centred) rows, which ranks identically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
from numba import get_num_threads, prange
from scipy import sparse

from .._numba import njit, threads
from .._rng import GOLDEN, MIX1, MIX2, epoch_key
from ._common import row_order

logger = logging.getLogger("annumap")

__all__ = ["NNDESCENT_METRICS", "nndescent_knn", "nndescent_query_knn", "nndescent_settings"]

#: Metrics the NN-descent backend computes (others go to pynndescent).
NNDESCENT_METRICS = frozenset({"euclidean", "l2", "sqeuclidean", "cosine", "correlation"})
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
#: fastmath flags of the distance loops: reassociation lets the float32 sum vectorise (the same
#: machine code runs for every thread count, so results stay bit-identical across n_jobs).
_FAST = {"reassoc", "contract", "nsz"}
#: Bytes of the per-batch candidate distance matrices (batch x 2m x (2m + 1) float32).
_BATCH_BYTES = 64 * 2**20
_METRIC_CODE = {"euclidean": 0, "l2": 0, "sqeuclidean": 1, "cosine": 2, "correlation": 3}
#: Streams of the counter-based generator (kept apart from the layout's and transform's).
_TREE_STREAM = 0x4E4E_0001
_ITER_STREAM = 0x4E4E_0002
_REFINE_STREAM = 0x4E4E_0003
_CHECK_STREAM = 0x4E4E_0004


def nndescent_settings(n_obs: int, n_neighbors: int) -> dict[str, int | float]:
    """Forest, iteration and refinement sizing of the NN-descent backend for ``n_obs`` points.

    Returns ``n_trees``, ``leaf_size``, ``n_iters``, ``delta``; ``max_candidates`` and
    ``extra`` (heap slots searched beyond the neighbours asked for) of the first search;
    ``check_rows``, ``target_recall``, ``early_switch``, ``skip_light_below``;
    ``refine_candidates``, ``refine_extra`` and ``stop_gain`` of the refinement.

    The search runs in two stages. The first uses a light sizing (``4k/3`` candidates, 4 extra
    slots), which finds 0.996 of the exact neighbours on MNIST 70k (PCA 50) in a third of the
    heavy sizing's time. The exact neighbours of ``check_rows`` random rows (a brute-force scan
    of those rows only) estimate the recall after every iteration; as soon as the shrinking
    gains project a final recall below ``target_recall`` (with ``early_switch``), or the light
    search ends below it, the heaps grow to the heavy sizing and the iterations go on from what
    was found. Switching early rather than after the light search converges cut the 50-D
    mixture's search from 54 to 39 s at 200k points and from 413 to 262-280 s at 1M, at the
    same recall (0.98, 0.916). Where the forest's estimated recall is below
    ``skip_light_below`` (0.05-0.12 on the 50-D mixtures of 50k to 1M points, 0.30 on CBMC,
    0.44 on MNIST), the light iterations are skipped (unless ``early_switch`` is off): the
    heavy ones start from the forest, with a second forest (the refinement's) joined first. And
    the heavy iterations stop once the projected remaining gain of the last two (at most
    ``1 - recall``) is below ``stop_gain`` (the heaps change little after that; the
    ``delta`` rule alone ran three more at 1M for +0.006). Together
    (``benchmarks/knn_stages.py``, the rules on and off alternated in one process, 2
    threads): 50-D mixture of 200k points 1.36x at recall 0.986 -> 0.984, a 60-D anisotropic
    mixture of 300k points 1.38x at 0.997 -> 0.996; 1M points 169 -> 149 s at 0.915 -> 0.932
    (one run each; before the cap at ``1 - recall``). The heavy sizing carries the recall on
    data of high intrinsic dimension (measured on the 50-D Gaussian mixture of
    ``benchmarks/scale.py``, ``n_neighbors=15``, recall of the 14 exact neighbours): 15
    candidates and 4 extra slots gave 0.74 at 200k points and 0.50 at 1M; on 2 clusters of 50k
    points (the density of the 1M set) 30/10 gave 0.75, 45/15 0.88, 40 candidates with a 40-slot
    heap 0.92, 60/20 0.93. pynndescent with umap-learn's sizing (27 to 55 trees, 60 candidates)
    reaches 0.92 at 200k and 0.82 at 1M. The decision is a function of the data and the seed
    (the check rows and their exact neighbours are), so the result stays the same for any
    thread count.
    """
    k = max(int(n_neighbors), 2)
    heavy = min(60, max(16, 8 * k // 3))
    return {
        "n_trees": 4 if n_obs < 200_000 else 6,
        "leaf_size": max(24, 2 * k),
        "n_iters": max(5, round(np.log2(max(n_obs, 2)))),
        "delta": 0.001,
        "max_candidates": min(heavy, max(16, 4 * k // 3)),
        "extra": 4,
        "check_rows": 256,
        "target_recall": 0.97,
        "early_switch": True,
        "skip_light_below": 0.2,
        "stop_gain": 0.005,
        "refine_candidates": heavy,
        "refine_extra": max(4, heavy - (k - 1)),
    }


@njit
def _hash(key, a, b):  # pragma: no cover - numba
    """splitmix64 of (key, a, b) as uint64."""
    z = key + np.uint64(a) * GOLDEN
    z = (z ^ (z >> _S30)) * MIX1
    z = (z ^ (z >> _S27)) * MIX2
    z = (z ^ (z >> _S31)) + np.uint64(b) * GOLDEN
    z = (z ^ (z >> _S30)) * MIX1
    z = (z ^ (z >> _S27)) * MIX2
    return z ^ (z >> _S31)


@njit(fastmath=_FAST)
def _sqdist(X, p, q):  # pragma: no cover - numba
    d = np.float32(0.0)
    for t in range(X.shape[1]):
        diff = X[p, t] - X[q, t]
        d += diff * diff
    return d


@njit
def _push(idx, dist, flag, j, d):  # pragma: no cover - numba
    """Push ``j`` at distance ``d`` into one max-heap (root = farthest) unless present; 1 if in."""
    if d >= dist[0]:
        return 0
    K = idx.shape[0]
    for s in range(K):
        if idx[s] == j:
            return 0
    pos = 0
    while True:
        left = 2 * pos + 1
        if left >= K:
            break
        right = left + 1
        child = left
        if right < K and dist[right] > dist[left]:
            child = right
        if dist[child] <= d:
            break
        idx[pos] = idx[child]
        dist[pos] = dist[child]
        flag[pos] = flag[child]
        pos = child
    idx[pos] = j
    dist[pos] = d
    flag[pos] = 1
    return 1


@njit
def _rp_tree(X, key, leaf_size, order, starts):  # pragma: no cover - numba
    """One random projection tree; returns its number of leaves.

    ``order`` is permuted so that leaves are contiguous: leaf ``l`` is
    ``order[starts[l]:starts[l + 1]]``.
    """
    n, dim = X.shape
    for i in range(n):
        order[i] = i
    stack_lo = np.empty(n + 1, dtype=np.int64)
    stack_hi = np.empty(n + 1, dtype=np.int64)
    normal = np.empty(dim, dtype=np.float32)
    sp = 1
    stack_lo[0] = 0
    stack_hi[0] = n
    n_leaves = 0
    while sp > 0:
        sp -= 1
        lo = stack_lo[sp]
        hi = stack_hi[sp]
        size = hi - lo
        if size <= leaf_size:
            starts[n_leaves] = lo
            n_leaves += 1
            continue
        h = _hash(key, lo, hi)
        a = lo + np.int64((h >> _S32) % np.uint64(size))
        b = lo + np.int64((h & np.uint64(0xFFFFFFFF)) % np.uint64(size - 1))
        if b >= a:
            b += 1
        pa = order[a]
        pb = order[b]
        offset = np.float32(0.0)
        for t in range(dim):
            normal[t] = X[pa, t] - X[pb, t]
            offset += normal[t] * (X[pa, t] + X[pb, t]) * np.float32(0.5)
        i = lo
        j = hi - 1
        while i <= j:
            p = order[i]
            m = -offset
            for t in range(dim):
                m += normal[t] * X[p, t]
            left = m < 0
            if m == 0:
                left = (_hash(key, p, hi) & np.uint64(1)) == 0
            if left:
                i += 1
            else:
                order[i] = order[j]
                order[j] = p
                j -= 1
        mid = i
        if mid in (lo, hi):  # all on one side (duplicates): split in the middle
            mid = lo + size // 2
        stack_lo[sp] = mid
        stack_hi[sp] = hi
        stack_lo[sp + 1] = lo
        stack_hi[sp + 1] = mid
        sp += 2
    starts[n_leaves] = n
    return n_leaves


@njit(parallel=True)
def _rp_forest(X, key, leaf_size, order, starts, n_leaves):  # pragma: no cover - numba
    """``order.shape[0]`` trees (:func:`_rp_tree`) in parallel; tree ``t`` keyed by (key, t)."""
    for t in prange(order.shape[0]):
        n_leaves[t] = _rp_tree(X, _hash(key, t, 0), leaf_size, order[t], starts[t])


@njit(parallel=True, fastmath=_FAST)
def _leaf_join(X, order, starts, n_leaves, n_targets, heap_idx, heap_dist,
               heap_flag):  # pragma: no cover - numba  # fmt: skip
    """All pairs of each leaf of one tree into both points' heaps (targets ``< n_targets``)."""
    for leaf in prange(n_leaves):
        lo = starts[leaf]
        hi = starts[leaf + 1]
        for a in range(lo, hi):
            p = order[a]
            for b in range(a + 1, hi):
                q = order[b]
                if p >= n_targets and q >= n_targets:
                    continue
                d = _sqdist(X, p, q)
                if q < n_targets:
                    _push(heap_idx[p], heap_dist[p], heap_flag[p], q, d)
                if p < n_targets:
                    _push(heap_idx[q], heap_dist[q], heap_flag[q], p, d)


@njit
def _sample(cand, prio, count, j, p):  # pragma: no cover - numba
    """Keep the ``cand.shape[0]`` entries of lowest (priority, index) in ``cand``; new count."""
    m = cand.shape[0]
    for t in range(count):
        if cand[t] == j:
            return count
    if count == m and (p > prio[m - 1] or (p == prio[m - 1] and j > cand[m - 1])):
        return count
    pos = count if count < m else m - 1
    while pos > 0 and (prio[pos - 1] > p or (prio[pos - 1] == p and cand[pos - 1] > j)):
        prio[pos] = prio[pos - 1]
        cand[pos] = cand[pos - 1]
        pos -= 1
    prio[pos] = p
    cand[pos] = j
    return count + 1 if count < m else count


@njit(parallel=True)
def _candidates(heap_idx, heap_flag, ptr, src, src_flag, key, new_c, new_n, old_c,
                old_n):  # pragma: no cover - numba  # fmt: skip
    """Per vertex, sampled new and old candidates among its forward and reverse neighbours.

    A forward neighbour sampled as new is flagged old in the vertex's own heap.
    """
    n, K = heap_idx.shape
    m = new_c.shape[1]
    for v in prange(n):
        new_p = np.empty(m, dtype=np.uint64)
        old_p = np.empty(m, dtype=np.uint64)
        cn = 0
        co = 0
        for s in range(K):
            j = heap_idx[v, s]
            if j < 0:
                continue
            p = _hash(key, min(v, j), max(v, j))
            if heap_flag[v, s]:
                cn = _sample(new_c[v], new_p, cn, j, p)
            else:
                co = _sample(old_c[v], old_p, co, j, p)
        for e in range(ptr[v], ptr[v + 1]):
            j = src[e]
            p = _hash(key, min(v, j), max(v, j))
            if src_flag[e]:
                cn = _sample(new_c[v], new_p, cn, j, p)
            else:
                co = _sample(old_c[v], old_p, co, j, p)
        new_n[v] = cn
        old_n[v] = co
        for s in range(K):
            if heap_flag[v, s]:
                j = heap_idx[v, s]
                for t in range(cn):
                    if new_c[v, t] == j:
                        heap_flag[v, s] = 0
                        break


@njit(parallel=True)
def _transpose(lists, count, payload, ptr, members, out, n_chunks):  # pragma: no cover - numba
    """Transpose padded lists in CSR: who lists ``i``, and with what.

    Row ``v`` lists ``lists[v, :count[v]]`` (entries outside ``[0, n)`` are holes).
    ``members[ptr[i]:ptr[i + 1]]`` are the rows that list ``i``, ascending, and ``out`` holds
    ``payload[v, t]`` for each (``t``: the place of ``i`` in row ``v``), or ``t`` itself when
    ``payload`` has no columns. Serves the reverse graph (heap indices, flags as payload) and
    the candidates' transposes (places). Parallel over ``n_chunks`` ranges of ``i``, each
    scanning all rows in order and writing only its own lists: the result does not depend on
    ``n_chunks``.
    """
    n = lists.shape[0]
    with_payload = payload.shape[1] > 0
    ptr[:] = 0
    step = (n + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        lo = c * step
        hi = min(n, lo + step)
        for v in range(n):
            for t in range(count[v]):
                i = lists[v, t]
                if lo <= i < hi:
                    ptr[i + 1] += 1
    for i in range(n):
        ptr[i + 1] += ptr[i]
    fill = ptr[:-1].copy()
    for c in prange(n_chunks):
        lo = c * step
        hi = min(n, lo + step)
        for v in range(n):
            for t in range(count[v]):
                i = lists[v, t]
                if lo <= i < hi:
                    members[fill[i]] = v
                    out[fill[i]] = payload[v, t] if with_payload else t
                    fill[i] += 1


@njit(parallel=True, fastmath=_FAST)
def _pair_distances(X, v0, new_c, new_n, old_c, old_n, D):  # pragma: no cover - numba
    """For each vertex ``v = v0 + r`` of a batch, the distances among its candidates.

    The list of ``v`` is its new candidates followed by its old ones (``L``);
    ``D[r, a, b] = |L[a] - L[b]|^2`` for pairs with at least one new member and
    ``D[r, a, -1] = |L[a] - v|^2``. The rows of one list are read once, from cache.
    """
    width = D.shape[2] - 1
    for r in prange(D.shape[0]):
        v = v0 + r
        nn = new_n[v]
        total = nn + old_n[v]
        L = np.empty(width, dtype=np.int64)
        for a in range(nn):
            L[a] = new_c[v, a]
        for a in range(nn, total):
            L[a] = old_c[v, a - nn]
        Dr = D[r]
        for a in range(total):
            Dr[a, width] = _sqdist(X, L[a], v)
        for a in range(nn):
            for b in range(a + 1, total):
                d = _sqdist(X, L[a], L[b])
                Dr[a, b] = d
                Dr[b, a] = d


@njit
def _batch_members(v0, v1, new_c, new_n, old_c, old_n, mark, out):  # pragma: no cover - numba
    """The vertices listed by the batch ``[v0, v1)``, ascending, into ``out``; their count.

    ``mark`` (n bytes, all zero) is left all zero.
    """
    lo = mark.shape[0]
    hi = 0
    for v in range(v0, v1):
        for t in range(new_n[v] + old_n[v]):
            j = new_c[v, t] if t < new_n[v] else old_c[v, t - new_n[v]]
            mark[j] = 1
            lo = min(lo, j)
            hi = max(hi, j + 1)
    count = 0
    for i in range(lo, hi):
        if mark[i]:
            out[count] = i
            count += 1
            mark[i] = 0
    return count


@njit(parallel=True)
def _pull(v0, v1, members, n_targets, new_c, new_n, old_c, old_n, new_ptr, new_mem, new_pos,
          new_cur, old_ptr, old_mem, old_pos, old_cur, D, heap_idx, heap_dist, heap_flag,
          updates):  # pragma: no cover - numba  # fmt: skip
    """Each vertex ``i`` pushes into its own heap what the batch ``[v0, v1)`` measured for it.

    Only the vertices ``members`` listed by the batch (:func:`_batch_members`, each once) are
    visited: the cost per batch is its own, not ``n``. ``new_cur[i]`` and ``old_cur[i]`` walk
    ``i``'s memberships (ascending in ``v``) batch by batch; only ``i``'s heap, cursors and
    ``updates[i]`` are written for ``i``.
    """
    width = D.shape[2] - 1
    for r in prange(members.shape[0]):
        i = members[r]
        hi = heap_idx[i]
        hd = heap_dist[i]
        hf = heap_flag[i]
        c = 0
        e = new_cur[i]
        while e < new_ptr[i + 1] and new_mem[e] < v1:
            v = new_mem[e]
            a = new_pos[e]
            Dr = D[v - v0]
            if v < n_targets and Dr[a, width] < hd[0]:
                c += _push(hi, hd, hf, v, Dr[a, width])
            nn = new_n[v]
            for b in range(nn + old_n[v]):
                j = new_c[v, b] if b < nn else old_c[v, b - nn]
                if b != a and j != i and j < n_targets and Dr[a, b] < hd[0]:
                    c += _push(hi, hd, hf, j, Dr[a, b])
            e += 1
        new_cur[i] = e
        e = old_cur[i]
        while e < old_ptr[i + 1] and old_mem[e] < v1:
            v = old_mem[e]
            nn = new_n[v]
            a = nn + old_pos[e]
            Dr = D[v - v0]
            for b in range(nn):
                j = new_c[v, b]
                if j != i and j < n_targets and Dr[a, b] < hd[0]:
                    c += _push(hi, hd, hf, j, Dr[a, b])
            e += 1
        old_cur[i] = e
        updates[i] += c


@njit(parallel=True)
def _final_distances(X, rows, cand, metric, out):  # pragma: no cover - numba
    """Float64 distances between ``X[rows[r]]`` and ``X[cand[r, t]]`` (-1 gives inf).

    ``metric``: 0 euclidean, 1 squared euclidean, 2 cosine, 3 correlation (on ``X`` as given).
    """
    dim = X.shape[1]
    for r in prange(rows.shape[0]):
        p = rows[r]
        mp = 0.0
        if metric == 3:
            for t in range(dim):
                mp += np.float64(X[p, t])
            mp /= dim
        for c in range(cand.shape[1]):
            q = cand[r, c]
            if q < 0:
                out[r, c] = np.inf
                continue
            if metric <= 1:
                s = 0.0
                for t in range(dim):
                    diff = np.float64(X[p, t]) - np.float64(X[q, t])
                    s += diff * diff
                out[r, c] = np.sqrt(s) if metric == 0 else s
                continue
            mq = 0.0
            if metric == 3:
                for t in range(dim):
                    mq += np.float64(X[q, t])
                mq /= dim
            dot = 0.0
            na = 0.0
            nb = 0.0
            for t in range(dim):
                x = np.float64(X[p, t]) - mp
                y = np.float64(X[q, t]) - mq
                dot += x * y
                na += x * x
                nb += y * y
            if p == q:
                out[r, c] = 0.0
            elif na == 0.0 or nb == 0.0:
                out[r, c] = 1.0  # a zero vector: distance 1 to everything, as sklearn
            else:
                out[r, c] = max(1.0 - dot / np.sqrt(na * nb), 0.0)


def _search_matrix(X: np.ndarray, metric: str) -> np.ndarray:
    """The C-contiguous float32 matrix the search ranks on (unit rows for angular metrics)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    if metric in ("cosine", "correlation"):
        X64 = X.astype(np.float64)
        if metric == "correlation":
            X64 -= X64.mean(axis=1, keepdims=True)
        norms = np.sqrt(np.einsum("ij,ij->i", X64, X64))
        norms[norms == 0] = 1.0
        X = (X64 / norms[:, None]).astype(np.float32)
    return X


def _descent(
    S: np.ndarray,
    K: int,
    cap: int,
    *,
    n_targets: int,
    random_state: int,
    settings: dict,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Heaps (int32 indices, float32 squared distances) holding the ``K`` nearest targets per row.

    The heaps have ``K + extra`` slots (``K + refine_extra`` after a refinement), at most
    ``cap``. The rows are first put in the leaf order of one random projection tree over the
    targets (and the other rows after them), so that near points lie near in memory: the search
    runs on the permuted copy and the heaps are mapped back. Also returns what the search did
    (``stats``: estimated recall of each stage and after each iteration, whether it skipped the
    light iterations and whether it refined).
    """
    n = S.shape[0]
    perm = np.empty(n, dtype=np.int32)
    starts = np.empty(n_targets + 1, dtype=np.int64)
    key = epoch_key(random_state, _TREE_STREAM - 1)
    leaf = _leaf_size(settings, _heap_size(settings, "extra", K, cap))
    _rp_tree(S[:n_targets], key, leaf, perm[:n_targets], starts)
    perm[n_targets:] = np.arange(n_targets, n, dtype=np.int32)
    del starts
    heap_idx, heap_dist, stats = _descent_ordered(
        S[perm], K, cap, n_targets=n_targets, random_state=random_state, settings=settings
    )
    out_idx = np.empty_like(heap_idx)
    out_dist = np.empty_like(heap_dist)
    out_idx[perm] = np.where(heap_idx >= 0, perm[heap_idx], -1)
    out_dist[perm] = heap_dist
    logger.info(
        "nndescent: estimated recall %s on %d rows%s (%s s)",
        ", then ".join(f"{r:.3f}" for r in stats["recall"]), int(settings["check_rows"]),
        " (refined)" if stats["refined"] else "", " + ".join(f"{t:.1f}" for t in stats["seconds"]),
    )  # fmt: skip
    return out_idx, out_dist, stats


def _descent_ordered(
    S: np.ndarray,
    K: int,
    cap: int,
    *,
    n_targets: int,
    random_state: int,
    settings: dict,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """:func:`_descent` on rows already in locality order: forest, iterations, check, refine."""
    t0 = time.perf_counter()
    size = _heap_size(settings, "extra", K, cap)
    heaps = _forest_heaps(S, size, n_targets=n_targets, random_state=random_state,
                          settings=settings)  # fmt: skip
    check = _check_rows(S.shape[0], n_targets, int(settings["check_rows"]), random_state)
    truth = _sample_truth(S, check, n_targets, min(K, cap))
    target = float(settings["target_recall"])
    history = [_sample_recall(heaps[0], check, truth)]

    early = bool(settings["early_switch"])

    def short(heap_idx: np.ndarray) -> bool:
        history.append(_sample_recall(heap_idx, check, truth))
        return early and _falls_short(history, target)

    # a forest this far from the neighbours marks data of high intrinsic dimension, where the
    # light iterations only delay the heavy ones
    skip = early and history[0] < float(settings["skip_light_below"])
    if not skip:
        _iterate(S, heaps, int(settings["max_candidates"]), n_targets=n_targets,
                 key=epoch_key(random_state, _ITER_STREAM), settings=settings,
                 watch=short)  # fmt: skip
    recall = history[-1]  # the watch saw the heaps after the last iteration
    stats = {"recall": [recall], "history": history, "refined": False, "skipped_light": skip,
             "refine_history": [], "seconds": [time.perf_counter() - t0]}  # fmt: skip
    if recall < target:
        size = _heap_size(settings, "refine_extra", K, cap)
        heaps = _grow(heaps, size)
        _forest_join(S, heaps, epoch_key(random_state, _REFINE_STREAM - 1), n_targets=n_targets,
                     settings=settings)  # fmt: skip
        refined = stats["refine_history"]
        refined.append(_sample_recall(heaps[0], check, truth))
        stop_gain = float(settings["stop_gain"])

        def levelled(heap_idx: np.ndarray) -> bool:
            refined.append(_sample_recall(heap_idx, check, truth))
            return _levels_off(refined, stop_gain)

        _iterate(S, heaps, int(settings["refine_candidates"]), n_targets=n_targets,
                 key=epoch_key(random_state, _REFINE_STREAM), settings=settings,
                 watch=levelled)  # fmt: skip
        stats["recall"].append(refined[-1])
        stats["refined"] = True
        stats["seconds"].append(time.perf_counter() - t0 - stats["seconds"][0])
    return heaps[0], heaps[1], stats


def _forest_heaps(
    S: np.ndarray, size: int, *, n_targets: int, random_state: int, settings: dict
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heaps of ``size`` slots filled from the leaves of a random projection forest."""
    heaps = _empty_heaps(S.shape[0], size)
    _forest_join(S, heaps, epoch_key(random_state, _TREE_STREAM), n_targets=n_targets,
                 settings=settings)  # fmt: skip
    return heaps


def _empty_heaps(n: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` empty heaps of ``size`` slots: indices -1, distances inf, flags 0."""
    return (
        np.full((n, size), -1, dtype=np.int32),
        np.full((n, size), np.inf, dtype=np.float32),
        np.zeros((n, size), dtype=np.uint8),
    )


def _heap_size(settings: dict, extra: str, K: int, cap: int) -> int:
    """Heap slots of a stage: ``K`` plus the stage's ``extra`` slots, at most ``cap``."""
    return min(K + int(settings[extra]), cap)


def _leaf_size(settings: dict, size: int) -> int:
    """Leaves hold at least ``leaf_size`` points and more than a heap's ``size`` slots."""
    return max(int(settings["leaf_size"]), size + 1)


def _forest_join(
    S: np.ndarray,
    heaps: tuple[np.ndarray, np.ndarray, np.ndarray],
    key: np.uint64,
    *,
    n_targets: int,
    settings: dict,
) -> None:
    """Push the pairs of every leaf of ``n_trees`` trees keyed by ``key`` into ``heaps``."""
    heap_idx, heap_dist, heap_flag = heaps
    n, size = heap_idx.shape
    n_trees = int(settings["n_trees"])
    leaf_size = _leaf_size(settings, size)
    group = 2  # trees in pairs bound the memory of their permutations
    for first in range(0, n_trees, group):
        count = min(group, n_trees - first)
        order = np.empty((count, n), dtype=np.int32)
        starts = np.empty((count, n + 1), dtype=np.int64)
        n_leaves = np.empty(count, dtype=np.int64)
        _rp_forest(S, np.uint64(int(key) ^ first), leaf_size, order, starts, n_leaves)
        for t in range(count):
            _leaf_join(S, order[t], starts[t], n_leaves[t], n_targets, heap_idx, heap_dist,
                       heap_flag)  # fmt: skip
        del order, starts


def _iterate(
    S: np.ndarray,
    heaps: tuple[np.ndarray, np.ndarray, np.ndarray],
    m: int,
    *,
    n_targets: int,
    key: np.uint64,
    settings: dict,
    watch: Callable[[np.ndarray], bool] | None = None,
) -> None:
    """NN-descent iterations on ``heaps`` (updated in place) with ``m`` candidates per kind.

    Iteration ``it`` samples with the key ``(key, it)``; ``watch``, where given, is called with
    the heap indices after every iteration. Stops after ``n_iters`` iterations, when at most
    ``delta * n * slots`` heap entries changed, or when ``watch`` returns True.
    """
    heap_idx, heap_dist, heap_flag = heaps
    n, K = heap_idx.shape
    # two phases per iteration, each holding only its own arrays (the reverse graph; then the
    # transposes and the batch matrices), so that the peak is the larger phase, not their sum
    new_c = np.empty((n, m), dtype=np.int32)
    old_c = np.empty((n, m), dtype=np.int32)
    new_n = np.empty(n, dtype=np.int64)
    old_n = np.empty(n, dtype=np.int64)
    new_ptr = np.empty(n + 1, dtype=np.int64)
    old_ptr = np.empty(n + 1, dtype=np.int64)
    new_cur = np.empty(n, dtype=np.int64)
    old_cur = np.empty(n, dtype=np.int64)
    updates = np.empty(n, dtype=np.int64)
    batch = max(1, min(n, _BATCH_BYTES // (4 * 2 * m * (2 * m + 1))))
    mark = np.zeros(n, dtype=np.uint8)
    members = np.empty(n, dtype=np.int32)
    limit = float(settings["delta"]) * n * K
    n_chunks = max(1, min(n, get_num_threads()))
    pos_dtype = np.int8 if m <= 127 else np.int16  # places in a candidate list (< m)
    full = np.full(n, K, dtype=np.int64)  # a heap lists all its slots (holes are -1)
    places = np.empty((n, 0), dtype=np.uint8)  # no payload: the transposes store places
    for it in range(int(settings["n_iters"])):
        rev_ptr = np.empty(n + 1, dtype=np.int64)
        rev_src = np.empty(n * K, dtype=np.int32)
        rev_flag = np.empty(n * K, dtype=np.uint8)
        _transpose(heap_idx, full, heap_flag, rev_ptr, rev_src, rev_flag, n_chunks)
        it_key = np.uint64(_hash(key, it, 0))
        _candidates(heap_idx, heap_flag, rev_ptr, rev_src, rev_flag, it_key, new_c, new_n,
                    old_c, old_n)  # fmt: skip
        del rev_ptr, rev_src, rev_flag
        new_mem = np.empty(int(new_n.sum()), dtype=np.int32)
        old_mem = np.empty(int(old_n.sum()), dtype=np.int32)
        new_pos = np.empty(new_mem.size, dtype=pos_dtype)
        old_pos = np.empty(old_mem.size, dtype=pos_dtype)
        _transpose(new_c, new_n, places, new_ptr, new_mem, new_pos, n_chunks)
        _transpose(old_c, old_n, places, old_ptr, old_mem, old_pos, n_chunks)
        new_cur[:] = new_ptr[:-1]
        old_cur[:] = old_ptr[:-1]
        updates[:] = 0
        D = np.empty((batch, 2 * m, 2 * m + 1), dtype=np.float32)
        for v0 in range(0, n, batch):
            v1 = min(n, v0 + batch)
            _pair_distances(S, v0, new_c, new_n, old_c, old_n, D[: v1 - v0])
            count = _batch_members(v0, v1, new_c, new_n, old_c, old_n, mark, members)
            _pull(v0, v1, members[:count], n_targets, new_c, new_n, old_c, old_n, new_ptr,
                  new_mem, new_pos, new_cur, old_ptr, old_mem, old_pos, old_cur, D, heap_idx,
                  heap_dist, heap_flag, updates)  # fmt: skip
        del new_mem, old_mem, new_pos, old_pos, D
        stop = watch is not None and watch(heap_idx)
        if int(updates.sum()) <= limit or stop:
            break


def _projected_gain(history: list[float]) -> float | None:
    """The recall the iterations have yet to add, projected from their last two gains.

    ``history`` holds the estimated recall after the forest and after each iteration. The
    gains of the iterations shrink roughly geometrically; the last two give the ratio, and the
    series' remaining sum is returned, at most ``1 - history[-1]`` (the recall cannot pass 1:
    a search at 0.997 whose last gain was 0.11 has 0.003 left, not the series' 0.027). None
    where the trend cannot be judged yet (fewer than two gains, or gains still growing); 0
    where the search has stopped gaining.
    """
    if len(history) < 3:
        return None
    before, last = history[-2] - history[-3], history[-1] - history[-2]
    if last <= 0:
        return 0.0
    if last >= before:
        return None
    ratio = last / before
    return min(last * ratio / (1 - ratio), max(1.0 - history[-1], 0.0))


def _falls_short(history: list[float], target: float) -> bool:
    """Whether the light search, going on as it goes, ends below ``target`` recall.

    A search whose projected remaining gain (:func:`_projected_gain`) does not lift it to the
    target falls short; one whose gains are not yet shrinking gets another iteration.
    """
    if history[-1] >= target:
        return False
    gain = _projected_gain(history)
    return gain is not None and history[-1] + gain < target


def _levels_off(history: list[float], gain: float) -> bool:
    """Whether the refinement's iterations are projected to add less than ``gain`` recall."""
    rest = _projected_gain(history)
    return rest is not None and rest < gain


def _check_rows(n: int, n_targets: int, count: int, random_state: int) -> np.ndarray:
    """The rows whose exact neighbours estimate the recall: the query rows where there are any."""
    lo = n_targets if n > n_targets else 0
    rng = np.random.default_rng([int(random_state) & 0xFFFFFFFF, _CHECK_STREAM])
    count = min(count, n - lo)
    return np.sort(rng.choice(np.arange(lo, n), size=count, replace=False)).astype(np.int64)


def _sample_truth(S: np.ndarray, rows: np.ndarray, n_targets: int, K: int) -> np.ndarray:
    """The exact ``K`` nearest targets of ``rows`` (the row itself excluded), as heaps."""
    idx, dist, flag = _empty_heaps(rows.size, K)
    _exact_rows(S, rows, n_targets, idx, dist, flag)
    return idx


def _sample_recall(heap_idx: np.ndarray, rows: np.ndarray, truth: np.ndarray) -> float:
    """Share of the exact neighbours of ``rows`` that their heaps hold."""
    if rows.size == 0 or truth.shape[1] == 0:
        return 1.0
    found = [np.intersect1d(heap_idx[r], t[t >= 0]).size for r, t in zip(rows, truth, strict=True)]
    return float(np.sum(found)) / float(max(np.count_nonzero(truth >= 0), 1))


@njit(parallel=True, fastmath=_FAST)
def _exact_rows(X, rows, n_targets, idx, dist, flag):  # pragma: no cover - numba
    """Exact search of ``rows`` over the targets into the heaps ``idx, dist, flag`` (one a row)."""
    for r in prange(rows.size):
        p = rows[r]
        for q in range(n_targets):
            if q != p:
                _push(idx[r], dist[r], flag[r], q, _sqdist(X, p, q))


@njit(parallel=True)
def _regrow(heap_idx, heap_dist, idx, dist, flag):  # pragma: no cover - numba
    """Push every entry of the heaps ``heap_idx, heap_dist`` into the larger ``idx, dist``."""
    for i in prange(heap_idx.shape[0]):
        for s in range(heap_idx.shape[1]):
            if heap_idx[i, s] >= 0:
                _push(idx[i], dist[i], flag[i], heap_idx[i, s], heap_dist[i, s])


def _grow(
    heaps: tuple[np.ndarray, np.ndarray, np.ndarray], size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heaps of ``size`` slots holding the entries of ``heaps``, all flagged new."""
    grown = _empty_heaps(heaps[0].shape[0], size)
    _regrow(heaps[0], heaps[1], *grown)
    return grown


def _finish(X, rows, cand, metric, k, *, with_self):
    """Re-measure candidates in float64 on ``X``; sort each row by (distance, index).

    The row itself comes first when ``with_self``; ``k`` columns are kept.
    """
    code = _METRIC_CODE[metric]
    out_idx = np.empty((rows.size, k), dtype=np.int64)
    out_dist = np.empty((rows.size, k), dtype=np.float32)
    chunk = 1 << 16
    for start in range(0, rows.size, chunk):
        sel = rows[start : start + chunk]
        c = cand[start : start + chunk].astype(np.int64)
        if with_self:
            c = np.concatenate([sel[:, None], c], axis=1)
        d = np.empty(c.shape, dtype=np.float64)
        _final_distances(X, sel, c, code, d)
        key = d.copy()
        if with_self:
            key[:, 0] = -1.0
        order = row_order(key, c)[:, :k]
        out_idx[start : start + sel.size] = np.take_along_axis(c, order, 1)
        out_dist[start : start + sel.size] = np.take_along_axis(d, order, 1)
    return out_idx, out_dist


def _measure_matrix(X: np.ndarray) -> np.ndarray:
    """``X`` as a C-contiguous float32 or float64 array (the final distances are read from it)."""
    dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
    return np.ascontiguousarray(X, dtype=dtype)


def _nearest_columns(heap_idx: np.ndarray, heap_dist: np.ndarray, K: int) -> np.ndarray:
    """The ``K`` nearest entries of each heap (by float32 distance, then index)."""
    if heap_idx.shape[1] == K:
        return heap_idx
    key = np.where(heap_idx >= 0, heap_dist, np.inf)
    order = row_order(key, heap_idx)[:, :K]
    return np.take_along_axis(heap_idx, order, 1)


def nndescent_knn(
    X: np.ndarray | sparse.spmatrix,
    n_neighbors: int,
    *,
    metric: str = "euclidean",
    random_state: int = 0,
    n_jobs: int | None = None,
    settings: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate k-nearest neighbours of every row of ``X`` among the rows of ``X``.

    Parameters
    ----------
    X
        (n_obs, n_features) data; sparse input is densified (the caller bounds its size).
    n_neighbors
        Neighbours per row, the row itself included (column 0).
    metric
        One of :data:`NNDESCENT_METRICS`.
    random_state
        Seed of the trees and candidate samples. The result depends on it and on nothing else
        (not on ``n_jobs``).
    n_jobs
        Threads (None = all).
    settings
        Override of :func:`nndescent_settings` (same keys).

    Returns
    -------
    indices, distances
        (n_obs, n_neighbors) int64 indices and float32 distances (float64-measured), ascending
        per row, the row itself first.
    """
    if sparse.issparse(X):
        X = X.toarray()
    n = X.shape[0]
    k = int(n_neighbors)
    K = min(k - 1, n - 1)
    conf = {**nndescent_settings(n, k), **(settings or {})}
    with threads(n_jobs):
        S = _search_matrix(X, metric)
        heap_idx, heap_dist, _ = _descent(S, K, n - 1, n_targets=n, random_state=random_state,
                                          settings=conf)  # fmt: skip
        heap_idx = _nearest_columns(heap_idx, heap_dist, K)
        rows = np.arange(n, dtype=np.int64)
        idx, dist = _finish(_measure_matrix(X), rows, heap_idx, metric, k, with_self=True)
    return idx, dist


def nndescent_query_knn(
    X_ref: np.ndarray | sparse.spmatrix,
    X_query: np.ndarray | sparse.spmatrix,
    n_neighbors: int,
    *,
    metric: str = "euclidean",
    random_state: int = 0,
    n_jobs: int | None = None,
    settings: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate ``n_neighbors`` nearest reference rows of each query row.

    One NN-descent on the stacked rows in which every heap accepts reference rows only: the
    reference rows find each other, the query rows pull reference rows through them. Returns
    (n_query, n_neighbors) int64 reference indices and float32 distances, ascending per row
    (ties: lower index); deterministic for ``random_state`` whatever ``n_jobs``.
    """
    ref = X_ref.toarray() if sparse.issparse(X_ref) else np.asarray(X_ref)
    query = X_query.toarray() if sparse.issparse(X_query) else np.asarray(X_query)
    n_ref = ref.shape[0]
    k = int(n_neighbors)
    stacked = np.vstack([ref, query])
    conf = {**nndescent_settings(stacked.shape[0], k + 1), **(settings or {})}
    with threads(n_jobs):
        S = _search_matrix(stacked, metric)
        heap_idx, heap_dist, _ = _descent(S, k, n_ref, n_targets=n_ref,
                                          random_state=random_state, settings=conf)  # fmt: skip
        heap_idx = _nearest_columns(heap_idx, heap_dist, k)
        rows = np.arange(n_ref, stacked.shape[0], dtype=np.int64)
        idx, dist = _finish(_measure_matrix(stacked), rows, heap_idx[n_ref:], metric, k,
                            with_self=False)  # fmt: skip
    return idx, dist
