"""k-nearest-neighbour backends behind one registry and one signature.

Every backend takes ``(X, n_neighbors, *, metric, metric_kwds, random_state, n_jobs)`` and returns
``(indices, distances)``: (n_obs, n_neighbors) int64 and float32 arrays, ascending per row, with
the point itself in column 0 (scanpy's convention: ``n_neighbors`` counts the point).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import sparse

from ._exact import BLAS_METRICS, DENSE_BYTES

__all__ = ["BACKENDS", "METRICS", "choose_backend", "knn", "query_knn"]

#: Metrics that scikit-learn's ``pairwise_distances`` evaluates exactly (dense input).
EXACT_METRICS = frozenset(
    {
        "braycurtis", "canberra", "chebyshev", "cityblock", "correlation", "cosine", "dice",
        "euclidean", "hamming", "jaccard", "l1", "l2", "manhattan", "matching", "minkowski",
        "rogerstanimoto", "russellrao", "sokalsneath", "sqeuclidean", "yule",
    }
)  # fmt: skip
#: Metrics pynndescent knows by name (pynndescent 0.7 ``named_distances``).
PYNNDESCENT_METRICS = frozenset(
    {
        "bit_hamming", "bit_jaccard", "braycurtis", "canberra", "chebyshev",
        "circular_kantorovich", "circular_wasserstein", "correlation", "cosine", "dice",
        "direct_cosine", "dot", "euclidean", "hamming", "haversine", "hellinger",
        "inner_product", "jaccard", "jensen-shannon", "jensen_shannon", "kantorovich",
        "kantorovich-1d", "kantorovich_1d", "kulsinski", "l1", "l2", "linf", "linfinity", "linfty",
        "mahalanobis", "manhattan", "matching", "minkowski", "rogerstanimoto", "russellrao",
        "seuclidean", "sinkhorn", "sokalmichener", "sokalsneath", "spearmanr", "sqeuclidean",
        "standardised_euclidean", "symmetric-kl", "symmetric_kl", "symmetric_kullback_liebler",
        "taxicab", "true_angular", "tsss", "wasserstein", "wasserstein-1d", "wasserstein_1d",
        "weighted_minkowski", "wminkowski", "yule",
    }
)  # fmt: skip
METRICS = EXACT_METRICS | PYNNDESCENT_METRICS

#: Above this many multiply-adds (n_obs * n_query * n_features) the automatic choice is our
#: NN-descent (:mod:`._nndescent`) rather than the exact search. Measured on the 2-core
#: development machine (MNIST PCA-50 subsets, warm): NN-descent is already faster at 5,000
#: cells (0.39 vs 0.50 s) and 2x faster at 10,000 (0.9 vs 1.9 s); the exact search grows as
#: n**2 (30 s at 70,000 vs 6 s). The bound keeps the exact result where it costs about a
#: second (~15,000 cells x 50). Tests lower it to reach the approximate path.
EXACT_MAX_WORK = 1.2e10
#: Below this many rows the exact search is always used (NN-descent needs a few leaves).
EXACT_MIN_ROWS = 4096


def _run_exact(X, n_neighbors, *, metric, metric_kwds, random_state, n_jobs):
    from ._exact import exact_knn

    del random_state  # exact search is deterministic
    return exact_knn(X, n_neighbors, metric=metric, metric_kwds=metric_kwds, n_jobs=n_jobs)


def _run_nndescent(X, n_neighbors, *, metric, metric_kwds, random_state, n_jobs):
    from ._pynndescent import pynndescent_knn

    return pynndescent_knn(
        X,
        n_neighbors,
        metric=metric,
        metric_kwds=metric_kwds,
        random_state=random_state,
        n_jobs=n_jobs,
    )


def _run_ours(X, n_neighbors, *, metric, metric_kwds, random_state, n_jobs):
    from ._nndescent import nndescent_knn

    del metric_kwds  # the NN-descent metrics take no options
    return nndescent_knn(X, n_neighbors, metric=metric, random_state=random_state, n_jobs=n_jobs)


BACKENDS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "exact": _run_exact,
    "nndescent": _run_ours,
    "pynndescent": _run_nndescent,
}
#: Accepted spellings of backend names.
ALIASES = {
    "sklearn": "exact",
    "exact": "exact",
    "nndescent": "nndescent",
    "pynndescent": "pynndescent",
}


def choose_backend(
    n_obs: int,
    n_features: int,
    metric: str,
    *,
    is_sparse: bool,
    n_query: int | None = None,
) -> str:
    """The automatic backend, for ``pp.neighbors`` and for the transform's query search.

    ``'exact'`` where a brute-force search is cheap (``n_obs * n_query * n_features <=``
    :data:`EXACT_MAX_WORK`, ``n_query`` = ``n_obs`` for a kNN graph), else ``'nndescent'``
    (our deterministic NN-descent) for euclidean, cosine and correlation, and ``'pynndescent'``
    for other metrics and for sparse data too large to densify.
    """
    n_query = n_obs if n_query is None else n_query
    if metric not in EXACT_METRICS:
        return "pynndescent"
    if metric not in BLAS_METRICS:
        return "exact" if float(n_obs) * n_query <= float(EXACT_MIN_ROWS) ** 2 else "pynndescent"
    work = float(n_obs) * n_query * n_features
    if min(n_obs, n_query) < EXACT_MIN_ROWS or work <= EXACT_MAX_WORK:
        return "exact"
    if is_sparse and 4.0 * (n_obs + n_query) * n_features > DENSE_BYTES:
        return "pynndescent"
    return "nndescent"


def knn(
    X: np.ndarray | sparse.spmatrix,
    n_neighbors: int,
    *,
    backend: str,
    metric: str = "euclidean",
    metric_kwds: dict[str, Any] | None = None,
    random_state: int = 0,
    n_jobs: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the backend ``backend`` (a key of :data:`BACKENDS`)."""
    try:
        fn = BACKENDS[backend]
    except KeyError:
        msg = f"unknown kNN backend {backend!r}; valid: {sorted(BACKENDS)}."
        raise ValueError(msg) from None
    return fn(
        X,
        n_neighbors,
        metric=metric,
        metric_kwds=metric_kwds,
        random_state=random_state,
        n_jobs=n_jobs,
    )


def query_knn(
    X_ref: np.ndarray | sparse.spmatrix,
    X_query: np.ndarray | sparse.spmatrix,
    n_neighbors: int,
    *,
    backend: str = "auto",
    metric: str = "euclidean",
    metric_kwds: dict[str, Any] | None = None,
    random_state: int = 0,
    n_jobs: int | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """The ``n_neighbors`` nearest reference rows of each query row.

    The backends of :func:`knn` with the same automatic choice (:func:`choose_backend` with
    ``n_query``).

    ``'pynndescent'`` builds an index of the reference with :func:`._pynndescent.index_settings`
    and queries it with umap-learn's ``epsilon`` (0.12, or 0.24 for angular metrics). Returns
    int64 indices, float32 distances (ascending per row) and the backend that ran.
    """
    if backend == "auto":
        backend = choose_backend(
            X_ref.shape[0],
            X_ref.shape[1],
            metric,
            is_sparse=sparse.issparse(X_ref) or sparse.issparse(X_query),
            n_query=X_query.shape[0],
        )
    backend = ALIASES.get(backend, backend)
    if backend == "exact":
        from ._exact import exact_query_knn

        idx, dist = exact_query_knn(
            X_ref, X_query, n_neighbors, metric=metric, metric_kwds=metric_kwds, n_jobs=n_jobs
        )
    elif backend == "nndescent":
        from ._nndescent import nndescent_query_knn

        idx, dist = nndescent_query_knn(
            X_ref, X_query, n_neighbors, metric=metric, random_state=random_state, n_jobs=n_jobs
        )
    elif backend == "pynndescent":
        from ._pynndescent import pynndescent_query_knn

        idx, dist = pynndescent_query_knn(
            X_ref,
            X_query,
            n_neighbors,
            metric=metric,
            metric_kwds=metric_kwds,
            random_state=random_state,
            n_jobs=n_jobs,
        )
    else:
        msg = f"unknown kNN backend {backend!r}; valid: {['auto', *sorted(BACKENDS)]}."
        raise ValueError(msg)
    return idx, dist, backend
