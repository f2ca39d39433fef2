"""tl.umap_transform: query kNN, fuzzy graph, init and SGD against oracles; reference mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

import annumap
from annumap._core import transform as core
from annumap._core._rng import draw_indices, epoch_key
from annumap._core.knn._exact import exact_query_knn

from .conftest import assert_adata_equal, make_adata

CBMC = Path(__file__).resolve().parents[1] / "data" / "cbmc_citeseq_8617x500.h5ad"


# ---------------------------------------------------------------------------------------------
# array level


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "correlation", "manhattan"])
@pytest.mark.parametrize("as_sparse", [False, True])
def test_exact_query_knn_equals_brute_force(metric, as_sparse):
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(0)
    R = rng.normal(size=(400, 9)).astype(np.float32)
    Q = rng.normal(size=(57, 9)).astype(np.float32)
    Q[:4] = R[[3, 100, 250, 399]]  # queries that coincide with reference points
    ref = sparse.csr_matrix(R) if as_sparse else R
    idx, dist = exact_query_knn(ref, Q, 12, metric=metric)
    nn = NearestNeighbors(n_neighbors=12, metric=metric, algorithm="brute")
    d_ref, i_ref = nn.fit(R.astype(np.float64)).kneighbors(Q.astype(np.float64))
    np.testing.assert_array_equal(idx, i_ref)
    np.testing.assert_allclose(dist, d_ref, atol=2e-6)
    assert idx.dtype == np.int64 and dist.dtype == np.float32
    np.testing.assert_array_equal(idx[:4, 0], [3, 100, 250, 399])
    assert np.all(dist[:4, 0] <= 1e-6)


def test_exact_query_knn_rejects_bad_shapes():
    R = np.zeros((5, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="n_neighbors"):
        exact_query_knn(R, R, 6)
    with pytest.raises(ValueError, match="features"):
        exact_query_knn(R, np.zeros((2, 4)), 2)


def test_bipartite_graph_equals_umap_learn():
    umap_ = pytest.importorskip("umap.umap_")
    rng = np.random.default_rng(1)
    R = rng.normal(size=(300, 6)).astype(np.float32)
    Q = rng.normal(size=(40, 6)).astype(np.float32)
    Q[0] = R[7]  # a zero distance: membership 1
    idx, dist = exact_query_knn(R, Q, 15)
    ours = core.bipartite_graph(dist)
    sigmas, rhos = umap_.smooth_knn_dist(dist, 15.0, local_connectivity=0.0)
    _, cols, vals, _ = umap_.compute_membership_strengths(idx, dist, sigmas, rhos, bipartite=True)
    np.testing.assert_array_equal(cols.reshape(idx.shape), idx)
    np.testing.assert_allclose(ours, vals.reshape(idx.shape), rtol=1e-5, atol=1e-7)
    assert ours[0, 0] == 1.0 and (ours[1:] < 1.0).all()


def test_init_positions_weighted_mean_and_exact_hits():
    Y = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [4.0, 4.0]], dtype=np.float32)
    idx = np.array([[0, 1, 2], [3, 1, 0], [2, 0, 1]])
    w = np.array([[1.0, 0.5, 0.5], [1.0, 0.2, 0.2], [0.0, 0.0, 0.0]], dtype=np.float32)
    w[0, 0] = 0.5  # row 0: a plain weighted mean
    out = core.init_positions(idx, w, Y)
    np.testing.assert_allclose(out[0], (0.5 * Y[0] + 0.5 * Y[1] + 0.5 * Y[2]) / 1.5, rtol=1e-6)
    np.testing.assert_array_equal(out[1], Y[3])  # weight 1: exactly that reference point
    np.testing.assert_allclose(out[2], Y[[2, 0, 1]].mean(axis=0), rtol=1e-6)  # all zero


def test_init_positions_equal_umap_learn():
    umap_ = pytest.importorskip("umap.umap_")
    rng = np.random.default_rng(2)
    R = rng.normal(size=(200, 5)).astype(np.float32)
    Q = rng.normal(size=(30, 5)).astype(np.float32)
    emb = rng.normal(size=(200, 2)).astype(np.float32)
    idx, dist = exact_query_knn(R, Q, 10)
    w = core.bipartite_graph(dist)
    rows = np.repeat(np.arange(30), 10)
    graph = sparse.csr_matrix((w.ravel(), (rows, idx.ravel())), shape=(30, 200))
    expected = umap_.init_graph_transform(graph, emb)
    np.testing.assert_allclose(core.init_positions(idx, w, emb), expected, rtol=1e-5, atol=1e-5)


def test_kernel_draws_match_the_vectorised_generator():
    from annumap._core._transform_kernels import draw_reference

    key = epoch_key(123, 7)
    edges = np.arange(50, dtype=np.int64).repeat(4)
    draws = np.tile(np.arange(4, dtype=np.int64), 50)
    np.testing.assert_array_equal(
        draw_reference(key, edges, draws, 997),
        draw_indices(key, edges, draws, 997).astype(np.int64),
    )


@pytest.fixture(scope="module")
def fitted_blobs():
    adata = make_adata(n=700, dim=10, centers=4, seed=3)
    ref, query = adata[:560].copy(), adata[560:].copy()
    annumap.pp.neighbors(ref, n_neighbors=15)
    annumap.tl.umap(ref, maxiter=200)
    return ref, query


def _core_inputs(ref, query):
    X_ref, X_q = np.asarray(ref.X), np.asarray(query.X)
    idx, dist = exact_query_knn(X_ref, X_q, 15)
    w = core.bipartite_graph(dist)
    return idx, w, core.init_positions(idx, w, ref.obsm["X_umap"]), ref.obsm["X_umap"]


def test_optimize_transform_is_deterministic_across_threads(fitted_blobs):
    idx, w, init, emb = _core_inputs(*fitted_blobs)
    emb_before = emb.copy()
    kw = {"a": 0.583, "b": 1.334, "n_epochs": 60}
    runs = [core.optimize_transform(idx, w, init, emb, n_jobs=n, **kw) for n in (1, 2, 1)]
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])
    assert not np.array_equal(runs[0], init)  # it moved
    other = core.optimize_transform(idx, w, init, emb, seed=5, **kw)
    assert not np.array_equal(other, runs[0])
    np.testing.assert_array_equal(emb, emb_before)  # the reference is never written


def test_optimize_transform_attracts_towards_neighbours(fitted_blobs):
    # from a bad start (every query point at the same far corner), the SGD brings each point
    # back among its reference neighbours
    idx, w, init, emb = _core_inputs(*fitted_blobs)
    far = np.tile(emb.max(axis=0) + 5.0, (init.shape[0], 1)).astype(np.float32)
    out = core.optimize_transform(idx, w, far, emb, a=0.583, b=1.334, n_epochs=100, alpha=1.0)
    centre = emb[idx].mean(axis=1)
    before = np.linalg.norm(far - centre, axis=1)
    after = np.linalg.norm(out - centre, axis=1)
    assert np.median(after) < 0.25 * np.median(before)


# ---------------------------------------------------------------------------------------------
# AnnData level


def test_transform_writes_query_only(fitted_blobs):
    ref, query = fitted_blobs
    ref_before, query_before = ref.copy(), query.copy()
    out = annumap.tl.umap_transform(query, ref, copy=True)
    assert_adata_equal(ref, ref_before)
    assert_adata_equal(query, query_before)
    Y = out.obsm["X_umap"]
    assert Y.dtype == np.float32 and Y.shape == (query.n_obs, 2) and np.isfinite(Y).all()
    params = out.uns["umap_transform"]["params"]
    assert params["method"] == "umap" and params["n_neighbors"] == 15
    # the reference was fitted with maxiter=200: umap-learn's transform runs 200 // 3 epochs
    assert params["n_epochs"] == 66 and params["knn_backend"] == "exact"
    assert params["representation"] == "adata_query.X"
    assert annumap.tl.umap_transform(query, ref, key_added="U", maxiter=20) is None
    assert query.obsm["U"].shape == Y.shape and "U" in query.uns
    again = annumap.tl.umap_transform(query_before, ref, copy=True)
    np.testing.assert_array_equal(again.obsm["X_umap"], Y)  # deterministic for the seed


def test_transform_is_independent_of_n_jobs(fitted_blobs):
    ref, query = fitted_blobs
    a = annumap.tl.umap_transform(query, ref, copy=True, n_jobs=1).obsm["X_umap"]
    b = annumap.tl.umap_transform(query, ref, copy=True, n_jobs=2).obsm["X_umap"]
    np.testing.assert_array_equal(a, b)
    c = annumap.tl.umap_transform(query, ref, copy=True, random_state=9).obsm["X_umap"]
    assert not np.array_equal(a, c)


def test_query_cells_land_with_their_blob(fitted_blobs):
    from sklearn.neighbors import KNeighborsClassifier

    ref, query = fitted_blobs
    out = annumap.tl.umap_transform(query, ref, copy=True)
    clf = KNeighborsClassifier(15).fit(ref.obsm["X_umap"], ref.obs["label"])
    assert (clf.predict(out.obsm["X_umap"]) == query.obs["label"]).mean() > 0.98


def _stays_home(Y: np.ndarray, fitted: np.ndarray) -> tuple[float, float]:
    """(fraction of cells whose fitted position is among the 15 fitted positions nearest to
    where they were placed, median shift / median distance to the 15th fitted neighbour)."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=16).fit(fitted)
    radius = np.median(nn.kneighbors(fitted)[0][:, 15])
    near = nn.kneighbors(Y, n_neighbors=15, return_distance=False)
    home = float((near == np.arange(len(fitted))[:, None]).any(axis=1).mean())
    return home, float(np.median(np.linalg.norm(Y - fitted, axis=1)) / radius)


def test_reference_cells_stay_near_their_fitted_positions(fitted_blobs):
    # each starts exactly at its fitted position (a zero-distance neighbour of weight 1) and
    # relaxes within its neighbourhood; umap-learn's transform gives the same figures here
    # (0.78 at home, median shift 0.95 radius, measured with umap-learn 0.5.12)
    ref, _ = fitted_blobs
    out = annumap.tl.umap_transform(ref.copy(), ref, copy=True)
    home, shift = _stays_home(out.obsm["X_umap"], ref.obsm["X_umap"])
    assert home > 0.65 and shift < 1.2, (home, shift)
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(15).fit(ref.obsm["X_umap"], ref.obs["label"])
    assert (clf.predict(out.obsm["X_umap"]) == ref.obs["label"]).all()


def test_var_order_and_extra_vars_do_not_matter(fitted_blobs):
    ref, query = fitted_blobs
    base = annumap.tl.umap_transform(query, ref, copy=True).obsm["X_umap"]
    import anndata as ad

    shuffled = query[:, ::-1].copy()
    extra = ad.AnnData(
        X=np.hstack([np.asarray(shuffled.X), np.ones((query.n_obs, 1), dtype=np.float32)]),
        obs=query.obs.copy(),
    )
    extra.var_names = [*shuffled.var_names, "extra"]
    for q in (shuffled, extra):
        out = annumap.tl.umap_transform(q, ref, copy=True).obsm["X_umap"]
        np.testing.assert_array_equal(out, base)


def test_view_query_is_materialised(fitted_blobs):
    ref, query = fitted_blobs
    view = query.copy()[:50]
    assert view.is_view
    annumap.tl.umap_transform(view, ref)
    assert not view.is_view and view.obsm["X_umap"].shape == (50, 2)


def test_single_query_cell(fitted_blobs):
    ref, query = fitted_blobs
    out = annumap.tl.umap_transform(query[:1].copy(), ref, copy=True)
    assert out.obsm["X_umap"].shape == (1, 2)


# ---------------------------------------------------------------------------------------------
# PCA projection and representations


@pytest.fixture(scope="module")
def pca_pair():
    """Counts-like data with > 50 variables: the reference's neighbours use X_pca."""
    sc = pytest.importorskip("scanpy")
    rng = np.random.default_rng(4)
    centres = rng.gamma(1.0, 2.0, size=(3, 80))
    labels = rng.integers(3, size=900)
    X = rng.poisson(centres[labels]).astype(np.float32)
    import anndata as ad
    import pandas as pd

    adata = ad.AnnData(X=sparse.csr_matrix(np.log1p(X)))
    adata.obs["label"] = pd.Categorical(labels.astype(str))
    ref, query = adata[:700].copy(), adata[700:].copy()
    sc.pp.pca(ref, n_comps=20, random_state=0)
    annumap.pp.neighbors(ref, n_neighbors=15, n_pcs=15)
    annumap.tl.umap(ref, maxiter=150)
    return ref, query


def test_projection_reproduces_the_reference_pca(pca_pair):
    ref, query = pca_pair
    out = annumap.tl.umap_transform(query, ref, copy=True)
    assert out.uns["umap_transform"]["params"]["representation"] == (
        "adata_query.X @ adata_ref.varm['PCs'][:, :15]"
    )
    # projecting the reference's own cells gives back its stored scores
    from annumap.tl._transform import _query_representation

    own, _ = _query_representation(ref, ref, "X_pca", 15, "project", 15)
    scores = ref.obsm["X_pca"][:, :15]
    assert np.abs(own - scores).max() < 1e-4 * np.abs(scores).max()
    span = float(np.ptp(ref.obsm["X_umap"], axis=0).max())
    # the same scores supplied by the query give the same result
    X = query.X.toarray()
    centred = X - ref.X.toarray().mean(axis=0)
    q2 = query.copy()
    q2.obsm["X_pca"] = (centred @ ref.varm["PCs"]).astype(np.float32)
    via_obsm = annumap.tl.umap_transform(q2, ref, copy=True, representation="query")
    assert via_obsm.uns["umap_transform"]["params"]["representation"] == (
        "adata_query.obsm['X_pca'][:, :15]"
    )
    close = np.linalg.norm(via_obsm.obsm["X_umap"] - out.obsm["X_umap"], axis=1) < 1e-2 * span
    assert close.mean() > 0.95


def test_projection_refuses_a_reference_changed_after_pca(pca_pair):
    ref, query = pca_pair
    bad = ref.copy()
    bad.X = bad.X.multiply(2.0).tocsr()  # .X no longer what the PCA saw
    before = query.copy()
    with pytest.raises(ValueError, match="does not reproduce"):
        annumap.tl.umap_transform(query, bad, representation="project")
    with pytest.raises(KeyError, match="does not reproduce"):  # auto: no query obsm to fall back
        annumap.tl.umap_transform(query, bad)
    assert_adata_equal(query, before)
    q2 = query.copy()
    q2.obsm["X_pca"] = np.zeros((query.n_obs, 20), dtype=np.float32)
    annumap.tl.umap_transform(q2, bad)  # falls back to the query's own X_pca
    assert q2.uns["umap_transform"]["params"]["representation"].startswith("adata_query.obsm")


def test_errors_name_the_problem(fitted_blobs, pca_pair):
    ref, query = fitted_blobs
    before = query.copy()
    cases = [
        ({"method": "tsne"}, ValueError, "method must be one of"),
        ({"representation": "magic"}, ValueError, "representation must be one of"),
        ({"knn_backend": "annoy"}, ValueError, "knn_backend must be one of"),
        ({"maxiter": 0}, ValueError, "maxiter"),
        ({"umap_key": "X_tsne"}, KeyError, "run annumap.tl.umap"),
        ({"neighbors_key": "nope"}, KeyError, "neighbors entry 'nope'"),
        ({"method": "parametric"}, KeyError, "holds no encoder"),
        ({"representation": "project"}, ValueError, "used .X"),
        ({"copy": "yes"}, TypeError, "copy"),
    ]
    for kwargs, err, match in cases:
        with pytest.raises(err, match=match):
            annumap.tl.umap_transform(query, ref, **kwargs)
    with pytest.raises(TypeError, match="adata_query must be an AnnData"):
        annumap.tl.umap_transform(np.zeros((3, 10)), ref)
    with pytest.raises(ValueError, match="same object"):
        annumap.tl.umap_transform(ref, ref)
    missing = query[:, :8].copy()
    with pytest.raises(KeyError, match="lacks 2 of the reference's variables"):
        annumap.tl.umap_transform(missing, ref)
    nan = query.copy()
    nan.X[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        annumap.tl.umap_transform(nan, ref)
    assert_adata_equal(query, before)

    pref, pquery = pca_pair
    unstored = pref.copy()
    del unstored.obsm["X_pca"]
    with pytest.raises(ValueError, match="PCA that is not stored any more"):
        annumap.tl.umap_transform(pquery, unstored)
    no_pcs = pref.copy()
    del no_pcs.varm["PCs"]
    with pytest.raises(KeyError, match=r"no 'X_pca'.*varm has no 'PCs'"):
        annumap.tl.umap_transform(pquery, no_pcs)
    wrong = pquery.copy()
    wrong.obsm["X_pca"] = np.zeros((pquery.n_obs, 5), dtype=np.float32)
    with pytest.raises(ValueError, match="used 15 columns"):
        annumap.tl.umap_transform(wrong, no_pcs)


def test_scanpy_reference_works():
    sc = pytest.importorskip("scanpy")
    adata = sc.datasets.pbmc68k_reduced()
    ref, query = adata[:500].copy(), adata[500:].copy()
    sc.pp.neighbors(ref, n_neighbors=15)
    sc.tl.umap(ref)
    ref.uns["neighbors"]["params"]["n_neighbors"] = np.array([15])  # as older scanpy stored it
    annumap.tl.umap_transform(query, ref)
    assert query.uns["umap_transform"]["params"]["n_neighbors"] == 15
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(15).fit(ref.obsm["X_umap"], ref.obs["bulk_labels"])
    acc = (clf.predict(query.obsm["X_umap"]) == query.obs["bulk_labels"]).mean()
    pca = KNeighborsClassifier(15).fit(ref.obsm["X_pca"], ref.obs["bulk_labels"])
    acc_pca = (pca.predict(query.obsm["X_pca"]) == query.obs["bulk_labels"]).mean()
    assert acc >= 0.9 * acc_pca


@pytest.mark.slow
def test_pynndescent_backend_agrees_with_exact(fitted_blobs):
    ref, query = fitted_blobs
    exact = annumap.tl.umap_transform(query, ref, copy=True, knn_backend="exact")
    approx = annumap.tl.umap_transform(query, ref, copy=True, knn_backend="pynndescent")
    assert approx.uns["umap_transform"]["params"]["knn_backend"] == "pynndescent"
    span = float(np.ptp(ref.obsm["X_umap"], axis=0).max())
    dist = np.linalg.norm(exact.obsm["X_umap"] - approx.obsm["X_umap"], axis=1)
    assert np.median(dist) < 0.05 * span


# ---------------------------------------------------------------------------------------------
# reference mapping on real data (CBMC, split 80/20 by cells), both ways


def _cbmc_split(n_cells: int | None, seed: int = 0):
    ad = pytest.importorskip("anndata")
    sc = pytest.importorskip("scanpy")
    if not CBMC.exists():
        pytest.skip(f"{CBMC} not present")
    adata = ad.read_h5ad(CBMC)
    rng = np.random.default_rng(seed)
    if n_cells is not None:
        adata = adata[np.sort(rng.choice(adata.n_obs, n_cells, replace=False))].copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    perm = rng.permutation(adata.n_obs)
    cut = int(0.8 * adata.n_obs)
    ref, query = adata[np.sort(perm[:cut])].copy(), adata[np.sort(perm[cut:])].copy()
    sc.pp.pca(ref, n_comps=30, random_state=0)  # fitted on the reference only
    annumap.pp.neighbors(ref, n_neighbors=15)
    return ref, query


def _label_scores(ref, query, key="X_umap"):
    """(15-NN accuracy of the query against the reference, reference's 5-fold CV accuracy)."""
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    yr = ref.obs["cell_type"].to_numpy()
    yq = query.obs["cell_type"].to_numpy()
    kr, kq = yr != "Unknown", yq != "Unknown"
    clf = KNeighborsClassifier(15)
    cv = cross_val_score(clf, ref.obsm[key][kr], yr[kr], cv=5).mean()
    clf.fit(ref.obsm[key][kr], yr[kr])
    return float((clf.predict(query.obsm[key][kq]) == yq[kq]).mean()), float(cv)


def _check_mapping(ref, query, method, **kwargs):
    annumap.tl.umap(ref, method=method, **kwargs)
    annumap.tl.umap_transform(query, ref)
    assert query.uns["umap_transform"]["params"]["method"] == method
    acc, cv = _label_scores(ref, query)
    assert acc >= 0.9 * cv, (acc, cv)
    return acc, cv


@pytest.mark.parametrize(("method", "maxiter"), [("umap", 200), ("parametric", 150)])
def test_cbmc_query_cells_land_among_their_type(method, maxiter):
    ref, query = _cbmc_split(2500)
    _check_mapping(ref, query, method, maxiter=maxiter)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["umap", "parametric"])
def test_cbmc_full_query_cells_land_among_their_type(method):
    ref, query = _cbmc_split(None)
    _check_mapping(ref, query, method)


@pytest.mark.parametrize(
    ("ref_epochs", "n_query"), [(None, 40), (None, 10_001), (90, 40), (31, 10_001)]
)
def test_default_epochs_equal_umap_learns_transform(monkeypatch, ref_epochs, n_query):
    """umap-learn's UMAP.transform: n_epochs // 3 of custom fit epochs, else 100 / 30 (query
    points up to / above 10,000): recorded from its own call of the SGD."""
    umap = pytest.importorskip("umap")
    import umap.umap_ as umap_

    rng = np.random.default_rng(0)
    R = rng.normal(size=(200, 5)).astype(np.float32)
    Q = rng.normal(size=(n_query, 5)).astype(np.float32)
    model = umap.UMAP(n_neighbors=10, n_epochs=ref_epochs, random_state=0).fit(R)
    seen = []

    def record(embedding, ref, head, tail, n_epochs, *args, **kwargs):
        seen.append(n_epochs)
        return embedding

    monkeypatch.setattr(umap_, "optimize_layout_euclidean", record)
    model.transform(Q)
    assert seen == [core.default_transform_epochs(n_query, ref_epochs)]
    # and tl.umap_transform applies it: a reference fitted with maxiter=ref_epochs
    if n_query == 40:
        adata = make_adata(n=200, dim=5)
        annumap.pp.neighbors(adata, n_neighbors=10)
        annumap.tl.umap(adata, maxiter=ref_epochs or 40)
        if ref_epochs is None:  # a default-epochs reference, as written before maxiter was kept
            del adata.uns["umap"]["params"]["maxiter"]
            adata.uns["umap"]["params"]["n_epochs"] = 500
        query = make_adata(n=n_query, dim=5, seed=1)
        annumap.tl.umap_transform(query, adata)
        assert query.uns["umap_transform"]["params"]["n_epochs"] == seen[0]
