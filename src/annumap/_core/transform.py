"""Embed new points into a fixed UMAP embedding (umap-learn's ``UMAP.transform``, arrays only).

Steps, as umap-learn 0.5 does them:

1. the ``k`` nearest reference points of each query point (:func:`.knn.query_knn`, with the
   backends and the automatic choice of ``pp.neighbors``; ``k`` is the reference's
   ``n_neighbors``);
2. the bipartite fuzzy graph (:func:`bipartite_graph`): ``w_ij = exp(-d_ij / sigma_i)`` with
   ``rho_i = 0`` (local connectivity 1 - 1) and ``sigma_i`` from the graph's own bisection,
   :func:`.fuzzy.smooth_knn_dist` with ``local_connectivity=0`` (a zero distance gives weight 1);
3. initial positions (:func:`init_positions`): the weighted mean of the neighbours' embedding,
   or exactly the position of a reference point at distance 0;
4. a short SGD (:func:`optimize_transform`): ``n_epochs`` (:func:`default_transform_epochs`:
   100 up to 10,000 query points, 30 above, or a third of the reference's custom epochs), edges
   below ``max(w) / n_epochs`` dropped, the layout's sampling schedule and umap-learn's
   learning-rate decay (:func:`.layout.sampling_schedule`, :func:`.layout.learning_rates`)
   from ``alpha / 4``, negatives drawn from the reference, the reference fixed: umap-learn's
   serial update of each query point, as the layout kernel runs it, without ``move_other``.

The optimisation is parallel over query points and deterministic for a seed whatever the
number of threads (each query point moves only itself against the fixed reference).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np
from scipy import sparse

from ._numba import threads
from ._rng import epoch_key

__all__ = [
    "bipartite_graph",
    "default_transform_epochs",
    "init_positions",
    "optimize_transform",
    "transform",
]

logger = logging.getLogger("annumap")

#: Key of the negative-sample stream of the transform (kept apart from the layout's streams).
_STREAM = 0x7A3F


def default_transform_epochs(n_query: int, reference_epochs: int | None = None) -> int:
    """umap-learn's ``UMAP.transform`` epochs (0.5.12).

    ``reference_epochs // 3`` when the reference was fitted with a custom number of epochs
    (umap-learn's ``n_epochs`` not None), else 100 up to 10,000 query points and 30 above
    (umap-learn compares the number of rows of the query's graph, i.e. of query points). At
    least 1.
    """
    if reference_epochs is not None:
        return max(1, int(reference_epochs) // 3)
    return 100 if n_query <= 10_000 else 30


def bipartite_graph(distances: np.ndarray) -> np.ndarray:
    """Membership strengths (n_query, k) float32 of the query-to-reference fuzzy graph.

    ``distances`` holds each query row's sorted distances to its ``k`` nearest reference points.
    Equals umap-learn's ``transform`` graph (``smooth_knn_dist`` with ``local_connectivity=0``
    and ``compute_membership_strengths(..., bipartite=True)``) on the same kNN.
    """
    from .fuzzy import smooth_knn_dist

    d = np.ascontiguousarray(distances, dtype=np.float32)
    sigma, _ = smooth_knn_dist(d, local_connectivity=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.exp(-(d / sigma[:, None]))
    w = np.where((d <= 0.0) | (sigma[:, None] == 0.0), np.float32(1.0), w)
    return w.astype(np.float32)


def init_positions(indices: np.ndarray, weights: np.ndarray, embedding: np.ndarray) -> np.ndarray:
    """Weighted mean of each query row's reference neighbours in ``embedding`` (float32).

    A neighbour of weight 1 (a reference point at distance 0) gives its position exactly (the
    nearest such one); a row whose weights are all zero gets the unweighted mean.
    """
    Y = np.asarray(embedding, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    total = weights.sum(axis=1, keepdims=True)
    w = np.where(total > 0, weights, 1.0)
    total = np.where(total > 0, total, w.shape[1])
    out = np.einsum("qk,qkd->qd", w / total, Y[indices])
    exact = weights == 1.0
    hit = np.flatnonzero(exact.any(axis=1))
    if hit.size:
        first = exact[hit].argmax(axis=1)
        out[hit] = Y[indices[hit, first]]
    return out.astype(np.float32)


def optimize_transform(
    indices: np.ndarray,
    weights: np.ndarray,
    init: np.ndarray,
    reference: np.ndarray,
    *,
    a: float,
    b: float,
    n_epochs: int,
    alpha: float = 0.25,
    gamma: float = 1.0,
    negative_sample_rate: float = 5.0,
    seed: int = 0,
    n_jobs: int | None = None,
    progress: bool | None = None,
) -> np.ndarray:
    """Optimise the query positions against the fixed ``reference`` embedding.

    Parameters
    ----------
    indices, weights
        (n_query, k) reference neighbours and their membership strengths.
    init
        (n_query, dim) starting positions.
    reference
        (n_ref, dim) the reference embedding (never modified).
    a, b
        Parameters of the low-dimensional similarity ``1 / (1 + a d^(2b))``.
    n_epochs
        Epochs; edges with weight below ``max(weights) / n_epochs`` are dropped, an edge of
        weight ``w`` is sampled every ``max / w`` epochs.
    alpha
        Initial learning rate (umap-learn uses a quarter of the layout's), decayed as
        :func:`annumap._core.layout.learning_rates`.
    gamma
        Weight of the repulsion.
    negative_sample_rate
        Negative samples (reference points) per positive sample.
    seed
        Key of the counter-based generator of negative samples.
    n_jobs
        Threads (None = all); the result does not depend on it.
    progress
        Show a tqdm bar (None: only in interactive sessions for long runs).

    Returns
    -------
    A new float32 (n_query, dim) array.
    """
    from ._transform_kernels import transform_epoch
    from .layout import learning_rates, sampling_schedule

    n_query, k = indices.shape
    Y = np.array(init, dtype=np.float32, order="C", copy=True)
    ref = np.ascontiguousarray(reference, dtype=np.float32)
    w = np.asarray(weights, dtype=np.float32).ravel()
    if w.size == 0 or w.max() <= 0:
        return Y
    keep = w >= w.max() / float(n_epochs)
    counts = keep.reshape(n_query, k).sum(axis=1)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    cols = np.asarray(indices, dtype=np.int64).ravel()[keep]
    eps, eps_neg = sampling_schedule(w[keep], negative_sample_rate)
    next_sample = eps.copy()
    next_negative = eps_neg.copy()
    a, b, gamma = float(a), float(b), float(gamma)
    stream = int(seed) ^ _STREAM

    bar = None
    interactive = hasattr(sys, "ps1") or "ipykernel" in sys.modules
    if progress or (progress is None and interactive and cols.size * n_epochs > 5e7):
        from tqdm.auto import tqdm

        bar = tqdm(total=n_epochs, desc="umap transform", unit="epoch", file=sys.stderr)
    try:
        with threads(n_jobs):
            for epoch, lr in enumerate(learning_rates(alpha, n_epochs)):
                transform_epoch(
                    indptr, cols, eps, eps_neg, next_sample, next_negative, ref, Y,
                    a, b, gamma, float(lr), float(epoch), epoch_key(stream, epoch),
                )  # fmt: skip
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return Y


def transform(
    X_ref: np.ndarray | sparse.spmatrix,
    X_query: np.ndarray | sparse.spmatrix,
    reference: np.ndarray,
    *,
    n_neighbors: int,
    a: float,
    b: float,
    n_epochs: int | None = None,
    alpha: float = 1.0,
    gamma: float = 1.0,
    negative_sample_rate: float = 5.0,
    metric: str = "euclidean",
    metric_kwds: dict[str, Any] | None = None,
    knn_backend: str = "auto",
    seed: int = 0,
    n_jobs: int | None = None,
    progress: bool | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Embed ``X_query`` into ``reference``, the embedding of ``X_ref`` (module docstring).

    ``alpha`` is the layout's learning rate; the transform starts at ``alpha / 4`` as
    umap-learn. Returns the float32 (n_query, dim) embedding and a record: the ``knn_backend``
    that ran, ``n_epochs`` and ``n_neighbors``.
    """
    n_ref = X_ref.shape[0]
    if reference.shape[0] != n_ref:
        msg = f"reference has {reference.shape[0]} rows; X_ref has {n_ref}."
        raise ValueError(msg)
    k = min(int(n_neighbors), n_ref)
    epochs = default_transform_epochs(X_query.shape[0]) if n_epochs is None else int(n_epochs)
    from .knn import query_knn

    indices, dists, backend = query_knn(
        X_ref,
        X_query,
        k,
        backend=knn_backend,
        metric=metric,
        metric_kwds=metric_kwds,
        random_state=seed,
        n_jobs=n_jobs,
    )
    if not np.isfinite(dists).all():
        msg = (
            f"the {metric!r} distances between query and reference contain NaN/inf (e.g. cosine "
            "or correlation of an all-zero or constant row); choose another metric."
        )
        raise ValueError(msg)
    weights = bipartite_graph(dists)
    init = init_positions(indices, weights, reference)
    Y = optimize_transform(
        indices,
        weights,
        init,
        reference,
        a=a,
        b=b,
        n_epochs=epochs,
        alpha=alpha / 4.0,
        gamma=gamma,
        negative_sample_rate=negative_sample_rate,
        seed=seed,
        n_jobs=n_jobs,
        progress=progress,
    )
    return Y, {"knn_backend": backend, "n_epochs": epochs, "n_neighbors": k}
