"""``annumap.tl.umap_transform``: place new cells into a reference UMAP without recomputing it."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy import sparse

from .._anndata import (
    check_adata,
    check_finite,
    choose_representation,
    materialize,
    representation_rule,
    stored_representation,
)
from .._anndata import stored_scalar as _scalar
from .._docs import doc_copy, doc_n_jobs, inject
from .._random import RandomStateLike, resolve_seed
from ._umap import _int

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["umap_inverse_transform", "umap_transform"]

logger = logging.getLogger("annumap")

_METHODS = ("auto", "umap", "parametric")
_REPRESENTATIONS = ("auto", "project", "query")
_KNN_BACKENDS = ("auto", "exact", "nndescent", "pynndescent")
#: Reference rows used to check that ``.X @ .varm['PCs']`` reproduces ``.obsm['X_pca']``.
_CHECK_ROWS = 2000
#: Largest deviation accepted in that check, relative to the largest score of the checked rows
#: (a randomized PCA solver's scores deviate by ~1% from the exact projection).
_CHECK_TOL = 0.05


def _check_query(adata: Any) -> None:
    from anndata import AnnData

    if not isinstance(adata, AnnData):
        msg = f"adata_query must be an AnnData, got {type(adata).__name__}."
        raise TypeError(msg)
    if adata.isbacked:
        msg = (
            "adata_query is backed by a file (opened with backed='r'); the embedding is written "
            "into it: call `adata_query = adata_query.to_memory()` first."
        )
        raise ValueError(msg)
    if adata.n_obs < 1:
        msg = "adata_query has no observations."
        raise ValueError(msg)


def _choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        msg = f"{name} must be one of {choices}, got {value!r}."
        raise ValueError(msg)
    return value


def _key(value: Any, name: str) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        msg = f"{name} must be a non-empty str or None, got {value!r}."
        raise ValueError(msg)
    return value


def _reference_embedding(ref: AnnData, obsm_key: str) -> np.ndarray:
    if obsm_key not in ref.obsm:
        msg = (
            f"adata_ref.obsm has no {obsm_key!r} (keys: {list(ref.obsm)}); run "
            "annumap.tl.umap(adata_ref) first, or pass umap_key= naming the reference embedding."
        )
        raise KeyError(msg)
    Y = np.asarray(ref.obsm[obsm_key])
    if Y.ndim != 2 or Y.shape[0] != ref.n_obs or Y.dtype.kind not in "biuf":
        msg = f"adata_ref.obsm[{obsm_key!r}] must be a numeric (n_obs, n_components) array."
        raise ValueError(msg)
    check_finite(Y, f"adata_ref.obsm[{obsm_key!r}]", ref.obs_names)
    return Y.astype(np.float32)


def _neighbors_params(ref: AnnData, key: str) -> dict[str, Any]:
    info = ref.uns.get(key)
    if not isinstance(info, Mapping):
        msg = (
            f"adata_ref.uns has no neighbors entry {key!r}: the transform repeats the reference's "
            "neighbour search (use_rep, n_pcs, metric, n_neighbors); run annumap.pp.neighbors on "
            "the reference (or pass neighbors_key=)."
        )
        raise KeyError(msg)
    return dict(info.get("params", {}))


def _reference_epochs(umap_params: Mapping[str, Any], n_ref: int) -> int | None:
    """The reference's epochs if they were chosen by the user (``maxiter``), else None.

    ``tl.umap`` records ``maxiter`` when it was given; for files written before it did, stored
    ``n_epochs`` other than the default for ``n_ref`` cells count as custom.
    """
    from .._core.layout import default_n_epochs

    if "maxiter" in umap_params:
        return int(_scalar(umap_params["maxiter"]))
    if "n_epochs" in umap_params:
        n_epochs = int(_scalar(umap_params["n_epochs"]))
        return None if n_epochs == default_n_epochs(n_ref) else n_epochs
    return None


def _resolve_rep(ref: AnnData, params: Mapping[str, Any]) -> tuple[str, int | None]:
    """The representation the reference's neighbours used: ``('X' or an obsm key, n_pcs)``."""
    use_rep, n_pcs = representation_rule(ref, *stored_representation(params))
    if use_rep is None:
        msg = (
            "the reference's neighbours were computed on a PCA that is not stored any more "
            f"(adata_ref has {ref.n_vars} variables and no .obsm['X_pca']), so query cells "
            "cannot be put in the same space. Run annumap.pp.neighbors (which stores the PCA) "
            "or scanpy.pp.pca on the reference, then tl.umap on it again."
        )
        raise ValueError(msg)
    return use_rep, n_pcs


def _aligned_X(query: AnnData, ref: AnnData, needed: np.ndarray | None = None):
    """``adata_query.X`` with the columns in the order of ``adata_ref.var_names``."""
    if query.X is None:
        msg = "adata_query.X is None; the query's expression matrix is needed."
        raise ValueError(msg)
    if query.n_vars == ref.n_vars and (query.var_names == ref.var_names).all():
        return query.X
    names = ref.var_names if needed is None else ref.var_names[needed]
    missing = names.difference(query.var_names)
    if len(missing):
        msg = (
            f"adata_query lacks {len(missing)} of the reference's variables (e.g. "
            f"{list(missing[:5])}); the query needs the same var_names as the reference."
        )
        raise KeyError(msg)
    pos = query.var_names.get_indexer(ref.var_names)
    X = query.X
    if needed is not None:  # variables outside `needed` have zero loadings: fill with zeros
        pos = np.where(needed, pos, -1)
    keep = pos >= 0
    cols = sparse.csr_matrix(
        (np.ones(int(keep.sum())), (pos[keep], np.flatnonzero(keep))),
        shape=(query.n_vars, ref.n_vars),
    )
    return (sparse.csr_matrix(X) @ cols).tocsr() if sparse.issparse(X) else np.asarray(X) @ cols


def _pca_projection(ref: AnnData, n_cols: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Loadings ``(n_vars, n_cols)`` and the offset with ``X_pca = X @ PCs - offset``."""
    if "PCs" not in ref.varm:
        msg = "adata_ref.varm has no 'PCs' (the loadings scanpy.pp.pca stores)"
        raise LookupError(msg)
    if ref.X is None:
        msg = "adata_ref.X is None, so the PCA cannot be checked against it"
        raise LookupError(msg)
    PCs = np.asarray(ref.varm["PCs"], dtype=np.float64)
    if PCs.ndim != 2 or PCs.shape[1] < n_cols:
        msg = f"adata_ref.varm['PCs'] has shape {PCs.shape}; {n_cols} components are needed"
        raise LookupError(msg)
    PCs = PCs[:, :n_cols]
    rows = np.unique(np.linspace(0, ref.n_obs - 1, min(ref.n_obs, _CHECK_ROWS)).astype(np.int64))
    X = ref.X[rows]
    proj = np.asarray(X @ PCs if sparse.issparse(X) else np.asarray(X, np.float64) @ PCs)
    scores = np.asarray(ref.obsm["X_pca"], dtype=np.float64)[rows, :n_cols]
    offset = (proj - scores).mean(axis=0)
    deviation = float(np.abs(proj - offset - scores).max())
    scale = max(float(np.abs(scores).max()), 1e-12)
    if not deviation <= _CHECK_TOL * scale:
        msg = (
            "adata_ref.X @ adata_ref.varm['PCs'] does not reproduce adata_ref.obsm['X_pca'] "
            f"(largest deviation {deviation:.3g} for scores up to {scale:.3g}): .X was changed "
            "after the PCA"
        )
        raise LookupError(msg)
    logger.info("umap_transform: PCA projection checked (deviation %.2g)", deviation)
    return PCs, offset, f"adata_query.X @ adata_ref.varm['PCs'][:, :{n_cols}]"


def _query_representation(
    query: AnnData,
    ref: AnnData,
    rep: str,
    n_pcs: int | None,
    representation: str,
    n_features: int,
) -> tuple[np.ndarray | sparse.spmatrix, str]:
    """The query in the space of the reference's representation (``n_features`` columns)."""
    if rep == "X":
        if representation == "project":
            msg = (
                "representation='project' needs a reference whose neighbours used X_pca; "
                "this one used .X."
            )
            raise ValueError(msg)
        return _query_X(query, ref), "adata_query.X"
    can_project = rep == "X_pca" and representation != "query"
    reason = None
    if can_project:
        try:
            PCs, offset, where = _pca_projection(ref, n_features)
        except LookupError as err:
            reason = str(err)
        else:
            needed = np.any(PCs != 0, axis=1)
            X = _aligned_X(query, ref, needed)
            check_finite(X, "adata_query.X", query.obs_names)
            Xq = np.asarray(X @ PCs) - offset
            return Xq.astype(np.float32), where
        if representation == "project":
            msg = f"representation='project' is not possible: {reason}."
            raise ValueError(msg)
    elif representation == "project":
        msg = f"representation='project' needs a reference whose neighbours used X_pca ({rep!r})."
        raise ValueError(msg)
    if rep not in query.obsm:
        why = f" ({reason})" if reason else ""
        msg = (
            f"adata_query.obsm has no {rep!r}, and the reference's representation {rep!r} cannot "
            f"be computed for the query{why}. Store the query in the reference's space as "
            f"adata_query.obsm[{rep!r}]"
            + (", or keep the reference's PCA loadings (.varm['PCs'])" if rep == "X_pca" else "")
            + "."
        )
        raise KeyError(msg)
    Xq = query.obsm[rep]
    where = f"adata_query.obsm[{rep!r}]"
    if hasattr(Xq, "to_numpy"):
        Xq = Xq.to_numpy()
    if len(Xq.shape) != 2 or Xq.shape[0] != query.n_obs or Xq.shape[1] < n_features:
        msg = (
            f"{where} has shape {Xq.shape}; the reference's neighbours used {n_features} "
            "columns of its representation."
        )
        raise ValueError(msg)
    if Xq.dtype.kind not in "biuf":
        msg = f"{where} has dtype {Xq.dtype}; a numeric matrix is needed."
        raise TypeError(msg)
    Xq = Xq[:, :n_features]
    Xq = Xq.astype(np.float32) if Xq.dtype.itemsize < 4 or Xq.dtype.kind != "f" else Xq
    if Xq.shape[1] < query.obsm[rep].shape[1]:
        where = f"{where}[:, :{n_features}]"
    check_finite(Xq, where, query.obs_names)
    return Xq, where


def _query_X(query: AnnData, ref: AnnData):
    """``adata_query.X`` aligned to the reference's variables, checked for NaN/inf."""
    X = _aligned_X(query, ref)
    if X.dtype.kind not in "biuf":
        msg = f"adata_query.X has dtype {X.dtype}; a numeric matrix is needed."
        raise TypeError(msg)
    check_finite(X, "adata_query.X", query.obs_names)
    dtype = X.dtype if X.dtype.kind == "f" and X.dtype.itemsize >= 4 else np.float32
    return sparse.csr_matrix(X, dtype=dtype) if sparse.issparse(X) else np.asarray(X, dtype)


@inject(copy=doc_copy, n_jobs=doc_n_jobs)
def umap_transform(
    adata_query: AnnData,
    adata_ref: AnnData,
    *,
    method: Literal["auto", "umap", "parametric"] = "auto",
    umap_key: str | None = None,
    neighbors_key: str | None = None,
    representation: Literal["auto", "project", "query"] = "auto",
    maxiter: int | None = None,
    random_state: RandomStateLike = 0,
    knn_backend: Literal["auto", "exact", "nndescent", "pynndescent"] = "auto",
    key_added: str | None = None,
    n_jobs: int | None = None,
    progress: bool | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Place the cells of ``adata_query`` into the UMAP of ``adata_ref``, which stays fixed.

    Two ways, chosen by ``method``:

    - ``'umap'`` (umap-learn's ``UMAP.transform``): the ``n_neighbors`` nearest reference cells
      of each query cell in the reference's representation (same ``use_rep``, ``n_pcs`` and
      ``metric`` as the reference's :func:`annumap.pp.neighbors`), their fuzzy memberships,
      initial positions at the membership-weighted mean of those neighbours' embedding, then a
      short optimisation (umap-learn's schedule, learning rate a quarter of the layout's) that
      moves only the query cells. Parallel, and bit-identical for a ``random_state`` whatever
      ``n_jobs``.
    - ``'parametric'``: one forward pass of the encoder that ``tl.umap(adata_ref,
      method='parametric')`` stored in ``adata_ref.uns``; deterministic, no optimisation.

    The query must be in the reference's feature space. When the reference's neighbours used
    ``.X``, the query's ``.X`` is used (columns matched by ``var_names``). When they used
    ``X_pca``, the query's ``.X`` is projected on the reference's loadings
    ``adata_ref.varm['PCs']`` with the reference's centring; the centring offset is estimated
    from the reference and the projection is checked to reproduce ``adata_ref.obsm['X_pca']``
    on up to 2000 reference cells (so the query's ``.X`` must be preprocessed exactly like the
    reference's: same normalisation, log, scaling with the reference's statistics). Without
    loadings, or with ``representation='query'``, or for any other ``use_rep``, the query must
    hold the representation itself in ``adata_query.obsm`` under the same key.

    Parameters
    ----------
    adata_query
        The new cells (in memory; a view is materialised). Written to unless ``copy=True``.
    adata_ref
        The reference with a neighbour graph and an embedding; never modified.
    method
        ``'auto'`` (the stored encoder if the reference has one, else ``'umap'``), ``'umap'``
        or ``'parametric'``.
    umap_key
        The reference's embedding: ``.obsm[umap_key]`` and ``.uns[umap_key]`` (default
        ``'X_umap'`` and ``'umap'``, as written by ``tl.umap``; use its ``key_added``).
    neighbors_key
        The reference's neighbors entry (default: the one recorded by ``tl.umap``, else
        ``'neighbors'``).
    representation
        ``'auto'``, ``'project'`` (always project ``.X`` with ``varm['PCs']``) or ``'query'``
        (always read ``adata_query.obsm``), as described above.
    maxiter
        Epochs of the optimisation. Default as umap-learn's ``UMAP.transform``: a third of the
        reference's epochs when ``tl.umap`` was given a ``maxiter``, else 100 up to 10,000
        query cells and 30 above.
    random_state
        Seed of the optimisation's negative sampling: an int, ``None`` (drawn), or a numpy
        ``RandomState`` / ``Generator`` (one seed drawn from it); the seed is recorded. Not
        used by ``'parametric'``.
    knn_backend
        Query neighbour search, with the backends and the automatic choice of
        :func:`annumap.pp.neighbors`: ``'exact'`` (BLAS), ``'nndescent'`` (annumap's
        NN-descent over reference and query, deterministic for any ``n_jobs``),
        ``'pynndescent'`` (an index of the reference) or ``'auto'`` (exact while
        ``n_query * n_ref * n_features <= 1.2e10`` or either side has fewer than 4096 rows,
        else ``'nndescent'`` for euclidean, cosine and correlation, else ``'pynndescent'``).
    key_added
        Write ``.obsm[key_added]`` and ``.uns[key_added]`` instead of the reference's obsm key
        and ``'umap_transform'``.
    {n_jobs}
    progress
        Show a progress bar (default: in interactive sessions for long runs).
    {copy}

    Returns
    -------
    ``None``, or a new AnnData (the query) if ``copy=True``. Sets, on the query:

    ``.obsm['X_umap']`` (the reference's key, or ``key_added``) : :class:`numpy.ndarray`
        float32 (n_query, n_components): positions in the reference's embedding.
    ``.uns['umap_transform']`` (or ``key_added``) : dict
        ``params``: ``method``, ``umap_key``, ``neighbors_key``, ``representation`` (where the
        query's features came from), and for ``'umap'`` ``n_neighbors``, ``n_epochs``,
        ``knn_backend``, ``random_state``.

    Examples
    --------
    >>> import annumap
    >>> annumap.pp.neighbors(ref)  # doctest: +SKIP
    >>> annumap.tl.umap(ref)  # doctest: +SKIP
    >>> annumap.tl.umap_transform(query, ref)  # doctest: +SKIP
    >>> query.obsm["X_umap"].shape  # doctest: +SKIP
    (1000, 2)
    """
    from .._core._numba import resolve_n_jobs

    # ---- validate everything before any work or write
    _check_query(adata_query)
    check_adata(adata_ref, "adata_ref")
    if adata_query is adata_ref:
        msg = "adata_query and adata_ref are the same object; pass a copy of the reference."
        raise ValueError(msg)
    if not isinstance(copy, bool):
        msg = f"copy must be a bool, got {type(copy).__name__}."
        raise TypeError(msg)
    _choice(method, "method", _METHODS)
    _choice(representation, "representation", _REPRESENTATIONS)
    _choice(knn_backend, "knn_backend", _KNN_BACKENDS)
    maxiter = None if maxiter is None else _int(maxiter, "maxiter", low=1)
    seed = resolve_seed(random_state)
    resolve_n_jobs(n_jobs)
    if progress is not None and not isinstance(progress, bool):
        msg = f"progress must be a bool or None, got {type(progress).__name__}."
        raise TypeError(msg)
    _key(umap_key, "umap_key")
    _key(neighbors_key, "neighbors_key")
    _key(key_added, "key_added")
    ref_obsm, ref_uns = ("X_umap", "umap") if umap_key is None else (umap_key, umap_key)
    out_obsm, out_uns = (ref_obsm, "umap_transform") if key_added is None else (key_added,) * 2

    reference = _reference_embedding(adata_ref, ref_obsm)
    info = adata_ref.uns.get(ref_uns, {})
    info = info if isinstance(info, Mapping) else {}
    umap_params = dict(info.get("params", {}))
    encoder_dict = info.get("encoder")
    if method == "auto":
        method = "parametric" if encoder_dict is not None else "umap"
    if method == "parametric" and encoder_dict is None:
        msg = (
            f"adata_ref.uns[{ref_uns!r}] holds no encoder; run annumap.tl.umap(adata_ref, "
            "method='parametric') first, or use method='umap'."
        )
        raise KeyError(msg)
    nkey = neighbors_key or str(umap_params.get("neighbors_key", "neighbors"))
    nparams = _neighbors_params(adata_ref, nkey)
    rep, n_pcs = _resolve_rep(adata_ref, nparams)
    X_ref, ref_where = choose_representation(adata_ref, rep, n_pcs)

    encoder = None
    if method == "parametric":
        from .._core.parametric import Encoder

        encoder = Encoder.from_dict(encoder_dict, f"adata_ref.uns[{ref_uns!r}]['encoder']")
        if encoder.n_in != X_ref.shape[1] or encoder.n_out != reference.shape[1]:
            msg = (
                f"the stored encoder maps {encoder.n_in} -> {encoder.n_out} dimensions, but the "
                f"reference's representation {ref_where} has {X_ref.shape[1]} columns and its "
                f"embedding {reference.shape[1]}."
            )
            raise ValueError(msg)
    X_query, where = _query_representation(
        adata_query, adata_ref, rep, n_pcs, representation, X_ref.shape[1]
    )

    # ---- compute
    start = time.perf_counter()
    params: dict[str, Any] = {
        "method": method,
        "umap_key": ref_obsm,
        "neighbors_key": nkey,
        "representation": where,
    }
    if encoder is not None:
        Y = encoder.transform(X_query, n_jobs=n_jobs)
    else:
        from .._core.curve import find_ab
        from .._core.transform import transform

        if "a" in umap_params and "b" in umap_params:
            a, b = float(umap_params["a"]), float(umap_params["b"])
        else:
            a, b = find_ab(1.0, 0.5)
            logger.warning("adata_ref.uns[%r] has no a/b: using min_dist=0.5, spread=1.0", ref_uns)
        from .._core.transform import default_transform_epochs

        epochs = maxiter or default_transform_epochs(
            adata_query.n_obs, _reference_epochs(umap_params, adata_ref.n_obs)
        )
        Y, record = transform(
            X_ref,
            X_query,
            reference,
            n_neighbors=int(_scalar(nparams.get("n_neighbors", 15))),
            a=a,
            b=b,
            n_epochs=epochs,
            alpha=float(umap_params.get("alpha", 1.0)),
            gamma=float(umap_params.get("gamma", 1.0)),
            negative_sample_rate=float(umap_params.get("negative_sample_rate", 5.0)),
            metric=str(_scalar(nparams.get("metric", "euclidean"))),
            metric_kwds=dict(nparams.get("metric_kwds", {}) or {}),
            knn_backend=knn_backend,
            seed=seed,
            n_jobs=n_jobs,
            progress=progress,
        )
        params.update(record, random_state=seed)
    if not np.isfinite(Y).all():  # pragma: no cover - guarded by the kernels
        msg = "the transform produced non-finite coordinates; please report this with your data."
        raise FloatingPointError(msg)
    logger.info(
        "umap_transform (%s): %d query cells into %d reference cells, %.2f s",
        method,
        adata_query.n_obs,
        adata_ref.n_obs,
        time.perf_counter() - start,
    )

    # ---- write, all at once
    target = adata_query.copy() if copy else adata_query
    materialize(target)
    target.obsm[out_obsm] = np.ascontiguousarray(Y, dtype=np.float32)
    target.uns[out_uns] = {"params": params}
    return target if copy else None


def _coords(coords: Any, n_components: int) -> np.ndarray:
    if hasattr(coords, "to_numpy"):
        coords = coords.to_numpy()
    Y = np.asarray(coords.toarray() if sparse.issparse(coords) else coords)
    if Y.ndim == 1 and Y.size == n_components:
        Y = Y[None, :]
    if Y.dtype.kind not in "biuf":
        msg = f"coords must be numeric, got dtype {Y.dtype}."
        raise TypeError(msg)
    if Y.ndim != 2 or Y.shape[1] != n_components or Y.shape[0] < 1:
        msg = (
            f"coords has shape {Y.shape}; expected (n_points, {n_components}): positions in the "
            f"reference's {n_components}-D embedding."
        )
        raise ValueError(msg)
    if not np.isfinite(Y).all():
        msg = f"coords contains {int((~np.isfinite(Y)).sum())} NaN/inf values."
        raise ValueError(msg)
    return Y.astype(np.float32)


def _gene_space(ref: AnnData, n_cols: int) -> tuple[np.ndarray, np.ndarray] | str:
    """``(PCs.T, centre)`` with ``X ~ X_pca @ PCs.T + centre``, or why there is none."""
    try:
        PCs, offset, _ = _pca_projection(ref, n_cols)
    except LookupError as err:
        return str(err)
    mean = np.asarray(ref.X.mean(axis=0), dtype=np.float64).ravel()
    # centred PCA: offset = mean @ PCs and centre = mean; an uncentred one (offset ~ 0) adds
    # back only the part of the mean outside the components' span
    centre = mean + (offset - mean @ PCs) @ PCs.T
    return PCs.T, centre


@inject(n_jobs=doc_n_jobs)
def umap_inverse_transform(
    adata_ref: AnnData,
    coords: Any,
    *,
    umap_key: str | None = None,
    neighbors_key: str | None = None,
    n_jobs: int | None = None,
) -> AnnData:
    """Reconstruct the data at positions of a parametric UMAP (``inverse_transform``).

    Needs a reference embedded with ``tl.umap(adata_ref, method='parametric',
    parametric_kwds={{'parametric_reconstruction': True}})``: its decoder (stored in
    ``adata_ref.uns['umap']['decoder']``) maps each row of ``coords`` to the representation the
    reference's neighbours were computed on (``use_rep``/``n_pcs`` of the neighbors entry:
    ``.X``, the first ``n_pcs`` columns of ``.obsm['X_pca']``, or another ``.obsm`` key). When
    that representation is ``X_pca`` and ``adata_ref.varm['PCs']`` reproduces it from
    ``adata_ref.X`` (checked as in :func:`umap_transform`), the reconstruction is also mapped to
    gene space: ``X_pca @ PCs.T`` plus the reference's mean expression, i.e. the expression the
    PCA keeps (the part orthogonal to the components is the reference mean's).

    Parameters
    ----------
    adata_ref
        The reference; never modified.
    coords
        (n_points, n_components) positions in the reference's embedding (an array, a
        DataFrame, or one position as a 1-D array).
    umap_key
        The reference's embedding entry (default ``'umap'``, ``.obsm['X_umap']``; use
        ``tl.umap``'s ``key_added``).
    neighbors_key
        The reference's neighbors entry (default: the one recorded by ``tl.umap``).
    {n_jobs}

    Returns
    -------
    A new :class:`~anndata.AnnData` with one observation per row of ``coords``:

    ``.X`` : float32 (n_points, n_vars) or None
        Gene space: the reconstruction itself when the neighbours used ``.X``, its PCA
        back-projection when they used ``X_pca`` with valid loadings, else None (and no
        ``.var``).
    ``.obsm[rep]`` : float32 (n_points, n_features)
        The reconstruction in the representation the neighbours used (``rep`` is its key,
        e.g. ``'X_pca'``; absent when that is ``.X``).
    ``.obsm['X_umap']`` (the reference's key)
        ``coords``.
    ``.uns['umap_inverse_transform']['params']``
        ``representation`` (e.g. ``"adata.obsm['X_pca'][:, :30]"``), ``gene_space``
        (bool), ``gene_space_from`` (how ``.X`` was obtained, or why it is None), ``umap_key``.

    Raises
    ------
    KeyError
        The reference has no decoder (it was not fitted with ``parametric_reconstruction``).

    Examples
    --------
    >>> annumap.tl.umap(ref, method="parametric",  # doctest: +SKIP
    ...                 parametric_kwds={{"parametric_reconstruction": True}})
    >>> out = annumap.tl.umap_inverse_transform(ref, [[0.0, 1.0], [2.0, 3.0]])  # doctest: +SKIP
    >>> out.X.shape  # doctest: +SKIP
    (2, 500)
    """
    import anndata as ad
    import pandas as pd

    from .._core.parametric import Decoder

    check_adata(adata_ref, "adata_ref")
    _key(umap_key, "umap_key")
    _key(neighbors_key, "neighbors_key")
    from .._core._numba import resolve_n_jobs

    resolve_n_jobs(n_jobs)
    ref_obsm, ref_uns = ("X_umap", "umap") if umap_key is None else (umap_key, umap_key)
    info = adata_ref.uns.get(ref_uns)
    info = info if isinstance(info, Mapping) else {}
    if "decoder" not in info:
        what = "an encoder but no decoder" if "encoder" in info else "no parametric model"
        msg = (
            f"adata_ref.uns[{ref_uns!r}] holds {what}: run annumap.tl.umap(adata_ref, "
            "method='parametric', parametric_kwds={'parametric_reconstruction': True}) first."
        )
        raise KeyError(msg)
    decoder = Decoder.from_dict(info["decoder"], f"adata_ref.uns[{ref_uns!r}]['decoder']")
    Y = _coords(coords, decoder.n_in)
    umap_params = dict(info.get("params", {}))
    nkey = neighbors_key or str(umap_params.get("neighbors_key", "neighbors"))
    rep, n_pcs = _resolve_rep(adata_ref, _neighbors_params(adata_ref, nkey))
    X_ref, where = choose_representation(adata_ref, rep, n_pcs)
    if X_ref.shape[1] != decoder.n_out:
        msg = (
            f"the stored decoder outputs {decoder.n_out} features, but the reference's "
            f"representation {where} has {X_ref.shape[1]}."
        )
        raise ValueError(msg)

    recon = decoder.transform(Y, n_jobs=n_jobs)
    X_genes, var, gene_from = None, None, ""
    if rep == "X":
        X_genes, var, gene_from = recon, adata_ref.var.copy(), "the reconstruction (of .X)"
    elif rep == "X_pca":
        back = _gene_space(adata_ref, decoder.n_out)
        if isinstance(back, str):
            gene_from = f"none: {back}"
        else:
            PCsT, centre = back
            X_genes = (recon.astype(np.float64) @ PCsT + centre).astype(np.float32)
            var = adata_ref.var.copy()
            gene_from = f"obsm[{rep!r}] @ adata_ref.varm['PCs'][:, :{decoder.n_out}].T + mean(.X)"
    else:
        gene_from = f"none: the reference's neighbours used {rep!r}, not X_pca"
    obs = pd.DataFrame(index=[str(i) for i in range(Y.shape[0])])
    out = ad.AnnData(X=X_genes, obs=obs, var=var)
    if rep != "X":
        out.obsm[rep] = recon
    out.obsm[ref_obsm] = Y
    out.uns["umap_inverse_transform"] = {
        "params": {
            "representation": where,
            "gene_space": X_genes is not None,
            "gene_space_from": gene_from,
            "umap_key": ref_obsm,
        }
    }
    return out
