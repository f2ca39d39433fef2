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

__all__ = ["BACKENDS", "METRICS", "choose_backend", "knn"]

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

#: Above this many multiply-adds (n_obs**2 * n_features) the automatic choice is NN-descent.
#: Trade-off measured on the 2-core development machine, MNIST 70k x 50 (2.45e11): exact search
#: ~9 s in any process; pynndescent ~2 s warm but ~33 s in a fresh process (JIT compilation that
#: it does not cache). The bound keeps the first call of a session short and the result exact.
EXACT_MAX_WORK = 2.5e11


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


BACKENDS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "exact": _run_exact,
    "pynndescent": _run_nndescent,
}
#: Accepted spellings of backend names.
ALIASES = {"sklearn": "exact", "exact": "exact", "pynndescent": "pynndescent"}


def choose_backend(n_obs: int, n_features: int, metric: str, *, is_sparse: bool) -> str:
    """The automatic backend: exact where it is cheap (no JIT warm-up), else NN-descent."""
    if metric not in EXACT_METRICS:
        return "pynndescent"
    if metric not in BLAS_METRICS:
        return "exact" if n_obs < 4096 else "pynndescent"
    if is_sparse and 8.0 * n_obs * n_features > DENSE_BYTES:
        return "pynndescent"
    return "exact" if float(n_obs) ** 2 * n_features <= EXACT_MAX_WORK else "pynndescent"


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
