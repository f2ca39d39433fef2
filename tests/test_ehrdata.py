"""ehrdata.EHRData (what ehrapy >= 0.15 works on) as a first-class input.

An EHRData is an AnnData subclass whose ``.shape`` is ``(n_obs, n_vars, n_t)`` and which may
hold 3-D layers ``(n_obs, n_vars, n_t)``. Skipped when ehrdata is not installed (the default
Python 3.11 leg); the newest-Python leg of ``.ci/run`` installs it and runs these.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import annumap

from .conftest import blobs

ed = pytest.importorskip("ehrdata")


def _edata(layer_3d: bool, n: int = 240):
    import pandas as pd

    X, labels = blobs(n, dim=8, centers=3)
    obs = pd.DataFrame(
        {"group": pd.Categorical([f"g{i}" for i in labels])}, index=[f"p{i}" for i in range(n)]
    )
    layers = None
    if layer_3d:
        rng = np.random.default_rng(1)
        layers = {"tem_data": X[:, :, None] + rng.normal(size=(n, 8, 4)).astype(np.float32)}
    return ed.EHRData(X=X, obs=obs, layers=layers)


@pytest.fixture(params=[False, True], ids=["flat", "3d-layer"])
def edata(request):
    return _edata(request.param)


def test_shape_is_a_3_tuple(edata):
    # the premise of these tests: nothing may read .shape as (n_obs, n_vars)
    assert len(edata.shape) == 3 and edata.shape[:2] == (edata.n_obs, edata.n_vars)


def test_neighbors_and_umap_on_ehrdata(edata):
    plain = annumap.pp.neighbors(_as_anndata(edata), n_neighbors=10, copy=True)
    annumap.pp.neighbors(edata, n_neighbors=10)
    annumap.tl.umap(edata, maxiter=50)
    assert type(edata) is ed.EHRData
    assert edata.obsm["X_umap"].shape == (edata.n_obs, 2)
    # the graph is the one an AnnData with the same X gets
    assert (edata.obsp["connectivities"] != plain.obsp["connectivities"]).nnz == 0
    if "tem_data" in edata.layers:
        assert edata.layers["tem_data"].ndim == 3  # untouched


def test_copy_returns_an_ehrdata(edata):
    out = annumap.pp.neighbors(edata, n_neighbors=10, copy=True)
    assert type(out) is ed.EHRData and out is not edata
    assert "neighbors" not in edata.uns
    out2 = annumap.tl.umap(out, maxiter=20, copy=True)
    assert type(out2) is ed.EHRData and "X_umap" not in out.obsm
    assert out2.shape == edata.shape  # n_t kept


def test_a_view_of_an_ehrdata_is_materialised_as_an_ehrdata(edata):
    view = edata[:120]
    annumap.pp.neighbors(view, n_neighbors=10)
    annumap.tl.umap(view, maxiter=20)
    assert type(view) is ed.EHRData and not view.is_view
    assert view.obsm["X_umap"].shape == (120, 2)


def test_pca_stored_on_a_wide_ehrdata():
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(150, 4)) @ rng.normal(size=(4, 60))).astype(np.float32)
    edata = ed.EHRData(X=X + rng.normal(scale=0.1, size=X.shape).astype(np.float32))
    with pytest.warns(UserWarning, match="storing it"):
        annumap.pp.neighbors(edata, n_neighbors=10)
    assert edata.obsm["X_pca"].shape == (150, 50) and edata.varm["PCs"].shape == (60, 50)


def test_ehrapy_reads_annumaps_result():
    ep = pytest.importorskip("ehrapy")
    edata = _edata(layer_3d=True)
    annumap.pp.neighbors(edata, n_neighbors=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ehrapy's and its dependencies' own warnings
        ep.tl.leiden(edata, resolution=0.3, key_added="leiden")
    annumap.tl.umap(edata, maxiter=50)
    assert edata.obs["leiden"].nunique() >= 2
    assert edata.obsm["X_umap"].shape == (edata.n_obs, 2)


def test_umap_on_ehrapys_own_neighbors():
    """ehrapy 0.15's ``ep.pp.neighbors`` (scanpy's search underneath) feeds annumap.tl.umap."""
    ep = pytest.importorskip("ehrapy")
    edata = _edata(layer_3d=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep.pp.neighbors(edata, n_neighbors=10)
    annumap.tl.umap(edata, maxiter=30)
    assert np.isfinite(edata.obsm["X_umap"]).all()


def _as_anndata(edata):
    import anndata as ad

    return ad.AnnData(X=np.asarray(edata.X).copy(), obs=edata.obs.copy())
