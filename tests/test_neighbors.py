"""pp.neighbors: oracle comparisons (sklearn, umap-learn, scanpy), storage contract, options."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import sparse

import annumap
from annumap._core.fuzzy import fuzzy_simplicial_set
from annumap._core.knn import knn

from .conftest import assert_adata_equal, blobs, make_adata


def _sklearn_knn(X, k, metric):
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric=metric).fit(X)
    d, i = nn.kneighbors(X)
    return i, d


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "manhattan", "correlation"])
def test_exact_knn_equals_sklearn_brute_force(metric):
    X, _ = blobs(500, 12, seed=1)
    idx, dist = knn(X, 15, backend="exact", metric=metric)
    ref_i, ref_d = _sklearn_knn(X.astype(np.float64), 15, metric)
    assert idx.dtype == np.int64 and dist.dtype == np.float32
    np.testing.assert_array_equal(idx[:, 0], np.arange(500))
    np.testing.assert_allclose(dist, ref_d, atol=2e-5, rtol=1e-5)
    # the same neighbour sets wherever the k-th distance is not tied
    same = [set(a) == set(b) for a, b in zip(idx, ref_i, strict=True)]
    assert np.mean(same) > 0.995


def test_exact_knn_sparse_input_matches_dense():
    X, _ = blobs(300, 30, seed=2)
    X[X < 0.5] = 0
    i1, d1 = knn(X, 10, backend="exact")
    i2, d2 = knn(sparse.csr_matrix(X), 10, backend="exact")
    np.testing.assert_allclose(d1, d2, atol=1e-4)
    assert np.mean(i1 == i2) > 0.99


def test_exact_ties_go_by_index_whatever_the_candidates_order():
    """Equal distances are ordered by index, not by the float32 ranking that found them (BLAS
    may round that differently for another thread count)."""
    from annumap._core.knn._exact import _order

    rows = np.array([0])
    dist = np.array([[0.0, 2.0, 1.0, 1.0, 1.0]])
    a = _order(np.array([[0, 7, 5, 3, 9]]), dist, rows, 3)
    b = _order(np.array([[0, 7, 9, 5, 3]]), dist, rows, 3)
    np.testing.assert_array_equal(a[0], [[0, 3, 5]])
    np.testing.assert_array_equal(b[0], [[0, 3, 5]])


def test_exact_knn_of_counts_is_the_same_for_any_thread_count():
    """Poisson counts hold many tied distances; the graph is the same for 1, 2 and 3 threads."""
    rng = np.random.default_rng(0)
    X = sparse.csr_matrix(rng.poisson(0.7, size=(400, 40)).astype(np.float32))
    ref = knn(X, 15, backend="exact", n_jobs=1)
    for jobs in (2, 3):
        got = knn(X, 15, backend="exact", n_jobs=jobs)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])


def test_duplicates_keep_self_first_and_zero_entries():
    X, _ = blobs(200, 5)
    X[1] = X[0]
    X[2] = X[0]
    adata = make_adata(200, 5)
    adata.X = X
    annumap.pp.neighbors(adata, n_neighbors=10)
    D = adata.obsp["distances"]
    assert np.all(np.diff(D.indptr) == 9)
    assert D.diagonal().sum() == 0
    for i in (0, 1, 2):
        row = D.indices[D.indptr[i] : D.indptr[i + 1]]
        assert i not in row
        assert {0, 1, 2} - {i} <= set(row)
        assert np.sum(D.data[D.indptr[i] : D.indptr[i + 1]] == 0) == 2


@pytest.mark.parametrize("backend", ["exact", "pynndescent"])
def test_connectivities_equal_umap_learn(backend):
    umap_ = pytest.importorskip("umap.umap_")
    X, _ = blobs(800, 10, seed=3)
    X[5] = X[6]  # a duplicate
    idx, dist = knn(X, 15, backend=backend, random_state=0)
    ours = fuzzy_simplicial_set(idx, dist)
    ref, _, _ = umap_.fuzzy_simplicial_set(
        sparse.coo_matrix((X.shape[0], 1)), 15, None, None, knn_indices=idx, knn_dists=dist
    )
    ref = ref.tocsr()
    assert ours.dtype == np.float32
    # umap-learn 0.5.12 agrees to 1e-6; 0.5.7 (the test extra's floor) to 3.2e-6
    from importlib.metadata import version

    from packaging.version import Version

    tol = 1e-6 if Version(version("umap-learn")) >= Version("0.5.12") else 4e-6
    assert abs(ours - ref).max() <= tol
    assert ours.nnz == ref.nnz


def test_storage_contract(adata):
    annumap.pp.neighbors(adata, n_neighbors=12)
    info = adata.uns["neighbors"]
    assert info["connectivities_key"] == "connectivities"
    assert info["distances_key"] == "distances"
    params = info["params"]
    assert params["n_neighbors"] == 12
    assert params["method"] == "umap"
    assert params["metric"] == "euclidean"
    assert params["random_state"] == 0
    assert "use_rep" not in params and "n_pcs" not in params and "metric_kwds" not in params
    D, C = adata.obsp["distances"], adata.obsp["connectivities"]
    assert isinstance(D, sparse.csr_matrix) and isinstance(C, sparse.csr_matrix)
    assert D.dtype == np.float32 and C.dtype == np.float32
    assert np.all(np.diff(D.indptr) == 11)
    assert D.diagonal().sum() == 0 and C.diagonal().sum() == 0
    assert abs(C - C.T).max() == 0
    assert C.data.min() > 0 and C.data.max() <= 1


def test_matches_scanpy_on_pbmc(pbmc):
    sc = pytest.importorskip("scanpy")
    ref = pbmc.copy()
    sc.pp.neighbors(ref, n_neighbors=15)  # 700 cells: scanpy's exact sklearn search
    annumap.pp.neighbors(pbmc, n_neighbors=15)
    assert set(pbmc.uns["neighbors"]) == set(ref.uns["neighbors"])
    for key in ("n_neighbors", "method", "metric", "random_state"):
        assert pbmc.uns["neighbors"]["params"][key] == ref.uns["neighbors"]["params"][key]
    D, Dref = pbmc.obsp["distances"], ref.obsp["distances"]
    assert D.shape == Dref.shape and D.nnz == Dref.nnz
    assert abs(D - Dref).max() < 1e-4
    C, Cref = pbmc.obsp["connectivities"], ref.obsp["connectivities"]
    assert abs(C - Cref).max() <= 1e-5


def test_gauss_matches_scanpy(pbmc):
    sc = pytest.importorskip("scanpy")
    ref = pbmc.copy()
    sc.pp.neighbors(ref, n_neighbors=10, method="gauss")
    annumap.pp.neighbors(pbmc, n_neighbors=10, method="gauss")
    C, Cref = pbmc.obsp["connectivities"], ref.obsp["connectivities"]
    assert C.nnz == Cref.nnz
    assert abs(C - Cref).max() < 1e-5
    assert pbmc.uns["neighbors"]["params"]["method"] == "gauss"


def test_gauss_without_knn_uses_all_pairs(adata):
    annumap.pp.neighbors(adata, n_neighbors=10, method="gauss", knn=False)
    C, D = adata.obsp["connectivities"], adata.obsp["distances"]
    # scanpy's storage for knn=False: dense, all pairs, the kernel's 1 on the diagonal
    assert isinstance(C, np.ndarray) and isinstance(D, np.ndarray)
    assert np.count_nonzero(C) > adata.n_obs * 10
    np.testing.assert_array_equal(np.diag(C), 1.0)
    np.testing.assert_array_equal(C, C.T)
    assert np.count_nonzero(D) == adata.n_obs * (adata.n_obs - 1)


def test_key_added_copy_and_reps(pbmc):
    out = annumap.pp.neighbors(pbmc, n_neighbors=10, n_pcs=20, key_added="nb", copy=True)
    assert "nb" not in pbmc.uns and "nb_distances" not in pbmc.obsp
    assert out.uns["nb"]["connectivities_key"] == "nb_connectivities"
    assert out.uns["nb"]["distances_key"] == "nb_distances"
    assert out.uns["nb"]["params"]["n_pcs"] == 20
    assert {"nb_distances", "nb_connectivities"} <= set(out.obsp)
    ref = annumap.pp.neighbors(pbmc, n_neighbors=10, use_rep="X_pca", n_pcs=20, copy=True)
    assert (ref.obsp["distances"] != out.obsp["nb_distances"]).nnz == 0
    assert ref.uns["neighbors"]["params"]["use_rep"] == "X_pca"


def test_transformer_instance(adata):
    from sklearn.neighbors import KNeighborsTransformer

    tr = KNeighborsTransformer(n_neighbors=8, mode="distance", algorithm="brute")
    annumap.pp.neighbors(adata, transformer=tr)
    assert adata.uns["neighbors"]["params"]["n_neighbors"] == 8
    assert np.all(np.diff(adata.obsp["distances"].indptr) == 7)
    ref = annumap.pp.neighbors(adata, n_neighbors=8, transformer="exact", copy=True)
    # sklearn returns float32-rounded distances; ours are re-measured in float64
    assert abs(adata.obsp["connectivities"] - ref.obsp["connectivities"]).max() < 1e-5


def test_pynndescent_deterministic_and_accurate():
    adata = make_adata(1500, 20, centers=6, seed=4)
    # pynndescent is reproducible for a seed at a fixed thread count (not across thread counts)
    a = annumap.pp.neighbors(adata, transformer="pynndescent", random_state=3, copy=True)
    b = annumap.pp.neighbors(adata, transformer="pynndescent", random_state=3, copy=True)
    assert (a.obsp["connectivities"] != b.obsp["connectivities"]).nnz == 0
    e = annumap.pp.neighbors(adata, transformer="exact", copy=True)
    Da, De = a.obsp["distances"], e.obsp["distances"]
    recall = np.mean(
        [
            len(set(Da.indices[Da.indptr[i] : Da.indptr[i + 1]])
                & set(De.indices[De.indptr[i] : De.indptr[i + 1]])) / 14
            for i in range(adata.n_obs)
        ]
    )  # fmt: skip
    assert recall >= 0.95
    assert a.uns["neighbors"]["params"]["knn_backend"] == "pynndescent"


def test_dtypes_and_sparse_input_work():
    base = make_adata(300, 8)
    results = []
    for X in (base.X.astype(np.float64), sparse.csr_matrix(base.X), sparse.csc_matrix(base.X)):
        a = base.copy()
        a.X = X
        annumap.pp.neighbors(a, n_neighbors=10)
        results.append(a.obsp["connectivities"])
    for C in results[1:]:
        assert abs(C - results[0]).max() < 1e-5
    ints = base.copy()
    ints.X = np.round(base.X * 10).astype(np.int32)
    annumap.pp.neighbors(ints, n_neighbors=10)
    assert ints.obsp["connectivities"].dtype == np.float32


def test_n_neighbors_larger_than_n_obs_shrinks_with_warning():
    adata = make_adata(10, 3)
    with pytest.warns(UserWarning, match="n_neighbors=15 exceeds n_obs=10"):
        annumap.pp.neighbors(adata)
    assert adata.uns["neighbors"]["params"]["n_neighbors"] == 6


def test_many_variables_without_pca_warns_and_stores_it_as_scanpy():
    rng = np.random.default_rng(0)
    import anndata as ad

    adata = ad.AnnData(rng.normal(size=(200, 80)).astype(np.float32))
    with pytest.warns(UserWarning, match="computing a 50-component PCA"):
        annumap.pp.neighbors(adata)
    assert adata.obsm["X_pca"].shape == (200, 50) and adata.varm["PCs"].shape == (80, 50)
    assert {"variance", "variance_ratio", "params"} <= set(adata.uns["pca"])


def test_view_is_materialised(adata):
    view = adata[:300]
    annumap.pp.neighbors(view, n_neighbors=10)
    assert not view.is_view
    assert view.obsp["connectivities"].shape == (300, 300)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"metric": "nonsense"}, ValueError, "unknown metric 'nonsense'"),
        ({"method": "rapids!"}, ValueError, "method must be one of"),
        ({"transformer": "annoy"}, ValueError, "transformer must be None"),
        ({"n_neighbors": 1}, ValueError, "n_neighbors must be >= 2"),
        ({"n_neighbors": 2.5}, TypeError, "n_neighbors must be an int"),
        ({"use_rep": "X_missing"}, KeyError, "X_missing"),
        ({"n_pcs": 99, "use_rep": "X_pca"}, ValueError, "n_pcs=99"),
        ({"knn": False}, ValueError, "knn=False is only valid"),
        ({"random_state": "a"}, TypeError, "random_state"),
        ({"n_jobs": 0}, ValueError, "n_jobs"),
        ({"transformer": "exact", "metric": "hellinger"}, ValueError, "not available to the exact"),
    ],
)
def test_bad_input_raises_before_writing(pbmc, kwargs, exc, match):
    before = pbmc.copy()
    with pytest.raises(exc, match=match):
        annumap.pp.neighbors(pbmc, **kwargs)
    assert_adata_equal(pbmc, before)


def test_nan_in_representation_names_rows(adata):
    adata.X[3, 2] = np.nan
    adata.X[7, 0] = np.inf
    before = adata.copy()
    with pytest.raises(ValueError, match=r"adata.X contains 2 NaN.*cell3, cell7.*[Ii]mpute"):
        annumap.pp.neighbors(adata)
    assert_adata_equal(adata, before)


def test_scanpy_tools_run_on_our_graph_and_roundtrip(pbmc, tmp_path):
    sc = pytest.importorskip("scanpy")
    pytest.importorskip("leidenalg")
    annumap.pp.neighbors(pbmc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        sc.tl.leiden(pbmc, flavor="igraph", n_iterations=2, directed=False)
        sc.tl.paga(pbmc, groups="leiden")
        sc.tl.umap(pbmc)
    assert pbmc.obs["leiden"].nunique() > 3
    assert pbmc.obsm["X_umap"].shape == (700, 2)
    path = tmp_path / "a.h5ad"
    pbmc.write_h5ad(path)
    import anndata as ad

    back = ad.read_h5ad(path)
    assert (back.obsp["connectivities"] != pbmc.obsp["connectivities"]).nnz == 0
    assert back.uns["neighbors"]["params"]["knn_backend"] == "exact"
