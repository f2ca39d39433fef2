# %% [markdown]
# # Tutorial 1: single-cell RNA-seq with scanpy and annumap
#
# annumap replaces two steps of a scanpy workflow, `sc.pp.neighbors` and `sc.tl.umap`, with
# `annumap.pp.neighbors` and `annumap.tl.umap`. They take the same arguments and store their
# results in the same places, so everything around them (preprocessing, Leiden clustering,
# PAGA, plotting) stays scanpy.
#
# The data are 8,617 cord blood mononuclear cells (CBMC, CITE-seq, Stoeckius et al. 2017)
# with 500 genes of raw UMI counts and a cell-type label per cell, bundled in `data/`.
#
# This file is a [jupytext](https://jupytext.readthedocs.io) percent-format notebook: open it
# in Jupyter with jupytext, or run it as a script from the repository root
# (`python tutorials/01_scrnaseq_cbmc.py`). Figures go to `$ANNUMAP_FIGDIR` (default
# `figures/`).

# %%
import os
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import scanpy as sc
from sklearn.metrics import adjusted_rand_score

import annumap

DATA = next(p for p in (Path("data"), Path("../data")) if p.is_dir())
FIGDIR = Path(os.environ.get("ANNUMAP_FIGDIR", "figures"))
FIGDIR.mkdir(parents=True, exist_ok=True)

adata = ad.read_h5ad(DATA / "cbmc_citeseq_8617x500.h5ad")
adata

# %%
print(adata.obs["cell_type"].value_counts().to_string())

# %% [markdown]
# ## Preprocessing (scanpy)
#
# Raw counts first get the usual treatment: scale every cell to the same total count, take
# `log1p`, and reduce to 50 principal components. `annumap.pp.neighbors` then searches on
# `.obsm['X_pca']`, as scanpy would (with more than 50 genes and an `X_pca`, that is the
# default representation).

# %%
adata.layers["counts"] = adata.X.copy()
sc.pp.normalize_total(adata)
sc.pp.log1p(adata)
sc.pp.pca(adata, n_comps=50)

# %% [markdown]
# ## The neighbour graph (annumap)
#
# `annumap.pp.neighbors` has the signature of `sc.pp.neighbors`. At this size the search is
# exact (a chunked float32 matrix product, checked in float64), so there is no
# approximate-search warm-up to wait for. The result lands where scanpy puts it:
# `.obsp['distances']`, `.obsp['connectivities']` and `.uns['neighbors']`.

# %%
annumap.pp.neighbors(adata, n_neighbors=15)
print(adata.uns["neighbors"]["params"])
print(adata.obsp["connectivities"].__repr__())

# %% [markdown]
# ## Clustering (scanpy)
#
# Leiden clustering reads `.obsp['connectivities']`, so it runs on annumap's graph as it is.
# We check how well the clusters match the annotated cell types with the adjusted Rand index,
# leaving out the cells annotated `Unknown`.

# %%
sc.tl.leiden(adata, resolution=0.8, flavor="igraph", n_iterations=2, directed=False)
known = (adata.obs["cell_type"] != "Unknown").to_numpy()
ari = adjusted_rand_score(adata.obs["cell_type"][known], adata.obs["leiden"][known])
print(f"{adata.obs['leiden'].nunique()} Leiden clusters; ARI with the cell types: {ari:.2f}")

# %% [markdown]
# ## The embedding (annumap)
#
# `annumap.tl.umap` has the signature of `sc.tl.umap` (`min_dist`, `spread`, `init_pos`,
# `random_state`, ...). It starts from a spectral layout of the graph (one per connected
# component) and runs the UMAP optimisation on all cores; for a given `random_state` the result
# is the same whatever the number of threads (tutorial 3).

# %%
annumap.tl.umap(adata, min_dist=0.5)
print(adata.obsm["X_umap"].shape, adata.uns["umap"]["params"])

# %% [markdown]
# `annumap.pl.umap` is a small matplotlib scatter (install the `plot` extra): one panel per
# colour, a legend for categories and a colour bar for numbers.

# %%
axes = annumap.pl.umap(adata, color=["cell_type", "leiden"], save=FIGDIR / "cbmc_umap.png")

# %% [markdown]
# How well does the embedding keep the cell types apart? A simple check: for each cell, the
# share of its 15 nearest neighbours *in the 2-D embedding* that carry the same label.

# %%
from sklearn.neighbors import NearestNeighbors

Y = adata.obsm["X_umap"][known]
labels = adata.obs["cell_type"].to_numpy()[known]
_, idx = NearestNeighbors(n_neighbors=16).fit(Y).kneighbors(Y)
same = (labels[idx[:, 1:]] == labels[:, None]).mean()
print(f"same-label share of 15 embedding neighbours: {same:.3f}")

# %% [markdown]
# ## PAGA initialisation
#
# For data with trajectories, PAGA's coarse graph of the clusters gives a good starting layout.
# `sc.tl.paga` computes the graph on annumap's neighbours; `sc.pl.paga(..., plot=False)`
# computes the group positions; `init_pos='paga'` starts every cell near its group's position.
# `key_added` keeps the spectral embedding next to the new one.

# %%
sc.tl.paga(adata, groups="leiden")
sc.pl.paga(adata, plot=False, random_state=0)
annumap.tl.umap(adata, init_pos="paga", key_added="X_umap_paga")

fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
annumap.pl.umap(adata, color="cell_type", ax=left, legend_loc="on data", title="spectral init")
annumap.pl.umap(
    adata, color="cell_type", key="X_umap_paga", ax=right, legend_loc="on data", title="PAGA init"
)
fig.savefig(FIGDIR / "cbmc_spectral_vs_paga.png", dpi=120)

# %% [markdown]
# ## scanpy's plotting works too
#
# annumap stores what scanpy's plotting functions look for, so `sc.pl.umap` draws annumap's
# embedding directly.

# %%
ax = sc.pl.umap(adata, color="leiden", legend_loc="on data", show=False)
ax.figure.savefig(FIGDIR / "cbmc_scanpy_pl_umap.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## Saving
#
# Every value annumap writes is h5ad-serialisable: `adata.write_h5ad("cbmc_umap.h5ad")`
# keeps the graph, the parameters and both embeddings.

# %%
print(sorted(adata.obsm), sorted(adata.obsp), sorted(adata.uns))
assert np.isfinite(adata.obsm["X_umap_paga"]).all()
