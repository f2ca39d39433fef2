"""Persistence: neighbors and umap results round-trip through h5ad and zarr, params included.

Every value annumap writes into ``.uns`` must be serialisable by anndata (no tuples, None,
object arrays, non-str keys or ints beyond int64); after a round trip the graph and embedding
are bit-identical, scanpy-compatible types are kept, and computing again from the file gives
the same result as computing from memory.
"""

from __future__ import annotations

import numbers

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

import annumap

from .conftest import assert_adata_equal, make_adata


def _write_read(adata, tmp_path, fmt):
    if fmt == "h5ad":
        path = tmp_path / "a.h5ad"
        adata.write_h5ad(path)
        return ad.read_h5ad(path)
    path = tmp_path / "a.zarr"
    adata.write_zarr(path)
    return ad.read_zarr(path)


def _assert_storable(value, where="uns"):
    """Every leaf is a str, bool, int64-range int, float, or a numeric/str ndarray."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str), f"{where}: key {key!r} is not a str"
            _assert_storable(item, f"{where}[{key!r}]")
    elif isinstance(value, np.ndarray):
        assert value.dtype.kind in "biufU", f"{where}: array of dtype {value.dtype}"
    elif isinstance(value, bool | str | np.bool_):
        pass
    elif isinstance(value, numbers.Integral):
        assert -(2**63) <= int(value) < 2**63, f"{where}: {value} beyond int64"
    elif isinstance(value, numbers.Real):
        assert np.isfinite(value), f"{where}: {value}"
    else:
        raise AssertionError(f"{where}: {type(value).__name__} is not storable")


def _neighbor_variants():
    from sklearn.neighbors import KNeighborsTransformer

    return {
        "default": {},
        "keyed": {"key_added": "nb", "use_rep": "X_pca", "n_pcs": 4, "n_neighbors": 8},
        "metric_kwds": {"metric": "minkowski", "metric_kwds": {"p": 3, "w": (1, 2, 1, 2, 1, 2)}},
        "gauss": {"method": "gauss", "n_neighbors": 10},
        "gauss_dense": {"method": "gauss", "knn": False, "n_neighbors": 10},
        "transformer": {"transformer": KNeighborsTransformer(n_neighbors=9, algorithm="brute")},
        "drawn_seed": {"random_state": None},
        "cosine": {"metric": "cosine"},
    }


@pytest.fixture(scope="module")
def base_adata():
    adata = make_adata(150, 6, centers=3, seed=2)
    adata.obsm["X_pca"] = np.random.default_rng(0).normal(size=(150, 5)).astype(np.float32)
    return adata


@pytest.mark.parametrize("variant", list(_neighbor_variants()))
@pytest.mark.parametrize("fmt", ["h5ad", "zarr"])
@pytest.mark.filterwarnings("ignore:.*zarr.*:UserWarning")
def test_neighbors_round_trip(base_adata, tmp_path, variant, fmt):
    adata = base_adata.copy()
    kwargs = _neighbor_variants()[variant]
    annumap.pp.neighbors(adata, **kwargs)
    key = kwargs.get("key_added", "neighbors")
    info = adata.uns[key]
    _assert_storable(dict(adata.uns))
    back = _write_read(adata, tmp_path, fmt)
    assert_adata_equal(back, adata)
    for name in (info["connectivities_key"], info["distances_key"]):
        M, B = adata.obsp[name], back.obsp[name]
        if variant == "gauss_dense":  # knn=False: dense (n_obs, n_obs), as scanpy stores it
            assert isinstance(B, np.ndarray) and B.dtype == np.float32 == M.dtype
            np.testing.assert_array_equal(B, M)
            continue
        assert isinstance(B, sparse.csr_matrix | sparse.csr_array)
        assert B.dtype == np.float32 == M.dtype
        np.testing.assert_array_equal(B.indptr, M.indptr)
        np.testing.assert_array_equal(B.indices, M.indices)
        np.testing.assert_array_equal(B.data, M.data)
    params = back.uns[key]["params"]
    assert isinstance(params["n_neighbors"], numbers.Integral)
    assert isinstance(params["random_state"], numbers.Integral)
    assert isinstance(params["metric"], str) and isinstance(params["method"], str)
    if variant == "metric_kwds":
        np.testing.assert_array_equal(params["metric_kwds"]["w"], [1, 2, 1, 2, 1, 2])
        assert params["metric_kwds"]["p"] == 3
    # the read-back file gives the same graph again (the stored params reproduce it)
    again = back.copy()
    rerun = {k: v for k, v in kwargs.items() if k != "random_state"}
    annumap.pp.neighbors(again, random_state=int(params["random_state"]), **rerun)
    C0 = adata.obsp[info["connectivities_key"]]
    C1 = again.obsp[info["connectivities_key"]]
    np.testing.assert_array_equal(
        C0.toarray() if sparse.issparse(C0) else C0, C1.toarray() if sparse.issparse(C1) else C1
    )


def _umap_variants(n_obs):
    rng = np.random.default_rng(1)
    return {
        "default": {},
        "keyed": {"key_added": "U", "random_state": 7, "n_components": 3},
        "init_array": {"init_pos": rng.uniform(size=(n_obs, 2))},
        "init_obsm": {"init_pos": "X_pca"},
        "curve": {"a": 1.2, "b": 0.8, "min_dist": 0.1, "spread": 2.0},
        "drawn_seed": {"random_state": None},
        "gamma_rate": {"gamma": 2.0, "negative_sample_rate": 3, "alpha": 0.5},
    }


@pytest.mark.parametrize("variant", list(_umap_variants(1)))
@pytest.mark.parametrize("fmt", ["h5ad", "zarr"])
@pytest.mark.filterwarnings("ignore:.*zarr.*:UserWarning")
def test_umap_round_trip_and_recompute_from_file(base_adata, tmp_path, variant, fmt):
    adata = base_adata.copy()
    annumap.pp.neighbors(adata, n_neighbors=10)
    kwargs = _umap_variants(adata.n_obs)[variant]
    annumap.tl.umap(adata, maxiter=30, **kwargs)
    obsm_key = kwargs.get("key_added", "X_umap")
    uns_key = kwargs.get("key_added", "umap")
    _assert_storable(dict(adata.uns))
    back = _write_read(adata, tmp_path, fmt)
    assert_adata_equal(back, adata)
    Y = back.obsm[obsm_key]
    assert isinstance(Y, np.ndarray) and Y.dtype == np.float32
    params = back.uns[uns_key]["params"]
    for name in ("a", "b"):
        assert isinstance(params[name], numbers.Real)
    assert isinstance(params["n_epochs"], numbers.Integral)
    # recompute from the file with the stored seed: bit-identical
    seed = int(params.get("random_state", 0))
    rerun = {k: v for k, v in kwargs.items() if k != "random_state"}
    fresh = annumap.tl.umap(back, maxiter=30, random_state=seed, copy=True, **rerun)
    np.testing.assert_array_equal(fresh.obsm[obsm_key], adata.obsm[obsm_key])


@pytest.mark.filterwarnings("ignore:.*zarr.*:UserWarning")
def test_scanpy_reads_and_uses_our_file(base_adata, tmp_path):
    sc = pytest.importorskip("scanpy")
    adata = base_adata.copy()
    annumap.pp.neighbors(adata, n_neighbors=10, key_added="nb")
    annumap.tl.umap(adata, neighbors_key="nb", maxiter=20)
    back = _write_read(adata, tmp_path, "h5ad")
    # scanpy's own tools find the graph through the stored keys and params
    sc.tl.umap(back, neighbors_key="nb", maxiter=20, key_added="sc_umap")
    assert np.isfinite(back.obsm["sc_umap"]).all()
    assert back.uns["umap"]["params"]["neighbors_key"] == "nb"
    # and our file survives a second round trip through zarr unchanged
    again = _write_read(back, tmp_path, "zarr")
    assert_adata_equal(again, back)


def test_round_trip_of_a_scanpy_file_we_extend(pbmc, tmp_path):
    """The bundled scanpy file (older params, e.g. 1-element arrays) plus our results."""
    annumap.tl.umap(pbmc, maxiter=20, key_added="ours")
    back = _write_read(pbmc, tmp_path, "h5ad")
    assert_adata_equal(back, pbmc)
    fresh = annumap.tl.umap(back, maxiter=20, key_added="ours", copy=True)
    np.testing.assert_array_equal(fresh.obsm["ours"], pbmc.obsm["ours"])


def test_backed_file_is_refused_but_its_in_memory_copy_works(tmp_path):
    adata = make_adata(80, 5)
    annumap.pp.neighbors(adata, n_neighbors=8)
    path = tmp_path / "b.h5ad"
    adata.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    try:
        with pytest.raises(ValueError, match="backed"):
            annumap.tl.umap(backed, maxiter=5)
        memory = backed.to_memory()
    finally:
        backed.file.close()
    annumap.tl.umap(memory, maxiter=5)
    assert np.isfinite(memory.obsm["X_umap"]).all()
    assert_adata_equal(ad.read_h5ad(path), adata)  # the file is as written
