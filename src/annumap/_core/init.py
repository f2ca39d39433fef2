"""Initial positions of the layout: spectral, PCA, random, PAGA and user arrays; rescaling.

All functions take a NumPy ``Generator`` (never the global RNG) and return float arrays; the
final :func:`rescale` maps every dimension to ``[0, 10]`` as umap-learn does.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

__all__ = [
    "jitter_duplicates",
    "noisy_scale",
    "paga_init",
    "pca_init",
    "random_init",
    "rescale",
    "spectral_init",
]

logger = logging.getLogger("annumap")

DataProvider = Callable[[], "np.ndarray | sparse.spmatrix | None"]

#: Below this many vertices the spectral problem is solved densely (exact and fast).
_DENSE_MAX = 200
#: ARPACK restarts before the spectral init gives up and falls back.
_MAXITER = 5000
#: Seconds the eigensolver may run (checked at every matrix-vector product) before the
#: spectral init gives up and falls back.
SPECTRAL_TIME_BUDGET = 120.0
#: The meta layout of umap-learn's rule (an eigenmap of the centroid affinities ``exp(-d^2)``)
#: is used only while every component keeps at least this distance (relative to the layout's
#: largest coordinate) from the nearest other one; below it the Gaussian kernel's fixed
#: bandwidth of one data unit has collapsed the components onto each other (measured, see
#: docs/design.md) and the components are placed by a classical MDS of the same distances.
META_MIN_GAP = 1e-3
#: Above this many components the meta layout skips the dense (n_comp, n_comp) matrices of
#: the eigenmap and the MDS and takes a PCA of the centroids (the MDS of their Euclidean
#: distances) instead: 2,000 components are ~30 MB of distances and a second of eigh.
_META_DENSE_MAX = 2000


class _OutOfTime(RuntimeError):
    """The eigensolver ran past :data:`SPECTRAL_TIME_BUDGET`."""


def random_init(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform positions in ``[-10, 10]^dim``."""
    return rng.uniform(-10.0, 10.0, size=(n, dim))


def noisy_scale(Y: np.ndarray, rng: np.random.Generator, max_coord: float = 10.0) -> np.ndarray:
    """Scale so that ``max |Y| = max_coord`` and add N(0, 1e-4) noise (umap-learn's convention)."""
    m = np.abs(Y).max()
    Y = Y * (max_coord / m) if m > 0 else Y
    return Y + rng.normal(scale=1e-4, size=Y.shape)


def jitter_duplicates(Y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Separate repeated positions by noise of 0.001 x the mean nearest-neighbour distance."""
    if np.unique(Y, axis=0).shape[0] == Y.shape[0]:
        return Y
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(Y).query(Y, k=2)
    scale = 1e-3 * float(np.mean(dist[:, 1]))
    if scale == 0:
        scale = 1e-3 * float(np.ptp(Y)) if np.ptp(Y) > 0 else 1e-3
    return Y + rng.normal(scale=scale, size=Y.shape)


def rescale(Y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Map each dimension to ``[0, 10]``; a constant dimension is replaced by uniform noise."""
    Y = np.asarray(Y, dtype=np.float64)
    # divide each dimension by a power of two above its largest magnitude (exact in floating
    # point) so that ``hi - lo`` cannot overflow for inputs near the float64 limit
    _, exponent = np.frexp(np.abs(Y).max(axis=0))
    Y = np.ldexp(Y, -exponent)
    lo, hi = Y.min(axis=0), Y.max(axis=0)
    span = hi - lo
    out = np.empty_like(Y)
    flat = span == 0
    if flat.any():
        warnings.warn(
            f"initial positions are constant in dimension(s) {np.flatnonzero(flat).tolist()}; "
            "using random values there.",
            UserWarning,
            stacklevel=4,
        )
        out[:, flat] = rng.uniform(0.0, 10.0, size=(Y.shape[0], int(flat.sum())))
    ok = ~flat
    out[:, ok] = 10.0 * (Y[:, ok] - lo[ok]) / span[ok]
    return np.ascontiguousarray(out, dtype=np.float32)


def pca_init(data: np.ndarray | sparse.spmatrix, dim: int, rng: np.random.Generator) -> np.ndarray:
    """First ``dim`` principal components of ``data``, scaled to max 10 with N(0, 1e-4) noise."""
    from .pca import pca

    Y = pca(data, dim, random_state=int(rng.integers(2**31)))
    if Y.shape[1] < dim:  # fewer features than dimensions: pad with noise
        Y = np.hstack([Y, rng.normal(scale=1e-4, size=(Y.shape[0], dim - Y.shape[1]))])
    return noisy_scale(Y.astype(np.float64), rng)


def _spectral_connected(G: sparse.csr_matrix, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Eigenvectors 2..dim+1 of the normalised Laplacian of a connected graph (may raise)."""
    n = G.shape[0]
    deg = np.asarray(G.sum(axis=1)).ravel()
    inv_sqrt = 1.0 / np.sqrt(deg)
    A = sparse.diags(inv_sqrt) @ G.astype(np.float64) @ sparse.diags(inv_sqrt)
    k = dim + 1
    if n <= _DENSE_MAX:
        from scipy.linalg import eigh

        dense = A.toarray()
        vals, vecs = eigh(dense, subset_by_index=[n - k, n - 1])
        if vecs.shape[1] < k:
            # LAPACK's subset driver can return no eigenpair at all for a highly degenerate
            # spectrum (e.g. a complete graph of identical cells: 1 once, -1/(n-1) n-1 times)
            vals, vecs = np.linalg.eigh(dense)
    else:
        import time

        from scipy.sparse.linalg import LinearOperator, eigsh

        deadline = time.perf_counter() + SPECTRAL_TIME_BUDGET

        def matvec(v):
            if time.perf_counter() > deadline:
                msg = f"eigensolver exceeded {SPECTRAL_TIME_BUDGET:.0f} s"
                raise _OutOfTime(msg)
            return A @ v

        op = LinearOperator(A.shape, matvec=matvec, dtype=np.float64)
        # the top eigenvalues of D^-1/2 G D^-1/2 are the bottom ones of the normalised
        # Laplacian; a small Krylov space restarts cheaply (measured: 2 s vs 12 s at 50k cells
        # for ncv = sqrt(n), umap-learn's choice with which='SM' on L)
        ncv = min(n - 1, max(2 * k + 1, 4 * k + 4))
        vals, vecs = eigsh(op, k=k, which="LA", ncv=ncv, tol=1e-4, v0=np.ones(n), maxiter=_MAXITER)
    order = np.argsort(-vals)[1:k]  # skip the trivial top eigenvector
    Y = vecs[:, order]
    if not np.isfinite(Y).all():
        msg = "non-finite eigenvectors"
        raise ArithmeticError(msg)
    return Y


def spectral_init(
    graph: sparse.spmatrix,
    dim: int,
    rng: np.random.Generator,
    data: DataProvider | None = None,
    *,
    metric: str = "euclidean",
    metric_kwds: dict | None = None,
) -> np.ndarray:
    """Spectral layout of ``graph``, one per connected component, placed by a meta layout.

    umap-learn 0.5's ``spectral_layout``, with two documented differences (docs/design.md).
    A connected graph gets the eigenvectors 2..dim+1 of its normalised Laplacian. With several
    components, each gets its own, scaled so that its largest coordinate is half the distance
    from its meta position to the nearest other one; a component with fewer than ``2 * dim``
    or at most ``dim + 1`` vertices (umap-learn's cut-off: up to 3 vertices in 2-D) is spread
    uniformly in that box instead. The meta positions (see :func:`_meta_positions`): up to
    ``2 * dim`` components on ``+-e_i``; more, umap-learn's Laplacian eigenmap of the centroid
    affinities ``exp(-d^2)``, ``d`` the distances of the components' centroids in ``data``
    under ``metric``. Differences: (1) where that eigenmap leaves two components closer than
    :data:`META_MIN_GAP` of its extent (centroids more than a few units apart, as in typical
    PCA coordinates: the kernel's bandwidth is one data unit), a classical MDS of the same
    distances places them; umap-learn keeps the collapsed layout, whose components then lie
    on top of each other. (2) Without ``data`` (``data`` is None or returns None, e.g. a
    precomputed graph) the components go on a golden-angle spiral, largest in the middle;
    umap-learn draws them uniformly in ``[0, 10)^dim`` from the unseeded global NumPy RNG.

    If the eigensolver fails, falls back to PCA of ``data``, then to random positions, with a
    warning; never returns NaN. Output is scaled to max 10 plus N(0, 1e-4).
    """
    G = sparse.csr_matrix(graph, dtype=np.float64)
    # a new matrix without self-loops and stored zeros: neither is an edge of the layout, and
    # a stored zero would make its vertex look connected yet give it degree 0 (1 / sqrt(0))
    G = (G - sparse.diags(G.diagonal())).tocsr()
    G.eliminate_zeros()
    n = G.shape[0]
    G = (G + G.T) * 0.5 if (G != G.T).nnz else G
    n_comp, labels = connected_components(G, directed=False)
    try:
        if n_comp == 1:
            Y = _spectral_connected(G, dim, rng) if n > dim + 1 else random_init(n, dim, rng)
        else:
            Y = _multi_component(G, dim, n_comp, labels, rng, data, metric, metric_kwds)
    except (ArithmeticError, np.linalg.LinAlgError, RuntimeError) as err:
        X = data() if data is not None else None
        fallback = "PCA of the representation" if X is not None else "random positions"
        warnings.warn(
            f"spectral initialisation failed ({type(err).__name__}: {err}); using {fallback}. "
            "Pass init_pos='pca' or 'random' to choose yourself.",
            UserWarning,
            stacklevel=3,
        )
        return pca_init(X, dim, rng) if X is not None else random_init(n, dim, rng)
    return noisy_scale(Y, rng)


def _component_centroids(
    X: np.ndarray | sparse.spmatrix, labels: np.ndarray, sizes: np.ndarray
) -> np.ndarray:
    """Mean of each component's rows of ``X`` (dense or sparse), as float64."""
    onehot = sparse.csr_matrix(
        (np.ones(labels.size), (labels, np.arange(labels.size))),
        shape=(sizes.size, labels.size),
    )
    sums = onehot @ X  # sparse when the representation is sparse
    sums = sums.toarray() if sparse.issparse(sums) else np.asarray(sums)
    return sums.astype(np.float64) / sizes[:, None]


def _centroid_distances(centroids: np.ndarray, metric: str, metric_kwds: dict | None) -> np.ndarray:
    """All pairwise distances of the centroids in ``metric`` (Euclidean if it is unknown here)."""
    from sklearn.metrics import pairwise_distances

    from .knn import EXACT_METRICS

    if metric not in EXACT_METRICS:
        logger.info("spectral init: centroid distances in 'euclidean' (not %r)", metric)
        metric, metric_kwds = "euclidean", None
    try:
        D = pairwise_distances(centroids, metric=metric, **(metric_kwds or {}))
    except (TypeError, ValueError) as err:  # options the centroids' metric call cannot take
        logger.info("spectral init: centroid distances in 'euclidean' (%s)", err)
        D = pairwise_distances(centroids)
    D = 0.5 * (D + D.T)
    bad = ~np.isfinite(D)
    if bad.any():  # e.g. the correlation of a constant centroid: as far as the farthest pair
        D[bad] = np.max(D[~bad], initial=1.0)
    np.fill_diagonal(D, 0.0)
    return D


def _eigenmap(affinity: np.ndarray, dim: int) -> np.ndarray:
    """Laplacian eigenmap of a small dense affinity matrix, as scikit-learn's SpectralEmbedding.

    Eigenvectors 2..dim+1 of the normalised Laplacian (the diagonal of ``affinity`` ignored),
    divided by the square root of the degrees, each signed so that its largest-magnitude entry
    is positive.
    """
    A = np.array(affinity, dtype=np.float64)
    np.fill_diagonal(A, 0.0)
    deg = A.sum(axis=1)
    root = np.sqrt(np.where(deg > 0, deg, 1.0))  # an isolated vertex keeps its unit diagonal
    L = np.eye(A.shape[0]) - A / root[:, None] / root[None, :]
    _, vecs = np.linalg.eigh(L)
    emb = vecs[:, : dim + 1] / root[:, None]
    emb *= np.sign(emb[np.argmax(np.abs(emb), axis=0), np.arange(dim + 1)])
    return emb[:, 1:]


def _classical_mds(D: np.ndarray, dim: int) -> np.ndarray:
    """Classical (Torgerson) MDS of a distance matrix: PCA of the centroids for Euclidean ones."""
    n = D.shape[0]
    J = np.eye(n) - 1.0 / n
    B = -0.5 * J @ (D**2) @ J
    vals, vecs = np.linalg.eigh(0.5 * (B + B.T))
    top = np.argsort(-vals)[:dim]
    Y = vecs[:, top] * np.sqrt(np.clip(vals[top], 0.0, None))
    if Y.shape[1] < dim:  # fewer components than dimensions
        Y = np.hstack([Y, np.zeros((n, dim - Y.shape[1]))])
    return Y


def _nearest_gaps(meta: np.ndarray) -> np.ndarray:
    """Each row's distance to the nearest other row (inf for a single row)."""
    from scipy.spatial import cKDTree

    if meta.shape[0] < 2:
        return np.full(meta.shape[0], np.inf)
    d, _ = cKDTree(meta).query(meta, k=2)
    return d[:, 1]


def _meta_positions(
    n_comp: int,
    dim: int,
    sizes: np.ndarray,
    centroids: np.ndarray | None,
    rng: np.random.Generator,
    metric: str = "euclidean",
    metric_kwds: dict | None = None,
) -> np.ndarray:
    """Positions of the connected components relative to each other (max coordinate 1).

    Up to ``2 * dim`` components go to ``+-e_1, +-e_2, ...`` (umap-learn's rule). More, with
    ``centroids`` (the components' means in the data): umap-learn's eigenmap of the
    affinities ``exp(-d^2)`` of their distances ``d`` under ``metric``, scaled by its largest
    coordinate, unless it leaves two components closer than :data:`META_MIN_GAP`; then a
    classical MDS of ``d`` (a PCA of the centroids above :data:`_META_DENSE_MAX` components).
    Without centroids: a golden-angle spiral, largest component in the middle.
    """
    if n_comp <= 2 * dim:
        k = int(np.ceil(n_comp / 2))
        base = np.hstack([np.eye(k), np.zeros((k, dim - k))])
        return np.vstack([base, -base])[:n_comp]
    if centroids is not None:
        if n_comp > _META_DENSE_MAX:
            from .pca import pca

            logger.info("spectral init: %d components placed by a PCA of their centroids", n_comp)
            meta = np.zeros((n_comp, dim))
            if centroids.shape[1] > dim:
                meta[:] = pca(centroids, dim, random_state=0)
            else:
                meta[:, : centroids.shape[1]] = centroids - centroids.mean(axis=0)
        else:
            D = _centroid_distances(centroids, metric, metric_kwds)
            meta = _eigenmap(np.exp(-(D**2)), dim)
            top = meta.max()
            if np.isfinite(meta).all() and top > 0:
                meta = meta / top
                if _nearest_gaps(meta).min() >= META_MIN_GAP * np.abs(meta).max():
                    return meta
            logger.info(
                "spectral init: the centroid affinities exp(-d^2) do not separate the %d "
                "components (centroids %.3g to %.3g apart); placing them by MDS",
                n_comp,
                D[D > 0].min() if (D > 0).any() else 0.0,
                D.max(),
            )
            meta = _classical_mds(D, dim)
        meta = jitter_duplicates(meta, rng)
        top = np.abs(meta).max()
        if top > 0:
            return meta / top
    # no data (or all centroids equal): a golden-angle spiral, largest component in the middle
    order = np.argsort(-sizes, kind="stable")
    meta = np.zeros((n_comp, dim))
    if dim >= 2:
        r = np.sqrt(np.arange(n_comp) + 0.5)
        theta = np.arange(n_comp) * np.pi * (3 - np.sqrt(5))
        meta[order, 0] = r * np.cos(theta)
        meta[order, 1] = r * np.sin(theta)
    else:
        meta[order, 0] = np.arange(n_comp)
    return meta / np.abs(meta).max()


def _too_small(size: int, dim: int) -> bool:
    """umap-learn's cut-off: a component this small gets random positions, not eigenvectors."""
    return size < 2 * dim or size <= dim + 1


def _multi_component(G, dim, n_comp, labels, rng, data, metric="euclidean", metric_kwds=None):
    sizes = np.bincount(labels, minlength=n_comp)
    centroids = None
    if n_comp > 2 * dim and data is not None:
        X = data()
        if X is not None:
            centroids = _component_centroids(X, labels, sizes)
    meta = _meta_positions(n_comp, dim, sizes, centroids, rng, metric, metric_kwds)
    gaps = _nearest_gaps(meta)
    half = np.where(np.isfinite(gaps), gaps / 2.0, 1.0)
    half = np.maximum(half, 1e-6)
    Y = np.empty((labels.size, dim))
    order = np.argsort(labels, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    logger.info("spectral init: %d connected components", n_comp)
    for c in range(n_comp):
        members = order[bounds[c] : bounds[c + 1]]
        if _too_small(members.size, dim):
            Y[members] = meta[c] + rng.uniform(-half[c], half[c], size=(members.size, dim))
            continue
        sub = G[members][:, members].tocsr()
        emb = _spectral_connected(sub, dim, rng)
        emb *= half[c] / np.abs(emb).max()
        Y[members] = emb + meta[c]
    return Y


def paga_init(
    groups: np.ndarray,
    pos: np.ndarray,
    coarse: sparse.spmatrix | np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Positions from a PAGA layout: each cell near its group's ``pos`` (scanpy's rule).

    A group with PAGA neighbours puts its cells at ``pos[g] - 0.5 * dist + U(0, 1) * dist``,
    ``dist = pos[g] - pos[h]`` for its most strongly connected group ``h``; an isolated group at
    ``pos[g]`` (duplicates are jittered afterwards). ``groups`` holds group codes 0..n_groups-1.
    """
    pos = np.asarray(pos, dtype=np.float64)
    C = sparse.csr_matrix(coarse)
    out = np.empty((groups.size, pos.shape[1]))
    for g in range(pos.shape[0]):
        members = np.flatnonzero(groups == g)
        row = C.getrow(g)
        cols, vals = row.indices, row.data
        keep = (cols != g) & (vals > 0)
        cols, vals = cols[keep], vals[keep]
        if cols.size:
            h = cols[np.argmax(vals)]
            dist = pos[g] - pos[h]
            noise = rng.random((members.size, pos.shape[1])) * dist
            out[members] = pos[g] - 0.5 * dist + noise
        else:
            out[members] = pos[g]
    return jitter_duplicates(out, rng)
