"""The global shape of the picture: annumap vs scanpy (umap-learn), same graph, 5 seeds a side.

Run (from the repository root, with the ``test`` extra installed; ~15 min on 2 cores)::

    .venv/bin/python benchmarks/look.py                          # all datasets
    .venv/bin/python benchmarks/look.py --datasets cbmc blobs --seeds 5

kNN preservation and trustworthiness are local: they cannot see clusters drawn as tight dots
far apart. This script compares what a user sees. For each dataset one graph is built
(``annumap.pp.neighbors``, exact 15-NN, on the representation below) and both sides lay it out
with their defaults (spectral init, 500/200 epochs, min_dist 0.5), seeds 0..4, alternately:

* ``range``: the largest extent of ``X_umap`` along an axis;
* ``within_between``: median distance of random same-label pairs / of different-label pairs;
* ``centroid_spearman``: Spearman correlation of label-centroid distances, representation vs 2-D;
* ``silhouette`` of the labels in 2-D; kNN preservation and trustworthiness (k=15).

(all from :func:`annumap._core.metrics.global_shape`). The bar: annumap's median of the 5
seeds lies inside scanpy's 5-seed range widened by 15% (``lo / 1.15 .. hi * 1.15``).

Datasets: CBMC (8,617 cells, log-normalised counts, PCA 50 inside ``pp.neighbors``; labels
``cell_type`` without ``Unknown``), scanpy's ``pbmc68k_reduced`` (700 cells, its ``X_pca``,
``bulk_labels``), NHANES 2017-2018 (8,366 people, median-imputed and scaled, PCA 50;
``RacehispanicOrigin``), a 20k subsample of MNIST (PCA 50; digits) and ``blobs``: 12 strongly
separated Gaussian clusters of unequal size and spread in 30-D (15,600 points), which none of
the code was tuned on. Results: ``benchmarks/results/look.json``, a markdown table on stdout and
one PNG grid per dataset in ``benchmarks/results/look_<dataset>.png`` (rows scanpy / annumap,
columns seeds, same colours).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
ROOT = _HERE.parent
DATASETS = ("cbmc", "pbmc68k", "nhanes", "mnist20k", "blobs")
STATS = ("range", "within_between", "centroid_spearman", "silhouette", "knn_pres", "trust")
WIDEN = 1.15


def _load_common():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_common", _HERE / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def blobs(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """12 Gaussian clusters in 30-D, sizes 200-2,400, spreads 0.5-1.5, centres ~N(0, 6^2)."""
    rng = np.random.default_rng(seed)
    sizes = np.linspace(200, 2400, 12).astype(int)
    centres = rng.normal(0.0, 6.0, size=(12, 30))
    spreads = rng.uniform(0.5, 1.5, size=12)
    X = np.concatenate(
        [c + s * rng.normal(size=(m, 30)) for c, s, m in zip(centres, spreads, sizes, strict=True)]
    )
    return X.astype(np.float32), np.repeat(np.arange(12), sizes).astype(str)


def dataset(name: str):
    """An AnnData with annumap's exact 15-NN graph and ``obs['label']`` (cached)."""
    import anndata as ad

    import annumap

    cache = ROOT / ".bench_cache" / f"look_{name}.h5ad"
    if cache.exists():
        return ad.read_h5ad(cache)
    if name == "cbmc":
        a = ad.read_h5ad(ROOT / "data" / "cbmc_citeseq_8617x500.h5ad")
        X = a.X.toarray().astype(np.float64)
        X = np.log1p(X / X.sum(axis=1, keepdims=True) * np.median(X.sum(axis=1)))
        a = ad.AnnData(X.astype(np.float32), obs=a.obs[["cell_type"]].copy())
        a.obs["label"] = a.obs["cell_type"].astype(str)
    elif name == "pbmc68k":
        import scanpy as sc

        p = sc.datasets.pbmc68k_reduced()
        a = ad.AnnData(np.asarray(p.obsm["X_pca"], dtype=np.float32))
        a.obs["label"] = p.obs["bulk_labels"].astype(str).values
    elif name == "nhanes":
        src = ad.read_h5ad(ROOT / "data" / "nhanes_2017_2018.h5ad")
        X = np.asarray(src.X, dtype=np.float64)
        X = np.where(np.isnan(X), np.nanmedian(X, axis=0), X)
        sd = X.std(axis=0)
        X = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
        a = ad.AnnData(X.astype(np.float32))
        a.obs["label"] = src.obs["RacehispanicOrigin"].astype(str).values
    elif name == "mnist20k":
        c = _load_common()
        X = c.representation("mnist70k")
        y = np.load(c._mnist_path())["y"]
        sub = np.sort(np.random.default_rng(0).choice(X.shape[0], 20_000, replace=False))
        a = ad.AnnData(X[sub])
        a.obs["label"] = y[sub].astype(str)
    elif name == "blobs":
        X, y = blobs()
        a = ad.AnnData(X)
        a.obs["label"] = y
    else:
        raise ValueError(name)
    a.obs_names = [f"c{i}" for i in range(a.n_obs)]
    if a.n_vars > 50:  # what pp.neighbors would compute (scanpy's rule), stored for the metrics
        from annumap._core.pca import pca

        a.obsm["X_pca"] = pca(a.X, 50, random_state=0)
    rep = "X_pca" if "X_pca" in a.obsm else "X"
    annumap.pp.neighbors(a, n_neighbors=15, use_rep=rep, transformer="exact")
    cache.parent.mkdir(exist_ok=True)
    a.write_h5ad(cache)
    return a


def representation(a) -> np.ndarray:
    """The matrix the neighbours were computed on (``X_pca`` when stored, else ``.X``)."""
    return np.asarray(a.obsm.get("X_pca", a.X), dtype=np.float32)


def measure(Y: np.ndarray, a, X: np.ndarray) -> dict:
    from sklearn.manifold import trustworthiness

    from annumap._core.metrics import global_shape, knn_preservation

    keep = a.obs["label"].values != "Unknown"
    out = global_shape(Y[keep], a.obs["label"].values[keep], X[keep])
    sub = np.arange(a.n_obs)
    if a.n_obs > 5000:
        sub = np.sort(np.random.default_rng(0).choice(a.n_obs, 5000, replace=False))
    out["knn_pres"] = knn_preservation(X, Y, 15)
    out["trust"] = float(trustworthiness(X[sub], Y[sub], n_neighbors=15))
    return out


def run(name: str, seeds: int) -> tuple[dict, dict]:
    import scanpy as sc

    import annumap

    warnings.filterwarnings("ignore")
    a = dataset(name)
    X = representation(a)
    res = {"scanpy": [], "annumap": [], "time": {"scanpy": [], "annumap": []}}
    emb = {"scanpy": [], "annumap": []}
    for seed in range(seeds):
        for side in ("scanpy", "annumap") if seed % 2 == 0 else ("annumap", "scanpy"):
            b = a.copy()
            t = time.perf_counter()
            if side == "scanpy":
                sc.tl.umap(b, random_state=seed)
            else:
                annumap.tl.umap(b, random_state=seed)
            res["time"][side].append(time.perf_counter() - t)
            Y = np.asarray(b.obsm["X_umap"], dtype=np.float32)
            emb[side].append(Y)
            res[side].append(measure(Y, a, X))
        print(f"[{name}] seed {seed} done", file=sys.stderr, flush=True)
    res["n_obs"] = a.n_obs
    return res, emb


def summary(res: dict) -> dict:
    out = {}
    for stat in STATS:
        s = [r[stat] for r in res["scanpy"]]
        m = statistics.median(r[stat] for r in res["annumap"])
        lo, hi = min(s), max(s)
        # the band widened by 15% on either side (for signed statistics: by 15% of its width)
        band = (
            (lo / WIDEN, hi * WIDEN) if lo > 0 else (lo - 0.15 * (hi - lo), hi + 0.15 * (hi - lo))
        )
        out[stat] = {"scanpy_min": lo, "scanpy_max": hi, "annumap_median": m,
                     "inside": bool(band[0] <= m <= band[1])}  # fmt: skip
    return out


def grid(name: str, a, emb: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = a.obs["label"].values
    groups = sorted(set(labels))
    cmap = plt.get_cmap("tab20")
    colours = np.array([cmap(groups.index(g) % 20) for g in labels])
    n = len(emb["scanpy"])
    fig, axes = plt.subplots(2, n, figsize=(3 * n, 6.2), squeeze=False)
    for row, side in enumerate(("scanpy", "annumap")):
        for col, Y in enumerate(emb[side]):
            ax = axes[row, col]
            ax.scatter(Y[:, 0], Y[:, 1], c=colours, s=0.5, linewidths=0, rasterized=True)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{side}, seed {col}", fontsize=9)
    fig.suptitle(f"{name}: scanpy.tl.umap vs annumap.tl.umap on the same graph", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def table(results: dict) -> str:
    head = (
        "| dataset | n | "
        + " | ".join(f"{s}: scanpy range / annumap median" for s in STATS)
        + " | time scanpy / annumap (s) |"
    )
    lines = [head, "|" + "---|" * (len(STATS) + 3)]
    for name, r in results.items():
        cells = []
        for stat in STATS:
            v = r["summary"][stat]
            mark = "" if v["inside"] else " **out**"
            cells.append(
                f"{v['scanpy_min']:.3g}-{v['scanpy_max']:.3g} / {v['annumap_median']:.3g}{mark}"
            )
        ts = statistics.median(r["time"]["scanpy"])
        ta = statistics.median(r["time"]["annumap"])
        lines.append(
            f"| {name} | {r['n_obs']} | " + " | ".join(cells) + f" | {ts:.1f} / {ta:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    c = _load_common()
    results = {}
    for name in args.datasets:
        res, emb = run(name, args.seeds)
        res["summary"] = summary(res)
        results[name] = res
        grid(name, dataset(name), emb, ROOT / "benchmarks" / "results" / f"look_{name}.png")
        print(table({name: res}).splitlines()[-1], file=sys.stderr, flush=True)
    previous = c.saved("look").get("results", {})
    previous.update(results)
    c.save("look", {"machine": c.machine(), "results": previous})
    print(f"Machine: {c.machine()}\n")
    print(table(previous))


if __name__ == "__main__":
    main()
