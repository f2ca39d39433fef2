"""The picture is scanpy's: global shape of CBMC's embedding inside scanpy's seed range.

kNN preservation and trustworthiness cannot see clusters drawn as tight dots far apart; the
coordinate range and the within/between-label distance ratio can. The first parallel kernel
(vertex-owned, 4 passes) gave CBMC a range of 59-69 and a ratio of 0.05-0.08, far outside.

scanpy's figures below were measured with ``scanpy.tl.umap(adata, random_state=seed)``,
seeds 0-9, on the graph this test builds (scanpy 1.11.5, umap-learn 0.5.12); recorded here so
that the test does not run scanpy. Ten seeds, not five: the within/between ratio of single seeds
spreads widely (scanpy 0.093-0.143, annumap 0.111-0.225; annumap has more loose layouts, 3 of
10 above 0.16 against none), and a five-seed median moved across the bound between two numba
builds of the same kernel.
"""

from __future__ import annotations

from pathlib import Path
from statistics import median

import anndata as ad
import numpy as np
import pytest

import annumap
from annumap._core.metrics import global_shape
from annumap._core.pca import pca

DATA = Path(__file__).resolve().parents[1] / "data" / "cbmc_citeseq_8617x500.h5ad"

#: scanpy.tl.umap on this graph, seeds 0-9: (min, max) over the seeds.
SCANPY_RANGE = (26.3, 34.3)
SCANPY_WITHIN_BETWEEN = (0.093, 0.143)
SEEDS = 10
WIDEN = 1.15


@pytest.fixture(scope="module")
def cbmc():
    if not DATA.exists():
        pytest.skip(f"{DATA} not found")
    raw = ad.read_h5ad(DATA)
    X = raw.X.toarray().astype(np.float64)
    X = np.log1p(X / X.sum(axis=1, keepdims=True) * np.median(X.sum(axis=1)))
    a = ad.AnnData(X.astype(np.float32))
    a.obs["label"] = raw.obs["cell_type"].astype(str).values
    a.obs_names = [f"c{i}" for i in range(a.n_obs)]
    a.obsm["X_pca"] = pca(a.X, 50, random_state=0)
    annumap.pp.neighbors(a, n_neighbors=15, use_rep="X_pca", transformer="exact")
    return a


def test_cbmc_global_shape_inside_scanpys_seed_range(cbmc):
    keep = cbmc.obs["label"].values != "Unknown"
    stats = []
    for seed in range(SEEDS):
        b = annumap.tl.umap(cbmc, random_state=seed, copy=True)
        stats.append(global_shape(b.obsm["X_umap"][keep], cbmc.obs["label"].values[keep]))
    for name, (lo, hi) in (("range", SCANPY_RANGE), ("within_between", SCANPY_WITHIN_BETWEEN)):
        m = median(s[name] for s in stats)
        assert lo / WIDEN <= m <= hi * WIDEN, (name, m, [s[name] for s in stats])
