"""AnnData glue: checks, representation choice, neighbors-key resolution, and writes.

Everything here reads an AnnData or writes one in a single final step; algorithms live in
:mod:`annumap._core`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = [
    "MissingKeyError",
    "Neighbors",
    "PcaFields",
    "check_adata",
    "check_finite",
    "check_sparse_structure",
    "choose_representation",
    "materialize",
    "neighbors_representation",
    "neighbors_storage_keys",
    "read_neighbors",
    "representation_rule",
    "stale_representation",
    "stored_representation",
    "stored_scalar",
]

logger = logging.getLogger("annumap")

#: scanpy's threshold: above this many variables `.X` is not used without a PCA.
N_PCS = 50


class MissingKeyError(KeyError, ValueError):
    """A key the call needs is not in the AnnData (a missing neighbors entry, PAGA positions...).

    Both a :class:`KeyError` (what annumap raised before) and a :class:`ValueError` (what scanpy
    raises for the same mistake), so ``except ValueError`` written for scanpy catches it. Its
    message prints as given (a plain KeyError would print it in quotes).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def check_adata(adata: Any, name: str = "adata") -> None:
    """Raise unless ``adata`` is an in-memory :class:`~anndata.AnnData` we can write into."""
    from anndata import AnnData

    if not isinstance(adata, AnnData):
        msg = f"{name} must be an AnnData, got {type(adata).__name__}."
        raise TypeError(msg)
    if adata.isbacked:
        msg = (
            f"{name} is backed by a file (opened with backed='r'); annumap writes results into the "
            "object and needs it in memory: call `adata = adata.to_memory()` first."
        )
        raise ValueError(msg)
    if adata.n_obs < 2:
        msg = f"{name} has {adata.n_obs} observation(s); a neighbour graph needs at least 2."
        raise ValueError(msg)


def materialize(adata: AnnData) -> None:
    """Turn a view into an actual AnnData in place (as scanpy does), right before writing."""
    if adata.is_view:
        adata._init_as_actual(adata.copy())


def check_finite(X: np.ndarray | sparse.spmatrix, where: str, obs_names: Any = None) -> None:
    """Raise a ValueError naming ``where`` if ``X`` holds NaN or infinite values.

    A Dask array is not read here: its blocks are checked where they are searched.
    """
    from ._core.knn._dask import is_dask_array

    if is_dask_array(X):
        return
    data = X.data if sparse.issparse(X) else np.asarray(X)
    if data.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(data)
    n_bad = int(bad.sum())
    if not n_bad:
        return
    if sparse.issparse(X):
        coo = sparse.coo_matrix(X)
        rows = np.unique(coo.row[~np.isfinite(coo.data)])
    else:
        rows = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))
    names = list(np.asarray(obs_names)[rows[:5]]) if obs_names is not None else list(rows[:5])
    msg = (
        f"{where} contains {n_bad} NaN or infinite value(s) in {rows.size} observation(s) "
        f"(first: {', '.join(map(str, names))}). Impute them (e.g. "
        "sklearn.impute.SimpleImputer or ehrapy.pp.knn_impute) or drop those observations first."
    )
    raise ValueError(msg)


def check_sparse_structure(X: sparse.spmatrix, where: str) -> None:
    """Raise a ValueError naming ``where`` if a CSR/CSC matrix has corrupt index arrays.

    scipy does not check index bounds when a CSR/CSC matrix is built from raw arrays (or read
    from a damaged file); an out-of-range index then makes compiled code read or write out of
    bounds and can kill the interpreter. This O(nnz) check reads the arrays and never modifies
    them (unlike scipy's ``check_format``, which may prune or recast them in place).
    """
    fmt = getattr(X, "format", None)
    if fmt not in ("csr", "csc"):
        return
    n_major, n_minor = X.shape if fmt == "csr" else X.shape[::-1]
    indptr, indices = np.asarray(X.indptr), np.asarray(X.indices)
    problem = None
    if indptr.ndim != 1 or indptr.size != n_major + 1:
        problem = f"indptr has shape {indptr.shape}, expected ({n_major + 1},)"
    elif indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
        problem = f"index arrays have dtypes {indptr.dtype}/{indices.dtype}, expected integers"
    elif indptr[0] != 0 or (indptr[1:] < indptr[:-1]).any():
        problem = "indptr must start at 0 and never decrease"
    elif indptr[-1] > min(indices.size, np.asarray(X.data).size):
        problem = f"indptr ends at {indptr[-1]} beyond the {indices.size} stored indices"
    elif indptr[-1] > 0:
        used = indices[: indptr[-1]]
        if used.min() < 0 or used.max() >= n_minor:
            problem = f"column indices span [{used.min()}, {used.max()}], outside [0, {n_minor})"
    if problem is not None:
        msg = f"{where} is a malformed sparse matrix: {problem}; rebuild it (e.g. from COO)."
        raise ValueError(msg)


def _as_numeric(X: Any, where: str) -> np.ndarray | sparse.csr_matrix:
    """Dense float32/float64 array or CSR matrix from any numeric array-like.

    A Dask array stays a Dask array (checked by ``pp.neighbors``'s blockwise search).
    """
    from ._core.knn._dask import is_dask_array

    if is_dask_array(X):
        return X
    if sparse.issparse(X):
        if X.dtype.kind not in "biuf":
            msg = f"{where} has dtype {X.dtype}; a numeric matrix is needed."
            raise TypeError(msg)
        check_sparse_structure(X, where)
        out = sparse.csr_matrix(X)
        return out.astype(np.float32) if out.dtype.kind in "biu" or out.dtype.itemsize < 4 else out
    if hasattr(X, "to_numpy"):  # pandas DataFrame in obsm
        X = X.to_numpy()
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        msg = f"{where} has dtype {X.dtype}; a numeric matrix is needed."
        raise TypeError(msg)
    if X.ndim != 2:
        msg = f"{where} must be 2-dimensional, got shape {X.shape}."
        raise ValueError(msg)
    if X.dtype.kind in "biu" or X.dtype.itemsize < 4:
        X = X.astype(np.float32)
    return X


def stored_scalar(value: Any) -> Any:
    """A stored parameter as a Python scalar (old scanpy files hold e.g. ``array([10])``)."""
    arr = np.asarray(value)
    return arr.ravel()[0].item() if arr.size == 1 else value


def representation_rule(
    adata: AnnData, use_rep: str | None = None, n_pcs: int | None = None
) -> tuple[str | None, int | None]:
    """Scanpy's rule for the neighbour search's representation, in one place for annumap.

    Returns ``(use_rep, n_pcs)``: ``use_rep`` is ``'X'`` or an ``.obsm`` key, or None when a PCA
    of ``.X`` has to be computed (``.X`` has more than 50 variables and there is no
    ``.obsm['X_pca']``). ``use_rep=None`` with ``n_pcs=0`` means ``.X``; otherwise ``.X`` when
    it has at most 50 variables, else ``.obsm['X_pca']``. Checks the types only; whether the
    key exists is checked where the matrix is read.
    """
    if n_pcs is not None:
        if isinstance(n_pcs, bool) or not isinstance(n_pcs, int | np.integer) or n_pcs < 0:
            msg = f"n_pcs must be a non-negative int or None, got {n_pcs!r}."
            raise ValueError(msg)
        n_pcs = int(n_pcs)
    if use_rep is not None and not isinstance(use_rep, str):
        msg = f"use_rep must be a str ('X' or an .obsm key) or None, got {type(use_rep).__name__}."
        raise TypeError(msg)
    if use_rep is None and n_pcs == 0:
        return "X", n_pcs
    if use_rep is None:
        if adata.n_vars <= N_PCS:
            return "X", n_pcs
        if "X_pca" in adata.obsm:
            return "X_pca", n_pcs
        return None, n_pcs
    return use_rep, n_pcs


def stored_representation(params: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """``use_rep`` and ``n_pcs`` as recorded in ``.uns[neighbors_key]['params']``."""
    use_rep = params.get("use_rep")
    use_rep = None if use_rep is None else str(stored_scalar(use_rep))
    n_pcs = params.get("n_pcs")
    n_pcs = None if n_pcs is None else int(stored_scalar(n_pcs))
    return use_rep, n_pcs


def stale_representation(adata: AnnData, neighbors: Neighbors) -> str | None:
    """Why the representation recorded with ``neighbors`` cannot be read any more, or None.

    A recorded ``use_rep`` that is no longer an ``.obsm`` key, ``use_rep='X'`` with ``.X``
    gone, or an ``n_pcs`` larger than the representation's columns.
    """
    try:
        use_rep, n_pcs = stored_representation(neighbors.params)
    except (TypeError, ValueError):
        return f"adata.uns[{neighbors.key!r}]['params'] holds an unreadable use_rep or n_pcs"
    where = f"adata.uns[{neighbors.key!r}]['params']"
    if use_rep == "X" and adata.X is None:
        return f"{where}['use_rep'] is 'X' but adata.X is None"
    if use_rep not in (None, "X"):
        if use_rep not in adata.obsm:
            return (
                f"{where}['use_rep'] = {use_rep!r} is not a key of adata.obsm any more "
                f"(keys: {list(adata.obsm)})"
            )
        if n_pcs is not None and n_pcs > adata.obsm[use_rep].shape[1]:
            return (
                f"{where}['n_pcs'] = {n_pcs} but adata.obsm[{use_rep!r}] has "
                f"{adata.obsm[use_rep].shape[1]} columns"
            )
    return None


def choose_representation(
    adata: AnnData,
    use_rep: str | None = None,
    n_pcs: int | None = None,
    *,
    random_state: int = 0,
    purpose: str = "the neighbour search",
) -> tuple[np.ndarray | sparse.csr_matrix, str]:
    """The data matrix following scanpy's rules (:func:`representation_rule`).

    ``use_rep`` names ``'X'`` or an ``.obsm`` key; without it, ``.X`` when it has at most 50
    variables, else ``.obsm['X_pca']`` (first ``n_pcs`` columns), else a PCA computed here for
    ``purpose`` with a warning and not stored (:func:`neighbors_representation` is the variant
    that returns the PCA for storing, as ``pp.neighbors`` does). Returns the matrix and a
    description such as ``"adata.obsm['X_pca'][:, :30]"``. Raises on NaN/inf.
    """
    use_rep, n_pcs = representation_rule(adata, use_rep, n_pcs)
    if use_rep is None:
        fields = _pca_of_X(adata, n_pcs, random_state)
        warnings.warn(
            f"adata has {adata.n_vars} variables and no .obsm['X_pca']: computing a "
            f"{fields.scores.shape[1]}-component PCA of .X for {purpose} (not stored). Run "
            "annumap.pp.neighbors or scanpy.pp.pca first to keep and reuse one.",
            UserWarning,
            stacklevel=3,
        )
        return fields.scores, f"PCA({fields.scores.shape[1]}) of adata.X"
    return _read_representation(adata, use_rep, n_pcs)


def _read_representation(
    adata: AnnData, use_rep: str, n_pcs: int | None
) -> tuple[np.ndarray | sparse.csr_matrix, str]:
    if use_rep == "X":
        if adata.X is None:
            msg = "adata.X is None; pass use_rep with an .obsm key holding the representation."
            raise ValueError(msg)
        X, where = adata.X, "adata.X"
    else:
        if use_rep not in adata.obsm:
            msg = (
                f"use_rep={use_rep!r} is not a key of adata.obsm (keys: {list(adata.obsm)}); "
                "use 'X' for adata.X."
            )
            raise MissingKeyError(msg)
        X, where = adata.obsm[use_rep], f"adata.obsm[{use_rep!r}]"
    X = _as_numeric(X, where)
    if n_pcs is not None and use_rep != "X":
        if n_pcs > X.shape[1]:
            msg = f"n_pcs={n_pcs} is larger than {where} has columns ({X.shape[1]})."
            raise ValueError(msg)
        X = X[:, :n_pcs]
        where = f"{where}[:, :{n_pcs}]"
    check_finite(X, where, adata.obs_names)
    return X, where


@dataclass(frozen=True)
class PcaFields:
    """A PCA of ``.X`` with the fields ``scanpy.pp.pca`` stores, ready to be written."""

    scores: np.ndarray
    loadings: np.ndarray
    uns: dict[str, Any]

    def write(self, adata: AnnData) -> None:
        """Store as scanpy does: ``.obsm['X_pca']``, ``.varm['PCs']``, ``.uns['pca']``."""
        adata.obsm["X_pca"] = self.scores
        adata.varm["PCs"] = self.loadings
        adata.uns["pca"] = self.uns


def _pca_of_X(adata: AnnData, n_pcs: int | None, random_state: int) -> PcaFields:
    from ._core.pca import pca_fit

    if adata.X is None:
        msg = (
            f"adata.X is None and adata has {adata.n_vars} variables and no .obsm['X_pca']; "
            "pass use_rep with an .obsm key holding the representation."
        )
        raise ValueError(msg)
    n_comps = min(n_pcs or N_PCS, adata.n_obs - 1, adata.n_vars)
    X = _as_numeric(adata.X, "adata.X")
    check_finite(X, "adata.X", adata.obs_names)
    fit = pca_fit(X, n_comps, random_state=random_state)
    uns = {
        "params": {
            "zero_center": True,
            "use_highly_variable": False,
            "svd_solver": fit.solver,
            "random_state": int(random_state),
        },
        "variance": fit.variance,
        "variance_ratio": fit.variance_ratio,
    }
    return PcaFields(scores=fit.scores, loadings=fit.loadings, uns=uns)


def neighbors_representation(
    adata: AnnData,
    use_rep: str | None = None,
    n_pcs: int | None = None,
    *,
    random_state: int = 0,
) -> tuple[np.ndarray | sparse.csr_matrix, str, PcaFields | None]:
    """The matrix the neighbour search runs on, and the PCA to store when one was computed.

    As :func:`choose_representation`, except that when ``.X`` has more than 50 variables and
    there is no ``.obsm['X_pca']``, the PCA (``n_pcs`` components, default 50) is returned
    for the caller to store as ``scanpy.pp.neighbors`` does (``X_pca``, ``PCs``, ``uns['pca']``),
    with a warning that says so.
    """
    rule, n_pcs = representation_rule(adata, use_rep, n_pcs)
    if rule is not None:
        return (*_read_representation(adata, rule, n_pcs), None)
    fields = _pca_of_X(adata, n_pcs, random_state)
    n_comps = fields.scores.shape[1]
    warnings.warn(
        f"adata has {adata.n_vars} variables and no .obsm['X_pca']: computing a "
        f"{n_comps}-component PCA of .X for the neighbour search and storing it in "
        ".obsm['X_pca'], .varm['PCs'] and .uns['pca'] (as scanpy.pp.neighbors does). Run "
        "scanpy.pp.pca first to choose its settings, or pass use_rep='X' to search on .X.",
        UserWarning,
        stacklevel=3,
    )
    return fields.scores, f"PCA({n_comps}) of adata.X (stored as adata.obsm['X_pca'])", fields


def neighbors_storage_keys(key_added: str | None) -> tuple[str, str, str]:
    """``(uns_key, connectivities_key, distances_key)`` as scanpy names them."""
    if key_added is None:
        return "neighbors", "connectivities", "distances"
    if not isinstance(key_added, str) or not key_added:
        msg = f"key_added must be a non-empty str or None, got {key_added!r}."
        raise ValueError(msg)
    return key_added, f"{key_added}_connectivities", f"{key_added}_distances"


@dataclass(frozen=True)
class Neighbors:
    """A neighbours result read from an AnnData (never a copy of the graph: do not mutate)."""

    key: str
    connectivities: sparse.csr_matrix
    distances: sparse.csr_matrix | None
    params: Mapping[str, Any]


def _check_graph(G: Any, n_obs: int, where: str) -> sparse.csr_matrix:
    if not sparse.issparse(G):
        if isinstance(G, np.ndarray) and G.ndim == 2:
            G = sparse.csr_matrix(G)
        else:
            msg = f"{where} must be a sparse matrix, got {type(G).__name__}."
            raise TypeError(msg)
    if G.shape != (n_obs, n_obs):
        msg = f"{where} has shape {G.shape}; expected ({n_obs}, {n_obs}) for adata.n_obs={n_obs}."
        raise ValueError(msg)
    if G.dtype.kind not in "biuf":
        msg = f"{where} has dtype {G.dtype}; graph weights must be real numbers."
        raise TypeError(msg)
    check_sparse_structure(G, where)
    G = sparse.csr_matrix(G)
    data = G.data
    if data.size and not np.isfinite(data).all():
        msg = f"{where} contains {int((~np.isfinite(data)).sum())} NaN/inf weights."
        raise ValueError(msg)
    if data.size and data.min() < 0:
        msg = f"{where} contains {int((data < 0).sum())} negative weights; weights must be >= 0."
        raise ValueError(msg)
    if data.size and data.max() > np.finfo(np.float32).max:
        msg = (
            f"{where} has weights up to {data.max():.3g}, beyond float32 range; the layout "
            "uses float32 weights: rescale the graph (only relative weights matter)."
        )
        raise ValueError(msg)
    if G.diagonal().any():
        # self-loops carry no neighbourhood information (scanpy's knn=False graph has 1 there)
        G = G.copy()
        G.setdiag(0)
        G.eliminate_zeros()
    return G


def read_neighbors(adata: AnnData, neighbors_key: str | None = None) -> Neighbors:
    """Resolve ``neighbors_key`` as scanpy does and return the stored graph and params."""
    key = "neighbors" if neighbors_key is None else neighbors_key
    if not isinstance(key, str):
        msg = f"neighbors_key must be a str or None, got {type(key).__name__}."
        raise TypeError(msg)
    if key not in adata.uns:
        msg = (
            f"No neighbors found in adata.uns[{key!r}]; run annumap.pp.neighbors(adata"
            + (f", key_added={key!r}" if key != "neighbors" else "")
            + ") (or scanpy.pp.neighbors) first."
        )
        raise MissingKeyError(msg)
    info = adata.uns[key]
    if not isinstance(info, Mapping):
        msg = f"adata.uns[{key!r}] is a {type(info).__name__}, not a neighbors dict."
        raise TypeError(msg)
    conn_key = info.get("connectivities_key", "connectivities" if key == "neighbors" else None)
    dist_key = info.get("distances_key", "distances" if key == "neighbors" else None)
    for field, value in (("connectivities_key", conn_key), ("distances_key", dist_key)):
        if value is not None and not isinstance(value, str):
            msg = f"adata.uns[{key!r}][{field!r}] must be a str, got {type(value).__name__}."
            raise TypeError(msg)
    if conn_key is None or conn_key not in adata.obsp:
        msg = (
            f"adata.obsp has no connectivities for neighbors_key={key!r} (looked for "
            f"{conn_key!r}); run annumap.pp.neighbors first."
        )
        raise MissingKeyError(msg)
    conn = _check_graph(adata.obsp[conn_key], adata.n_obs, f"adata.obsp[{conn_key!r}]")
    dist = adata.obsp.get(dist_key)
    params = info.get("params", {})
    if not isinstance(params, Mapping):
        msg = (
            f"adata.uns[{key!r}]['params'] is a {type(params).__name__}, not a dict; re-run "
            "annumap.pp.neighbors to rebuild the neighbors entry."
        )
        raise TypeError(msg)
    return Neighbors(key=key, connectivities=conn, distances=dist, params=dict(params))
