"""Embedding new cells: annumap's umap_transform (both ways) vs umap-learn's UMAP.transform;
parametric vs non-parametric fit on CBMC and MNIST 70k.

Run (from the repository root, with the ``test`` extra installed; ~25 min on 2 shared cores)::

    .venv/bin/python benchmarks/transform.py                 # --repeats 3, CBMC and MNIST
    .venv/bin/python benchmarks/transform.py --repeats 1 --skip-mnist
    .venv/bin/python benchmarks/transform.py --sides annumap,annumap-parametric  # CBMC sides

``--sides`` re-runs those CBMC sides; the others keep their runs from ``results/transform.json``
(``--skip-mnist`` keeps the stored MNIST runs likewise).

Data: CBMC (8,617 cells, ``data/``) split 80/20 by cells (seed 0); the reference is
normalise-total + log1p + PCA 30 (fitted on the reference only, ``scanpy.pp.pca``); the query
is normalised the same way and projected on the reference's loadings. Every side gets the same
two float32 matrices (reference scores, query scores), the same ``n_neighbors=15``,
``min_dist=0.5``, ``spread=1``, default epochs (500 fit, 100 transform) and seed 0.

Sides, each in a fresh process:

* ``annumap``: ``pp.neighbors`` + ``tl.umap`` (fit), ``tl.umap_transform`` (transform);
* ``annumap-parametric``: ``pp.neighbors`` + ``tl.umap(method='parametric')`` (fit),
  ``tl.umap_transform`` = one forward pass of the stored encoder (transform);
* ``umap-learn``: ``UMAP(n_neighbors=15, min_dist=0.5, random_state=0).fit`` and
  ``.transform`` (single-threaded, as a fixed ``random_state`` makes it).

``cold`` = first call in the process (JIT compilation included: numba's on-disk cache is warm
for annumap's kernels; umap-learn/pynndescent compile part of their code in every process),
``warm`` = the same call again in that process; ``umap_warm`` = the ``tl.umap`` call alone
(the graph excluded; 2 threads). Quality: 15-NN label accuracy of the query against the
reference embedding and the reference's 5-fold cross-validated 15-NN accuracy (``Unknown``
cells left out), as in ``tests/test_transform.py``; trustworthiness (k=15, 5,000-cell sample)
and 15-NN preservation of the reference embedding (``_common.quality``), and its global shape
as in ``benchmarks/look.py`` (``annumap._core.metrics.global_shape`` on the labelled cells:
coordinate range, median within/between-label distance, Spearman correlation of the label
centroids' distances, silhouette).

MNIST 70k (``--skip-mnist`` leaves it out): the cached exact 15-NN graph of PCA 50
(``_common.graph_path``), ``tl.umap`` with ``method='umap'`` and ``method='parametric'``
(default settings, 2 threads), one fresh process per side and run, sides alternated; time of
the ``tl.umap`` call and the quality of the embedding.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CACHE, ROOT, graph_path, machine, run_fresh, save

SETUP = """
t0 = time.perf_counter()
import numpy as np
{imp}
t_import = time.perf_counter() - t0
d = np.load({path!r}, allow_pickle=False)
Xr, Xq, yr, yq = d["Xr"], d["Xq"], d["yr"], d["yq"]

def quality_of(Yr):
    sys.path.insert(0, "benchmarks")
    from _common import quality
    from annumap._core.curve import find_ab
    import scipy.sparse as sp
    from annumap._core.knn._exact import exact_knn
    from annumap._core.fuzzy import fuzzy_simplicial_set
    a, b = find_ab(1.0, 0.5)
    idx, dist = exact_knn(Xr, 15)
    q = quality(Xr, Yr, fuzzy_simplicial_set(idx, dist), a, b)
    from annumap._core.metrics import global_shape
    kr = yr != "Unknown"
    shape = global_shape(Yr[kr], yr[kr], Xr[kr])  # the layout issue's look statistics
    return {{"trust": q["trust"], "knn_pres": q["knn_pres"], **shape}}

def score(Yr, Yq):
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    kr, kq = yr != "Unknown", yq != "Unknown"
    clf = KNeighborsClassifier(15)
    cv = cross_val_score(clf, Yr[kr], yr[kr], cv=5).mean()
    clf.fit(Yr[kr], yr[kr])
    return float((clf.predict(Yq[kq]) == yq[kq]).mean()), float(cv)

out = {{"import": t_import}}
for label in ("cold", "warm"):
    t = time.perf_counter(); model = fit(Xr); out["fit_" + label] = time.perf_counter() - t
    t = time.perf_counter(); Yq = transform(model, Xq)
    out["transform_" + label] = time.perf_counter() - t
out["query_acc"], out["ref_cv"] = score(embedding(model), Yq)
out.update(quality_of(embedding(model)))
out.update(TIMES)
print(json.dumps(out))
"""

ANNUMAP = """
import anndata as ad
import annumap
TIMES = {{}}

def fit(X):
    a = ad.AnnData(np.zeros((X.shape[0], 1), dtype=np.float32))
    a.obsm["X_pca"] = X
    annumap.pp.neighbors(a, n_neighbors=15, use_rep="X_pca")
    t = time.perf_counter()
    annumap.tl.umap(a, method={method!r}, n_jobs=2)
    TIMES["umap_cold" if "umap_cold" not in TIMES else "umap_warm"] = time.perf_counter() - t
    if {method!r} == "parametric":
        TIMES["epochs_run"] = int(a.uns["umap"]["training"]["n_epochs_run"])
    return a

def transform(ref, X):
    q = ad.AnnData(np.zeros((X.shape[0], 1), dtype=np.float32))
    q.obsm["X_pca"] = X
    annumap.tl.umap_transform(q, ref)
    return q.obsm["X_umap"]

def embedding(ref):
    return ref.obsm["X_umap"]
"""

UMAP_LEARN = """
import umap
TIMES = {}

def fit(X):
    return umap.UMAP(n_neighbors=15, min_dist=0.5, random_state=0).fit(X)

def transform(model, X):
    return model.transform(X)

def embedding(model):
    return model.embedding_
"""

SIDES = {
    "annumap": ANNUMAP.format(method="umap"),
    "annumap-parametric": ANNUMAP.format(method="parametric"),
    "umap-learn": UMAP_LEARN,
}


def prepare() -> Path:
    """The CBMC 80/20 split as a cached .npz of reference/query scores and labels."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / "cbmc_transform_split.npz"
    if path.exists():
        return path
    import anndata as ad
    import scanpy as sc

    adata = ad.read_h5ad(ROOT / "data" / "cbmc_citeseq_8617x500.h5ad")
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    perm = np.random.default_rng(0).permutation(adata.n_obs)
    cut = int(0.8 * adata.n_obs)
    ref, query = adata[np.sort(perm[:cut])].copy(), adata[np.sort(perm[cut:])].copy()
    sc.pp.pca(ref, n_comps=30, random_state=0)
    mean = np.asarray(ref.X.mean(axis=0)).ravel()
    Xq = (query.X.toarray() - mean) @ ref.varm["PCs"]
    np.savez(
        path,
        Xr=np.ascontiguousarray(ref.obsm["X_pca"], dtype=np.float32),
        Xq=np.ascontiguousarray(Xq, dtype=np.float32),
        yr=ref.obs["cell_type"].to_numpy().astype(str),
        yq=query.obs["cell_type"].to_numpy().astype(str),
    )
    return path


MNIST = """
import anndata as ad
import numpy as np
import annumap
from _common import quality
a = ad.read_h5ad({path!r})
annumap.tl.umap(a, method={method!r}, n_jobs=2, maxiter=5 if {method!r} == "umap" else None,
                parametric_kwds={{"n_training_epochs": 1}} if {method!r} == "parametric" else None)
t = time.perf_counter()
annumap.tl.umap(a, method={method!r}, n_jobs=2)
out = {{"umap_s": time.perf_counter() - t}}
p = a.uns["umap"]["params"]
q = quality(a.obsm["X_pca"], a.obsm["X_umap"], a.obsp["connectivities"], p["a"], p["b"])
out.update(trust=q["trust"], knn_pres=q["knn_pres"])
if {method!r} == "parametric":
    out["epochs_run"] = int(a.uns["umap"]["training"]["n_epochs_run"])
print(json.dumps(out))
"""


def mnist(repeats: int) -> dict:
    """tl.umap vs tl.umap(method='parametric') on the cached MNIST 70k graph."""
    path = str(graph_path("mnist70k"))
    runs: dict[str, list[dict]] = {"umap": [], "parametric": []}
    for rep in range(repeats):
        for side in runs if rep % 2 == 0 else reversed(list(runs)):
            print(f"mnist70k {side} run {rep + 1}", file=sys.stderr, flush=True)
            code = "sys.path.insert(0, 'benchmarks')\n" + MNIST.format(path=path, method=side)
            runs[side].append(run_fresh(code))
            print(runs[side][-1], file=sys.stderr, flush=True)
    median = {
        side: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()
    }
    return {"runs": runs, "median": median}


def table(median: dict, n_ref: int, n_query: int) -> str:
    ul = median["umap-learn"]
    lines = [
        f"CBMC: {n_ref} reference cells, {n_query} query cells (PCA 30)\n",
        "| side | fit cold (s) | fit warm (s) | tl.umap warm (s) | transform cold (s) "
        "| transform warm (s) | transform warm ratio umap-learn/side | query acc | ref CV acc "
        "| query/CV | trustw. | kNN pres. |",
        "|" + "---|" * 12,
    ]
    for side, m in median.items():
        umap_warm = f"{m['umap_warm']:.2f}" if "umap_warm" in m else "-"
        lines.append(
            f"| {side} | {m['fit_cold']:.2f} | {m['fit_warm']:.2f} | {umap_warm} "
            f"| {m['transform_cold']:.2f} "
            f"| {m['transform_warm']:.3f} | {ul['transform_warm'] / m['transform_warm']:.1f}x "
            f"| {m['query_acc']:.3f} | {m['ref_cv']:.3f} | {m['query_acc'] / m['ref_cv']:.3f} "
            f"| {m['trust']:.4f} | {m['knn_pres']:.3f} |"
        )
    return "\n".join(lines)


LOOK = ("range", "within_between", "centroid_spearman", "silhouette")


def look_table(median: dict) -> str:
    """The reference embeddings' global shape (``annumap._core.metrics.global_shape``)."""
    lines = [
        "CBMC reference embedding, global shape (labels without `Unknown`)\n",
        "| side | coordinate range | within/between | centroid Spearman | silhouette |",
        "|---|---|---|---|---|",
    ]
    for side, m in median.items():
        cells = [f"{m[k]:.3f}" if k in m else "-" for k in LOOK]
        lines.append(f"| {side} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mnist_table(median: dict) -> str:
    lines = [
        "MNIST 70k (PCA 50, exact 15-NN graph)\n",
        "| method | tl.umap (s) | ratio to umap | trustw. | kNN pres. | epochs run |",
        "|---|---|---|---|---|---|",
    ]
    base = median["umap"]["umap_s"]
    for side, m in median.items():
        epochs = f"{m['epochs_run']:.0f}" if "epochs_run" in m else "-"
        lines.append(
            f"| {side} | {m['umap_s']:.2f} | {m['umap_s'] / base:.2f} | {m['trust']:.4f} "
            f"| {m['knn_pres']:.3f} | {epochs} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-mnist", action="store_true")
    parser.add_argument(
        "--sides",
        default=",".join(SIDES),
        help="CBMC sides to run (comma-separated); the others keep their stored runs",
    )
    args = parser.parse_args()
    chosen = [side for side in SIDES if side in args.sides.split(",")]
    path = prepare()
    with np.load(path) as d:
        n_ref, n_query = d["Xr"].shape[0], d["Xq"].shape[0]
    stored = ROOT / "benchmarks" / "results" / "transform.json"
    old = json.loads(stored.read_text()) if stored.exists() else {}
    runs: dict[str, list[dict]] = {
        side: [] if side in chosen else list(old.get("runs", {}).get(side, [])) for side in SIDES
    }
    missing = [side for side in SIDES if not runs[side] and side not in chosen]
    if missing:
        parser.error(f"no stored runs of {missing}: run them (--sides)")
    for rep in range(args.repeats):
        for side in chosen if rep % 2 == 0 else reversed(chosen):
            print(f"{side} run {rep + 1}", file=sys.stderr, flush=True)
            code = SETUP.format(imp=SIDES[side], path=str(path))
            runs[side].append(run_fresh(code))
            print(runs[side][-1], file=sys.stderr, flush=True)
    median = {
        side: {k: statistics.median(r[k] for r in rs if k in r) for k in rs[-1]}
        for side, rs in runs.items()
    }
    result = {"machine": machine(), "n_ref": n_ref, "n_query": n_query, "runs": runs,
              "median": median}  # fmt: skip
    if not args.skip_mnist:
        result["mnist70k"] = mnist(args.repeats)
    elif "mnist70k" in old:
        result["mnist70k"] = old["mnist70k"]
    save("transform", result)
    print(f"Machine: {machine()}\n")
    print(table(median, n_ref, n_query))
    print()
    print(look_table(median))
    if "mnist70k" in result:
        print()
        print(mnist_table(result["mnist70k"]["median"]))


if __name__ == "__main__":
    main()
