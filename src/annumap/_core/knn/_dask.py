"""Exact k-nearest neighbours of a Dask array, computed blockwise through Dask.

Each row block of the data is one task: the exact search (:func:`._exact.exact_knn`) of that
block's rows against the whole matrix, which every task receives as one chunk. A task's result
is therefore bit-identical to the same rows of the in-memory exact search, and the graph is the
same whatever the chunking or the scheduler (threads, processes, ``dask.distributed``).

Cost: ``n_obs**2 * n_features`` multiply-adds in all, spread over the tasks; memory per task:
the whole matrix (float32 and float64 copies, ~20 bytes per value), one block's distance chunk
(bounded by :data:`._exact.CHUNK_BYTES`) and the block's result.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

__all__ = ["dask_exact_knn", "is_dask_array"]


def is_dask_array(X: Any) -> bool:
    """Whether ``X`` is a :class:`dask.array.Array` (without importing Dask)."""
    return type(X).__module__.split(".")[0] == "dask" and hasattr(X, "chunks")


def _block(ref: np.ndarray, start: int, stop: int, n_neighbors: int, metric: str,
           metric_kwds: dict[str, Any] | None, n_jobs: int | None):  # fmt: skip
    from ._exact import exact_knn

    ref = np.asarray(ref)
    block = ref[start:stop]
    if block.dtype.kind == "f" and not np.isfinite(block).all():
        bad = start + np.flatnonzero(~np.isfinite(block).all(axis=1))
        msg = f"rows {bad[:5].tolist()} of the Dask array contain NaN or infinite values."
        raise ValueError(msg)
    rows = np.arange(start, stop, dtype=np.int64)
    return exact_knn(
        ref, n_neighbors, metric=metric, metric_kwds=metric_kwds, n_jobs=n_jobs, rows=rows
    )


def dask_exact_knn(
    X: Any,
    n_neighbors: int,
    *,
    metric: str = "euclidean",
    metric_kwds: dict[str, Any] | None = None,
    n_jobs: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact neighbours of every row of the Dask array ``X``, one task per row block.

    Parameters
    ----------
    X
        (n_obs, n_features) :class:`dask.array.Array`, any chunking (rows are searched in the
        blocks of ``X.chunks[0]``).
    n_neighbors
        Neighbours per row, the row itself included (column 0).
    metric, metric_kwds
        As :func:`._exact.exact_knn`.
    n_jobs
        Threads per task (None = all of the worker's).

    Returns
    -------
    indices, distances
        (n_obs, n_neighbors) int64 and float32 NumPy arrays, equal to ``exact_knn(X.compute())``.
    """
    import dask
    import dask.array as da

    if X.ndim != 2:
        msg = f"the Dask array must be 2-dimensional, got shape {X.shape}."
        raise ValueError(msg)
    if X.dtype.kind not in "biuf":
        msg = f"the Dask array has dtype {X.dtype}; a numeric matrix is needed."
        raise TypeError(msg)
    X = X.astype(np.float32) if X.dtype.kind in "biu" or X.dtype.itemsize < 4 else X
    n_obs = X.shape[0]
    whole = da.rechunk(X, (n_obs, X.shape[1])).to_delayed().ravel()[0]
    bounds = np.cumsum((0, *X.chunks[0]))
    tasks = [
        dask.delayed(_block, pure=True)(
            whole, int(lo), int(hi), int(n_neighbors), metric, metric_kwds, n_jobs
        )
        for lo, hi in itertools.pairwise(bounds)
        if hi > lo
    ]
    parts = dask.compute(*tasks)
    indices = np.concatenate([p[0] for p in parts])
    distances = np.concatenate([p[1] for p in parts])
    return indices, distances
