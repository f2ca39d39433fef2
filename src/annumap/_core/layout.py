"""The epoch driver of the UMAP layout: schedule, learning-rate decay, progress and callbacks.

Python runs the epoch loop and calls one numba kernel per epoch (:func:`._kernels.sgd_epoch`);
the kernel is parallel over vertices and deterministic for a seed whatever the thread count.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
from scipy import sparse

from .._types import LayoutCallback
from ._numba import threads
from ._rng import epoch_key

__all__ = ["default_n_epochs", "optimize_layout", "prepare_graph"]

logger = logging.getLogger("annumap")


#: Passes per epoch: each handles every PASSES-th edge of each row and reads the positions
#: the previous pass wrote (see :mod:`._kernels`).
PASSES = 4


def sampling_schedule(
    weights: np.ndarray, negative_sample_rate: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-edge sampling periods (float64) of the numba and the array-namespace layouts.

    ``epochs_per_sample = max(w) / w`` and ``epochs_per_negative = epochs_per_sample /
    negative_sample_rate`` (1e30, i.e. never, when the rate is 0). The sampling state starts at
    these values (nothing is due in epoch 0, as in umap-learn).
    """
    eps = (weights.max() / weights).astype(np.float64)
    if negative_sample_rate > 0:
        return eps, eps / float(negative_sample_rate)
    return eps, np.full_like(eps, 1e30)


def split_passes(indptr: np.ndarray, n_passes: int) -> tuple[np.ndarray, np.ndarray]:
    """Reorder a CSR graph's edges into ``n_passes`` contiguous blocks, one per pass.

    Edge ``t`` of row ``i`` (in CSR order) goes to pass ``t % n_passes``; within a pass, edges
    stay in row order. Returns ``(pass_indptr, order)``: ``pass_indptr[p]`` is the (n + 1)
    row-pointer array of pass ``p`` into the reordered edges ``order`` (int64 throughout), so
    every pass reads its edges and their sampling state contiguously.
    """
    indptr = np.asarray(indptr, dtype=np.int64)
    n = indptr.size - 1
    counts = np.diff(indptr)
    rows = np.repeat(np.arange(n, dtype=np.int64), counts)
    part = np.arange(indptr[-1], dtype=np.int64) - indptr[rows]
    part %= n_passes
    order = np.lexsort((rows, part))  # by pass, then row; stable within a row
    per = np.zeros((n_passes, n), dtype=np.int64)
    np.add.at(per, (part, rows), 1)
    pass_indptr = np.zeros((n_passes, n + 1), dtype=np.int64)
    pass_indptr[:, 1:] = np.cumsum(per, axis=1)
    pass_indptr[1:] += np.cumsum(per.sum(axis=1))[:-1, None]
    return pass_indptr, order


#: Below this many stored edges the layout runs on one thread (same result, less overhead).
SERIAL_MAX_EDGES = 50_000


def default_n_epochs(n_obs: int) -> int:
    """umap-learn's default: 500 epochs up to 10,000 vertices, 200 above."""
    return 500 if n_obs <= 10_000 else 200


def prepare_graph(graph: sparse.spmatrix, n_epochs: int) -> sparse.csr_matrix:
    """A pruned, symmetric float32 CSR copy of ``graph`` (the input is never modified).

    Edges with weight below ``max / n_epochs`` (never sampled) are dropped, as in umap-learn. An
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
        G.data[G.data < G.data.max() / float(n_epochs)] = 0.0
        G.eliminate_zeros()
    G.sort_indices()
    return G


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
        Initial learning rate, decayed linearly: ``alpha * (1 - epoch / n_epochs)``.
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
        view of the live array: copy it to keep it); returning True stops the optimisation.
    progress
        Show a tqdm bar (None: only in interactive sessions for long runs).
    """
    from ._kernels import sgd_epoch, sgd_epoch_2d

    G = prepare_graph(graph, n_epochs)
    n = G.shape[0]
    prev = np.array(init, dtype=np.float32, order="C", copy=True)
    if prev.shape[0] != n:
        msg = f"init has {prev.shape[0]} rows; the graph has {n} vertices."
        raise ValueError(msg)
    out = np.empty_like(prev)
    if G.nnz == 0:
        return prev
    pass_indptr, order = split_passes(G.indptr, PASSES)
    indices = G.indices[order].astype(np.int64)
    weights = G.data[order]
    eps, eps_neg = sampling_schedule(weights, negative_sample_rate)
    next_sample = eps.copy()
    next_negative = eps_neg.copy()
    a, b, gamma = float(a), float(b), float(gamma)
    dim = prev.shape[1]
    work = np.empty((n, 3 * dim), dtype=np.float32) if dim != 2 else None

    if G.nnz < SERIAL_MAX_EDGES:
        n_jobs = 1  # a parallel region per epoch costs more than it saves on small graphs
    bar = None
    if _show_progress(progress, float(G.nnz) * n_epochs):
        from tqdm.auto import tqdm

        bar = tqdm(total=n_epochs, desc="umap layout", unit="epoch", file=sys.stderr)
    try:
        with threads(n_jobs):
            for epoch in range(n_epochs):
                lr = float(alpha) * (1.0 - epoch / n_epochs)
                key = epoch_key(seed, epoch)
                for indptr in pass_indptr:
                    state = (indptr, indices, eps, eps_neg, next_sample, next_negative, prev, out)
                    if work is None:
                        sgd_epoch_2d(*state, a, b, gamma, lr, float(epoch), key)
                    else:
                        sgd_epoch(*state, work, a, b, gamma, lr, float(epoch), key)
                    prev, out = out, prev
                if bar is not None:
                    bar.update(1)
                if callback is not None and callback(epoch + 1, n_epochs, _read_only(prev)):
                    logger.info("layout: stopped by the callback after epoch %d", epoch + 1)
                    break
    finally:
        if bar is not None:
            bar.close()
    return prev
