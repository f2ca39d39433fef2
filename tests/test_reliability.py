"""Reliability: bad input gets a clear error and leaves the AnnData exactly as it was.

Covers DESIGN section 6 beyond what ``test_neighbors.py``/``test_umap.py`` check: every failing
case asserts the exception type, a message naming the argument (or the AnnData field) at fault,
and that X, obs, var, obsm, obsp and uns are unchanged. Awkward but valid inputs (odd dtypes and
layouts, views, duplicates, tiny and degenerate graphs) must work and give finite output.
Interruption (KeyboardInterrupt or an exception from a callback, or from any step of the
computation) must leave the AnnData untouched too.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numba
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import annumap
from annumap._core.knn import knn

from .conftest import assert_adata_equal, blobs, make_adata

# ---------------------------------------------------------------- helpers


def _same_sparse(x, y):
    assert x.format == y.format and x.shape == y.shape and x.dtype == y.dtype
    for field in ("data", "indices", "indptr"):
        a, b = getattr(x, field), getattr(y, field)
        assert a.dtype == b.dtype, field
        np.testing.assert_array_equal(a, b, err_msg=field)


def _assert_unchanged(adata, before):
    """assert_adata_equal, with sparse X/obsp compared array by array (dtypes included).

    ``assert_adata_equal`` compares sparse matrices with ``!=``, under which NaN never equals
    itself and which reads out of bounds on a malformed matrix; the raw arrays are compared
    here instead, then everything else by ``assert_adata_equal``.
    """
    a, b = adata.copy(), before.copy()
    if sparse.issparse(a.X) or sparse.issparse(b.X):
        _same_sparse(a.X, b.X)
        a.X = b.X = None
    for key in list(a.obsp.keys()):
        if sparse.issparse(a.obsp[key]) and key in b.obsp and sparse.issparse(b.obsp[key]):
            _same_sparse(a.obsp[key], b.obsp[key])
            del a.obsp[key], b.obsp[key]
    assert_adata_equal(a, b)


def _raises_unchanged(adata, fn, exc, match, **kwargs):
    """Call ``fn(adata, **kwargs)``; assert it raises ``exc`` matching ``match``, no changes."""
    before = adata.copy()
    was_view = adata.is_view
    with pytest.raises(exc, match=match):
        fn(adata, **kwargs)
    assert adata.is_view == was_view
    _assert_unchanged(adata, before)


def _graph_adata(n=120, dim=5, k=10, seed=0):
    adata = make_adata(n, dim, centers=3, seed=seed)
    annumap.pp.neighbors(adata, n_neighbors=k)
    return adata


@pytest.fixture(scope="module")
def _base_graph():
    return _graph_adata()


@pytest.fixture
def graph_adata(_base_graph):
    """120 cells in 3 blobs with a 10-NN graph (a fresh copy per test)."""
    return _base_graph.copy()


def _with_graph(adata, C, key="connectivities"):
    """Put ``C`` in ``.obsp[key]`` bypassing anndata's validation (damaged files do too)."""
    adata.obsp._data[key] = C
    return adata


def _malformed(C, how):
    C = sparse.csr_matrix(C)
    data, indices, indptr = C.data.copy(), C.indices.copy(), C.indptr.copy()
    if how == "index_too_large":
        indices[3] = 10**8
    elif how == "negative_index":
        indices[3] = -5
    elif how == "indptr_decreasing":
        indptr[10] = indptr[12]
    return sparse.csr_matrix((data, indices, indptr), shape=C.shape)


# ---------------------------------------------------------------- pp.neighbors: bad input


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n_neighbors": True}, TypeError, "n_neighbors must be an int"),
        ({"n_neighbors": "15"}, TypeError, "n_neighbors must be an int"),
        ({"n_neighbors": -3}, ValueError, "n_neighbors must be >= 2"),
        ({"n_pcs": -1}, ValueError, "n_pcs"),
        ({"n_pcs": 2.0}, ValueError, "n_pcs"),
        ({"n_pcs": True}, ValueError, "n_pcs"),
        ({"use_rep": 3}, TypeError, "use_rep"),
        ({"metric": 3}, TypeError, "metric must be a str"),
        ({"metric": None}, TypeError, "metric must be a str"),
        ({"metric_kwds": [("p", 3)]}, TypeError, "metric_kwds must be a mapping"),
        ({"metric_kwds": {1: 2}}, TypeError, "metric_kwds keys must be str"),
        ({"metric_kwds": {"f": print}}, TypeError, r"metric_kwds\['f'\]"),
        ({"metric_kwds": {"w": ["a", "b"]}}, TypeError, r"metric_kwds\['w'\]"),
        ({"metric": "minkowski", "metric_kwds": {"q": 3}}, TypeError, "metric_kwds="),
        ({"metric": "minkowski", "metric_kwds": {"w": [1.0, 2.0]}}, ValueError, "metric_kwds="),
        ({"random_state": 2**32}, ValueError, "random_state"),
        ({"random_state": -1}, ValueError, "random_state"),
        ({"random_state": 1.5}, TypeError, "random_state"),
        ({"random_state": True}, TypeError, "random_state"),
        ({"copy": "no"}, TypeError, "copy must be a bool"),
        ({"knn": "yes"}, TypeError, "knn must be a bool"),
        ({"key_added": ""}, ValueError, "key_added"),
        ({"key_added": 3}, ValueError, "key_added"),
        ({"transformer": 3}, TypeError, "transformer must be None"),
        ({"transformer": "Exact"}, ValueError, "transformer must be None"),
        ({"method": None}, ValueError, "method must be one of"),
        ({"n_jobs": "a"}, TypeError, "n_jobs"),
        ({"n_jobs": 1.5}, TypeError, "n_jobs"),
    ],
)
def test_neighbors_bad_arguments(kwargs, exc, match):
    adata = make_adata(80, 6)
    _raises_unchanged(adata, annumap.pp.neighbors, exc, match, **kwargs)


def test_neighbors_transformer_without_n_neighbors():
    class NoK:
        def fit_transform(self, X, y=None):
            return sparse.csr_matrix((X.shape[0], X.shape[0]))

        def get_params(self, deep=True):
            return {"metric": "euclidean"}

    adata = make_adata(50, 4)
    _raises_unchanged(adata, annumap.pp.neighbors, TypeError, "NoK.*n_neighbors", transformer=NoK())


def test_neighbors_transformer_returning_too_few_neighbours():
    from sklearn.neighbors import KNeighborsTransformer

    class Short(KNeighborsTransformer):
        def fit_transform(self, X, y=None):
            G = super().fit_transform(X).tolil()
            G[0, :] = 0
            return G.tocsr()

    adata = make_adata(50, 4)
    _raises_unchanged(
        adata, annumap.pp.neighbors, ValueError, "row 0", transformer=Short(n_neighbors=5)
    )


@pytest.mark.parametrize("n_obs", [0, 1])
@pytest.mark.parametrize("call", ["neighbors", "umap"])
def test_fewer_than_two_cells(n_obs, call):
    adata = ad.AnnData(np.ones((n_obs, 3), dtype=np.float32))
    fn = annumap.pp.neighbors if call == "neighbors" else annumap.tl.umap
    _raises_unchanged(adata, fn, ValueError, f"{n_obs} observation")


@pytest.mark.parametrize("call", ["neighbors", "umap"])
def test_not_an_anndata(call):
    fn = annumap.pp.neighbors if call == "neighbors" else annumap.tl.umap
    with pytest.raises(TypeError, match="adata must be an AnnData, got ndarray"):
        fn(np.zeros((10, 3)))


@pytest.mark.parametrize("fmt", ["dense", "csr", "csc"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_X_any_format(fmt, bad):
    adata = make_adata(60, 5)
    X = adata.X.copy()
    X[[4, 9], [1, 3]] = bad
    adata.X = {"dense": X, "csr": sparse.csr_matrix(X), "csc": sparse.csc_matrix(X)}[fmt]
    _raises_unchanged(
        adata, annumap.pp.neighbors, ValueError, r"adata\.X contains 2 NaN.*2 obs.*cell4, cell9"
    )


def test_nonfinite_obsm_rep_names_key_and_cells():
    adata = make_adata(60, 5)
    rep = np.random.default_rng(0).normal(size=(60, 8))
    rep[7, 0] = np.nan
    adata.obsm["X_pca"] = rep
    _raises_unchanged(
        adata,
        annumap.pp.neighbors,
        ValueError,
        r"adata\.obsm\['X_pca'\]\[:, :5\] contains 1 NaN.*cell7",
        use_rep="X_pca",
        n_pcs=5,
    )
    # NaN outside the first n_pcs columns is never read: valid
    adata.obsm["X_pca"][7, 0] = 0.0
    adata.obsm["X_pca"][7, 6] = np.nan
    annumap.pp.neighbors(adata, use_rep="X_pca", n_pcs=5, n_neighbors=5)
    assert adata.obsp["connectivities"].shape == (60, 60)


def test_nhanes_with_missing_values_is_refused_with_a_hint():
    """Real clinical data: 47% missing. The error counts them and suggests imputation."""
    from pathlib import Path

    path = Path(__file__).parents[1] / "data" / "nhanes_2017_2018.h5ad"
    if not path.exists():
        path = Path("/work/shared/data/nhanes_2017_2018.h5ad")
    if not path.exists():
        pytest.skip("NHANES file not available")
    nh = ad.read_h5ad(path)
    nh = nh[:400].copy()
    _raises_unchanged(nh, annumap.pp.neighbors, ValueError, r"NaN.*[Ii]mpute")


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (np.ones((40, 3), dtype=np.complex64), r"adata\.obsm\['rep'\] has dtype complex64"),
        (np.full((40, 3), "a"), r"adata\.obsm\['rep'\] has dtype <U1"),
    ],
)
def test_non_numeric_representation(value, where):
    adata = make_adata(40, 4)
    adata.obsm["rep"] = value
    _raises_unchanged(adata, annumap.pp.neighbors, TypeError, where, use_rep="rep")


def test_x_none_without_use_rep():
    adata = ad.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(30)]))
    adata.obsm["rep"] = np.random.default_rng(0).normal(size=(30, 3))
    _raises_unchanged(adata, annumap.pp.neighbors, ValueError, r"adata\.X is None.*use_rep")
    annumap.pp.neighbors(adata, use_rep="rep", n_neighbors=5)  # and the hint works
    annumap.tl.umap(adata, maxiter=5)
    assert np.isfinite(adata.obsm["X_umap"]).all()


@pytest.mark.parametrize("how", ["index_too_large", "negative_index", "indptr_decreasing"])
def test_malformed_sparse_X_is_refused_not_a_crash(how):
    # scipy does not bounds-check raw CSR arrays; the exact search used to segfault on these
    adata = make_adata(80, 6)
    adata.X = _malformed(adata.X, how)
    _raises_unchanged(adata, annumap.pp.neighbors, ValueError, r"adata\.X is a malformed sparse")


def test_backed_anndata_is_refused_and_file_untouched(tmp_path):
    import hashlib

    adata = _graph_adata(60, 4, k=5)
    path = tmp_path / "a.h5ad"
    adata.write_h5ad(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    backed = ad.read_h5ad(path, backed="r")
    try:
        with pytest.raises(ValueError, match=r"adata is backed.*to_memory\(\)"):
            annumap.pp.neighbors(backed)
        with pytest.raises(ValueError, match=r"adata is backed.*to_memory\(\)"):
            annumap.tl.umap(backed)
    finally:
        backed.file.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_failure_on_a_view_leaves_the_view_and_its_parent_alone():
    parent = make_adata(100, 5)
    parent_before = parent.copy()
    view = parent[:50]
    _raises_unchanged(view, annumap.pp.neighbors, ValueError, "n_neighbors", n_neighbors=1)
    assert_adata_equal(parent, parent_before)


# ---------------------------------------------------------------- tl.umap: bad input


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"min_dist": float("inf")}, ValueError, "min_dist"),
        ({"min_dist": float("nan")}, ValueError, "min_dist"),
        ({"min_dist": "0.1"}, TypeError, "min_dist must be a real number"),
        ({"min_dist": True}, TypeError, "min_dist must be a real number"),
        ({"min_dist": None}, TypeError, "min_dist must be a real number"),
        ({"spread": -1.0}, ValueError, "spread"),
        ({"spread": float("inf")}, ValueError, "spread"),
        ({"spread": 0.05}, ValueError, r"min_dist \(0\.5\) must not exceed spread"),
        ({"n_components": 2.0}, TypeError, "n_components must be an int"),
        ({"n_components": -1}, ValueError, "n_components must be >= 1"),
        ({"maxiter": 1.5}, TypeError, "maxiter must be an int"),
        ({"maxiter": True}, TypeError, "maxiter must be an int"),
        ({"maxiter": -5}, ValueError, "maxiter must be >= 0"),
        ({"alpha": 0}, ValueError, "alpha"),
        ({"alpha": -1}, ValueError, "alpha"),
        ({"alpha": float("inf")}, ValueError, "alpha"),
        ({"gamma": -1}, ValueError, "gamma"),
        ({"gamma": float("nan")}, ValueError, "gamma"),
        ({"negative_sample_rate": float("nan")}, ValueError, "negative_sample_rate"),
        ({"negative_sample_rate": float("inf")}, ValueError, "negative_sample_rate"),
        ({"negative_sample_rate": "5"}, TypeError, "negative_sample_rate"),
        ({"a": -1.0, "b": 1.0}, ValueError, "a must be"),
        ({"a": 1.0, "b": 0.0}, ValueError, "b must be"),
        ({"a": float("nan"), "b": 1.0}, ValueError, "a must be"),
        ({"b": 1.0}, ValueError, "both a and b"),
        ({"random_state": 2**32}, ValueError, "random_state"),
        ({"random_state": 1.5}, TypeError, "random_state"),
        ({"random_state": True}, TypeError, "random_state"),
        ({"copy": 1}, TypeError, "copy must be a bool"),
        ({"key_added": ""}, ValueError, "key_added"),
        ({"key_added": 3}, ValueError, "key_added"),
        ({"neighbors_key": 3}, TypeError, "neighbors_key"),
        ({"progress": "yes"}, TypeError, "progress"),
        ({"callback": 3}, TypeError, "callback must be callable"),
        ({"n_jobs": 0}, ValueError, "n_jobs"),
        ({"n_jobs": 1.5}, TypeError, "n_jobs"),
        ({"method": None}, ValueError, "method must be one of"),
        ({"init_pos": 3}, TypeError, "init_pos must be a str or an array"),
        ({"init_pos": None}, TypeError, "init_pos must be a str or an array"),
        ({"init_pos": np.zeros((120, 1))}, ValueError, r"init_pos has shape \(120, 1\)"),
        ({"init_pos": np.zeros(120)}, ValueError, r"init_pos has shape \(120,\)"),
        ({"init_pos": np.zeros((119, 2))}, ValueError, r"init_pos has shape \(119, 2\)"),
        ({"init_pos": [[0.0, 1.0]] * 50}, ValueError, r"init_pos has shape \(50, 2\)"),
        ({"init_pos": np.full((120, 2), "a")}, TypeError, "init_pos must be numeric"),
        ({"init_pos": np.array([[1, None]] * 120)}, TypeError, "init_pos must be numeric"),
        ({"init_pos": np.full((120, 2), np.inf)}, ValueError, "init_pos contains 240 NaN/inf"),
        ({"init_pos": "X_umap"}, ValueError, r"init_pos='X_umap'.*spectral"),
    ],
)
def test_umap_bad_arguments(graph_adata, kwargs, exc, match):
    _raises_unchanged(graph_adata, annumap.tl.umap, exc, match, **kwargs)


@pytest.mark.parametrize(
    ("value", "exc", "match"),
    [
        (np.full((120, 2), np.nan), ValueError, r"adata\.obsm\['I'\] contains 240 NaN"),
        (np.ones((120, 1)), ValueError, r"adata\.obsm\['I'\] has shape \(120, 1\)"),
        (np.full((120, 2), "x"), TypeError, r"adata\.obsm\['I'\] must be numeric"),
    ],
)
def test_umap_bad_obsm_init(graph_adata, value, exc, match):
    graph_adata.obsm["I"] = value
    _raises_unchanged(graph_adata, annumap.tl.umap, exc, match, init_pos="I")


def _paga_setup(adata, **paga):
    adata.uns["paga"] = {"pos": np.arange(6.0).reshape(3, 2), "groups": "label", **paga}
    return adata


@pytest.mark.parametrize(
    ("paga", "obs", "exc", "match"),
    [
        ({"pos": np.full((3, 2), np.nan)}, None, ValueError, r"\['pos'\] contains 6 NaN"),
        ({"pos": np.full((3, 2), "a")}, None, TypeError, r"\['pos'\] must be a numeric array"),
        ({"pos": np.zeros((2, 2))}, None, ValueError, "one row per group"),
        ({"pos": np.zeros((3, 3))}, None, ValueError, "needs n_components=3"),
        ({"groups": "nope"}, None, KeyError, r"\['groups'\] = 'nope' is not a column"),
        ({"groups": ["label"]}, None, KeyError, r"\['groups'\] = \['label'\] is not a column"),
        ({"groups": "g"}, "missing", ValueError, r"adata\.obs\['g'\] has 40 missing values"),
        (
            {"connectivities": sparse.csr_matrix((5, 5))},
            None,
            ValueError,
            r"\['connectivities'\] has shape \(5, 5\)",
        ),
    ],
)
def test_umap_bad_paga(graph_adata, paga, obs, exc, match):
    if obs == "missing":
        values = np.array(["c0", "c1", "c2"] * 40, dtype=object)
        values[:40] = None
        graph_adata.obs["g"] = pd.Categorical(values)
    _paga_setup(graph_adata, **paga)
    _raises_unchanged(graph_adata, annumap.tl.umap, exc, match, init_pos="paga")


def test_umap_paga_uns_not_a_dict(graph_adata):
    graph_adata.uns["paga"] = "positions"
    _raises_unchanged(
        graph_adata, annumap.tl.umap, KeyError, r"uns\['paga'\]\['pos'\]", init_pos="paga"
    )


@pytest.mark.parametrize(
    ("change", "exc", "match"),
    [
        ("nan", ValueError, r"obsp\['connectivities'\] contains 1 NaN/inf"),
        ("inf", ValueError, r"obsp\['connectivities'\] contains 1 NaN/inf"),
        ("negative", ValueError, r"obsp\['connectivities'\] contains 1 negative"),
        ("complex", TypeError, r"obsp\['connectivities'\] has dtype complex"),
        ("beyond_float32", ValueError, r"beyond float32 range"),
        ("index_too_large", ValueError, r"obsp\['connectivities'\] is a malformed"),
        ("negative_index", ValueError, r"obsp\['connectivities'\] is a malformed"),
        ("indptr_decreasing", ValueError, r"obsp\['connectivities'\] is a malformed"),
    ],
)
def test_umap_bad_graph(graph_adata, change, exc, match):
    C = graph_adata.obsp["connectivities"].copy()
    if change in ("nan", "inf", "negative"):
        C.data[0] = {"nan": np.nan, "inf": np.inf, "negative": -0.5}[change]
    elif change == "complex":
        C = C.astype(np.complex64)
    elif change == "beyond_float32":
        C = C.astype(np.float64)
        C.data[:] = 1e300
    else:
        C = _malformed(C, change)
    _with_graph(graph_adata, C)
    _raises_unchanged(graph_adata, annumap.tl.umap, exc, match)


def test_umap_graph_of_wrong_shape_or_type(graph_adata):
    """A non-square graph or a non-matrix is refused, naming the obsp key, before any write.

    anndata < 0.13 validates obsp values whenever ``.obsp`` is read, so its own ValueError
    ("incorrect shape") comes first there; anndata 0.13 does not, and annumap's check names the
    shapes. That check also guards every other way a graph arrives.
    """
    from annumap._anndata import _check_graph

    _with_graph(graph_adata, sparse.csr_matrix((120, 119)))
    shape = r"'connectivities'.*(incorrect shape|has shape \(120, 119\); expected \(120, 120\))"
    with pytest.raises(ValueError, match=shape):
        annumap.tl.umap(graph_adata)
    assert "X_umap" not in graph_adata.obsm and "umap" not in graph_adata.uns
    where = "adata.obsp['connectivities']"
    with pytest.raises(ValueError, match=r"\(120, 119\); expected \(120, 120\)"):
        _check_graph(sparse.csr_matrix((120, 119)), 120, where)
    with pytest.raises(TypeError, match=r"\['connectivities'\] must be a sparse matrix, got list"):
        _check_graph([[0.0] * 120] * 120, 120, where)


@pytest.mark.parametrize(
    ("change", "exc", "match"),
    [
        ("uns_not_dict", TypeError, r"adata\.uns\['neighbors'\] is a str"),
        ("params_not_dict", TypeError, r"\['params'\] is a str, not a dict"),
        ("key_not_str", TypeError, r"\['connectivities_key'\] must be a str"),
        ("key_missing_in_obsp", KeyError, r"looked for 'gone'.*run annumap\.pp\.neighbors"),
        ("obsp_deleted", KeyError, r"looked for 'connectivities'"),
        ("no_uns", KeyError, r"No neighbors found in adata\.uns\['neighbors'\]"),
    ],
)
def test_umap_damaged_neighbors_entry(graph_adata, change, exc, match):
    info = graph_adata.uns["neighbors"]
    if change == "uns_not_dict":
        graph_adata.uns["neighbors"] = "graph"
    elif change == "params_not_dict":
        info["params"] = "junk"
    elif change == "key_not_str":
        info["connectivities_key"] = ["connectivities"]
    elif change == "key_missing_in_obsp":
        info["connectivities_key"] = "gone"
    elif change == "obsp_deleted":
        del graph_adata.obsp["connectivities"]
    elif change == "no_uns":
        del graph_adata.uns["neighbors"]
    _raises_unchanged(graph_adata, annumap.tl.umap, exc, match)


def test_umap_keyed_neighbors_missing_names_the_key_to_use(graph_adata):
    _raises_unchanged(graph_adata, annumap.tl.umap, KeyError, r"key_added='nb'", neighbors_key="nb")


def test_stale_representation_for_pca_init(graph_adata):
    """The graph was built on an .obsm key that is gone: init 'pca' says so; spectral works."""
    graph_adata.uns["neighbors"]["params"]["use_rep"] = "X_gone"
    with pytest.warns(UserWarning, match="X_gone"):
        _raises_unchanged(
            graph_adata, annumap.tl.umap, ValueError, "init_pos='pca' needs the representation",
            init_pos="pca",
        )  # fmt: skip
    with pytest.warns(UserWarning, match="X_gone"):
        annumap.tl.umap(graph_adata, maxiter=10)
    assert np.isfinite(graph_adata.obsm["X_umap"]).all()


# ---------------------------------------------------------------- valid awkward inputs


def _embed(adata, k=10, maxiter=20, **nkw):
    annumap.pp.neighbors(adata, n_neighbors=k, **nkw)
    annumap.tl.umap(adata, maxiter=maxiter)
    Y = adata.obsm["X_umap"]
    assert Y.dtype == np.float32 and Y.shape == (adata.n_obs, 2)
    assert np.isfinite(Y).all()
    return adata


@pytest.mark.parametrize(
    "dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint16, np.float16, np.float64]
)
def test_numeric_dtypes_give_the_float32_graph(dtype):
    base = make_adata(150, 6)
    values = np.clip(np.round(base.X * 4), -100, 100)
    if np.dtype(dtype).kind == "u":
        values -= values.min()
    ref = base.copy()
    ref.X = values.astype(np.float32)
    _embed(ref)
    test = base.copy()
    test.X = values.astype(dtype)
    X_before = test.X.copy()
    _embed(test)
    assert test.X.dtype == dtype  # input untouched
    np.testing.assert_array_equal(test.X, X_before)
    assert abs(test.obsp["connectivities"] - ref.obsp["connectivities"]).max() < 1e-5


@pytest.mark.filterwarnings("ignore:Data was converted to boolean:UserWarning")
def test_bool_data():
    adata = make_adata(150, 6)
    adata.X = adata.X > 0
    _embed(adata, metric="jaccard", transformer="exact")
    _embed(adata)


@pytest.mark.parametrize("fmt", ["csr_matrix", "csc_matrix", "csr_array", "csc_array"])
def test_sparse_formats_match_dense(fmt):
    dense = make_adata(150, 6)
    dense.X[dense.X < 0] = 0
    ref = dense.copy()
    annumap.pp.neighbors(ref, n_neighbors=10)
    sp = dense.copy()
    try:
        sp.X = getattr(sparse, fmt)(dense.X)
    except ValueError:  # anndata < 0.10.x: no sparse arrays in .X
        pytest.skip(f"this anndata ({ad.__version__}) cannot hold a {fmt} in .X")
    _embed(sp)
    assert abs(sp.obsp["connectivities"] - ref.obsp["connectivities"]).max() < 1e-5


def test_coo_reaches_core_and_init_paths(graph_adata):
    """anndata refuses COO in X/obsm/obsp; COO still arrives through init_pos and _core calls."""
    from annumap._core.layout import optimize_layout

    X, _ = blobs(100, 5)
    i1, d1 = knn(sparse.coo_matrix(X), 8, backend="exact")
    i2, d2 = knn(X, 8, backend="exact")
    np.testing.assert_allclose(d1, d2, atol=1e-4)
    assert np.mean(i1 == i2) > 0.99
    G = graph_adata.obsp["connectivities"]
    init = np.random.default_rng(0).uniform(0, 10, size=(120, 2))
    Yc = optimize_layout(G.tocoo(), init, a=1.0, b=1.0, n_epochs=10)
    Yr = optimize_layout(G, init, a=1.0, b=1.0, n_epochs=10)
    np.testing.assert_array_equal(Yc, Yr)
    annumap.tl.umap(graph_adata, init_pos=sparse.coo_matrix(init), maxiter=5)
    assert np.isfinite(graph_adata.obsm["X_umap"]).all()


def test_non_contiguous_and_read_only_inputs_are_not_modified():
    rng = np.random.default_rng(0)
    wide = np.asfortranarray(np.repeat(blobs(150, 6)[0], 2, axis=1))
    rep = wide[:, ::2]  # strided, Fortran-ordered view of a bigger array
    assert not rep.flags.c_contiguous and not rep.flags.f_contiguous
    adata = make_adata(150, 6)
    adata.obsm["rep"] = rep
    adata.X.flags.writeable = False
    init = np.asfortranarray(rng.normal(size=(150, 4)))[:, 1:3]
    init.flags.writeable = False
    init_before = init.copy()
    contiguous = make_adata(150, 6)
    contiguous.obsm["rep"] = np.ascontiguousarray(rep)
    annumap.pp.neighbors(contiguous, n_neighbors=10, use_rep="rep")
    annumap.pp.neighbors(adata, n_neighbors=10, use_rep="rep")
    assert (adata.obsp["connectivities"] != contiguous.obsp["connectivities"]).nnz == 0
    C = adata.obsp["connectivities"]
    for arr in (C.data, C.indices, C.indptr):
        arr.flags.writeable = False
    annumap.tl.umap(adata, init_pos=init, maxiter=10)
    assert np.isfinite(adata.obsm["X_umap"]).all()
    assert not adata.X.flags.writeable
    np.testing.assert_array_equal(init, init_before)


def test_umap_on_a_view_materialises_and_copy_leaves_the_view(graph_adata):
    parent_before = graph_adata.copy()
    view = graph_adata[:60]
    out = annumap.tl.umap(view, maxiter=5, copy=True)
    assert view.is_view and not out.is_view
    assert "X_umap" not in view.obsm and out.obsm["X_umap"].shape == (60, 2)
    annumap.tl.umap(view, maxiter=5)
    assert not view.is_view and np.isfinite(view.obsm["X_umap"]).all()
    assert_adata_equal(graph_adata, parent_before)  # the parent never changes


def test_duplicated_obs_names():
    adata = make_adata(100, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # anndata warns about non-unique names
        adata.obs_names = ["same"] * 100
    _embed(adata)


@pytest.mark.parametrize("n_obs", [2, 3, 4])
def test_two_to_four_cells(n_obs):
    adata = make_adata(n_obs, 3, centers=1)
    with pytest.warns(UserWarning, match="n_neighbors=15 exceeds"):
        annumap.pp.neighbors(adata)
    k = adata.uns["neighbors"]["params"]["n_neighbors"]
    assert np.all(np.diff(adata.obsp["distances"].indptr) == k - 1)
    for n_components in (1, 2, 3):
        annumap.tl.umap(adata, maxiter=10, n_components=n_components, key_added=f"U{n_components}")
        Y = adata.obsm[f"U{n_components}"]
        assert Y.shape == (n_obs, n_components) and np.isfinite(Y).all()


def test_n_neighbors_equal_to_n_obs():
    adata = make_adata(25, 4)
    _embed(adata, k=25)
    assert np.all(np.diff(adata.obsp["distances"].indptr) == 24)
    C = adata.obsp["connectivities"]
    assert C.diagonal().sum() == 0 and abs(C - C.T).max() == 0


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "correlation", "manhattan"])
def test_all_identical_cells(metric):
    adata = ad.AnnData(np.ones((40, 4), dtype=np.float32))
    _embed(adata, k=5, metric=metric)
    D = adata.obsp["distances"]
    assert np.all(np.diff(D.indptr) == 4)
    if metric != "correlation":  # correlation of constant vectors is undefined: 1 by convention
        assert np.all(D.data == 0)


@pytest.mark.parametrize("metric", ["cosine", "correlation"])
def test_all_zero_rows_and_constant_columns(metric):
    adata = make_adata(120, 6)
    adata.X[:10] = 0.0  # all-zero cells: cosine/correlation undefined, distance 1 by convention
    adata.X[:, 2] = 3.0  # constant column
    adata.X[20:25] = 7.0  # constant cells (correlation undefined)
    _embed(adata, metric=metric)
    assert np.isfinite(adata.obsp["distances"].data).all()


def test_many_duplicates_and_huge_offsets():
    adata = make_adata(200, 5)
    adata.X[:100] = adata.X[0]
    adata.X = adata.X.astype(np.float64) + 1e6
    _embed(adata)


@pytest.mark.parametrize("n_components", [1, 2, 3])
@pytest.mark.parametrize("n_obs", [21, 60])
def test_complete_graph_of_identical_cells(n_obs, n_components):
    """A degenerate spectrum (LAPACK's subset eigensolver returned no eigenpair here)."""
    adata = ad.AnnData(np.full((n_obs, 1), 3.0, dtype=np.float32))
    annumap.pp.neighbors(adata, n_neighbors=n_obs)
    annumap.tl.umap(adata, maxiter=5, n_components=n_components)
    Y = adata.obsm["X_umap"]
    assert Y.shape == (n_obs, n_components) and np.isfinite(Y).all()


@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_disconnected_graph_with_many_components(fmt):
    """More components than 2 * n_components: the meta layout uses the data's centroids."""
    rng = np.random.default_rng(3)
    centers = rng.normal(scale=1000, size=(12, 4))
    X = np.repeat(centers, 12, axis=0) + rng.normal(size=(144, 4))
    X = X.astype(np.float32)
    adata = ad.AnnData(X if fmt == "dense" else sparse.csr_matrix(X))
    annumap.pp.neighbors(adata, n_neighbors=5)
    from scipy.sparse.csgraph import connected_components

    assert connected_components(adata.obsp["connectivities"])[0] >= 10
    annumap.tl.umap(adata, maxiter=30)
    assert np.isfinite(adata.obsm["X_umap"]).all()
    # the same without the representation (stale params): spiral placement, still finite
    adata.uns["neighbors"]["params"]["use_rep"] = "X_gone"
    with pytest.warns(UserWarning, match="X_gone"):
        annumap.tl.umap(adata, maxiter=30, key_added="U")
    assert np.isfinite(adata.obsm["U"]).all()


@pytest.mark.parametrize("kind", ["empty", "stored_zeros", "diagonal_only"])
def test_edgeless_graphs_give_finite_output_without_warnings(graph_adata, kind):
    n = graph_adata.n_obs
    C = graph_adata.obsp["connectivities"].copy()
    if kind == "empty":
        C = sparse.csr_matrix((n, n), dtype=np.float32)
    elif kind == "stored_zeros":
        C.data[:] = 0.0
    else:
        C = sparse.identity(n, format="csr", dtype=np.float32)
    graph_adata.obsp["connectivities"] = C
    annumap.tl.umap(graph_adata, maxiter=10)  # warnings are errors in this suite
    Y = graph_adata.obsm["X_umap"]
    assert np.isfinite(Y).all() and Y.std(axis=0).min() > 0


def test_graph_variants_are_equivalent(graph_adata):
    """Unsorted indices, duplicate entries, int64 index arrays, self-loops: same layout."""
    C = graph_adata.obsp["connectivities"]
    ref = annumap.tl.umap(graph_adata, maxiter=30, copy=True).obsm["X_umap"]

    # every entry stored twice with half the weight (raw CSR arrays: no summing on the way in)
    dup = sparse.csr_matrix(
        (np.repeat(C.data / 2, 2), np.repeat(C.indices, 2), C.indptr * 2), shape=C.shape
    )
    rev = C.copy()
    for i in range(C.shape[0]):
        s, e = rev.indptr[i], rev.indptr[i + 1]
        rev.indices[s:e] = rev.indices[s:e][::-1].copy()
        rev.data[s:e] = rev.data[s:e][::-1].copy()
    rev.has_sorted_indices = False
    wide = sparse.csr_matrix(C, copy=True)
    wide.indptr = wide.indptr.astype(np.int64)
    wide.indices = wide.indices.astype(np.int64)
    loops = (C + sparse.identity(C.shape[0], dtype=np.float32)).tocsr()
    variants = (("unsorted", rev), ("int64", wide), ("self-loops", loops), ("duplicates", dup))
    for name, G in variants:
        if name == "int64":
            assert G.indices.dtype == np.int64 and G.indptr.dtype == np.int64
        _with_graph(graph_adata, G)
        Y = annumap.tl.umap(graph_adata, maxiter=30, copy=True).obsm["X_umap"]
        np.testing.assert_array_equal(Y, ref, err_msg=name)


@pytest.mark.parametrize("weights", ["int", "bool", "float64", "dense"])
def test_graph_weight_types(graph_adata, weights):
    C = graph_adata.obsp["connectivities"]
    G = {
        "int": (C > 0.5).astype(np.int64),
        "bool": C > 0.5,
        "float64": C.astype(np.float64),
        "dense": C.toarray(),
    }[weights]
    graph_adata.obsp["connectivities"] = G
    annumap.tl.umap(graph_adata, maxiter=10)
    assert np.isfinite(graph_adata.obsm["X_umap"]).all()


def test_asymmetric_graph_and_gauss_graph(graph_adata, caplog):
    C = graph_adata.obsp["connectivities"]
    graph_adata.obsp["connectivities"] = sparse.triu(C).tocsr()
    annumap.tl.umap(graph_adata, maxiter=10)
    assert np.isfinite(graph_adata.obsm["X_umap"]).all()
    annumap.pp.neighbors(graph_adata, n_neighbors=10, method="gauss")
    with caplog.at_level("WARNING", logger="annumap"):
        annumap.tl.umap(graph_adata, maxiter=10)
    assert "not computed with method='umap'" in caplog.text
    assert np.isfinite(graph_adata.obsm["X_umap"]).all()


@pytest.mark.parametrize(
    "init", ["constant", "huge", "tiny", "duplicates", "bool", "list", "extra_columns"]
)
def test_awkward_init_arrays(graph_adata, init):
    rng = np.random.default_rng(0)
    n = graph_adata.n_obs
    if init == "constant":
        value = np.ones((n, 2))
    elif init == "huge":
        value = rng.normal(size=(n, 2))
        value[0], value[1] = 1e308, -1e308  # hi - lo would overflow
    elif init == "tiny":
        value = rng.normal(size=(n, 2)) * 1e-300
    elif init == "duplicates":
        value = np.zeros((n, 2))
        value[::2] = 1.0
    elif init == "bool":
        value = rng.normal(size=(n, 2)) > 0
    elif init == "list":
        value = rng.normal(size=(n, 2)).tolist()
    else:
        value = rng.normal(size=(n, 5))
    annumap.tl.umap(graph_adata, init_pos=value, maxiter=10)  # no warning (errors here)
    Y = graph_adata.obsm["X_umap"]
    assert np.isfinite(Y).all() and Y.std(axis=0).min() > 0


def test_paga_init_with_zero_positions_and_isolated_groups(graph_adata):
    _paga_setup(graph_adata, pos=np.zeros((3, 2)))
    annumap.tl.umap(graph_adata, init_pos="paga", maxiter=10)
    assert np.isfinite(graph_adata.obsm["X_umap"]).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"maxiter": 1},
        {"negative_sample_rate": 0},
        {"gamma": 0},
        {"min_dist": 0.0},
        {"min_dist": 1.0, "spread": 1.0},
        {"spread": 50.0},
        {"spread": 1e-3, "min_dist": 0.0},
        {"spread": 1e6, "min_dist": 1.0},
        {"spread": 100.0, "min_dist": 99.0},
        {"a": 1e-6, "b": 1e-6},
        {"a": 1e6, "b": 5.0},
        {"alpha": 1e6},
        {"n_components": 7},
        {"n_components": 200},
        {"random_state": 2**32 - 1},
        {"random_state": np.int64(3)},
        {"n_jobs": -1},
    ],
)
def test_extreme_but_valid_parameters_give_finite_output(graph_adata, kwargs):
    annumap.tl.umap(graph_adata, maxiter=kwargs.pop("maxiter", 15), **kwargs)
    Y = graph_adata.obsm["X_umap"]
    assert np.isfinite(Y).all()
    assert Y.shape[1] == kwargs.get("n_components", 2)
    params = graph_adata.uns["umap"]["params"]
    assert params["a"] > 0 and params["b"] > 0


@pytest.mark.parametrize(
    "kwargs",
    [{"a": 1e38, "b": 1.0}, {"a": 1.0, "b": 50.0}, {"spread": 1e-30, "min_dist": 0.0}],
)
def test_overflowing_curve_parameters_finite_or_refused(graph_adata, kwargs):
    """a * d**(2b) beyond float32: a finite embedding, or an error naming a and b, no write."""
    before = graph_adata.copy()
    message = None
    try:
        annumap.tl.umap(graph_adata, maxiter=15, **kwargs)
    except FloatingPointError as err:
        message = str(err)
    if message is None:
        assert np.isfinite(graph_adata.obsm["X_umap"]).all()
    else:
        assert "a=" in message and "b=" in message and "Nothing was written" in message
        _assert_unchanged(graph_adata, before)


@pytest.mark.parametrize(("spread", "min_dist"), [(1e-300, 0.0), (1e300, 0.0), (1e300, 1e300)])
def test_unfittable_curve_is_refused(graph_adata, spread, min_dist):
    _raises_unchanged(
        graph_adata,
        annumap.tl.umap,
        ValueError,
        r"could not fit the embedding curve for spread=.*min_dist=",
        spread=spread,
        min_dist=min_dist,
    )


# ---------------------------------------------------------------- interruption


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError, MemoryError])
@pytest.mark.parametrize("copy", [False, True])
def test_callback_exception_leaves_adata_unchanged(graph_adata, exc, copy):
    graph_adata.obsm["X_umap"] = np.zeros((120, 2), dtype=np.float32)  # an older result
    graph_adata.uns["umap"] = {"params": {"a": 1.0, "b": 1.0}}
    before = graph_adata.copy()
    threads_before = numba.get_num_threads()
    seen = []

    def cb(epoch, n_epochs, Y):
        seen.append(epoch)
        if epoch == 3:
            raise exc("interrupted")

    with pytest.raises(exc):
        annumap.tl.umap(graph_adata, maxiter=10, callback=cb, n_jobs=1, copy=copy)
    assert seen == [1, 2, 3]
    assert_adata_equal(graph_adata, before)
    assert numba.get_num_threads() == threads_before  # the thread setting is restored


def test_interrupt_in_the_last_epoch_and_progress_bar(graph_adata):
    before = graph_adata.copy()

    def cb(epoch, n_epochs, Y):
        if epoch == n_epochs:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        annumap.tl.umap(graph_adata, maxiter=5, callback=cb, progress=True)
    assert_adata_equal(graph_adata, before)


def test_a_run_after_an_interrupted_one_is_unaffected(graph_adata):
    ref = annumap.tl.umap(graph_adata, maxiter=20, copy=True).obsm["X_umap"]

    def cb(epoch, n_epochs, Y):
        if epoch == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        annumap.tl.umap(graph_adata, maxiter=20, callback=cb, n_jobs=1)
    annumap.tl.umap(graph_adata, maxiter=20)
    np.testing.assert_array_equal(graph_adata.obsm["X_umap"], ref)


def test_callback_early_stop_writes_a_finite_result(graph_adata):
    annumap.tl.umap(graph_adata, maxiter=50, callback=lambda e, n, Y: e == 5)
    assert np.isfinite(graph_adata.obsm["X_umap"]).all()


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    "target",
    [
        "annumap._core.knn.BACKENDS.exact",
        "annumap._core.fuzzy.fuzzy_simplicial_set",
        "annumap._core.fuzzy.knn_to_csr",
    ],
)
def test_interrupt_inside_neighbors_leaves_adata_unchanged(monkeypatch, target):
    adata = make_adata(100, 5)
    annumap.pp.neighbors(adata, n_neighbors=5, key_added="old")
    before = adata.copy()
    module, _, name = target.rpartition(".")
    if module.endswith("BACKENDS"):
        from annumap._core.knn import BACKENDS

        monkeypatch.setitem(BACKENDS, name, _interrupt)
    else:
        monkeypatch.setattr(module + "." + name, _interrupt)
    with pytest.raises(KeyboardInterrupt):
        annumap.pp.neighbors(adata, n_neighbors=10, transformer="exact")
    assert_adata_equal(adata, before)


@pytest.mark.parametrize(
    "target",
    [
        "annumap._core.curve.find_ab",
        "annumap._core.init.spectral_init",
        "annumap.tl._umap.run_layout",
    ],
)
def test_interrupt_inside_umap_leaves_adata_unchanged(graph_adata, monkeypatch, target):
    annumap.tl.umap(graph_adata, maxiter=5)  # an older result that must survive
    before = graph_adata.copy()
    monkeypatch.setattr(target, _interrupt)
    with pytest.raises(KeyboardInterrupt):
        annumap.tl.umap(graph_adata, maxiter=5, random_state=4)
    assert_adata_equal(graph_adata, before)


def test_non_finite_layout_is_refused_before_writing(graph_adata, monkeypatch):
    """A backend that returns NaN coordinates must not get them written."""
    before = graph_adata.copy()

    def nan_layout(graph, init, **kwargs):
        return np.full(init.shape, np.nan, dtype=np.float32), {}

    from annumap.tl import _layouts

    monkeypatch.setitem(_layouts.LAYOUTS, "umap", nan_layout)
    with pytest.raises(FloatingPointError, match="non-finite coordinates"):
        annumap.tl.umap(graph_adata, maxiter=5)
    assert_adata_equal(graph_adata, before)


# ---------------------------------------------------------------- index types and scale safety


def test_knn_to_csr_index_dtype_follows_size():
    from annumap._core.fuzzy import knn_to_csr

    idx = np.tile(np.arange(4), (4, 1))
    M = knn_to_csr(idx, np.ones((4, 4), dtype=np.float32), 4)
    assert M.indptr.dtype == np.int32 and M.nnz == 12
    assert M.indptr[-1] == 12


def test_layout_kernel_receives_int64_indices(monkeypatch, graph_adata):
    """The kernel must index edges with int64 so graphs past 2**31 edges are safe."""
    from annumap._core import _kernels

    seen = set()
    kernels = [name for name in dir(_kernels) if name.startswith("sgd_epoch")]
    assert kernels

    def spy(real):
        def kernel(bounds, parallel, indptr, indices, *rest):
            seen.add((bounds.dtype, indptr.dtype, indices.dtype))
            return real(bounds, parallel, indptr, indices, *rest)

        return kernel

    for name in kernels:
        monkeypatch.setattr(_kernels, name, spy(getattr(_kernels, name)))
    for n_components in (2, 3):
        annumap.tl.umap(graph_adata, maxiter=2, n_components=n_components)
    assert seen == {(np.dtype(np.int64),) * 3}


@pytest.mark.parametrize("scale", [1e20, 1e-25])
def test_exact_knn_is_scale_invariant(scale):
    X, _ = blobs(300, 10, seed=1)
    ref_i, _ = knn(X.astype(np.float64), 10, backend="exact")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        idx, _ = knn(X.astype(np.float64) * scale, 10, backend="exact")
    assert np.mean(idx == ref_i) > 0.99


def test_exact_knn_sparse_input_with_a_large_offset():
    X, _ = blobs(300, 10, seed=1)
    ref_i, _ = knn(X.astype(np.float64), 10, backend="exact")
    idx, _ = knn(sparse.csr_matrix(X.astype(np.float64) + 1e4), 10, backend="exact")
    assert np.mean(idx == ref_i) > 0.99
