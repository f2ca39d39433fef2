"""Property-based tests (hypothesis) over small random AnnData objects and graphs.

Properties: no error outside the documented ones (a documented error leaves the AnnData
unchanged), the storage contract holds, the embedding is finite, float32 and deterministic for a
seed whatever the thread count, numpy never warns (warnings are errors in this suite), and
parameter validation accepts exactly the documented domain.
"""

from __future__ import annotations

import math
import warnings

import anndata as ad
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import sparse

import annumap
from annumap._core.curve import _curve, find_ab

from .conftest import assert_adata_equal

#: Small and quick: each example builds a graph and runs a few epochs.
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

DTYPES = ["float32", "float64", "float16", "int32", "uint8", "bool"]
FORMATS = ["dense", "csr", "csc"]
METRICS = ["euclidean", "cosine", "manhattan", "correlation"]


@st.composite
def small_data(draw):
    """(X, description) with duplicates, constant columns, zero rows and odd dtypes mixed in."""
    n = draw(st.integers(2, 40))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    X = rng.normal(scale=scale, size=(n, d))
    n_dup = draw(st.integers(0, n - 1))
    if n_dup:
        X[rng.integers(n, size=n_dup)] = X[0]
    if draw(st.booleans()):
        X[:, rng.integers(d)] = 3.0  # a constant column
    if draw(st.booleans()):
        X[rng.integers(n)] = 0.0  # an all-zero row
    dtype = draw(st.sampled_from(DTYPES))
    if dtype == "bool":
        X = X > 0
    elif np.dtype(dtype).kind in "iu":
        X = np.clip(np.round(X / scale * 10), 0 if dtype == "uint8" else -1000, 255)
    X = X.astype(dtype)
    fmt = draw(st.sampled_from(FORMATS))
    if fmt != "dense" and dtype != "float16":  # scipy.sparse has no float16
        X = getattr(sparse, f"{fmt}_matrix")(X)
    return X


def _nonnumpy_warnings(caught):
    """Warnings that are not the documented UserWarnings (e.g. numpy RuntimeWarnings)."""
    return [w for w in caught if not issubclass(w.category, UserWarning)]


@SETTINGS
@given(
    X=small_data(),
    k=st.integers(2, 50),
    metric=st.sampled_from(METRICS),
    maxiter=st.integers(1, 12),
    n_components=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_neighbors_and_umap_on_random_data(X, k, metric, maxiter, n_components, seed):
    adata = ad.AnnData(X)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        annumap.pp.neighbors(adata, n_neighbors=k, metric=metric)
        out = annumap.tl.umap(
            adata, maxiter=maxiter, n_components=n_components, random_state=seed, copy=True
        )
    assert not _nonnumpy_warnings(caught), [str(w.message) for w in caught]
    n = adata.n_obs
    # storage contract of the graph
    k_used = adata.uns["neighbors"]["params"]["n_neighbors"]
    assert k_used == (k if k <= n else 1 + n // 2)
    D, C = adata.obsp["distances"], adata.obsp["connectivities"]
    assert D.dtype == np.float32 and C.dtype == np.float32
    assert np.all(np.diff(D.indptr) == k_used - 1)
    assert np.isfinite(D.data).all() and (D.data >= 0).all()
    assert D.diagonal().sum() == 0 and C.diagonal().sum() == 0
    assert abs(C - C.T).max() <= 1e-6
    assert np.isfinite(C.data).all() and (C.data > 0).all() and (C.data <= 1 + 1e-6).all()
    # the embedding: finite, float32, right shape, written only to the copy
    Y = out.obsm["X_umap"]
    assert Y.dtype == np.float32 and Y.shape == (n, n_components)
    assert np.isfinite(Y).all()
    assert "X_umap" not in adata.obsm
    # deterministic for the seed, whatever the thread count
    again = annumap.tl.umap(
        adata, maxiter=maxiter, n_components=n_components, random_state=seed, copy=True, n_jobs=1
    )
    np.testing.assert_array_equal(again.obsm["X_umap"], Y)


@SETTINGS
@given(
    X=small_data(),
    where=st.sampled_from(["nan", "inf", "-inf"]),
    row=st.integers(0, 10**6),
    col=st.integers(0, 10**6),
)
def test_nonfinite_values_are_refused_without_a_write(X, where, row, col):
    X = X.toarray() if sparse.issparse(X) else X.copy()
    X = X.astype(np.float64 if X.dtype.kind != "f" else X.dtype)
    X[row % X.shape[0], col % X.shape[1]] = float(where)
    adata = ad.AnnData(X)
    before = adata.copy()
    with pytest.raises(ValueError, match=r"adata\.X contains 1 NaN or infinite value"):
        annumap.pp.neighbors(adata, n_neighbors=2)
    assert_adata_equal(adata, before)


@st.composite
def random_graph(draw):
    """A weighted graph with asymmetry, self-loops, stored zeros and isolated vertices."""
    n = draw(st.integers(2, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    density = draw(st.floats(0.0, 0.5))
    G = sparse.random(n, n, density=density, random_state=rng, format="coo", dtype=np.float64)
    G.data = rng.choice([0.0, 1e-7, 0.5, 1.0, 3.0], size=G.nnz) * rng.uniform(size=G.nnz)
    if draw(st.booleans()):
        G = G + G.T
    G = G.tocsr()
    zero_rows = draw(st.integers(0, n))
    G.data[: G.indptr[zero_rows]] = 0.0  # stored zeros: these rows have no outgoing edge
    dtype = draw(st.sampled_from(["float32", "float64"]))
    return G.astype(dtype)


@SETTINGS
@given(
    G=random_graph(),
    init=st.sampled_from(["spectral", "random", "array"]),
    maxiter=st.integers(1, 15),
    seed=st.integers(0, 2**32 - 1),
)
def test_umap_on_random_graphs(G, init, maxiter, seed):
    n = G.shape[0]
    adata = ad.AnnData(np.zeros((n, 1), dtype=np.float32))
    adata.uns["neighbors"] = {
        "connectivities_key": "connectivities",
        "distances_key": "distances",
        "params": {"n_neighbors": 5, "method": "umap"},
    }
    adata.obsp["connectivities"] = G
    G_before = G.copy()
    init_pos = np.random.default_rng(seed).normal(size=(n, 2)) if init == "array" else init
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = annumap.tl.umap(
            adata, maxiter=maxiter, init_pos=init_pos, random_state=seed, copy=True
        )
    assert not _nonnumpy_warnings(caught), [str(w.message) for w in caught]
    Y = out.obsm["X_umap"]
    assert Y.dtype == np.float32 and Y.shape == (n, 2) and np.isfinite(Y).all()
    # the input graph is never modified
    C = adata.obsp["connectivities"]
    assert C.dtype == G_before.dtype and (C != G_before).nnz == 0
    again = annumap.tl.umap(adata, maxiter=maxiter, init_pos=init_pos, random_state=seed, copy=True)
    np.testing.assert_array_equal(again.obsm["X_umap"], Y)


# ---- parameter validation accepts exactly the documented domain

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 8),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.floats(-2.0, 3.0),
    st.text(max_size=3),
)


def _real(v):
    return isinstance(v, int | float) and not isinstance(v, bool)


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _invalid(p):
    """The names of the parameters that DESIGN section 6 and the docstring rule out."""
    bad = set()
    if not (_real(p["min_dist"]) and math.isfinite(p["min_dist"]) and p["min_dist"] >= 0):
        bad.add("min_dist")
    if not (_real(p["spread"]) and math.isfinite(p["spread"]) and p["spread"] > 0):
        bad.add("spread")
    if not bad and p["min_dist"] > p["spread"]:
        bad.add("min_dist")
    if not (_int(p["n_components"]) and p["n_components"] >= 1):
        bad.add("n_components")
    if not (p["maxiter"] is None or (_int(p["maxiter"]) and p["maxiter"] >= 0)):
        bad.add("maxiter")
    if not (_real(p["alpha"]) and math.isfinite(p["alpha"]) and p["alpha"] > 0):
        bad.add("alpha")
    if not (_real(p["gamma"]) and math.isfinite(p["gamma"]) and p["gamma"] >= 0):
        bad.add("gamma")
    nsr = p["negative_sample_rate"]
    if not (_real(nsr) and math.isfinite(nsr) and 0 <= nsr <= 2**16 - 1):
        bad.add("negative_sample_rate")
    return bad


@pytest.fixture(scope="module")
def small_graph():
    rng = np.random.default_rng(0)
    adata = ad.AnnData(
        np.vstack([rng.normal(size=(15, 3)), rng.normal(8, size=(15, 3))]).astype(np.float32)
    )
    annumap.pp.neighbors(adata, n_neighbors=6)
    return adata


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    min_dist=ANY_VALUE,
    spread=ANY_VALUE,
    n_components=ANY_VALUE,
    maxiter=ANY_VALUE,
    alpha=ANY_VALUE,
    gamma=ANY_VALUE,
    negative_sample_rate=ANY_VALUE,
)
def test_parameter_validation_matches_the_documented_domain(small_graph, **params):
    adata = small_graph.copy()
    before = adata.copy()
    bad = _invalid(params)
    if bad:
        with pytest.raises((TypeError, ValueError)) as info:
            annumap.tl.umap(adata, **params)
        assert any(name in str(info.value) for name in bad), (bad, str(info.value))
        assert_adata_equal(adata, before)
        return
    # valid: keep the run short (maxiter None means 500 epochs on 30 cells: still quick)
    message = None
    try:
        annumap.tl.umap(adata, **params)
    except (FloatingPointError, ValueError) as err:  # documented: curve not fittable/overflow
        message = str(err)
    if message is not None:
        assert "could not fit the embedding curve" in message or "a=" in message, message
        assert_adata_equal(adata, before)
        return
    Y = adata.obsm["X_umap"]
    assert Y.shape == (30, params["n_components"]) and np.isfinite(Y).all()


@settings(max_examples=40, deadline=None)
@given(
    spread=st.floats(1e-4, 1e4),
    ratio=st.floats(0.0, 1.0),
)
def test_find_ab_gives_a_positive_curve_close_to_its_target(spread, ratio):
    min_dist = spread * ratio
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning/OptimizeWarning leaks
        a, b = find_ab(spread, min_dist)
    assert math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0
    x = np.linspace(0.0, 3.0 * spread, 300)
    target = np.where(x < min_dist, 1.0, np.exp(-(x - min_dist) / spread))
    assert np.abs(_curve(x, a, b) - target).max() <= 0.2
