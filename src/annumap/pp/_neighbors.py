"""``annumap.pp.neighbors``: a drop-in for ``scanpy.pp.neighbors``."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

from .._anndata import (
    check_adata,
    choose_representation,
    materialize,
    neighbors_storage_keys,
)
from .._docs import doc_adata, doc_copy, inject
from .._types import KnnTransformerLike

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["neighbors"]

logger = logging.getLogger("annumap")

_METHODS = ("umap", "gauss")
_TRANSFORMERS = ("exact", "sklearn", "nndescent", "pynndescent")
#: Largest accepted seed: numpy's legacy range, which pynndescent and scanpy use.
_MAX_SEED = 2**32 - 1


def _check_seed(random_state: Any) -> int:
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(random_state, bool) or not isinstance(random_state, int | np.integer):
        msg = f"random_state must be an int or None, got {type(random_state).__name__}."
        raise TypeError(msg)
    if not 0 <= random_state <= _MAX_SEED:
        msg = (
            f"random_state must be in [0, 2**32 - 1] (numpy's seed range; it is stored in "
            f".uns and must fit an int64 there), got {random_state}."
        )
        raise ValueError(msg)
    return int(random_state)


def _storable_metric_kwds(metric_kwds: dict[Any, Any]) -> dict[str, Any]:
    """The metric options as stored in ``.uns`` (h5ad/zarr-writable), or raise naming the entry."""
    out: dict[str, Any] = {}
    for name, value in metric_kwds.items():
        if not isinstance(name, str):
            msg = f"metric_kwds keys must be str (option names), got {name!r}."
            raise TypeError(msg)
        if isinstance(value, list | tuple | np.ndarray):
            arr = np.asarray(value)
            if arr.dtype.kind not in "biuf":
                msg = f"metric_kwds[{name!r}] must be numeric to be stored, got dtype {arr.dtype}."
                raise TypeError(msg)
            out[name] = arr
        elif isinstance(value, bool | int | float | str | np.integer | np.floating | np.bool_):
            out[name] = value.item() if isinstance(value, np.generic) else value
        else:
            msg = (
                f"metric_kwds[{name!r}] is a {type(value).__name__}; only numbers, strings and "
                "numeric arrays can be stored in .uns['neighbors']['params']."
            )
            raise TypeError(msg)
    return out


@inject(adata=doc_adata, copy=doc_copy)
def neighbors(
    adata: AnnData,
    n_neighbors: int = 15,
    n_pcs: int | None = None,
    *,
    use_rep: str | None = None,
    knn: bool = True,
    method: str = "umap",
    transformer: str | KnnTransformerLike | None = None,
    metric: str = "euclidean",
    metric_kwds: Mapping[str, Any] | None = None,
    random_state: int | None = 0,
    key_added: str | None = None,
    copy: bool = False,
    n_jobs: int | None = None,
) -> AnnData | None:
    """Compute a k-nearest-neighbour graph and its UMAP (or Gaussian) connectivities.

    A drop-in for :func:`scanpy.pp.neighbors`: the same parameters, defaults and storage, so
    ``scanpy.tl.leiden``, ``scanpy.tl.paga`` and ``scanpy.tl.umap`` run on the result and
    :func:`annumap.tl.umap` runs on scanpy's. The search is exact (chunked float32 BLAS with a
    float64 re-check) where that is cheap, and annumap's own NN-descent above (numba kernels
    cached on disk, deterministic for any ``n_jobs``). A Dask array as the representation is
    searched exactly, block by block, through Dask (e.g. on a ``dask.distributed`` cluster).

    Parameters
    ----------
    {adata}
    n_neighbors
        Size of the neighbourhood, the point itself included (scanpy's convention: each row of
        ``distances`` holds ``n_neighbors - 1`` neighbours). Larger values give more global
        structure. Shrunk to ``1 + n_obs // 2`` with a warning when larger than ``n_obs``.
    n_pcs
        Use this many principal components of ``.obsm['X_pca']`` (or of ``use_rep``); ``0``
        means ``.X``.
    use_rep
        ``'X'`` or an ``.obsm`` key. By default ``.X`` when it has at most 50 variables, else
        ``.obsm['X_pca']``, else a PCA computed with a warning (not stored).
    knn
        Restrict the graph to the k nearest neighbours. ``False`` is only valid with
        ``method='gauss'``: the Gaussian kernel is then evaluated on all pairs (weights below
        1e-14 dropped) while ``distances`` still holds the kNN distances.
    method
        ``'umap'`` (fuzzy simplicial set, McInnes et al. 2018) or ``'gauss'`` (Coifman et al.
        2005, as in Haghverdi et al. 2016).
    transformer
        ``None`` (automatic: exact below 4096 cells or when ``n_obs**2 * n_features <= 1.2e10``
        - about 15,000 cells x 50 - else ``'nndescent'`` for euclidean, cosine and correlation;
        exact below 4096 cells and pynndescent above for other metrics), ``'exact'`` (alias
        ``'sklearn'``), ``'nndescent'`` (annumap's NN-descent: recall ~0.99 of the exact
        neighbours at 70k-1M cells), ``'pynndescent'`` (umap-learn's index sizing), or an object
        with the scikit-learn ``KNeighborsTransformer`` API (its own ``n_neighbors`` and metric
        apply). With a Dask representation only ``None`` or ``'exact'``: the search runs
        blockwise through Dask (one task per row block against the whole matrix) and equals the
        in-memory exact search; needs the ``dask`` extra.
    metric
        Distance metric: ``'euclidean'``, ``'cosine'``, ``'manhattan'``, ``'correlation'`` and any
        other name scikit-learn (exact) or pynndescent knows.
    metric_kwds
        Options for the metric (e.g. ``{{'p': 3}}`` for minkowski).
    random_state
        Seed of the approximate search (an int; ``None`` draws one and stores it). The exact
        search does not depend on it.
    n_jobs
        Threads for this call (``None`` = all cores). The automatic, ``'exact'`` and
        ``'nndescent'`` searches give bit-identical graphs for any ``n_jobs`` (each parallel
        loop writes only what it owns); ``'pynndescent'`` and external transformers do not
        promise that.
    key_added
        Store under ``.uns[key_added]``, ``.obsp[key_added + '_distances']`` and
        ``.obsp[key_added + '_connectivities']`` instead of the default names.
    {copy}

    Returns
    -------
    ``None``, or a new AnnData if ``copy=True``. Sets:

    ``.obsp['distances']`` : :class:`scipy.sparse.csr_matrix`, float32
        kNN distances, exactly ``n_neighbors - 1`` stored entries per row (a duplicate point's
        zero distance is stored), no diagonal.
    ``.obsp['connectivities']`` : :class:`scipy.sparse.csr_matrix`, float32
        Symmetric weighted adjacency matrix, zero diagonal.
    ``.uns['neighbors']`` : dict
        ``connectivities_key``, ``distances_key`` and ``params`` (``n_neighbors``, ``method``,
        ``random_state``, ``metric``, and ``metric_kwds``, ``use_rep``, ``n_pcs`` when given;
        ``knn_backend`` names the search that ran).

    Examples
    --------
    >>> import scanpy as sc, annumap
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> annumap.pp.neighbors(adata, n_neighbors=15)
    >>> sc.tl.leiden(adata)  # doctest: +SKIP
    """
    from .._core._numba import resolve_n_jobs
    from .._core.fuzzy import fuzzy_simplicial_set, gauss_connectivities, knn_to_csr
    from .._core.knn import ALIASES, EXACT_METRICS, METRICS, choose_backend
    from .._core.knn import knn as run_knn

    # ---- validate everything before any work or write
    check_adata(adata)
    if not isinstance(copy, bool):
        msg = f"copy must be a bool, got {type(copy).__name__}."
        raise TypeError(msg)
    if method not in _METHODS:
        msg = f"method must be one of {_METHODS}, got {method!r}."
        raise ValueError(msg)
    if not isinstance(knn, bool):
        msg = f"knn must be a bool, got {type(knn).__name__}."
        raise TypeError(msg)
    if not knn and method != "gauss":
        msg = "knn=False is only valid with method='gauss' (as in scanpy)."
        raise ValueError(msg)
    uns_key, conn_key, dist_key = neighbors_storage_keys(key_added)
    seed = _check_seed(random_state)
    resolve_n_jobs(n_jobs)
    if metric_kwds is not None and not isinstance(metric_kwds, Mapping):
        msg = f"metric_kwds must be a mapping or None, got {type(metric_kwds).__name__}."
        raise TypeError(msg)
    metric_kwds = dict(metric_kwds or {})
    stored_kwds = _storable_metric_kwds(metric_kwds)

    instance = None
    if transformer is not None and not isinstance(transformer, str):
        if not isinstance(transformer, KnnTransformerLike):
            msg = (
                "transformer must be None, one of "
                f"{_TRANSFORMERS}, or an object with fit_transform() and get_params() "
                f"(scikit-learn KNeighborsTransformer API); got {type(transformer).__name__}."
            )
            raise TypeError(msg)
        instance = transformer
        n_neighbors = transformer.get_params().get("n_neighbors")
        if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int | np.integer):
            msg = (
                f"transformer {type(transformer).__name__} must report an int n_neighbors in "
                f"get_params() (the number of neighbours it returns), got {n_neighbors!r}."
            )
            raise TypeError(msg)
        n_neighbors = int(n_neighbors)
    else:
        if transformer is not None and transformer not in _TRANSFORMERS:
            msg = (
                f"transformer must be None, one of {_TRANSFORMERS} or an instance, "
                f"got {transformer!r}."
            )
            raise ValueError(msg)
        if not isinstance(metric, str):
            msg = f"metric must be a str, got {type(metric).__name__}."
            raise TypeError(msg)
        if metric not in METRICS:
            msg = f"unknown metric {metric!r}; valid metrics: {sorted(METRICS)}."
            raise ValueError(msg)
        if ALIASES.get(transformer) == "exact" and metric not in EXACT_METRICS:
            msg = (
                f"metric {metric!r} is not available to the exact search; use "
                "transformer='pynndescent' or one of " + str(sorted(EXACT_METRICS))
            )
            raise ValueError(msg)
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int | np.integer):
        msg = f"n_neighbors must be an int, got {type(n_neighbors).__name__}."
        raise TypeError(msg)
    n_neighbors = int(n_neighbors)
    if n_neighbors < 2:
        msg = f"n_neighbors must be >= 2 (the point itself plus at least one), got {n_neighbors}."
        raise ValueError(msg)
    if n_neighbors > adata.n_obs and instance is None:
        new = 1 + adata.n_obs // 2
        warnings.warn(
            f"n_neighbors={n_neighbors} exceeds n_obs={adata.n_obs}: using n_neighbors={new} "
            "(as scanpy does).",
            UserWarning,
            stacklevel=2,
        )
        n_neighbors = new

    X, where = choose_representation(adata, use_rep, n_pcs, random_state=seed)
    from .._core.knn._dask import dask_exact_knn, is_dask_array

    lazy = is_dask_array(X)
    if lazy and (instance is not None or ALIASES.get(transformer, "exact") != "exact"):
        msg = (
            f"{where} is a Dask array: it is searched blockwise by the exact backend, so "
            f"transformer must be None or 'exact', got {transformer!r}."
        )
        raise ValueError(msg)
    if lazy and not knn:
        msg = f"{where} is a Dask array: knn=False (all pairs) is not supported for it."
        raise ValueError(msg)

    # ---- compute
    start = time.perf_counter()
    if lazy:
        backend = "exact"
        indices, dists = dask_exact_knn(
            X, n_neighbors, metric=metric, metric_kwds=metric_kwds, n_jobs=n_jobs
        )
    elif instance is not None:
        from .._core.knn._transformer import transformer_knn

        backend = type(instance).__name__
        indices, dists = transformer_knn(X, n_neighbors, instance)
    else:
        backend = ALIASES.get(transformer) or choose_backend(
            X.shape[0], X.shape[1], metric, is_sparse=sparse.issparse(X)
        )
        try:
            indices, dists = run_knn(
                X,
                n_neighbors,
                backend=backend,
                metric=metric,
                metric_kwds=metric_kwds,
                random_state=seed,
                n_jobs=n_jobs,
            )
        except (TypeError, ValueError) as err:
            # e.g. a metric_kwds entry the metric does not take, or a metric that needs one
            msg = (
                f"the {backend} kNN search with metric={metric!r}, metric_kwds={metric_kwds!r} "
                f"failed on {where}: {type(err).__name__}: {err}"
            )
            raise (TypeError if isinstance(err, TypeError) else ValueError)(msg) from err
    if not np.isfinite(dists).all():
        msg = (
            f"the {metric!r} distances of {where} contain NaN/inf (e.g. cosine or correlation of "
            "an all-zero or constant observation); choose another metric or drop those rows."
        )
        raise ValueError(msg)
    distances = knn_to_csr(indices, dists, adata.n_obs)
    if method == "umap":
        connectivities = fuzzy_simplicial_set(indices, dists)
    elif knn:
        connectivities = gauss_connectivities(indices, dists)
    else:
        from .._core.fuzzy import gauss_dense

        connectivities = gauss_dense(X, indices, dists, metric=metric, metric_kwds=metric_kwds)
    logger.info(
        "neighbors: %s search (%s) on %s, %d cells, k=%d, %.2f s",
        backend,
        metric,
        where,
        adata.n_obs,
        n_neighbors,
        time.perf_counter() - start,
    )

    params: dict[str, Any] = {
        "n_neighbors": n_neighbors,
        "method": method,
        "random_state": seed,
        "metric": metric if instance is None else str(instance.get_params().get("metric", metric)),
        "knn_backend": backend,
    }
    if metric_kwds:
        params["metric_kwds"] = stored_kwds
    if use_rep is not None:
        params["use_rep"] = use_rep
    if n_pcs is not None:
        params["n_pcs"] = int(n_pcs)

    # ---- write, all at once
    target = adata.copy() if copy else adata
    materialize(target)
    target.uns[uns_key] = {
        "connectivities_key": conn_key,
        "distances_key": dist_key,
        "params": params,
    }
    target.obsp[dist_key] = distances
    target.obsp[conn_key] = connectivities
    return target if copy else None
