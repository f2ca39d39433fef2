# %% [markdown]
# # Tutorial 5: parametric UMAP - early stopping, loss history, new cells, and back to genes
#
# `tl.umap(adata, method='parametric')` trains a neural network (an MLP *encoder*) that maps
# the representation the neighbours were computed on (here 30 PCs) to the embedding, with the
# UMAP loss on batches of graph edges. With `parametric_kwds` you choose what umap-learn's
# `ParametricUMAP` lets you choose: the layer sizes, the activation, the batch size, the
# number of training epochs and the learning rate, a global-structure loss, and a *decoder*
# that maps embedding coordinates back to the data (`parametric_reconstruction`), which
# `tl.umap_inverse_transform` uses. A share of the cells is held out for validation and the
# training stops when the validation loss no longer improves (`patience`).
#
# On the bundled CBMC data (8,617 cord blood cells, 500 genes), split 80/20 by cells, we
#
# 1. train encoder and decoder with early stopping and plot the loss history;
# 2. map the held-out 20 % with one forward pass and check their cell types;
# 3. walk along a straight path across the map, from the T cells to the monocytes, and compare
#    the decoder's expression of marker genes with the measured expression of the nearest cells.
#
# Run from the repository root (`python tutorials/05_parametric_umap.py`); figures go to
# `$ANNUMAP_FIGDIR` (default `figures/`).

# %%
import os
import time
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import scanpy as sc
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

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
sc.pp.pca(ref, n_comps=30, random_state=0)  # loadings in ref.varm['PCs']
annumap.pp.neighbors(ref, n_neighbors=15)
print(f"reference: {ref.n_obs} cells, query: {query.n_obs} cells")

# %% [markdown]
# ## Training with early stopping
#
# Up to 120 epochs (an epoch draws about one graph edge per training cell), 10 % of the
# reference cells held out (`validation_fraction`), and a stop once the validation loss has
# not improved by 0.1 % (`min_delta`) for 10 epochs (`patience`; all three are the defaults
# but the epochs); the weights of the best epoch are kept. `parametric_reconstruction=True`
# trains the decoder alongside; its gradient stops at the embedding (set
# `autoencoder_loss=True` to let it shape the encoder too). Unknown keys are refused with the
# list of valid ones, before any work.

# %%
t = time.perf_counter()
annumap.tl.umap(
    ref,
    method="parametric",
    parametric_kwds={"parametric_reconstruction": True, "n_training_epochs": 120, "patience": 10},
)
print(f"parametric fit: {time.perf_counter() - t:.1f} s")
training = ref.uns["umap"]["training"]
print(training)

# %% [markdown]
# The history is a dict of plain float32 arrays, one value per epoch, in
# `ref.uns['umap']['history']` (it is saved with the `.h5ad`): the training and validation
# UMAP loss and reconstruction loss. The reconstruction loss is the mean squared error of
# the standardised PCs; `training['val_reconstruction_baseline']` is that error when every
# held-out cell is predicted by the training cells' mean.

# %%
history = ref.uns["umap"]["history"]
epochs = np.arange(1, history["loss"].size + 1)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for ax, term in zip(axes, ("umap_loss", "reconstruction_loss"), strict=True):
    ax.plot(epochs, history[term], label="training")
    ax.plot(epochs, history["val_" + term], label="validation")
    ax.axvline(training["best_epoch"], color="grey", ls=":", label="kept epoch")
    ax.set(xlabel="epoch", title=term.replace("_", " "))
axes[1].axhline(training["val_reconstruction_baseline"], color="k", ls="--", label="mean cell")
axes[1].set_yscale("log")
axes[1].legend()
fig.tight_layout()
fig.savefig(FIGDIR / "05_loss_history.png", dpi=100)
val_mse = history["val_reconstruction_loss"][training["best_epoch"] - 1]
base = training["val_reconstruction_baseline"]
print(f"held-out reconstruction MSE {val_mse:.3f} vs {base:.3f} for the mean cell "
      f"({base / val_mse:.1f}x lower)")  # fmt: skip

# %% [markdown]
# ## New cells: one forward pass
#
# `umap_transform` projects the query on the reference's loadings and runs the stored encoder.
# A 15-NN classifier on the reference embedding labels the query cells; compare with the
# reference's own cross-validated accuracy (cells of unknown type left out).

# %%
t = time.perf_counter()
annumap.tl.umap_transform(query, ref)
print(f"parametric transform: {time.perf_counter() - t:.3f} s")
yr, yq = ref.obs["cell_type"].to_numpy(), query.obs["cell_type"].to_numpy()
kr, kq = yr != "Unknown", yq != "Unknown"
clf = KNeighborsClassifier(15)
cv = cross_val_score(clf, ref.obsm["X_umap"][kr], yr[kr], cv=5).mean()
acc = (clf.fit(ref.obsm["X_umap"][kr], yr[kr]).predict(query.obsm["X_umap"][kq]) == yq[kq]).mean()
print(f"query accuracy {acc:.3f}, reference cross-validated {cv:.3f} (ratio {acc / cv:.3f})")

# %% [markdown]
# ## From the map back to genes
#
# A straight path from the centre of the CD4 T cells to the centre of the CD14+ monocytes,
# in 25 steps. `umap_inverse_transform` returns an AnnData: the decoder's output in the
# representation the neighbours used (`.obsm['X_pca']`) and, because the reference has the
# PCA loadings, its back-projection to the 500 genes (`.X`, log-normalised like the data).
# The genes carry no names in this file, so the markers are found from the data: the two
# genes that differ most between the two cell types, one up in each.

# %%
Y = ref.obsm["X_umap"]
start = np.median(Y[yr == "CD4 T"], axis=0)
stop = np.median(Y[yr == "CD14+ Mono"], axis=0)
path = start + np.linspace(0.0, 1.0, 25)[:, None] * (stop - start)
recon = annumap.tl.umap_inverse_transform(ref, path)
print(recon)
print(recon.uns["umap_inverse_transform"]["params"])

X = ref.X.toarray()
diff = X[yr == "CD14+ Mono"].mean(axis=0) - X[yr == "CD4 T"].mean(axis=0)
markers = [int(np.argmin(diff)), int(np.argmax(diff))]  # up in T cells, up in monocytes
# measured: the mean expression of the 15 reference cells nearest to each point of the path
_, near = NearestNeighbors(n_neighbors=15).fit(Y).kneighbors(path)
measured = X[near].mean(axis=1)

fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
axes[0].scatter(Y[:, 0], Y[:, 1], s=1, c="lightgrey")
axes[0].plot(path[:, 0], path[:, 1], "k.-")
axes[0].set(title="path across the map", xticks=[], yticks=[])
steps = np.arange(path.shape[0])
for ax, g in zip(axes[1:], markers, strict=True):
    ax.plot(steps, recon.X[:, g], label="decoder")
    ax.plot(steps, measured[:, g], label="15 nearest cells")
    r = np.corrcoef(recon.X[:, g], measured[:, g])[0, 1]
    ax.set(title=f"{ref.var_names[g]} (r = {r:.2f})", xlabel="step (T cells -> monocytes)")
    print(f"{ref.var_names[g]}: correlation decoder vs nearest cells along the path {r:.3f}")
axes[1].set_ylabel("log expression")
axes[2].legend()
fig.tight_layout()
fig.savefig(FIGDIR / "05_path_expression.png", dpi=100)

# %% [markdown]
# The decoder follows the measured expression where there are cells; between clusters it
# interpolates smoothly, where the nearest cells jump from one cluster to the other. The
# reconstruction is what the 30 PCs keep of a gene (their back-projection), not its
# measured noise.
