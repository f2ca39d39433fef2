"""The meta layout of a disconnected graph: umap-learn 0.5.12's eigenmap of exp(-d^2) vs annumap's.

    .venv/bin/python benchmarks/init_meta.py        # ~30 s; writes results/init_meta.json

Part 1: 10-D Gaussian blobs whose 10-NN graph has 5 components (the construction of
``tests/test_init.py``), the data scaled by ``s`` so that only the centroid distances change (the
graph, hence the components, stay the same). Per scale: the centroid distances; the smallest gap
between two of umap-learn's meta positions (``umap.spectral.component_layout``) over its largest
coordinate; for the whole init of each side (``spectral_layout`` / ``spectral_init``) the smallest
gap between component centroids over the largest coordinate and the Spearman correlation of the
component-centroid distances with those in the data; the Procrustes disparity between the sides.
Part 2: how far apart label centroids are in real representations (pbmc68k_reduced ``X_pca`` with
``bulk_labels``; CBMC normalise-total + log1p + PCA 50 with ``cell_type``).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
from scipy.sparse.csgraph import connected_components
from scipy.spatial import procrustes
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr

_HERE = Path(__file__).resolve().parent
# this folder's umap.py would shadow umap-learn
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]


def _load_common():
    """benchmarks/_common.py, loaded by path (this folder is not on the import path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_common", _HERE / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCALES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 3.0)


def blobs(seed: int = 1):
    from annumap._core.fuzzy import fuzzy_simplicial_set
    from annumap._core.knn._exact import exact_knn

    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, size=(10, 10))
    X = np.vstack([c + rng.normal(size=(40, 10)) for c in centres])
    idx, dist = exact_knn(X.astype(np.float32), 10)
    return X, fuzzy_simplicial_set(idx, dist)


def centroids(Y, labels):
    return np.array([Y[labels == c].mean(axis=0) for c in range(labels.max() + 1)])


def gap(P) -> float:
    return float(pdist(P).min() / np.abs(P).max())


def sweep() -> list[dict]:
    from umap.spectral import component_layout, spectral_layout

    from annumap._core.init import spectral_init

    base, G = blobs()
    n_comp, labels = connected_components(G, directed=False)
    rows = []
    for s in SCALES:
        X = base * s
        high = pdist(centroids(X, labels))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta = component_layout(X, n_comp, labels, 2, np.random.RandomState(0))
            theirs = spectral_layout(X, G, 2, np.random.RandomState(0))
        ours = spectral_init(G, 2, np.random.default_rng(0), lambda X=X: X)
        ct, co = centroids(theirs, labels), centroids(ours, labels)
        rows.append(
            {
                "scale": s,
                "n_components": int(n_comp),
                "centroid_dist_min": float(high.min()),
                "centroid_dist_max": float(high.max()),
                "umap_meta_gap": gap(meta),
                "umap_init_gap": gap(ct),
                "annumap_init_gap": gap(co),
                "umap_spearman": float(spearmanr(high, pdist(ct))[0]),
                "annumap_spearman": float(spearmanr(high, pdist(co))[0]),
                "procrustes": float(procrustes(ct, co)[2]),
            }
        )
    return rows


def real_distances() -> dict:
    import anndata as ad
    import scanpy as sc

    c = _load_common()
    out = {}
    p = sc.datasets.pbmc68k_reduced()
    cases = {
        "pbmc68k X_pca / bulk_labels": (p.obsm["X_pca"], p.obs["bulk_labels"]),
        "cbmc PCA 50 / cell_type": (
            c.representation("cbmc"),
            ad.read_h5ad(c.ROOT / "data" / "cbmc_citeseq_8617x500.h5ad").obs["cell_type"],
        ),
    }
    for name, (X, lab) in cases.items():
        codes = lab.astype("category").cat.codes.to_numpy()
        d = pdist(centroids(np.asarray(X, dtype=np.float64), codes))
        out[name] = {"min": float(d.min()), "median": float(np.median(d)), "max": float(d.max())}
    return out


def main() -> None:
    rows = sweep()
    head = "| s | centroid d | umap meta gap | umap init gap | annumap init gap | rho umap"
    print(head + " | rho annumap | procrustes |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['scale']} | {r['centroid_dist_min']:.2f}-{r['centroid_dist_max']:.2f} "
            f"| {r['umap_meta_gap']:.1e} | {r['umap_init_gap']:.1e} | {r['annumap_init_gap']:.2f} "
            f"| {r['umap_spearman']:.3f} | {r['annumap_spearman']:.3f} | {r['procrustes']:.1e} |"
        )
    real = real_distances()
    for name, d in real.items():
        span = f"{d['min']:.1f} - {d['max']:.1f} (median {d['median']:.1f})"
        print(f"{name}: label-centroid distances {span}")
    path = _load_common().save("init_meta", {"sweep": rows, "real": real})
    print("wrote", path)


if __name__ == "__main__":
    main()
