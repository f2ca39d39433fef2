"""Embedding new cells: annumap's umap_transform (both ways) vs umap-learn's UMAP.transform.

Run (from the repository root, with the ``test`` extra installed; ~6 min on 2 cores)::

    .venv/bin/python benchmarks/transform.py
    .venv/bin/python benchmarks/transform.py --repeats 2

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
``warm`` = the same call again in that process. Quality: 15-NN label accuracy of the query
against the reference embedding and the reference's 5-fold cross-validated 15-NN accuracy
(``Unknown`` cells left out), as in ``tests/test_transform.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CACHE, ROOT, machine, run_fresh, save

SETUP = """
t0 = time.perf_counter()
import numpy as np
{imp}
t_import = time.perf_counter() - t0
d = np.load({path!r}, allow_pickle=False)
Xr, Xq, yr, yq = d["Xr"], d["Xq"], d["yr"], d["yq"]

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
print(json.dumps(out))
"""

ANNUMAP = """
import anndata as ad
import annumap

def fit(X):
    a = ad.AnnData(np.zeros((X.shape[0], 1), dtype=np.float32))
    a.obsm["X_pca"] = X
    annumap.pp.neighbors(a, n_neighbors=15, use_rep="X_pca")
    annumap.tl.umap(a, method={method!r})
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


def table(median: dict, n_ref: int, n_query: int) -> str:
    ul = median["umap-learn"]
    lines = [
        f"CBMC: {n_ref} reference cells, {n_query} query cells (PCA 30)\n",
        "| side | fit cold (s) | fit warm (s) | transform cold (s) | transform warm (s) "
        "| transform warm ratio umap-learn/side | query acc | ref CV acc |",
        "|" + "---|" * 8,
    ]
    for side, m in median.items():
        lines.append(
            f"| {side} | {m['fit_cold']:.2f} | {m['fit_warm']:.2f} | {m['transform_cold']:.2f} "
            f"| {m['transform_warm']:.3f} | {ul['transform_warm'] / m['transform_warm']:.1f}x "
            f"| {m['query_acc']:.3f} | {m['ref_cv']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    path = prepare()
    with np.load(path) as d:
        n_ref, n_query = d["Xr"].shape[0], d["Xq"].shape[0]
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    for rep in range(args.repeats):
        for side in SIDES if rep % 2 == 0 else reversed(SIDES):
            print(f"{side} run {rep + 1}", file=sys.stderr, flush=True)
            code = SETUP.format(imp=SIDES[side], path=str(path))
            runs[side].append(run_fresh(code))
            print(runs[side][-1], file=sys.stderr, flush=True)
    median = {
        side: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()
    }
    save(
        "transform",
        {"machine": machine(), "n_ref": n_ref, "n_query": n_query, "runs": runs, "median": median},
    )
    print(f"Machine: {machine()}\n")
    print(table(median, n_ref, n_query))


if __name__ == "__main__":
    main()
