# %% [markdown]
# # Tutorial 4: reference mapping - embedding new cells into an existing UMAP
#
# A reference atlas has been embedded once; new cells (a new sample, a new patient) should be
# placed into *that* embedding, so that their neighbours and labels can be read off it, without
# recomputing it and moving every reference cell. `annumap.tl.umap_transform` does this in
# two ways:
#
# * **transform** (umap-learn's `UMAP.transform`): each new cell's nearest reference cells,
#   a start at the weighted mean of their positions, a short optimisation that moves only the
#   new cells. Works with any embedding computed by `tl.umap` (annumap's or scanpy's).
# * **parametric**: `tl.umap(ref, method='parametric')` trains a small neural network (an MLP)
#   that maps the representation to the embedding; new cells go through one forward pass.
#   The network's weights are stored in `ref.uns` as plain arrays, so they travel with the
#   `.h5ad` file.
#
# We use the bundled CBMC data (8,617 cord blood cells, 500 genes, annotated cell types),
# split 80/20 by cells: the 80 % are the reference, the 20 % play the new cells. Run from the
# repository root (`python tutorials/04_reference_mapping.py`); figures go to
# `$ANNUMAP_FIGDIR` (default `figures/`).

# %%
import os
import tempfile
import time
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import scanpy as sc
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

import annumap

DATA = next(p for p in (Path("data"), Path("../data")) if p.is_dir())
FIGDIR = Path(os.environ.get("ANNUMAP_FIGDIR", "figures"))
FIGDIR.mkdir(parents=True, exist_ok=True)

adata = ad.read_h5ad(DATA / "cbmc_citeseq_8617x500.h5ad")
sc.pp.normalize_total(adata, target_sum=1e4)
sc.pp.log1p(adata)

perm = np.random.default_rng(0).permutation(adata.n_obs)
cut = int(0.8 * adata.n_obs)
ref = adata[np.sort(perm[:cut])].copy()
query = adata[np.sort(perm[cut:])].copy()
print(f"reference: {ref.n_obs} cells, query: {query.n_obs} cells")

# %% [markdown]
# ## The reference
#
# The reference gets its own PCA (30 components), neighbour graph and UMAP. The query is
# *not* part of any of it. `sc.pp.pca` stores the gene loadings in `ref.varm['PCs']`; they are
# what puts the query into the same 30-dimensional space later.

# %%
sc.pp.pca(ref, n_comps=30, random_state=0)
annumap.pp.neighbors(ref, n_neighbors=15)
annumap.tl.umap(ref)

# %% [markdown]
# ## Mapping the query (transform)
#
# `umap_transform(query, ref)` reads everything it needs from the reference: the neighbour
# parameters (representation `X_pca`, 15 neighbours, euclidean), the embedding and its curve
# parameters `a`, `b`. The query is projected on the reference's loadings, centred like the
# reference; annumap first checks that this projection reproduces the reference's own stored
# PCA scores, so a reference whose `.X` was changed after the PCA is refused with a clear
# error. The query must be preprocessed like the reference (here: the same normalisation and
# `log1p`). The result lands in `query.obsm['X_umap']`; the reference is not modified.

# %%
t = time.perf_counter()
annumap.tl.umap_transform(query, ref)
print(f"transform: {time.perf_counter() - t:.2f} s")
print(query.uns["umap_transform"]["params"])

# %% [markdown]
# Do the new cells land among their own type? We predict each query cell's type from its 15
# nearest reference cells *in the 2-D embedding*, and compare with the reference's own
# cross-validated accuracy of the same classifier (cells annotated `Unknown` left out).


# %%
def mapping_scores(ref, query, key):
    yr = ref.obs["cell_type"].to_numpy()
    yq = query.obs["cell_type"].to_numpy()
    kr, kq = yr != "Unknown", yq != "Unknown"
    clf = KNeighborsClassifier(15)
    cv = cross_val_score(clf, ref.obsm[key][kr], yr[kr], cv=5).mean()
    clf.fit(ref.obsm[key][kr], yr[kr])
    return (clf.predict(query.obsm[key][kq]) == yq[kq]).mean(), cv


acc, cv = mapping_scores(ref, query, "X_umap")
print(f"query accuracy {acc:.3f}  vs  reference cross-validated {cv:.3f}")


# %% [markdown]
# The figure shows the reference in grey and the mapped cells coloured by their annotated type.


# %%
def overlay(ref, query, key, ax, title):
    ax.scatter(*ref.obsm[key].T, s=2, c="lightgray", rasterized=True)
    types = query.obs["cell_type"].cat.categories
    tab20 = plt.get_cmap("tab20").colors
    colours = [c for i, c in enumerate(tab20) if i not in (14, 15)]  # no greys
    for name, colour in zip(types, colours, strict=False):
        sel = (query.obs["cell_type"] == name).to_numpy()
        ax.scatter(*query.obsm[key][sel].T, s=4, color=colour, label=name, rasterized=True)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


fig, ax = plt.subplots(figsize=(7.5, 6), layout="constrained")
overlay(ref, query, "X_umap", ax, "query cells (colour) in the reference UMAP (grey)")
ax.legend(markerscale=3, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
fig.savefig(FIGDIR / "reference_mapping_transform.png", dpi=120)

# %% [markdown]
# The optimisation is parallel and reproducible: another run with the same `random_state`
# gives the same coordinates bit for bit, whatever `n_jobs`.

# %%
again = annumap.tl.umap_transform(query, ref, n_jobs=1, copy=True)
print("identical:", np.array_equal(again.obsm["X_umap"], query.obsm["X_umap"]))

# %% [markdown]
# ## The parametric way
#
# `method='parametric'` trains an encoder network (3 hidden layers of 100 units, ReLU) with
# the UMAP loss on the same graph. We store it next to the first embedding with `key_added`,
# and use fewer epochs than the default to keep this tutorial short (`maxiter=300`: 36
# training epochs instead of 60). The loss history is kept with the model; tutorial 5 shows
# the options (`parametric_kwds`: network, early stopping, a decoder back to genes).

# %%
t = time.perf_counter()
annumap.tl.umap(ref, method="parametric", key_added="X_umap_param", maxiter=300)
print(f"parametric fit: {time.perf_counter() - t:.1f} s")
encoder = ref.uns["X_umap_param"]["encoder"]
history = ref.uns["X_umap_param"]["history"]
print("layer sizes:", encoder["layer_sizes"], " epochs:", history["loss"].size)

t = time.perf_counter()
annumap.tl.umap_transform(query, ref, umap_key="X_umap_param")
print(f"parametric transform (a forward pass): {time.perf_counter() - t:.3f} s")
acc_p, cv_p = mapping_scores(ref, query, "X_umap_param")
print(f"query accuracy {acc_p:.3f}  vs  reference cross-validated {cv_p:.3f}")

fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
overlay(ref, query, "X_umap_param", left, "parametric: query in the reference")
left.legend(markerscale=3, fontsize=6, loc="lower left")
epochs = np.arange(1, history["loss"].size + 1)
right.plot(epochs, history["loss"], label="training")
right.plot(epochs, history["val_loss"], label="validation (10 % of the cells held out)")
right.set_xlabel("epoch")
right.set_ylabel("mean UMAP loss per batch")
right.set_title("loss history")
right.legend()
fig.savefig(FIGDIR / "reference_mapping_parametric.png", dpi=120)

# %% [markdown]
# ## The model travels with the file
#
# Everything the encoder needs is in `ref.uns['X_umap_param']['encoder']` as float32 arrays,
# integers and a string, so `write_h5ad` saves it and `read_h5ad` loads it without unpickling
# anything. The reloaded reference maps the query to exactly the same positions.

# %%
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "reference.h5ad"
    ref.write_h5ad(path)
    reloaded = ad.read_h5ad(path)
mapped = annumap.tl.umap_transform(query, reloaded, umap_key="X_umap_param", copy=True)
same = np.array_equal(mapped.obsm["X_umap_param"], query.obsm["X_umap_param"])
print("same after the round trip:", same)

# %% [markdown]
# ## Which one to use
#
# * The **transform** works on any existing embedding (also scanpy's) and places cells with
#   the same objective as the reference's layout; it needs the reference's representation at
#   hand and runs a short optimisation per batch of new cells.
# * The **parametric** encoder costs a longer fit, but mapping is a single forward pass
#   (milliseconds here) and needs only the stored model and the projection, which makes it
#   the choice for mapping many batches, or for shipping a reference as one `.h5ad` file.
#
# Either way, new cells can only land near reference cells: a cell type that the reference
# lacks is placed next to its most similar reference type, not in a new island.
