"""The epoch driver of the UMAP layout: schedule, learning rate, progress and callbacks.

Python runs the epoch loop and calls one numba kernel per epoch (:func:`._kernels.sgd_epoch`).
The kernel runs umap-learn's serial SGD (both ends of a sampled edge move; an edge's negatives
are seen from one position and their steps summed) over the vertices class by class of a
distance-2 colouring, each class in parallel: the result is the same for any number of threads.
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np
from scipy import sparse

from .._types import LayoutCallback
from ._numba import threads
from ._rng import epoch_key

__all__ = [
    "colour_classes",
    "default_n_epochs",
    "learning_rates",
    "optimize_layout",
    "prepare_graph",
    "sampling_schedule",
]

logger = logging.getLogger("annumap")

#: Colour classes with fewer vertices run on the calling thread: a parallel region costs more
#: than it saves on them (the result is the same either way).
PARALLEL_MIN_VERTICES = 64

#: Pieces of equal expected work a parallel-eligible class is cut into (fewer for classes with
#: fewer than 8 rows per piece). Fixed, whatever the thread count: the cut decides which rows
#: the kernel interleaves, so it must not depend on ``n_jobs``.
PIECES = 16


def sampling_schedule(
    weights: np.ndarray, negative_sample_rate: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-edge sampling periods (float64) of every SGD in annumap (layouts and transform).

    ``epochs_per_sample = max(w) / w`` and ``epochs_per_negative = epochs_per_sample /
    negative_sample_rate`` (1e30, i.e. never, when the rate is 0), as umap-learn's
    ``make_epochs_per_sample``. The sampling state starts at these values (nothing is due in
    epoch 0, as in umap-learn).
    """
    eps = (weights.max() / weights).astype(np.float64)
    if negative_sample_rate > 0:
        return eps, eps / float(negative_sample_rate)
    return eps, np.full_like(eps, 1e30)


def learning_rates(alpha: float, n_epochs: int) -> np.ndarray:
    """The learning rate of each epoch as umap-learn runs them (float64, length ``n_epochs``).

    umap-learn runs epoch 0 at ``alpha`` and sets ``alpha * (1 - e / n_epochs)`` after epoch
    ``e``, so epoch ``e >= 1`` runs at ``alpha * (1 - (e - 1) / n_epochs)``.
    """
    e = np.arange(n_epochs, dtype=np.float64)
    return float(alpha) * (1.0 - np.maximum(e - 1.0, 0.0) / float(n_epochs))


def default_n_epochs(n_obs: int) -> int:
    """umap-learn's default: 500 epochs up to 10,000 vertices, 200 above."""
    return 500 if n_obs <= 10_000 else 200


def prepare_graph(graph: sparse.spmatrix, n_epochs: int) -> sparse.csr_matrix:
    """A pruned, symmetric float32 CSR copy of ``graph`` (the input is never modified).

    Edges with weight below ``max / n_epochs`` (never sampled) are dropped, as in umap-learn;
    with ``n_epochs <= 10`` the cut is ``max / default_n_epochs(n)``, as umap-learn has it. An
    asymmetric graph is symmetrised as ``(G + G.T) / 2``: the layout treats edges as undirected.
    """
    G = sparse.csr_matrix(graph, dtype=np.float32, copy=True)
    G.sum_duplicates()
    G.setdiag(0)
    G.eliminate_zeros()
    if G.nnz and abs(G - G.T).max() > 1e-6 * G.data.max():
        logger.info("layout: the graph is not symmetric; using (G + G.T) / 2")
        G = ((G + G.T) * np.float32(0.5)).tocsr()
    if G.nnz:
        cut = n_epochs if n_epochs > 10 else default_n_epochs(G.shape[0])
        G.data[G.data < G.data.max() / float(cut)] = 0.0
        G.eliminate_zeros()
    G.sort_indices()
    return G


def colour_classes(G: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Order the vertices of ``G`` by colour class (:func:`._kernels.distance2_colouring`).

    Returns ``(order, bounds)``: ``order`` (int64) lists the vertices class by class, in vertex
    order within a class, and class ``c`` is ``order[bounds[c]:bounds[c + 1]]``. Within a class
    no two vertices are adjacent or share a neighbour.
    """
    from ._kernels import distance2_colouring

    n = G.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(1, dtype=np.int64)
    colour = distance2_colouring(G.indptr.astype(np.int64), G.indices.astype(np.int64))
    order = np.argsort(colour, kind="stable").astype(np.int64)
    bounds = np.zeros(int(colour.max()) + 2, dtype=np.int64)
    bounds[1:] = np.cumsum(np.bincount(colour))
    return order, bounds


def class_pieces(
    bounds: np.ndarray, indptr: np.ndarray, weights: np.ndarray, negative_sample_rate: float
) -> tuple[np.ndarray, np.ndarray]:
    """Cut each colour class into pieces of equal expected work (the kernel's unit of threads).

    On vertices numbered by class, a row's expected work per epoch is its edges' sampling rates
    ``w / max(w)`` times ``1 + negative_sample_rate``, plus one per row. Classes of at least
    :data:`PARALLEL_MIN_VERTICES` rows get ``min(PIECES, rows // 8)`` pieces, the others one.
    Returns ``(pieces, first)``: piece ``p`` is the rows ``pieces[p]:pieces[p + 1]`` and class
    ``c`` the pieces ``first[c]:first[c + 1]``; nothing here depends on the thread count.
    """
    rate = weights / weights.max() * (1.0 + float(negative_sample_rate))
    row_work = np.add.reduceat(rate, indptr[:-1]) if rate.size else np.zeros(0)
    row_work[np.diff(indptr) == 0] = 0.0
    work = np.concatenate([[0.0], np.cumsum(row_work + 1.0)])
    cuts = [0]
    first = [0]
    for c in range(bounds.size - 1):
        lo, hi = int(bounds[c]), int(bounds[c + 1])
        k = min(PIECES, (hi - lo) // 8) if hi - lo >= PARALLEL_MIN_VERTICES else 1
        targets = work[lo] + (work[hi] - work[lo]) * np.arange(1, k) / k
        inner = np.searchsorted(work, targets)
        cuts.extend(np.unique(np.clip(inner, lo + 1, hi - 1)).tolist() if k > 1 else [])
        cuts.append(hi)
        first.append(len(cuts) - 1)
    return np.asarray(cuts, dtype=np.int64), np.asarray(first, dtype=np.int64)


class _Chooser:
    """Per epoch, whether the large colour classes run in parallel: whichever is faster here.

    Running a class in parallel or on one thread gives the same result, so the choice is free.
    On an idle machine the parallel regions win; on one whose cores are busy with other work a
    barrier per class can cost milliseconds (measured: MNIST 20k on 2 cores at load 10 took 5x
    longer in parallel). Epochs 3 and 4 time both modes (the first epochs have few due edges,
    so a class's fixed cost weighs more); the faster one runs from then on, and every
    :data:`PROBE_EVERY` epochs the other is timed once more against the epoch before it. Times
    are per due edge, since the work of an epoch varies from one epoch to the next (edges
    sampled every 1.5 epochs are due in every other one), and one thread is chosen only when it
    is faster by :data:`MARGIN`: a single epoch's time varies by ~30% on a quiet machine, and
    without the margin a 50k-cell layout ran up to a third of its epochs on one thread, ~40%
    slower each.
    """

    PROBE_EVERY = 25
    MARGIN = 0.75

    def __init__(self, parallel: np.ndarray) -> None:
        self.modes = {True: parallel, False: np.zeros_like(parallel)}
        self.enabled = bool(parallel.any())
        self.best = True
        self.times: dict[bool, float] = {}
        self.epoch = 0
        self.current = True

    def next(self) -> np.ndarray:
        if not self.enabled:
            self.current = False
        elif self.epoch in (3, 4):
            self.current = self.epoch == 3
        elif self.epoch > 4 and self.epoch % self.PROBE_EVERY == 0:
            self.current = not self.best
        else:
            self.current = self.best
        return self.modes[self.current]

    @property
    def timing(self) -> bool:
        """Whether this epoch's time is compared (then :meth:`record` needs its work)."""
        e = self.epoch
        return self.enabled and (
            e in (3, 4)
            or (e > 4 and (e + 1) % self.PROBE_EVERY == 0)
            or (e > 4 and e % self.PROBE_EVERY == 0)
        )

    def record(self, seconds: float, work: float = 1.0) -> None:
        if self.timing:
            self.times[self.current] = seconds / max(work, 1.0)
            if len(self.times) == 2:
                self.best = self.times[False] >= self.MARGIN * self.times[True]
        self.epoch += 1


def _read_only(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view


def _show_progress(progress: bool | None, work: float) -> bool:
    if progress is not None:
        return bool(progress)
    interactive = hasattr(sys, "ps1") or "ipykernel" in sys.modules
    return interactive and work > 5e7


def optimize_layout(
    graph: sparse.spmatrix,
    init: np.ndarray,
    *,
    a: float,
    b: float,
    n_epochs: int,
    alpha: float = 1.0,
    gamma: float = 1.0,
    negative_sample_rate: float = 5.0,
    seed: int = 0,
    n_jobs: int | None = None,
    callback: LayoutCallback | None = None,
    progress: bool | None = None,
) -> np.ndarray:
    """Optimise the embedding of ``graph`` starting from ``init``; returns a new float32 array.

    Parameters
    ----------
    graph
        (n, n) non-negative weights (UMAP connectivities); copied, pruned and symmetrised.
    init
        (n, dim) starting positions.
    a, b
        Parameters of the low-dimensional similarity ``1 / (1 + a d^(2b))``.
    n_epochs
        Number of epochs; an edge of weight ``w`` is sampled every ``max(w) / w`` epochs.
    alpha
        Initial learning rate, decayed linearly as umap-learn does (:func:`learning_rates`).
    gamma
        Weight of the repulsion.
    negative_sample_rate
        Negative samples per positive sample.
    seed
        Key of the counter-based generator of negative samples.
    n_jobs
        Threads (None = all); the result does not depend on it.
    callback
        ``callback(epoch, n_epochs, embedding)`` after each epoch (``embedding`` is a read-only
        copy of the positions); returning True stops the optimisation.
    progress
        Show a tqdm bar (None: only in interactive sessions for long runs).
    """
    from ._kernels import copy_lists, pow_table, sgd_epoch

    G = prepare_graph(graph, n_epochs)
    n = G.shape[0]
    start = np.array(init, dtype=np.float32, order="C", copy=True)
    if start.shape[0] != n:
        msg = f"init has {start.shape[0]} rows; the graph has {n} vertices."
        raise ValueError(msg)
    if G.nnz == 0:
        return start
    order, bounds = colour_classes(G)
    P = G[order][:, order].tocsr()
    P.sort_indices()
    indptr = P.indptr.astype(np.int64)
    indices = P.indices.astype(np.int64)
    eps, eps_neg = sampling_schedule(P.data, negative_sample_rate)
    next_sample = eps.copy()
    next_negative = eps_neg.copy()
    pieces, first = class_pieces(bounds, indptr, P.data, negative_sample_rate)
    copy_ptr, copy_idx, own_ptr, own_idx = copy_lists(bounds, indptr, indices)
    n_classes = bounds.size - 1
    S = np.empty((2, *start.shape), dtype=np.float32)
    S[0] = S[1] = start[order]
    side = 0  # the buffer that holds the positions between epochs
    a, b, gamma = float(a), float(b), float(gamma)
    table = pow_table(b)
    rates = learning_rates(alpha, n_epochs)
    logger.debug("layout: %d colour classes for %d vertices", bounds.size - 1, n)

    def unpermuted() -> np.ndarray:
        out = np.empty_like(start)
        out[order] = S[side]
        return out

    bar = None
    if _show_progress(progress, float(G.nnz) * n_epochs):
        from tqdm.auto import tqdm

        bar = tqdm(total=n_epochs, desc="umap layout", unit="epoch", file=sys.stderr)
    try:
        with threads(n_jobs) as n_threads:
            chooser = _Chooser((np.diff(first) > 1) & (n_threads > 1))
            for epoch in range(n_epochs):
                parallel = chooser.next()
                work = float(np.count_nonzero(next_sample <= epoch)) if chooser.timing else 1.0
                t = time.perf_counter()
                sgd_epoch(
                    pieces, parallel, indptr, indices, first, copy_ptr, copy_idx, own_ptr, own_idx,
                    eps, eps_neg, next_sample, next_negative, S, side, table, a, b, gamma,
                    float(rates[epoch]), float(epoch), epoch_key(seed, epoch),
                )  # fmt: skip
                side = (side + n_classes) % 2
                chooser.record(time.perf_counter() - t, work)
                if bar is not None:
                    bar.update(1)
                if callback is not None and callback(epoch + 1, n_epochs, _read_only(unpermuted())):
                    logger.info("layout: stopped by the callback after epoch %d", epoch + 1)
                    break
    finally:
        if bar is not None:
            bar.close()
    return unpermuted()
