"""Shared fixtures: small deterministic data made here, and scanpy's bundled pbmc68k_reduced."""

from __future__ import annotations

import numpy as np
import pytest


def blobs(n: int = 600, dim: int = 10, centers: int = 4, seed: int = 0, spread: float = 8.0):
    """Gaussian blobs (float32) with labels; well separated for spread >= 6."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=spread, size=(centers, dim))
    labels = rng.integers(centers, size=n)
    X = means[labels] + rng.normal(size=(n, dim))
    return X.astype(np.float32), labels


def make_adata(n: int = 600, dim: int = 10, centers: int = 4, seed: int = 0):
    import anndata as ad
    import pandas as pd

    X, labels = blobs(n, dim, centers, seed)
    obs = pd.DataFrame(
        {"label": pd.Categorical([f"c{i}" for i in labels])},
        index=[f"cell{i}" for i in range(n)],
    )
    return ad.AnnData(X=X, obs=obs)


@pytest.fixture
def adata():
    """600 cells in 4 blobs, 10 variables (used directly as the representation)."""
    return make_adata()


@pytest.fixture(scope="session")
def _pbmc():
    import warnings

    import anndata as ad

    sc = pytest.importorskip("scanpy")
    with warnings.catch_warnings():
        # scanpy 1.11's bundled file is in anndata's old format: anndata 0.13 warns on reading it
        warnings.simplefilter("ignore", getattr(ad, "OldFormatWarning", UserWarning))
        return sc.datasets.pbmc68k_reduced()


@pytest.fixture
def pbmc(_pbmc):
    """scanpy's bundled pbmc68k_reduced (700 cells, X_pca 50), a fresh copy per test."""
    return _pbmc.copy()


@pytest.fixture
def paga_adata(pbmc):
    """``pbmc`` with annumap's neighbours, scanpy's PAGA of ``bulk_labels`` and its positions."""
    import warnings

    import annumap

    sc = pytest.importorskip("scanpy")
    annumap.pp.neighbors(pbmc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.paga(pbmc, groups="bulk_labels")
        sc.pl.paga(pbmc, show=False)
    return pbmc


def snapshot(adata):
    """A deep copy of every AnnData field, for 'unchanged after failure' assertions."""
    return adata.copy()


def assert_adata_equal(a, b):
    """Assert X, obs, var, obsm, obsp, uns equal (values and keys)."""
    from scipy import sparse

    def same(x, y):
        if sparse.issparse(x) or sparse.issparse(y):
            assert sparse.issparse(x) and sparse.issparse(y)
            assert x.shape == y.shape
            assert (x != y).nnz == 0
        elif isinstance(x, dict):
            assert isinstance(y, dict) and x.keys() == y.keys()
            for k in x:
                same(x[k], y[k])
        elif isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y or (x != x and y != y)

    assert a.shape == b.shape
    same(a.X, b.X)
    assert a.obs.equals(b.obs)
    assert a.var.equals(b.var)
    assert a.obsm.keys() == b.obsm.keys()
    for k in a.obsm:
        same(np.asarray(a.obsm[k]), np.asarray(b.obsm[k]))
    assert a.obsp.keys() == b.obsp.keys()
    for k in a.obsp:
        same(a.obsp[k], b.obsp[k])
    same(dict(a.uns), dict(b.uns))
