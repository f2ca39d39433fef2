"""``annumap.pp.neighbors``: a drop-in for ``scanpy.pp.neighbors``."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

from .._anndata import (
    check_adata,
    materialize,
    neighbors_representation,
    neighbors_storage_keys,
)
from .._docs import doc_adata, doc_copy, inject
from .._random import RandomStateLike, resolve_seed
from .._types import KnnTransformerLike

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["neighbors"]

logger = logging.getLogger("annumap")

_METHODS = ("umap", "gauss")
_TRANSFORMERS = ("exact", "sklearn", "nndescent", "pynndescent")


def _check_distances(
    distances: Any, n_obs: int, use_rep: Any, n_pcs: Any, knn: bool, transformer: Any
) -> np.ndarray | sparse.csr_matrix:
    """A precomputed distance matrix checked for shape, type and values (not modified)."""
    from .._anndata import check_sparse_structure

    given = [
        name
        for name, value, default in (
            ("use_rep", use_rep, None),
            ("n_pcs", n_pcs, None),
            ("knn", knn, True),
            ("transformer", transformer, None),
        )
        if value is not default
    ]
    if given:
        msg = (
            f"distances= gives the neighbours directly; {', '.join(given)} cannot be combined "
            "with it."
        )
        raise ValueError(msg)
    if sparse.issparse(distances):
        check_sparse_structure(distances, "distances")
        D = distances
        values = np.asarray(D.data) if hasattr(D, "data") else sparse.coo_matrix(D).data
    elif isinstance(distances, np.ndarray):
        D = values = distances
    else:
        msg = (
            "distances must be a numpy array or a scipy sparse matrix, got "
            f"{type(distances).__name__}."
        )
        raise TypeError(msg)
    if D.ndim != 2 or D.shape != (n_obs, n_obs):
        msg = f"distances has shape {D.shape}; expected ({n_obs}, {n_obs}) for n_obs={n_obs}."
        raise ValueError(msg)
    if values.dtype.kind not in "biuf":
        msg = f"distances has dtype {values.dtype}; distances must be real numbers."
        raise TypeError(msg)
    if values.size and not np.isfinite(values).all():
        msg = f"distances contains {int((~np.isfinite(values)).sum())} NaN/inf values."
        raise ValueError(msg)
    if values.size and values.min() < 0:
        msg = f"distances contains {int((values < 0).sum())} negative values."
        raise ValueError(msg)
    return D


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
    distances: np.ndarray | sparse.spmatrix | None = None,
    use_rep: str | None = None,
    knn: bool = True,
    method: str = "umap",
    transformer: str | KnnTransformerLike | None = None,
    metric: str = "euclidean",
    metric_kwds: Mapping[str, Any] = MappingProxyType({}),
    random_state: RandomStateLike = 0,
    key_added: str | None = None,
    copy: bool = False,
    n_jobs: int | None = None,
    rng: int | np.random.Generator | np.random.RandomState | None = None,
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
    distances
        A precomputed (n_obs, n_obs) distance matrix (scanpy >= 1.12): dense, or sparse with
        the candidate neighbours of each row stored (at least ``n_neighbors - 1`` per row; a
        stored 0 is a duplicate). The graph is built from each row's ``n_neighbors - 1``
        smallest off-diagonal entries; no search runs, and ``use_rep``, ``n_pcs``,
        ``transformer`` and ``knn=False`` cannot be combined with it. ``metric`` is only
        recorded.
    use_rep
        ``'X'`` or an ``.obsm`` key. By default ``.X`` when it has at most 50 variables, else
        ``.obsm['X_pca']``, else a PCA of ``.X`` (``n_pcs`` components, default 50) computed
        with a warning and stored as ``scanpy.pp.neighbors`` stores it (``.obsm['X_pca']``,
        ``.varm['PCs']``, ``.uns['pca']``), so ``tl.umap`` and ``tl.umap_transform`` reuse it.
    knn
        Restrict the graph to the k nearest neighbours. ``False`` is only valid with
        ``method='gauss'`` and no ``transformer`` (as in scanpy): the Gaussian kernel is then
        evaluated on all pairs (weights at or below 1e-14 set to 0) and, as scanpy stores them,
        both ``connectivities`` (1 on the diagonal) and ``distances`` (all pairs) are dense
        (n_obs, n_obs) arrays: memory grows as ``n_obs**2``.
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
        Seed of the approximate search and of a PCA computed here: an int, ``None`` (a seed is
        drawn), or a :class:`numpy.random.RandomState` / :class:`numpy.random.Generator` (one
        seed is drawn from it). The seed used is stored. The exact search does not depend on it.
    n_jobs
        Threads for this call (``None`` = all cores). The automatic, ``'exact'`` and
        ``'nndescent'`` searches give bit-identical graphs for any ``n_jobs`` (each parallel
        loop writes only what it owns); ``'pynndescent'`` and external transformers do not
        promise that.
    key_added
        Store under ``.uns[key_added]``, ``.obsp[key_added + '_distances']`` and
        ``.obsp[key_added + '_connectivities']`` instead of the default names.
    {copy}
    rng
        scanpy 1.13's name for ``random_state`` (an int, ``SeedSequence``, ``Generator`` or
        ``RandomState``); used when given, and giving both is a TypeError.

    Returns
    -------
    ``None``, or a new AnnData (of the input's class) if ``copy=True``. Sets:

    ``.obsp['distances']`` : :class:`scipy.sparse.csr_matrix`, float32
        kNN distances, exactly ``n_neighbors - 1`` stored entries per row (a duplicate point's
        zero distance is stored), no diagonal. With ``knn=False`` a dense array of all pairs.
    ``.obsp['connectivities']`` : :class:`scipy.sparse.csr_matrix`, float32
        Symmetric weighted adjacency matrix, zero diagonal. With ``knn=False`` a dense array
        with 1 on the diagonal.
    ``.uns['neighbors']`` : dict
        ``connectivities_key``, ``distances_key`` and ``params`` (``n_neighbors``, ``method``,
        ``random_state`` (the seed used), ``metric``, and ``metric_kwds``, ``use_rep``,
        ``n_pcs`` when given; ``knn_backend`` names the search that ran).
    ``.obsm['X_pca']``, ``.varm['PCs']``, ``.uns['pca']``
        Only when a PCA was computed here (see ``use_rep``).

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
    if not knn and transformer is not None:
        msg = (
            "knn=False evaluates the Gaussian kernel on all pairs and takes no transformer "
            f"(as in scanpy); got transformer={transformer!r}. Pass transformer=None."
        )
        raise ValueError(msg)
    uns_key, conn_key, dist_key = neighbors_storage_keys(key_added)
    seed = resolve_seed(random_state, rng)
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

    if distances is not None:
        D = _check_distances(distances, adata.n_obs, use_rep, n_pcs, knn, transformer)
        X, where, pca_fields = None, "the given distances", None
    else:
        X, where, pca_fields = neighbors_representation(adata, use_rep, n_pcs, random_state=seed)

    from .._core.knn._dask import dask_exact_knn, is_dask_array

    lazy = X is not None and is_dask_array(X)
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
    if distances is not None:
        from .._core.precomputed import knn_from_distances

        backend = "precomputed"
        indices, dists = knn_from_distances(D, n_neighbors)
    elif lazy:
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
    if method == "umap":
        dist_matrix = knn_to_csr(indices, dists, adata.n_obs)
        connectivities = fuzzy_simplicial_set(indices, dists)
    elif knn:
        dist_matrix = knn_to_csr(indices, dists, adata.n_obs)
        connectivities = gauss_connectivities(indices, dists)
    else:
        from .._core.fuzzy import gauss_dense

        connectivities, dist_matrix = gauss_dense(X, dists, metric=metric, metric_kwds=metric_kwds)
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
    if pca_fields is not None:
        pca_fields.write(target)
    target.uns[uns_key] = {
        "connectivities_key": conn_key,
        "distances_key": dist_key,
        "params": params,
    }
    target.obsp[dist_key] = dist_matrix
    target.obsp[conn_key] = connectivities
    return target if copy else None
