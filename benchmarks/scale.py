"""Scale: time and peak memory of pp.neighbors and tl.umap on 50k-1M synthetic cells.

Run (from the repository root; minutes per size on 2 cores; not a test)::

    .venv/bin/python benchmarks/scale.py                          # 50k and 200k
    .venv/bin/python benchmarks/scale.py --sizes 1000000          # 1M (long: see README)
    .venv/bin/python benchmarks/scale.py --sizes 200000 --steps dask   # Dask, exact blockwise

Data: ``n`` cells in 50 dimensions, 20 Gaussian clusters (centres N(0, 4^2) per coordinate,
unit within-cluster noise, cluster sizes uniform at random), float32, seed 0; generated once per
size into ``.bench_cache/``. Each step runs in its own fresh process so that its peak RSS is its
own:

* ``neighbors``: load X, ``annumap.pp.neighbors(adata, n_neighbors=15)`` with the automatic
  backend (annumap's NN-descent at these sizes; its numba kernels load from the on-disk cache),
  then recall of the 14 true neighbours on 1,000 random cells (scikit-learn brute force on
  those rows). The graph is written to ``.bench_cache/`` after the measurement.
* ``dask``: the same search on a Dask array (row blocks of 25,000, memory-mapped input) on a
  ``dask.distributed.LocalCluster`` of 2 single-threaded worker processes: the exact blockwise
  path for data past one machine. Reports the client's peak, each worker's peak RSS and the
  throughput in multiply-adds (``n**2 * d``) per second, from which ``docs/large_data.md``
  projects 10M cells.
* ``umap``: read that file, ``annumap.tl.umap(adata)`` with the defaults (spectral init,
  200 epochs above 10,000 cells); the time to the first epoch's callback is reported as
  ``init`` (a/b fit, graph checks, spectral init), the rest as ``layout``.

Memory: ``base`` = RSS after the input is loaded; ``peak`` = the process's high-water mark
(VmHWM, reset to the current RSS right before the call via ``/proc/self/clear_refs``);
``extra`` = peak - base, the call's own working memory, also given per cell and per stored
graph edge, which should stay flat as n grows if memory is O(n * k).
Results: ``benchmarks/results/scale.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CACHE, IMPORT_MIXTURE, machine, run_fresh, save, saved

N_CLUSTERS = 20
N_DIMS = 50
K = 15

MAKE_DATA = (
    IMPORT_MIXTURE
    + """
import numpy as np
X, labels = scale_mixture({n}, {c}, {d})
np.save({x_path!r}, X)
np.save({labels_path!r}, labels.astype(np.int16))
print(json.dumps({{"bytes": int(X.nbytes)}}))
"""
)

NEIGHBORS = """
import numpy as np, anndata as ad, logging
t0 = time.perf_counter()
import annumap
t_import = time.perf_counter() - t0
X = np.load({x_path!r})
adata = ad.AnnData(X)
base = reset_peak()
t, c = time.perf_counter(), time.process_time()
annumap.pp.neighbors(adata, n_neighbors={k})
elapsed, cpu = time.perf_counter() - t, time.process_time() - c
top = peak()
D, C = adata.obsp["distances"], adata.obsp["connectivities"]
from sklearn.neighbors import NearestNeighbors
rows = np.sort(np.random.default_rng(1).choice(X.shape[0], 1000, replace=False))
true_idx = NearestNeighbors(n_neighbors={k}, algorithm="brute").fit(X).kneighbors(X[rows])[1]
hits = [len(set(D.indices[D.indptr[r]:D.indptr[r + 1]]) & set(true_idx[i, 1:]))
        for i, r in enumerate(rows)]
adata.write_h5ad({graph_path!r})
print(json.dumps({{
    "import": t_import, "time": elapsed, "cpu_time": cpu,
    "base": base, "peak": top, "extra": top - base,
    "backend": adata.uns["neighbors"]["params"]["knn_backend"],
    "recall": float(np.mean(hits) / ({k} - 1)),
    "dist_nnz": int(D.nnz), "conn_nnz": int(C.nnz),
    "dtypes": {{"distances": [str(D.indptr.dtype), str(D.indices.dtype)],
               "connectivities": [str(C.indptr.dtype), str(C.indices.dtype)]}},
}}))
"""

DASK = """
import numpy as np, anndata as ad, dask.array as da
from distributed import Client, LocalCluster
t0 = time.perf_counter()
import annumap
t_import = time.perf_counter() - t0
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
client = Client(cluster)
X = da.from_array(np.load({x_path!r}, mmap_mode="r"), chunks=(25_000, {d}))
adata = ad.AnnData(np.zeros(({n}, 1), dtype=np.float32))
adata.obsm["X_pca"] = X
base = reset_peak()
t = time.perf_counter()
annumap.pp.neighbors(adata, n_neighbors={k}, use_rep="X_pca", n_jobs=1)
elapsed = time.perf_counter() - t
top = peak()
workers = client.run(lambda: __import__("resource").getrusage(0).ru_maxrss * 1024)
client.close(); cluster.close()
D = adata.obsp["distances"]
print(json.dumps({{
    "import": t_import, "time": elapsed, "base": base, "peak": top, "extra": top - base,
    "backend": "dask-" + adata.uns["neighbors"]["params"]["knn_backend"],
    "worker_peak_mb": [round(v / 2**20, 1) for v in workers.values()],
    "multiply_adds_per_s": float({n}) ** 2 * {d} / elapsed,
    "dist_nnz": int(D.nnz), "conn_nnz": int(adata.obsp["connectivities"].nnz),
}}))
"""

UMAP = """
import numpy as np, anndata as ad
t0 = time.perf_counter()
import annumap
t_import = time.perf_counter() - t0
adata = ad.read_h5ad({graph_path!r})
first = []
def cb(epoch, n_epochs, Y):
    if epoch == 1:
        first.append(time.perf_counter())
base = reset_peak()
t = time.perf_counter()
annumap.tl.umap(adata, callback=cb)
end = time.perf_counter()
top = peak()
Y = adata.obsm["X_umap"]
labels = np.load({labels_path!r})
# a coarse sanity check at scale: the clusters' centres lie apart relative to their spread
centres = np.array([Y[labels == c].mean(0) for c in range({c})])
spread = float(np.mean([Y[labels == c].std(0).mean() for c in range({c})]))
gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1)[np.triu_indices({c}, 1)]
print(json.dumps({{
    "import": t_import, "time": end - t, "init": first[0] - t, "layout": end - first[0],
    "n_epochs": int(adata.uns["umap"]["params"]["n_epochs"]),
    "conn_nnz": int(adata.obsp["connectivities"].nnz),
    "base": base, "peak": top, "extra": top - base, "finite": bool(np.isfinite(Y).all()),
    "min_centre_gap_over_spread": float(gaps.min() / spread),
}}))
"""


def _mb(x: float) -> float:
    return round(x / 2**20, 1)


def run_size(n: int, steps: list[str], timeout: float) -> dict:
    CACHE.mkdir(exist_ok=True)
    x_path = str(CACHE / f"scale_{n}_X.npy")
    labels_path = str(CACHE / f"scale_{n}_labels.npy")
    graph_path = str(CACHE / f"scale_{n}_graph.h5ad")
    fmt = {
        "n": n, "d": N_DIMS, "c": N_CLUSTERS, "k": K,
        "x_path": x_path, "labels_path": labels_path, "graph_path": graph_path,
    }  # fmt: skip
    if not Path(x_path).exists():
        run_fresh(MAKE_DATA.format(**fmt), timeout=timeout)
    out: dict = {"n_obs": n}
    for step in steps:
        code = {"neighbors": NEIGHBORS, "umap": UMAP, "dask": DASK}[step]
        if step == "umap" and not Path(graph_path).exists():
            msg = f"run the neighbors step for n={n} first (no {graph_path})"
            raise FileNotFoundError(msg)
        res = run_fresh(code.format(**fmt), timeout=timeout)
        edges = out.get("neighbors", {}).get("conn_nnz") or res.get("conn_nnz")
        res["extra_per_cell_bytes"] = round(res["extra"] / n, 1)
        if edges:
            res["extra_per_edge_bytes"] = round(res["extra"] / edges, 1)
        for key in ("base", "peak", "extra"):
            res[key + "_mb"] = _mb(res.pop(key))
        out[step] = res
        print(f"n={n:>9,} {step:>9}: {res}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--steps", nargs="+", default=["neighbors", "umap"])
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per step")
    args = parser.parse_args()
    # keep the sizes measured in earlier invocations
    runs = {r["n_obs"]: r for r in saved("scale").get("runs", [])}
    for n in args.sizes:
        runs.setdefault(n, {}).update(run_size(n, args.steps, args.timeout))
    results = {
        "machine": machine(),
        "data": f"{N_DIMS}-D, {N_CLUSTERS} Gaussian clusters, float32, seed 0; n_neighbors={K}",
        "runs": [runs[n] for n in sorted(runs)],
    }
    path = save("scale", results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
