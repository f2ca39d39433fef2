"""pp.neighbors on a Dask representation: blockwise through Dask, equal to the in-memory call."""

from __future__ import annotations

import numpy as np
import pytest

import annumap

from .conftest import make_adata

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")


def _same_graph(a, b):
    for key in ("distances", "connectivities"):
        x, y = a.obsp[key], b.obsp[key]
        np.testing.assert_array_equal(x.indptr, y.indptr)
        np.testing.assert_array_equal(x.indices, y.indices)
        np.testing.assert_array_equal(x.data, y.data)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def test_local_cluster_equals_in_memory_and_umap_runs(client):
    mem = make_adata(900, dim=10, centers=5, seed=2)
    mem.obsm["X_pca"] = mem.X.copy()
    annumap.pp.neighbors(mem, n_neighbors=12, use_rep="X_pca", transformer="exact")
    lazy = make_adata(900, dim=10, centers=5, seed=2)
    lazy.obsm["X_pca"] = da.from_array(lazy.X.copy(), chunks=(250, 5))  # uneven row blocks
    annumap.pp.neighbors(lazy, n_neighbors=12, use_rep="X_pca")
    assert lazy.uns["neighbors"]["params"]["knn_backend"] == "exact"
    _same_graph(mem, lazy)
    # the layout runs in this process on the O(n k) graph
    annumap.tl.umap(lazy, random_state=0, n_jobs=1)
    assert lazy.obsm["X_umap"].shape == (900, 2) and np.isfinite(lazy.obsm["X_umap"]).all()


def test_dask_X_with_cosine_on_default_scheduler():
    mem = make_adata(500, dim=8, seed=4)
    ref = mem.copy()
    annumap.pp.neighbors(ref, n_neighbors=10, metric="cosine", transformer="exact")
    mem.X = da.from_array(mem.X, chunks=(128, 8))
    annumap.pp.neighbors(mem, n_neighbors=10, metric="cosine")
    _same_graph(ref, mem)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"transformer": "pynndescent"}, "Dask array"),
        ({"transformer": "nndescent"}, "Dask array"),
        ({"method": "gauss", "knn": False}, "knn=False"),
    ],
)
def test_unsupported_options_raise_before_writing(kwargs, match):
    a = make_adata(200, dim=6)
    a.X = da.from_array(a.X, chunks=(64, 6))
    with pytest.raises(ValueError, match=match):
        annumap.pp.neighbors(a, **kwargs)
    assert "neighbors" not in a.uns and not a.obsp


def test_nan_in_a_block_is_named():
    a = make_adata(200, dim=6)
    X = a.X.copy()
    X[150, 2] = np.nan
    a.X = da.from_array(X, chunks=(64, 6))
    with pytest.raises(ValueError, match=r"rows \[150\]"):
        annumap.pp.neighbors(a)
    assert "neighbors" not in a.uns
