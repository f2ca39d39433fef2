"""pp.neighbors: annumap vs scanpy on the same representation, cold and warm, side by side.

Run (from the repository root, with the ``test`` extra installed; ~15 min on 2 cores)::

    .venv/bin/python benchmarks/neighbors.py
    .venv/bin/python benchmarks/neighbors.py --datasets cbmc --repeats 3

Sides, each in fresh processes, alternated ``--repeats`` times (medians reported):

* ``annumap``: ``annumap.pp.neighbors(adata, use_rep='X_pca')``, automatic backend (exact BLAS
  search up to ``n_obs**2 * n_pcs = 1.2e10``, annumap's NN-descent above: mnist70k).
* ``annumap-exact``: the same with ``transformer='exact'``.
* ``annumap-pynnd``: the same with ``transformer='pynndescent'`` (umap-learn's sizing).
* ``scanpy``: ``scanpy.pp.neighbors(adata, use_rep='X_pca')`` as scanpy runs it, with its
  default ``settings.n_jobs = 1``, which it passes to pynndescent: scikit-learn brute force
  below 8,192 cells; above, scanpy 1.11.5 builds pynndescent's ``PyNNDescentTransformer``,
  whose ``csr_array`` output crashes scanpy on SciPy 1.17 (``getnnz``). There we pass the same
  transformer with scanpy's own settings (``n_jobs=settings.n_jobs``,
  ``n_trees = min(64, 5 + round(sqrt(n) / 20))``, ``n_iters = max(5, round(log2(n)))``)
  wrapped to return a ``csr_matrix`` - the only change to scanpy's path.

annumap's sides use all cores (``n_jobs=None``; 2 on the development machine).

Per run: ``cold`` = import + first call in a new process (includes JIT compilation: numba's
on-disk cache is warm for annumap's kernels; pynndescent compiles in every new process),
``warm`` = a second call in the same process, ``peak`` = peak RSS increase during the first
call, ``recall`` = mean fraction of the exact 14 nearest neighbours found, the exact ones from
scikit-learn's ``NearestNeighbors(algorithm='brute')`` on the same matrix (an independent
reference; computed once per dataset and cached in ``.bench_cache/``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import CACHE, graph_path, machine, representation, run_fresh, save

DATASETS = ("pbmc68k", "cbmc", "mnist70k")

SETUP = """
t0 = time.perf_counter()
import numpy as np, anndata as ad
{imp}
t_import = time.perf_counter() - t0
src = ad.read_h5ad({path!r})
exact = np.load({truth!r})
def fresh():
    a = ad.AnnData(np.zeros((src.n_obs, 1), dtype=np.float32))
    a.obsm["X_pca"] = src.obsm["X_pca"]
    return a
a, b = fresh(), fresh()
base = reset_peak()
t = time.perf_counter(); {call}(a); first = time.perf_counter() - t
peak_inc = peak() - base
t = time.perf_counter(); {call}(b); second = time.perf_counter() - t
D = b.obsp["distances"]
hits = [len(set(D.indices[D.indptr[i]:D.indptr[i + 1]]) & set(exact[i]))
        for i in range(b.n_obs)]
recall = float(np.mean(hits) / 14)
print(json.dumps({{"import": t_import, "cold": t_import + first, "first": first, "warm": second,
                  "peak_inc": peak_inc, "recall": recall}}))
"""

SCANPY_CALL = """
import scanpy as sc
from scipy import sparse
from pynndescent import PyNNDescentTransformer

class CsrMatrixNND(PyNNDescentTransformer):
    # scanpy 1.11.5 + SciPy 1.17: csr_array has no getnnz; hand scanpy a csr_matrix instead
    def fit_transform(self, X, y=None, **kw):
        return sparse.csr_matrix(super().fit_transform(X, y, **kw))

def run(adata):
    n = adata.n_obs
    if n < 8192:  # scanpy's own choice: exact scikit-learn search
        sc.pp.neighbors(adata, n_neighbors=15, use_rep="X_pca")
    else:
        tr = CsrMatrixNND(n_neighbors=15, metric="euclidean", random_state=0,
                          n_jobs=sc.settings.n_jobs,
                          n_trees=min(64, 5 + int(round(n ** 0.5 / 20.0))),
                          n_iters=max(5, int(round(np.log2(n)))))
        sc.pp.neighbors(adata, use_rep="X_pca", transformer=tr)
"""

SIDES = {
    "annumap": ("import annumap", "(lambda x: annumap.pp.neighbors(x, use_rep='X_pca'))", ""),
    "annumap-exact": (
        "import annumap",
        "(lambda x: annumap.pp.neighbors(x, use_rep='X_pca', transformer='exact'))",
        "",
    ),
    "annumap-pynnd": (
        "import annumap",
        "(lambda x: annumap.pp.neighbors(x, use_rep='X_pca', transformer='pynndescent'))",
        "",
    ),
    "scanpy": ("", "run", SCANPY_CALL),
}


def truth_path(name: str) -> str:
    """The 14 exact neighbours of every row (scikit-learn brute force, self removed), cached."""
    path = CACHE / f"{name}_sklearn_knn14.npy"
    if not path.exists():
        from sklearn.neighbors import NearestNeighbors

        X = representation(name)
        idx = NearestNeighbors(n_neighbors=15, algorithm="brute").fit(X).kneighbors(X)[1]
        rows = np.arange(X.shape[0])[:, None]
        # drop the point itself (or, for a duplicate ranked first, the last column)
        keep = np.where((idx == rows).any(1)[:, None], idx != rows, np.arange(15) < 14)
        np.save(path, idx[keep].reshape(-1, 14))
    return str(path)


def run_side(side: str, path: str, truth: str) -> dict:
    imp, call, extra = SIDES[side]
    code = SETUP.format(imp=imp + "\n" + extra, path=path, call=call, truth=truth)
    return run_fresh(code)


def table(results: dict) -> str:
    lines = [
        "| dataset | n | side | cold (s) | warm (s) | cold ratio scanpy/side | warm ratio "
        "scanpy/side | peak MB | recall |",
        "|" + "---|" * 9,
    ]
    for name, r in results.items():
        s = r["median"]["scanpy"]
        for side, m in r["median"].items():
            lines.append(
                f"| {name} | {r['n_obs']} | {side} | {m['cold']:.2f} | {m['warm']:.2f} "
                f"| {s['cold'] / m['cold']:.1f}x | {s['warm'] / m['warm']:.1f}x "
                f"| {m['peak_inc'] / 2**20:.0f} | {m['recall']:.4f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {}
    for name in args.datasets:
        path = str(graph_path(name))
        truth = truth_path(name)
        runs: dict[str, list[dict]] = {side: [] for side in SIDES}
        for rep in range(args.repeats):
            for side in SIDES if rep % 2 == 0 else reversed(SIDES):
                print(f"[{name}] {side} run {rep + 1}", file=sys.stderr, flush=True)
                runs[side].append(run_side(side, path, truth))
        import anndata as ad

        n_obs = ad.read_h5ad(path, backed="r").n_obs
        median = {
            side: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            for side, rs in runs.items()
        }
        results[name] = {"n_obs": n_obs, "runs": runs, "median": median}
        print(table({name: results[name]}), file=sys.stderr, flush=True)
    save("neighbors", {"machine": machine(), "results": results})
    print(f"Machine: {machine()}\n")
    print(table(results))


if __name__ == "__main__":
    main()
