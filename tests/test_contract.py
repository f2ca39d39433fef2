"""The scanpy/ehrapy contract items: random_state/rng, knn=False, exception types, maxiter=0,
the PCA neighbors stores, distances=, a stale use_rep, and method='parametric' without an init.

Oracle comparisons run against the installed scanpy (1.11 or 1.12) and skip without it.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

import annumap
from annumap._anndata import MissingKeyError
from annumap._random import MAX_SEED, resolve_seed

from .conftest import assert_adata_equal, make_adata


@pytest.fixture
def graph():
    adata = make_adata(300)
    annumap.pp.neighbors(adata, n_neighbors=10)
    return adata


# ---- random_state / rng -------------------------------------------------------------------


def test_resolve_seed_accepts_what_scanpy_documents():
    assert resolve_seed(7) == 7
    assert resolve_seed(np.int64(7)) == 7
    drawn = resolve_seed(None)
    assert 0 <= drawn <= MAX_SEED
    # a seeded generator gives the seed it draws; the same seeding gives the same seed
    expected = int(np.random.default_rng(3).integers(0, MAX_SEED, endpoint=True))
    assert resolve_seed(np.random.default_rng(3)) == expected
    expected = int(np.random.RandomState(3).randint(0, MAX_SEED + 1, dtype=np.int64))
    assert resolve_seed(np.random.RandomState(3)) == expected
    # the generator is advanced once: a second draw differs
    gen = np.random.default_rng(3)
    assert resolve_seed(gen) != resolve_seed(gen)
    # rng= (scanpy 1.13's name)
    assert resolve_seed(rng=5) == 5
    assert resolve_seed(rng=np.random.default_rng(3)) == resolve_seed(np.random.default_rng(3))
    seq = np.random.SeedSequence(11)
    assert resolve_seed(rng=seq) == int(np.random.SeedSequence(11).generate_state(1)[0])
    with pytest.raises(TypeError, match="at most one of rng and random_state"):
        resolve_seed(3, rng=4)
    with pytest.raises(TypeError, match="rng must be"):
        resolve_seed(rng="a")
    with pytest.raises(ValueError, match="rng must be in"):
        resolve_seed(rng=-1)


@pytest.mark.parametrize(
    "make",
    [lambda: np.random.RandomState(42), lambda: np.random.default_rng(42)],
    ids=["RandomState", "Generator"],
)
def test_umap_random_state_generators_reproduce_and_are_recorded(graph, make):
    a = annumap.tl.umap(graph, maxiter=30, random_state=make(), copy=True)
    b = annumap.tl.umap(graph, maxiter=30, random_state=make(), copy=True)
    np.testing.assert_array_equal(a.obsm["X_umap"], b.obsm["X_umap"])
    seed = a.uns["umap"]["params"]["random_state"]
    assert seed == resolve_seed(make()) and isinstance(seed, int)
    # the recorded seed repeats the run as an int, and the rng= spelling gives the same
    again = annumap.tl.umap(graph, maxiter=30, random_state=seed, copy=True)
    np.testing.assert_array_equal(a.obsm["X_umap"], again.obsm["X_umap"])
    spelled = annumap.tl.umap(graph, maxiter=30, rng=make(), copy=True)
    np.testing.assert_array_equal(a.obsm["X_umap"], spelled.obsm["X_umap"])


def test_umap_random_state_none_draws_and_records_a_seed(graph):
    a = annumap.tl.umap(graph, maxiter=30, random_state=None, copy=True)
    seed = a.uns["umap"]["params"].get("random_state", 0)
    again = annumap.tl.umap(graph, maxiter=30, random_state=seed, copy=True)
    np.testing.assert_array_equal(a.obsm["X_umap"], again.obsm["X_umap"])


def test_umap_rng_and_random_state_together_raise(graph):
    before = graph.copy()
    with pytest.raises(TypeError, match="at most one"):
        annumap.tl.umap(graph, random_state=1, rng=2)
    assert_adata_equal(graph, before)


def test_neighbors_random_state_generators(adata):
    kw = {"transformer": "pynndescent", "n_neighbors": 10}
    a = annumap.pp.neighbors(adata, random_state=np.random.default_rng(5), copy=True, **kw)
    b = annumap.pp.neighbors(adata, rng=np.random.default_rng(5), copy=True, **kw)
    seed = a.uns["neighbors"]["params"]["random_state"]
    assert seed == resolve_seed(np.random.default_rng(5))
    assert b.uns["neighbors"]["params"]["random_state"] == seed
    assert (a.obsp["distances"] != b.obsp["distances"]).nnz == 0
    c = annumap.pp.neighbors(adata, random_state=np.random.RandomState(5), copy=True, **kw)
    assert c.uns["neighbors"]["params"]["random_state"] == resolve_seed(np.random.RandomState(5))


def test_umap_transform_accepts_a_generator(graph):
    annumap.tl.umap(graph, maxiter=20)
    query = make_adata(40, seed=1)
    a = annumap.tl.umap_transform(query, graph, random_state=np.random.default_rng(1), copy=True)
    b = annumap.tl.umap_transform(query, graph, random_state=np.random.default_rng(1), copy=True)
    np.testing.assert_array_equal(a.obsm["X_umap"], b.obsm["X_umap"])
    assert a.uns["umap_transform"]["params"]["random_state"] == resolve_seed(
        np.random.default_rng(1)
    )


# ---- knn=False ---------------------------------------------------------------------------


def test_knn_false_is_stored_as_scanpy_stores_it():
    sc = pytest.importorskip("scanpy")
    ours = make_adata(150)
    theirs = ours.copy()
    annumap.pp.neighbors(ours, n_neighbors=10, method="gauss", knn=False)
    sc.pp.neighbors(theirs, n_neighbors=10, method="gauss", knn=False)
    for key in ("connectivities", "distances"):
        mine, ref = ours.obsp[key], theirs.obsp[key]
        assert isinstance(mine, np.ndarray) and isinstance(ref, np.ndarray), key
        assert mine.shape == ref.shape == (150, 150)
        np.testing.assert_allclose(mine, ref, rtol=1e-4, atol=1e-5, err_msg=key)
    np.testing.assert_array_equal(np.diag(ours.obsp["connectivities"]), 1.0)
    np.testing.assert_array_equal(np.diag(ours.obsp["distances"]), 0.0)
    # the dense graph embeds (its diagonal is not a set of edges)
    annumap.tl.umap(ours, maxiter=20)
    assert np.isfinite(ours.obsm["X_umap"]).all()


@pytest.mark.parametrize("transformer", ["pynndescent", "exact", "instance"])
def test_knn_false_with_a_transformer_is_refused_as_scanpy_does(adata, transformer):
    if transformer == "instance":
        from sklearn.neighbors import KNeighborsTransformer

        transformer = KNeighborsTransformer(n_neighbors=10)
    before = adata.copy()
    with pytest.raises(ValueError, match="knn=False"):
        annumap.pp.neighbors(adata, method="gauss", knn=False, transformer=transformer)
    assert_adata_equal(adata, before)


def test_scanpy_refuses_knn_false_with_a_transformer_too(adata):
    sc = pytest.importorskip("scanpy")
    from sklearn.neighbors import KNeighborsTransformer

    with pytest.raises(ValueError):
        sc.pp.neighbors(
            adata, method="gauss", knn=False, transformer=KNeighborsTransformer(n_neighbors=10)
        )


# ---- exception types ---------------------------------------------------------------------


def test_missing_neighbors_raises_scanpys_type(adata):
    sc = pytest.importorskip("scanpy")
    with pytest.raises(ValueError):
        sc.tl.umap(adata.copy(), neighbors_key="nope")
    for key in (None, "nope"):
        with pytest.raises(ValueError, match=r"run annumap\.pp\.neighbors") as info:
            annumap.tl.umap(adata, neighbors_key=key)
        assert isinstance(info.value, KeyError)  # annumap's earlier type still catches it
        assert not str(info.value).startswith(("'", '"'))  # printed as a sentence


def test_missing_paga_positions_raise_scanpys_type(graph):
    sc = pytest.importorskip("scanpy")
    with pytest.raises(ValueError):
        sc.tl.umap(graph.copy(), init_pos="paga")
    with pytest.raises(ValueError, match=r"uns\['paga'\]\['pos'\]") as info:
        annumap.tl.umap(graph, init_pos="paga")
    assert isinstance(info.value, MissingKeyError)


# ---- maxiter=0 ---------------------------------------------------------------------------


def test_maxiter_zero_returns_the_initial_positions(graph):
    init = np.random.default_rng(0).normal(size=(graph.n_obs, 2))
    out = annumap.tl.umap(graph, init_pos=init, maxiter=0, copy=True)
    lo, hi = init.min(0), init.max(0)
    np.testing.assert_allclose(out.obsm["X_umap"], 10 * (init - lo) / (hi - lo), atol=1e-5)
    assert out.uns["umap"]["params"]["n_epochs"] == 0


def test_maxiter_zero_matches_scanpy(graph):
    sc = pytest.importorskip("scanpy")
    init = np.random.default_rng(0).normal(size=(graph.n_obs, 2)).astype(np.float32)
    theirs = graph.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # umap-learn/numba noise on the scanpy side
        sc.tl.umap(theirs, init_pos=init, maxiter=0)
    ours = annumap.tl.umap(graph, init_pos=init, maxiter=0, copy=True)
    np.testing.assert_allclose(ours.obsm["X_umap"], theirs.obsm["X_umap"], atol=1e-4)


# ---- the PCA pp.neighbors computes (and the sklearn floor of the sparse PCA) ---------------


def _wide(n=200, n_vars=80, seed=0, sparse_x=True):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 5)) @ rng.normal(size=(5, n_vars))
    X = np.maximum(base + rng.normal(scale=0.5, size=(n, n_vars)), 0).astype(np.float32)
    a = ad.AnnData(sparse.csr_matrix(X) if sparse_x else X)
    a.obs_names = [f"c{i}" for i in range(n)]
    a.var_names = [f"g{j}" for j in range(n_vars)]
    return a


@pytest.mark.parametrize("sparse_x", [True, False], ids=["sparse", "dense"])
def test_neighbors_stores_the_pca_it_computes(sparse_x):
    adata = _wide(sparse_x=sparse_x)
    with pytest.warns(UserWarning, match=r"storing it in \.obsm\['X_pca'\]"):
        annumap.pp.neighbors(adata, n_neighbors=10, n_pcs=20)
    Y, PCs = adata.obsm["X_pca"], adata.varm["PCs"]
    assert Y.shape == (200, 20) and PCs.shape == (80, 20) and Y.dtype == np.float32
    info = adata.uns["pca"]
    assert info["variance"].shape == info["variance_ratio"].shape == (20,)
    assert (np.diff(info["variance"]) <= 1e-6 * info["variance"][0]).all()
    assert info["params"]["zero_center"] is True
    # scores are the centred data on the loadings (what umap_transform relies on)
    X = adata.X.toarray() if sparse_x else adata.X
    np.testing.assert_allclose((X - X.mean(0)) @ PCs, Y, atol=1e-3 * np.abs(Y).max())
    # tl.umap and umap_transform reuse it silently (no second PCA, no warning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        annumap.tl.umap(adata, maxiter=20)
        query = _wide(30, seed=1, sparse_x=sparse_x)
        annumap.tl.umap_transform(query, adata)
    assert query.obsm["X_umap"].shape == (30, 2)
    assert "varm['PCs']" in query.uns["umap_transform"]["params"]["representation"]


def test_stored_pca_matches_scanpys_pca():
    sc = pytest.importorskip("scanpy")
    ours = _wide()
    theirs = ours.copy()
    with pytest.warns(UserWarning, match="PCA"):
        annumap.pp.neighbors(ours, n_neighbors=10)
    sc.pp.pca(theirs, n_comps=50)
    for i in range(10):
        r = np.corrcoef(ours.obsm["X_pca"][:, i], theirs.obsm["X_pca"][:, i])[0, 1]
        assert abs(r) > 0.999, (i, r)
    np.testing.assert_allclose(
        ours.uns["pca"]["variance_ratio"][:10], theirs.uns["pca"]["variance_ratio"][:10], rtol=1e-3
    )


def test_sparse_pca_needs_the_declared_sklearn_floor():
    """Sparse input to sklearn's PCA (ARPACK) exists from 1.4 on: the floor pyproject declares."""
    import re
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    from packaging.version import Version

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    floor = next(
        Version(m.group(1))
        for r in project["project"]["dependencies"]
        if (m := re.fullmatch(r"scikit-learn>=([\d.]+)", r.replace(" ", "")))
    )
    assert floor >= Version("1.4")
    assert Version(version("scikit-learn")) >= floor
    from annumap._core.pca import pca_fit

    fit = pca_fit(_wide().X, 10)
    assert fit.scores.shape == (200, 10) and fit.solver == "arpack"


# ---- distances= (scanpy 1.12) ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_precomputed_distances_give_the_same_graph_as_the_search(adata, kind):
    from sklearn.metrics import pairwise_distances

    D = pairwise_distances(adata.X).astype(np.float32)
    if kind == "sparse":
        keep = np.argsort(D, axis=1)[:, :30]
        mask = np.zeros_like(D, dtype=bool)
        np.put_along_axis(mask, keep, True, axis=1)
        D = sparse.csr_matrix(np.where(mask, D, 0))
    ours = annumap.pp.neighbors(adata, n_neighbors=12, distances=D, copy=True)
    searched = annumap.pp.neighbors(adata, n_neighbors=12, transformer="exact", copy=True)
    for key in ("distances", "connectivities"):
        diff = ours.obsp[key] - searched.obsp[key]
        assert abs(diff).max() < 1e-4, key
    assert ours.uns["neighbors"]["params"]["knn_backend"] == "precomputed"


def test_precomputed_distances_match_scanpy_112(adata):
    sc = pytest.importorskip("scanpy")
    import inspect

    if "distances" not in inspect.signature(sc.pp.neighbors).parameters:
        pytest.skip("scanpy < 1.12 has no distances=")
    from sklearn.metrics import pairwise_distances

    D = pairwise_distances(adata.X)
    ours = annumap.pp.neighbors(adata, n_neighbors=12, distances=D, copy=True)
    theirs = sc.pp.neighbors(adata, n_neighbors=12, distances=D, copy=True)
    diff = ours.obsp["connectivities"] - sparse.csr_matrix(theirs.obsp["connectivities"])
    assert abs(diff).max() < 1e-4


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"distances": np.zeros((3, 3))}, ValueError, r"shape \(3, 3\)"),
        ({"distances": [[0.0]]}, TypeError, "numpy array or a scipy sparse"),
        ({"distances": "D"}, TypeError, "numpy array or a scipy sparse"),
        ({"use_rep": "X"}, ValueError, "use_rep cannot be combined"),
        ({"knn": False, "method": "gauss"}, ValueError, "knn cannot be combined"),
        ({"neg": True}, ValueError, "negative"),
        ({"nan": True}, ValueError, "NaN"),
        ({"short": True}, ValueError, "fewer than n_neighbors - 1"),
    ],
)
def test_bad_precomputed_distances(adata, kwargs, exc, match):
    D = np.abs(np.random.default_rng(0).normal(size=(adata.n_obs, adata.n_obs)))
    if kwargs.pop("neg", False):
        D[3, 4] = -1
    if kwargs.pop("nan", False):
        D[3, 4] = np.nan
    if kwargs.pop("short", False):
        D = sparse.csr_matrix(np.where(D > 2.5, D, 0))
    kwargs.setdefault("distances", D)
    before = adata.copy()
    with pytest.raises(exc, match=match):
        annumap.pp.neighbors(adata, n_neighbors=15, **kwargs)
    assert_adata_equal(adata, before)


# ---- a stale use_rep, and method='parametric' without an initialisation ---------------------


def test_stale_use_rep_is_reported(adata):
    adata.obsm["X_rep"] = adata.X[:, :6].copy()
    annumap.pp.neighbors(adata, n_neighbors=10, use_rep="X_rep")
    del adata.obsm["X_rep"]
    with pytest.warns(UserWarning, match=r"use_rep'\] = 'X_rep' is not a key of adata\.obsm"):
        annumap.tl.umap(adata, maxiter=20)
    assert np.isfinite(adata.obsm["X_umap"]).all()
    before = adata.copy()
    with (
        pytest.warns(UserWarning, match="X_rep"),
        pytest.raises(ValueError, match="init_pos='pca' needs the representation"),
    ):
        annumap.tl.umap(adata, init_pos="pca")
    assert_adata_equal(adata, before)


def test_fresh_use_rep_is_not_reported(adata):
    adata.obsm["X_rep"] = adata.X[:, :6].copy()
    annumap.pp.neighbors(adata, n_neighbors=10, use_rep="X_rep", n_pcs=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        annumap.tl.umap(adata, maxiter=10)
    adata.obsm["X_rep"] = adata.obsm["X_rep"][:, :3]  # now fewer columns than n_pcs
    with pytest.warns(UserWarning, match=r"n_pcs'\] = 4"):
        annumap.tl.umap(adata, maxiter=10)


def test_parametric_computes_no_initialisation(graph, monkeypatch):
    from annumap._core import init as core_init

    def boom(*args, **kwargs):
        raise AssertionError("an initialisation was computed")

    for name in ("spectral_init", "pca_init", "random_init", "rescale"):
        monkeypatch.setattr(core_init, name, boom)
    annumap.tl.umap(graph, method="parametric", maxiter=10)
    assert graph.uns["umap"]["params"]["init_pos"] == "none"
    assert graph.obsm["X_umap"].shape == (graph.n_obs, 2)
    with pytest.warns(UserWarning, match="init_pos is not used by method='parametric'"):
        annumap.tl.umap(graph, method="parametric", maxiter=5, init_pos="random")
