"""``annumap.tl.umap``: the scanpy/ehrapy ``tl.umap`` contract on annumap's parallel layout."""

from __future__ import annotations

import logging
import numbers
import time
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from .._anndata import (
    MissingKeyError,
    check_adata,
    choose_representation,
    materialize,
    read_neighbors,
    stale_representation,
)
from .._docs import doc_adata, doc_copy, doc_n_jobs, inject
from .._random import RandomStateLike, resolve_seed
from .._types import LayoutCallback
from ._layouts import LAYOUTS, preflight, run_layout

if TYPE_CHECKING:
    from anndata import AnnData

    from .._anndata import Neighbors

__all__ = ["umap"]

logger = logging.getLogger("annumap")

_INIT_NAMES = ("spectral", "paga", "pca", "random")
#: Negative samples per positive one: the counter-based generator numbers the draws of an edge
#: in an epoch with 16 bits; beyond that draws repeat (and huge rates never finish).
_MAX_NEGATIVE_RATE = 2**16 - 1


def _real(value: Any, name: str, *, low: float, low_inclusive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = f"{name} must be a real number, got {type(value).__name__}."
        raise TypeError(msg)
    v = float(value)
    bad = not np.isfinite(v) or (v < low if low_inclusive else v <= low)
    if bad:
        op = ">=" if low_inclusive else ">"
        msg = f"{name} must be finite and {op} {low}, got {value!r}."
        raise ValueError(msg)
    return v


def _int(value: Any, name: str, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        msg = f"{name} must be an int, got {type(value).__name__}."
        raise TypeError(msg)
    if value < low:
        msg = f"{name} must be >= {low}, got {value}."
        raise ValueError(msg)
    return int(value)


def check_params(
    *,
    min_dist: Any,
    spread: Any,
    n_components: Any,
    maxiter: Any,
    alpha: Any,
    gamma: Any,
    negative_sample_rate: Any,
    a: Any,
    b: Any,
) -> dict[str, Any]:
    """Validate the numeric parameters of :func:`umap`; returns them normalised."""
    out: dict[str, Any] = {
        "min_dist": _real(min_dist, "min_dist", low=0.0),
        "spread": _real(spread, "spread", low=0.0, low_inclusive=False),
        "n_components": _int(n_components, "n_components", low=1),
        "maxiter": None if maxiter is None else _int(maxiter, "maxiter", low=0),
        "alpha": _real(alpha, "alpha", low=0.0, low_inclusive=False),
        "gamma": _real(gamma, "gamma", low=0.0),
        "negative_sample_rate": _real(negative_sample_rate, "negative_sample_rate", low=0.0),
    }
    if out["min_dist"] > out["spread"]:
        msg = f"min_dist ({min_dist}) must not exceed spread ({spread})."
        raise ValueError(msg)
    if out["negative_sample_rate"] > _MAX_NEGATIVE_RATE:
        msg = (
            f"negative_sample_rate must be <= {_MAX_NEGATIVE_RATE} (the negative-sample "
            "generator draws at most 2**16 samples per edge and epoch), got "
            f"{negative_sample_rate}."
        )
        raise ValueError(msg)
    if (a is None) != (b is None):
        msg = "give both a and b, or neither (then they are fitted from min_dist and spread)."
        raise ValueError(msg)
    if a is not None:
        out["a"] = _real(a, "a", low=0.0, low_inclusive=False)
        out["b"] = _real(b, "b", low=0.0, low_inclusive=False)
    return out


def _parametric_settings(method: str, kwds: Any) -> dict[str, Any]:
    """The backend keywords of ``parametric_kwds`` (validated; an error unless parametric)."""
    if kwds is not None and method != "parametric":
        msg = f"parametric_kwds is only used by method='parametric', not method={method!r}."
        raise ValueError(msg)
    if method != "parametric":
        return {}
    from .._core.parametric import check_parametric_kwds

    return {"settings": check_parametric_kwds(kwds)}


def _init_positions(
    adata: AnnData,
    init_pos: Any,
    neighbors: Neighbors,
    n_components: int,
    seed: int,
    n_epochs: int,
) -> tuple[np.ndarray, str]:
    """Initial positions (float32, rescaled to [0, 10]) and a name for the record.

    The spectral layout is computed on the graph the layout will optimise, pruned for
    ``n_epochs`` as umap-learn prunes it first (pruning can split components).
    """
    from .._core import init as core_init
    from .._core.layout import prepare_graph

    rng = np.random.default_rng([seed, 0x1417])
    n = adata.n_obs

    def data():
        return _representation(adata, neighbors, seed)

    if isinstance(init_pos, str):
        if init_pos in adata.obsm:
            Y = _array_init(adata.obsm[init_pos], n, n_components, f"adata.obsm[{init_pos!r}]")
            return core_init.rescale(core_init.jitter_duplicates(Y, rng), rng), init_pos
        if init_pos == "spectral":
            pruned = prepare_graph(neighbors.connectivities, n_epochs)
            params = neighbors.params
            # the meta layout of a disconnected graph measures the components' centroids in
            # the neighbours' metric; a precomputed distance matrix has no centroids to give
            precomputed = params.get("knn_backend") == "precomputed"
            Y = core_init.spectral_init(
                pruned,
                n_components,
                rng,
                None if precomputed else data,
                metric=str(params.get("metric", "euclidean")),
                metric_kwds=dict(params.get("metric_kwds") or {}),
            )
        elif init_pos == "pca":
            X = data()
            if X is None:
                msg = "init_pos='pca' needs the representation the neighbours were computed on."
                raise ValueError(msg)
            Y = core_init.pca_init(X, n_components, rng)
        elif init_pos == "random":
            Y = core_init.random_init(n, n_components, rng)
        elif init_pos == "paga":
            Y = _paga(adata, n_components, rng)
        else:
            msg = (
                f"init_pos={init_pos!r} is neither one of {_INIT_NAMES} nor a key of adata.obsm "
                f"(keys: {list(adata.obsm)}); an (n_obs, n_components) array is accepted too."
            )
            raise ValueError(msg)
        return core_init.rescale(Y, rng), init_pos
    if hasattr(init_pos, "shape") or isinstance(init_pos, list | tuple):
        Y = _array_init(init_pos, n, n_components, "init_pos")
        return core_init.rescale(core_init.jitter_duplicates(Y, rng), rng), "array"
    msg = f"init_pos must be a str or an array, got {type(init_pos).__name__}."
    raise TypeError(msg)


def _representation(adata: AnnData, neighbors: Neighbors, seed: int):
    """The representation the neighbours were computed on, or None if it is not at hand."""
    if stale_representation(adata, neighbors) is not None:
        return None  # reported once by tl.umap before the computation
    params = neighbors.params
    X, _ = choose_representation(
        adata,
        params.get("use_rep"),
        params.get("n_pcs"),
        random_state=seed,
        purpose="the initialisation of the layout",
    )
    return X


def _array_init(value: Any, n: int, n_components: int, where: str) -> np.ndarray:
    Y = np.asarray(value.toarray() if hasattr(value, "toarray") else value)
    if Y.dtype.kind not in "biuf":
        msg = f"{where} must be numeric, got dtype {Y.dtype}."
        raise TypeError(msg)
    Y = Y.astype(np.float64)
    if Y.ndim != 2 or Y.shape[0] != n or Y.shape[1] < n_components:
        msg = (
            f"{where} has shape {Y.shape}; expected ({n}, {n_components}) "
            "(extra columns are dropped)."
        )
        raise ValueError(msg)
    Y = Y[:, :n_components]
    if not np.isfinite(Y).all():
        msg = f"{where} contains {int((~np.isfinite(Y)).sum())} NaN/inf values."
        raise ValueError(msg)
    return Y


def _paga(adata: AnnData, n_components: int, rng: np.random.Generator) -> np.ndarray:
    from .._core.init import paga_init

    paga = adata.uns.get("paga")
    if not isinstance(paga, dict) or "pos" not in paga:
        msg = (
            "init_pos='paga' needs adata.uns['paga']['pos']: run scanpy.tl.paga and then "
            "scanpy.pl.paga (which computes the positions) first."
        )
        raise MissingKeyError(msg)
    pos = np.asarray(paga["pos"])
    if pos.dtype.kind not in "biuf":
        msg = f"adata.uns['paga']['pos'] must be a numeric array, got dtype {pos.dtype}."
        raise TypeError(msg)
    pos = pos.astype(np.float64)
    if not np.isfinite(pos).all():
        msg = (
            f"adata.uns['paga']['pos'] contains {int((~np.isfinite(pos)).sum())} NaN/inf "
            "values; re-run scanpy.pl.paga to recompute the positions."
        )
        raise ValueError(msg)
    groups_key = paga.get("groups")
    if not isinstance(groups_key, str) or groups_key not in adata.obs:
        msg = f"adata.uns['paga']['groups'] = {groups_key!r} is not a column of adata.obs."
        raise MissingKeyError(msg)
    codes = np.asarray(adata.obs[groups_key].astype("category").cat.codes)
    if (codes < 0).any():
        msg = (
            f"adata.obs[{groups_key!r}] has {int((codes < 0).sum())} missing values; "
            "init_pos='paga' needs a group for every cell."
        )
        raise ValueError(msg)
    if pos.ndim != 2 or pos.shape[0] <= codes.max():
        msg = f"adata.uns['paga']['pos'] has shape {pos.shape}; one row per group is needed."
        raise ValueError(msg)
    if pos.shape[1] != n_components:
        msg = (
            f"PAGA positions are {pos.shape[1]}-D; init_pos='paga' needs "
            f"n_components={pos.shape[1]}."
        )
        raise ValueError(msg)
    coarse = paga.get("connectivities")
    if coarse is None:
        from scipy import sparse

        coarse = sparse.csr_matrix((pos.shape[0], pos.shape[0]))
    if getattr(coarse, "shape", None) != (pos.shape[0], pos.shape[0]):
        msg = (
            f"adata.uns['paga']['connectivities'] has shape {getattr(coarse, 'shape', None)}; "
            f"expected ({pos.shape[0]}, {pos.shape[0]}), one row per group of 'pos'."
        )
        raise ValueError(msg)
    return paga_init(codes, pos, coarse, rng)


@inject(adata=doc_adata, copy=doc_copy, n_jobs=doc_n_jobs)
def umap(
    adata: AnnData,
    *,
    min_dist: float = 0.5,
    spread: float = 1.0,
    n_components: int = 2,
    maxiter: int | None = None,
    alpha: float = 1.0,
    gamma: float = 1.0,
    negative_sample_rate: float = 5,
    init_pos: str | np.ndarray = "spectral",
    random_state: RandomStateLike = 0,
    a: float | None = None,
    b: float | None = None,
    copy: bool = False,
    method: str = "umap",
    neighbors_key: str | None = None,
    key_added: str | None = None,
    n_jobs: int | None = None,
    progress: bool | None = None,
    callback: LayoutCallback | None = None,
    parametric_kwds: dict[str, Any] | None = None,
    rng: int | np.random.Generator | np.random.RandomState | None = None,
) -> AnnData | None:
    """Embed the neighbour graph with UMAP (McInnes et al. 2018).

    The signature, defaults and storage of :func:`scanpy.tl.umap` and ``ehrapy.tl.umap``; the
    layout runs in parallel on all cores and gives bit-identical results for a ``random_state``
    whatever ``n_jobs``. Reads the graph of :func:`annumap.pp.neighbors` or
    :func:`scanpy.pp.neighbors` and never modifies it; writes only after everything succeeded.

    Parameters
    ----------
    {adata}
    min_dist
        Minimum distance between embedded points (0 <= min_dist <= spread).
    spread
        Scale of the embedded points (> 0); with ``min_dist`` it fixes ``a`` and ``b``.
    n_components
        Dimensions of the embedding.
    maxiter
        Number of epochs (default: 500 up to 10,000 cells, 200 above). ``0`` returns the
        initial positions (rescaled to [0, 10]), as scanpy does.
    alpha
        Initial learning rate, decayed linearly to 0.
    gamma
        Weight of the repulsion (negative samples).
    negative_sample_rate
        Negative samples per positive sample.
    init_pos
        ``'spectral'`` (umap-learn's, per connected component; docs/design.md gives where a
        disconnected graph's components are placed differently), ``'paga'`` (scanpy's rule;
        needs ``uns['paga']['pos']``), ``'pca'``, ``'random'``, an ``.obsm`` key, or an array
        of shape (n_obs, n_components).
        Not used by ``method='parametric'`` (a warning when not the default).
    random_state
        Seed: an int, ``None`` (a seed is drawn), or a :class:`numpy.random.RandomState` /
        :class:`numpy.random.Generator` (one seed is drawn from it, so a generator seeded the
        same way gives the same embedding). A seed other than 0 is recorded in ``.uns``.
    a, b
        Parameters of the embedding curve ``1 / (1 + a d^(2b))``; fitted from ``min_dist`` and
        ``spread`` unless both are given.
    {copy}
    method
        ``'umap'``: the numba layout on the CPU. ``'cupy'``: the experimental GPU layout
        (needs ``pip install "annumap[gpu]"`` and a CUDA device, else an ImportError or a
        RuntimeError before anything is written; verified on NumPy, not yet run on a GPU):
        the same schedule, negative samples and objective, with each epoch's steps computed
        together rather than edge by edge, so its embedding differs from ``'umap'``'s.
        ``'rapids'``: ehrapy's name, an alias of ``'cupy'`` (FutureWarning).
        ``'parametric'``: trains an MLP encoder (umap-learn's ParametricUMAP; NumPy, Adam,
        deterministic for a ``random_state`` whatever ``n_jobs``) on the representation the
        neighbours used, with the UMAP loss on batches of graph edges; each edge's head is
        repelled from 80 of the batch's tails (ParametricUMAP takes its negatives from the
        batch too), each weighted ``gamma * negative_sample_rate / 80``;
        ``parametric_kwds`` sets the network and the training; no initialisation is
        computed (``init_pos`` is ignored and recorded as ``'none'``).
        ``.obsm`` gets the encoder's output; ``.uns[key]`` holds the model as plain arrays
        (``encoder``, and ``decoder`` with ``parametric_reconstruction``), the per-epoch
        ``history`` of the losses, ``training`` (``best_epoch``, ``stopped_early``,
        ``n_epochs_run``, ...) and ``params['parametric_kwds']`` (all settings, resolved), so
        ``write_h5ad`` carries the model: :func:`annumap.tl.umap_transform` embeds new cells
        with one forward pass, :func:`annumap.tl.umap_inverse_transform` maps positions back.
    neighbors_key
        Read the graph from ``.uns[neighbors_key]`` (default ``'neighbors'``).
    key_added
        Store in ``.obsm[key_added]`` and ``.uns[key_added]`` instead of ``'X_umap'``/``'umap'``.
    {n_jobs}
    progress
        Show a progress bar (default: in interactive sessions for long runs).
    callback
        ``callback(epoch, n_epochs, embedding)`` after each epoch; return True to stop early.
        An exception raised in it aborts the call and leaves ``adata`` unchanged.
    parametric_kwds
        Options of ``method='parametric'`` (an error with any other method), by
        ParametricUMAP's names; unknown keys raise a KeyError listing the valid ones, before
        any work:

        - ``encoder_layers`` (``(100, 100, 100)``), ``decoder_layers`` (None: reversed
          encoder layers): hidden sizes; ``activation`` of the hidden layers: ``'relu'``
          (default), ``'leaky_relu'``, ``'elu'``, ``'tanh'``, ``'sigmoid'``, ``'softplus'``;
        - ``parametric_reconstruction`` (False): also train a decoder from the embedding to the
          representation (mean squared error of the standardised representation, times
          ``parametric_reconstruction_loss_weight``, 1.0); ``autoencoder_loss`` (False): let
          that loss train the encoder too (else its gradient stops at the embedding);
        - ``global_correlation_loss_weight`` (0): weight of ``-r``, the Pearson correlation of
          the pairwise distances within a batch in the data and in the embedding;
        - ``batch_size`` (None: ``min(1024, max(32, n_train // 8))`` positive edges per step),
          ``n_training_epochs`` (None: 60, or ``max(1, round(0.12 * maxiter))`` with a
          ``maxiter``; an epoch draws about one edge per training cell), ``learning_rate`` (None:
          ``2e-2 * alpha``, Adam, decayed linearly to a tenth);
        - ``validation_fraction`` (0.1): share of cells held out, their edges giving the
          validation losses; ``patience`` (10) and ``min_delta`` (1e-3): stop when the
          monitored loss (validation total, else training total) has not improved by that
          relative amount for ``patience`` epochs, keeping the best epoch's weights.
    rng
        scanpy 1.13's name for ``random_state`` (an int, ``SeedSequence``, ``Generator`` or
        ``RandomState``); used when given, and giving both is a TypeError.

    Returns
    -------
    ``None``, or a new AnnData (of the input's class) if ``copy=True``. Sets:

    ``.obsm['X_umap']`` : :class:`numpy.ndarray`, float32, (n_obs, n_components)
        The embedding.
    ``.uns['umap']`` : dict
        ``params``: ``a``, ``b`` (and ``random_state`` when not 0, as scanpy), plus ``min_dist``,
        ``spread``, ``n_epochs``, ``init_pos`` (``'none'`` for ``method='parametric'``),
        ``method``, ``neighbors_key`` (``maxiter`` when given: :func:`annumap.tl.umap_transform`
        then runs a third of it, as umap-learn). With ``method='parametric'`` also
        ``encoder``, ``decoder``, ``history``, ``training`` and ``params['parametric_kwds']``
        (see ``method``).

    Warns
    -----
    UserWarning
        When the representation recorded with the neighbours (``use_rep``, ``n_pcs`` in
        ``.uns[neighbors_key]['params']``) is no longer in ``adata``: the layout runs on the
        stored graph, but the data-based fallbacks of the initialisation are not available
        (``init_pos='pca'`` then raises a ValueError).

    Examples
    --------
    >>> import scanpy as sc, annumap
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> annumap.pp.neighbors(adata)
    >>> annumap.tl.umap(adata, min_dist=0.3)
    >>> adata.obsm["X_umap"].shape
    (700, 2)
    """
    from .._core._numba import resolve_n_jobs
    from .._core.curve import find_ab
    from .._core.layout import default_n_epochs

    # ---- validate everything before any work or write
    check_adata(adata)
    if not isinstance(copy, bool):
        msg = f"copy must be a bool, got {type(copy).__name__}."
        raise TypeError(msg)
    p = check_params(
        min_dist=min_dist, spread=spread, n_components=n_components, maxiter=maxiter,
        alpha=alpha, gamma=gamma, negative_sample_rate=negative_sample_rate, a=a, b=b,
    )  # fmt: skip
    if method not in LAYOUTS:
        msg = f"method must be one of {tuple(LAYOUTS)}, got {method!r}."
        raise ValueError(msg)
    seed = resolve_seed(random_state, rng)
    if method == "parametric" and p["maxiter"] == 0:
        msg = "maxiter must be >= 1 for method='parametric' (it trains an encoder)."
        raise ValueError(msg)
    resolve_n_jobs(n_jobs)
    preflight(method)
    if progress is not None and not isinstance(progress, bool):
        msg = f"progress must be a bool or None, got {type(progress).__name__}."
        raise TypeError(msg)
    if callback is not None and not callable(callback):
        msg = f"callback must be callable, got {type(callback).__name__}."
        raise TypeError(msg)
    if key_added is not None and (not isinstance(key_added, str) or not key_added):
        msg = f"key_added must be a non-empty str or None, got {key_added!r}."
        raise ValueError(msg)
    obsm_key, uns_key = ("X_umap", "umap") if key_added is None else (key_added, key_added)
    layout_kwds = _parametric_settings(method, parametric_kwds)
    neighbors = read_neighbors(adata, neighbors_key)
    if neighbors.params.get("method", "umap") != "umap":
        logger.warning(
            "the connectivities of %r were not computed with method='umap'", neighbors.key
        )
    stale = stale_representation(adata, neighbors)
    if stale is not None:
        warnings.warn(
            f"{stale}: the layout uses the stored graph only, without the data-based "
            "fallbacks of the initialisation; re-run pp.neighbors to record the current "
            "representation.",
            UserWarning,
            stacklevel=2,
        )
        if isinstance(init_pos, str) and init_pos == "pca" and init_pos not in adata.obsm:
            msg = f"init_pos='pca' needs the representation the neighbours used, but {stale}."
            raise ValueError(msg)
        if method == "parametric":
            msg = (
                "method='parametric' trains its encoder on the representation the neighbours "
                f"used, but {stale}."
            )
            raise ValueError(msg)
    if method == "parametric" and not (isinstance(init_pos, str) and init_pos == "spectral"):
        warnings.warn(
            "init_pos is not used by method='parametric' (the encoder starts from random "
            "weights); it is ignored.",
            UserWarning,
            stacklevel=2,
        )

    # ---- compute
    start = time.perf_counter()
    if "a" in p:
        a_, b_ = p["a"], p["b"]
    else:
        a_, b_ = find_ab(p["spread"], p["min_dist"])
    n_epochs = default_n_epochs(adata.n_obs) if p["maxiter"] is None else p["maxiter"]
    if method == "parametric":  # no initialisation: only its shape fixes the output size
        init = np.zeros((adata.n_obs, p["n_components"]), dtype=np.float32)
        init_name = "none"
    else:
        init, init_name = _init_positions(
            adata, init_pos, neighbors, p["n_components"], seed, n_epochs
        )
    if "settings" in layout_kwds:
        layout_kwds["settings"] = layout_kwds["settings"].resolved(p["maxiter"], p["alpha"])
    if n_epochs == 0:  # scanpy's maxiter=0: the initial positions
        embedding, extras = init, {}
    else:
        embedding, extras = run_layout(
            method,
            neighbors.connectivities,
            init,
            a=a_,
            b=b_,
            n_epochs=n_epochs,
            alpha=p["alpha"],
            gamma=p["gamma"],
            negative_sample_rate=p["negative_sample_rate"],
            seed=seed,
            n_jobs=n_jobs,
            callback=callback,
            progress=progress,
            data=lambda: _representation(adata, neighbors, seed),
            **layout_kwds,
        )
    if not np.isfinite(embedding).all():
        # e.g. a or b so extreme that a * d**(2b) overflows in the float32 kernel
        msg = (
            f"the layout produced non-finite coordinates (a={a_:.4g}, b={b_:.4g}); extreme "
            "values of a and b (or of the min_dist and spread they are fitted from) overflow "
            "the float32 layout: choose more usual values. Nothing was written."
        )
        raise FloatingPointError(msg)
    logger.info(
        "umap: %d cells, %d epochs, init %s, %.2f s",
        adata.n_obs,
        n_epochs,
        init_name,
        time.perf_counter() - start,
    )
    params: dict[str, Any] = {"a": float(a_), "b": float(b_)}
    if seed != 0:
        params["random_state"] = seed
    params.update(
        min_dist=p["min_dist"],
        spread=p["spread"],
        n_components=p["n_components"],
        n_epochs=int(n_epochs),
        alpha=p["alpha"],
        gamma=p["gamma"],
        negative_sample_rate=p["negative_sample_rate"],
        init_pos=init_name,
        method=method,
        neighbors_key=neighbors.key,
    )
    if p["maxiter"] is not None:  # umap_transform's default epochs follow custom ones
        params["maxiter"] = p["maxiter"]
    if "settings" in layout_kwds:
        params["parametric_kwds"] = layout_kwds["settings"].to_dict()

    # ---- write, all at once
    target = adata.copy() if copy else adata
    materialize(target)
    target.obsm[obsm_key] = np.ascontiguousarray(embedding, dtype=np.float32)
    target.uns[uns_key] = {"params": params, **extras}
    return target if copy else None
