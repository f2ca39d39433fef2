# %% [markdown]
# # Tutorial 3: reproducible and fast
#
# umap-learn, and hence scanpy, can run the UMAP layout on one thread and be reproducible, or
# in parallel and give a different picture on every run. annumap's layout is parallel *and*
# reproducible: for a given `random_state` the embedding is bit for bit the same whatever the
# number of threads (`n_jobs`). This tutorial shows it, and times annumap against scanpy on
# the same neighbour graph.
#
# Run it from the repository root (`python tutorials/03_reproducibility_speed.py`); figures go
# to `$ANNUMAP_FIGDIR` (default `figures/`).

# %%
import os
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc

import annumap

DATA = next(p for p in (Path("data"), Path("../data")) if p.is_dir())
FIGDIR = Path(os.environ.get("ANNUMAP_FIGDIR", "figures"))
FIGDIR.mkdir(parents=True, exist_ok=True)

cbmc = ad.read_h5ad(DATA / "cbmc_citeseq_8617x500.h5ad")
sc.pp.normalize_total(cbmc)
sc.pp.log1p(cbmc)
sc.pp.pca(cbmc, n_comps=50)
print(f"{cbmc.n_obs} cells, {os.cpu_count()} CPU cores")

# %% [markdown]
# ## Same seed, any number of threads: the same embedding
#
# annumap's layout runs umap-learn's updates (both ends of a sampled edge move) over the cells
# class by class of a graph colouring: no two cells of a class are neighbours or share a
# neighbour, so the cells of a class can be updated by any number of threads at once without
# touching the same position. Negative samples come from a counter-based generator keyed by
# (seed, epoch, edge, draw) instead of one shared random stream. So the work can be split over
# any number of threads without changing a single bit of the result.
# We use a 3,000-cell subsample and 200 epochs to keep this quick.

# %%
rng = np.random.default_rng(0)
small = cbmc[np.sort(rng.choice(cbmc.n_obs, 3000, replace=False))].copy()
annumap.pp.neighbors(small, n_neighbors=15)

one = annumap.tl.umap(small, maxiter=200, random_state=0, n_jobs=1, copy=True)
all_cores = annumap.tl.umap(small, maxiter=200, random_state=0, n_jobs=None, copy=True)
again = annumap.tl.umap(small, maxiter=200, random_state=0, n_jobs=None, copy=True)
other_seed = annumap.tl.umap(small, maxiter=200, random_state=1, copy=True)

same_threads = np.array_equal(one.obsm["X_umap"], all_cores.obsm["X_umap"])
same_rerun = np.array_equal(all_cores.obsm["X_umap"], again.obsm["X_umap"])
same_seed1 = np.array_equal(all_cores.obsm["X_umap"], other_seed.obsm["X_umap"])
print(f"n_jobs=1 vs all cores, random_state=0: bit-identical = {same_threads}")
print(f"rerun with all cores:                  bit-identical = {same_rerun}")
print(f"random_state=0 vs random_state=1:      bit-identical = {same_seed1}")
assert same_threads and same_rerun and not same_seed1

# %% [markdown]
# `random_state=None` draws a fresh seed and records it in `.uns['umap']['params']`, so even
# an unseeded run can be repeated later:

# %%
unseeded = annumap.tl.umap(small, maxiter=200, random_state=None, copy=True)
seed = unseeded.uns["umap"]["params"]["random_state"]
repeat = annumap.tl.umap(small, maxiter=200, random_state=seed, copy=True)
print(
    f"drawn seed {seed}; repeated: {np.array_equal(unseeded.obsm['X_umap'], repeat.obsm['X_umap'])}"
)

# %% [markdown]
# ## Timing against scanpy (illustrative)
#
# A small live comparison of the layout step on *the same graph and number of epochs*: each
# tool reads `.obsp['connectivities']` written by `annumap.pp.neighbors`. Both are warmed up
# first, so compilation time is not counted. The numbers depend on the machine this runs on
# (and on what else runs there); they illustrate, they do not measure. The benchmarks in
# `benchmarks/` compare at larger sizes, repeated, on a quiet machine.

# %%
warm = small[:500].copy()
annumap.pp.neighbors(warm)
annumap.tl.umap(warm, maxiter=5)
sc.tl.umap(warm, maxiter=5)


def seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


rows = []
for n in (2000, 8617):
    sub = cbmc[np.sort(rng.choice(cbmc.n_obs, n, replace=False))].copy() if n < cbmc.n_obs else cbmc
    annumap.pp.neighbors(sub, n_neighbors=15)
    rows.append(
        {
            "cells": n,
            "scanpy tl.umap (s)": seconds(
                lambda s=sub: sc.tl.umap(s, maxiter=200, key_added="X_umap_scanpy")
            ),
            "annumap, 1 thread (s)": seconds(
                lambda s=sub: annumap.tl.umap(s, maxiter=200, n_jobs=1)
            ),
            "annumap, all cores (s)": seconds(lambda s=sub: annumap.tl.umap(s, maxiter=200)),
        }
    )
table = pd.DataFrame(rows).set_index("cells").round(2)
table["speed-up (all cores)"] = (table.iloc[:, 0] / table.iloc[:, 2]).round(1)
print(f"tl.umap, 200 epochs, same graph, {os.cpu_count()} cores (illustrative, this machine):")
print(table.to_string())

# %% [markdown]
# The two embeddings of the full data from the last row of the table, side by side (same
# graph, same number of epochs):

# %%
import matplotlib.pyplot as plt

fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
annumap.pl.umap(cbmc, color="cell_type", ax=left, legend_loc="on data", title="annumap")
annumap.pl.umap(
    cbmc, color="cell_type", key="X_umap_scanpy", ax=right, legend_loc="on data", title="scanpy"
)
fig.savefig(FIGDIR / "cbmc_annumap_vs_scanpy.png", dpi=120)
