"""The initial positions against umap-learn 0.5.12 (disconnected graphs) and scanpy (PAGA)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import procrustes
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr

from annumap._core import init as core_init
from annumap._core.fuzzy import fuzzy_simplicial_set
from annumap._core.knn._exact import exact_knn


def _blobs(scale: float, n_blobs: int = 10, per: int = 40, seed: int = 1):
    """Gaussian blobs in 10-D, ``scale`` x their usual size, and their (disconnected) graph.

    Scaling the data scales every distance but leaves the kNN graph, hence its components,
    unchanged: only the centroid distances that umap-learn's meta layout sees change.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, size=(n_blobs, 10))
    X = np.vstack([c + rng.normal(size=(per, 10)) for c in centres])
    idx, dist = exact_knn(X.astype(np.float32), 10)
    return X * scale, fuzzy_simplicial_set(idx, dist)


def _centroids(Y: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.array([Y[labels == c].mean(axis=0) for c in range(labels.max() + 1)])


def _both(X, G, dim=2):
    spectral = pytest.importorskip("umap.spectral")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn: "Graph is not fully connected"
        theirs = spectral.spectral_layout(X, G, dim, np.random.RandomState(0))
    ours = core_init.spectral_init(G, dim, np.random.default_rng(0), lambda: X)
    return ours, theirs


# ------------------------------------------------------ the meta layout (umap-learn 0.5.12)


@pytest.mark.parametrize("scale", [0.05, 0.1, 0.2])
def test_component_positions_match_umap_learn(scale):
    """Centroids a few data units apart: umap-learn's eigenmap, up to rotation, sign and scale."""
    X, G = _blobs(scale)
    n_comp, labels = connected_components(G, directed=False)
    assert n_comp > 4  # more than 2 * dim: the eigenmap of the centroid affinities decides
    ours, theirs = _both(X, G)
    co, ct = _centroids(ours, labels), _centroids(theirs, labels)
    assert procrustes(ct, co)[2] < 1e-3
    assert spearmanr(pdist(co), pdist(ct))[0] > 0.99


def test_eigenmap_is_sklearns_spectral_embedding():
    manifold = pytest.importorskip("sklearn.manifold")
    rng = np.random.default_rng(3)
    C = rng.normal(size=(9, 5)) * 0.5
    D = np.sqrt(((C[:, None] - C[None]) ** 2).sum(-1))
    A = np.exp(-(D**2))
    theirs = manifold.SpectralEmbedding(
        n_components=2, affinity="precomputed", random_state=0
    ).fit_transform(A)
    np.testing.assert_allclose(core_init._eigenmap(A, 2), theirs, atol=1e-8)


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_well_separated_components_are_not_collapsed(scale):
    """The documented difference: umap-learn's exp(-d^2) puts far-apart components on top of
    each other; annumap places them by an MDS of the centroid distances instead."""
    X, G = _blobs(scale)
    _, labels = connected_components(G, directed=False)
    ours, theirs = _both(X, G)
    co, ct = _centroids(ours, labels), _centroids(theirs, labels)
    high = pdist(_centroids(X, labels))
    # umap-learn's meta layout: some components closer than the init noise (they overlap)
    assert pdist(ct).min() / np.abs(ct).max() < core_init.META_MIN_GAP
    # ours: every component apart, centroid distances ordered as in the data
    assert pdist(co).min() / np.abs(co).max() > 0.05
    assert spearmanr(high, pdist(co))[0] > 0.9


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_small_component_cut_off_matches_umap_learn(monkeypatch, dim):
    """Components of 1-7 vertices beside a big one: the same get random positions, not
    eigenvectors (umap-learn: fewer than 2 * dim or at most dim + 1 vertices)."""
    spectral = pytest.importorskip("umap.spectral")
    X, G = _blobs(0.1, n_blobs=3)
    sizes = [1, 2, 3, 4, 5, 6, 7]
    blocks = [G] + [sparse.csr_matrix(np.ones((s, s)) - np.eye(s)) for s in sizes]
    graph = sparse.block_diag(blocks, format="csr")
    rng = np.random.default_rng(0)
    X = np.vstack(
        [X] + [rng.normal(size=(s, X.shape[1])) + 3 * (i + 1) for i, s in enumerate(sizes)]
    )

    seen_theirs: list[int] = []
    real = spectral._spectral_layout

    def record_theirs(*args, **kwargs):
        seen_theirs.append(kwargs["graph"].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(spectral, "_spectral_layout", record_theirs)
    seen_ours: list[int] = []
    real_ours = core_init._spectral_connected

    def record_ours(G, dim, rng):
        seen_ours.append(G.shape[0])
        return real_ours(G, dim, rng)

    monkeypatch.setattr(core_init, "_spectral_connected", record_ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spectral.spectral_layout(X, graph, dim, np.random.RandomState(0))
    core_init.spectral_init(graph, dim, np.random.default_rng(0), lambda: X)
    theirs = sorted(seen_theirs[1:])  # the first call is the whole, disconnected graph
    assert sorted(seen_ours) == theirs
    assert min(theirs) == {1: 3, 2: 4, 3: 6}[dim]  # the cut-off is really exercised


def test_spectral_init_without_data_is_reproducible_and_spread():
    """No representation (e.g. a precomputed graph): umap-learn draws the meta positions from
    the unseeded global RNG; annumap puts them on a spiral, the same for the same seed."""
    _, G = _blobs(1.0)
    _, labels = connected_components(G, directed=False)
    a = core_init.spectral_init(G, 2, np.random.default_rng(5))
    b = core_init.spectral_init(G, 2, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    c = _centroids(a, labels)
    assert pdist(c).min() / np.abs(c).max() > 0.05


@pytest.mark.parametrize("n_features", [1, 3])
def test_meta_positions_with_identical_centroids_stay_apart(n_features):
    C = np.zeros((6, n_features))  # all six components at the same centroid
    meta = core_init._meta_positions(6, 2, np.full(6, 10), C, np.random.default_rng(0))
    assert np.isfinite(meta).all() and pdist(meta).min() > 0


def test_many_components_are_placed_by_a_pca_of_their_centroids(monkeypatch):
    monkeypatch.setattr(core_init, "_META_DENSE_MAX", 4)
    monkeypatch.setattr(core_init, "_centroid_distances", None)  # no dense distances
    X, G = _blobs(3.0)
    n_comp, labels = connected_components(G, directed=False)
    assert n_comp > 4
    c = _centroids(core_init.spectral_init(G, 2, np.random.default_rng(0), lambda: X), labels)
    assert pdist(c).min() / np.abs(c).max() > 0.05
    assert spearmanr(pdist(_centroids(X, labels)), pdist(c))[0] > 0.9


def test_unknown_metric_options_fall_back_to_euclidean():
    C = np.random.default_rng(0).normal(size=(7, 4))
    D = core_init._centroid_distances(C, "minkowski", {"no_such_option": 1})
    np.testing.assert_allclose(D, core_init._centroid_distances(C, "euclidean", None))


# ------------------------------------------------------------------------- PAGA vs scanpy


class _LegacyDraws:
    """The uniform draws of ``np.random.seed(seed)`` (scanpy's) behind a Generator's names."""

    def __init__(self, seed: int):
        self._state = np.random.RandomState(seed)

    def random(self, size):
        return self._state.random_sample(size)


def _scanpy_paga(adata, seed):
    from scanpy.tools._utils import get_init_pos_from_paga

    state = np.random.get_state()
    try:
        return get_init_pos_from_paga(adata, random_state=seed)  # seeds the global RNG
    finally:
        np.random.set_state(state)


@pytest.mark.parametrize("isolate", [False, True])
def test_paga_init_matches_scanpy(paga_adata, monkeypatch, isolate):
    """Same PAGA result and the same uniform draws: the same initial coordinates as scanpy's
    ``tl.umap(init_pos='paga')``. Only the random stream differs in use (annumap's seeded
    Generator, not ``np.random.seed``)."""
    paga = paga_adata.uns["paga"]
    if isolate:  # cut group 0 off: its cells all sit at its position
        C = sparse.lil_matrix(paga["connectivities"])
        C[0, :] = 0
        C[:, 0] = 0
        paga["connectivities"] = C.tocsr()
        paga["connectivities"].eliminate_zeros()
    theirs = _scanpy_paga(paga_adata, 3)
    codes = np.asarray(paga_adata.obs[paga["groups"]].cat.codes)
    # umap-learn jitters duplicated rows afterwards as annumap does; compare before that
    monkeypatch.setattr(core_init, "jitter_duplicates", lambda Y, rng: Y)
    ours = core_init.paga_init(codes, paga["pos"], paga["connectivities"], _LegacyDraws(3))
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    if isolate:
        np.testing.assert_array_equal(
            ours[codes == 0], np.broadcast_to(paga["pos"][0], ours[codes == 0].shape)
        )


def test_paga_init_cells_lie_in_scanpys_boxes(paga_adata):
    """With annumap's own Generator: each cell inside the box scanpy's rule draws it from."""
    paga = paga_adata.uns["paga"]
    codes = np.asarray(paga_adata.obs[paga["groups"]].cat.codes)
    pos = np.asarray(paga["pos"], dtype=np.float64)
    C = sparse.csr_matrix(paga["connectivities"])
    Y = core_init.paga_init(codes, pos, C, np.random.default_rng(0))
    theirs = _scanpy_paga(paga_adata, 0)
    for g in range(pos.shape[0]):
        row = C.getrow(g)
        h = row.indices[np.argmax(row.data)]
        dist = pos[g] - pos[h]
        lo, hi = (
            np.minimum(pos[g] - 0.5 * dist, pos[g] + 0.5 * dist),
            np.maximum(pos[g] - 0.5 * dist, pos[g] + 0.5 * dist),
        )
        for side in (Y[codes == g], theirs[codes == g]):
            assert (side >= lo - 1e-12).all() and (side <= hi + 1e-12).all()


# ------------------------------------------------------------------- tl.umap's plumbing


@pytest.mark.parametrize("how", ["cosine", "precomputed"])
def test_tl_umap_passes_the_metric_and_no_data_for_precomputed(monkeypatch, how):
    import annumap

    from .conftest import make_adata

    adata = make_adata(200, 5, centers=3, seed=2)
    if how == "precomputed":
        X = adata.X
        D = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
        annumap.pp.neighbors(adata, n_neighbors=10, distances=D)
    else:
        annumap.pp.neighbors(adata, n_neighbors=10, metric="cosine", use_rep="X")
    seen = {}
    real = core_init.spectral_init

    def spy(graph, dim, rng, data=None, **kwargs):
        seen.update(kwargs, data=None if data is None else data())
        return real(graph, dim, rng, data, **kwargs)

    monkeypatch.setattr(core_init, "spectral_init", spy)
    annumap.tl.umap(adata, maxiter=5)
    if how == "precomputed":
        assert seen["data"] is None
    else:
        assert seen["metric"] == "cosine"
        np.testing.assert_array_equal(seen["data"], adata.X)
