"""End to end from a PCA-50 matrix: annumap vs scanpy vs umap-learn parallel, cold and warm.

Run (from the repository root, with the ``test`` and ``dask`` extras; tens of minutes on 2
cores)::

    .venv/bin/python benchmarks/e2e.py                                  # all four data sets
    .venv/bin/python benchmarks/e2e.py --datasets mnist70k --repeats 3
    .venv/bin/python benchmarks/e2e.py --datasets aniso100k --repeats 3
    .venv/bin/python benchmarks/e2e.py --datasets branch150k --repeats 3  # tuned on by nothing

Each side runs ``n_neighbors=15, min_dist=0.5`` on the same float32 PCA-50 matrix, in a fresh
process per run, 2 threads (``NUMBA_NUM_THREADS``, ``OMP_NUM_THREADS`` etc. = 2), sides
alternated ``--repeats`` times (medians reported):

* ``annumap``: ``annumap.pp.neighbors(a, use_rep='X_pca', n_jobs=2)`` then
  ``annumap.tl.umap(a, n_jobs=2)`` (automatic kNN backend; seed 0).
* ``scanpy``: ``sc.settings.n_jobs = 2``, then ``sc.pp.neighbors(a, use_rep='X_pca')`` and
  ``sc.tl.umap(a)``. scanpy 1.11.5 builds pynndescent's ``PyNNDescentTransformer`` with
  ``n_jobs=settings.n_jobs`` and umap-learn's sizing above 8,192 cells; its ``csr_array``
  output crashes scanpy on SciPy 1.17 (``getnnz``), so we pass that same transformer, with
  the same settings, wrapped to return a ``csr_matrix`` - the only change to scanpy's path.
* ``umap-learn``: ``umap.UMAP(n_neighbors=15, min_dist=0.5, n_jobs=2).fit_transform(X)``,
  unseeded (its parallel mode; a seed makes it serial).

``cold`` = import + first call in the new process (numba's on-disk cache warm for the packages
that cache: annumap; pynndescent and umap-learn compile part of their code in every process),
``warm`` = a second call in the same process. Quality of the warm result: trustworthiness
(k=15, on a fixed 5,000-point subsample) and kNN preservation (k=15, all points) against the
PCA matrix. Datasets: ``mnist70k`` (MNIST PCA-50, what the kNN settings were measured on),
``mix200k`` (200,000 points, 50-D mixture of 20 Gaussians as ``benchmarks/scale.py``; the
NN-descent's stage rules were tuned on this generator) and ``aniso100k`` (100,000 points, 60-D,
30 Gaussians with random full covariances, ``_common.aniso_mixture``: tuned on by no rule
until the cap of the NN-descent's projected gain at ``1 - recall``, whose need it showed) and
``branch150k`` (150,000 points, 50-D, a random tree of 15 segments in a 10-D latent space,
``_common.branch_tree``, made after every rule was set: tuned on by nothing).
``--empty-cache`` also runs annumap with an empty numba cache (``NUMBA_CACHE_DIR`` set to
a new directory): the true first run after installation. Results: ``benchmarks/results/e2e.json``
(datasets not run in this invocation keep their earlier entry).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CACHE, IMPORT_MIXTURE, machine, representation, run_fresh, save, saved

DATASETS = ("mnist70k", "mix200k", "aniso100k", "branch150k")
THREADS = {
    "NUMBA_NUM_THREADS": "2",
    "OMP_NUM_THREADS": "2",
    "OPENBLAS_NUM_THREADS": "2",
    "MKL_NUM_THREADS": "2",
}

SETUP = """
t0 = time.perf_counter()
import numpy as np, anndata as ad
{imp}
t_import = time.perf_counter() - t0
X = np.load({x_path!r})
def fresh():
    a = ad.AnnData(np.zeros((X.shape[0], 1), dtype=np.float32))
    a.obsm["X_pca"] = X
    return a
t = time.perf_counter(); Y1 = run(fresh()); first = time.perf_counter() - t
t = time.perf_counter(); Y2 = run(fresh()); second = time.perf_counter() - t
np.save({y_path!r}, np.asarray(Y2, dtype=np.float32))
print(json.dumps({{"import": t_import, "cold": t_import + first, "first": first,
                  "warm": second}}))
"""

SIDES = {
    "annumap": """
import annumap
def run(a):
    annumap.pp.neighbors(a, n_neighbors=15, use_rep="X_pca", n_jobs=2)
    annumap.tl.umap(a, min_dist=0.5, n_jobs=2)
    return a.obsm["X_umap"]
""",
    "scanpy": """
import scanpy as sc
from scipy import sparse
from pynndescent import PyNNDescentTransformer
sc.settings.n_jobs = 2

class CsrMatrixNND(PyNNDescentTransformer):
    # scanpy 1.11.5 + SciPy 1.17: csr_array has no getnnz; hand scanpy a csr_matrix instead
    def fit_transform(self, X, y=None, **kw):
        return sparse.csr_matrix(super().fit_transform(X, y, **kw))

def run(a):
    n = a.n_obs
    tr = CsrMatrixNND(n_neighbors=15, metric="euclidean", n_jobs=sc.settings.n_jobs,
                      n_trees=min(64, 5 + int(round(n ** 0.5 / 20.0))),
                      n_iters=max(5, int(round(np.log2(n)))))
    sc.pp.neighbors(a, use_rep="X_pca", transformer=tr)
    sc.tl.umap(a, min_dist=0.5)
    return a.obsm["X_umap"]
""",
    "umap-learn": """
import umap
def run(a):
    return umap.UMAP(n_neighbors=15, min_dist=0.5, n_jobs=2).fit_transform(a.obsm["X_pca"])
""",
}

#: Generated data sets: cache file and the expression that makes the matrix (in a fresh process).
GENERATED = {
    "mix200k": ("scale_200000_X.npy", "scale_mixture(200_000)[0]"),  # scale.py's file
    "aniso100k": ("aniso_100000_X.npy", "aniso_mixture(100_000)"),
    "branch150k": ("branch_150000_X.npy", "branch_tree(150_000)"),
}
GENERATE = (
    IMPORT_MIXTURE
    + """
import numpy as np
from _common import aniso_mixture, branch_tree
np.save({x_path!r}, {expr})
print(json.dumps({{}}))
"""
)


def data_path(name: str) -> str:
    CACHE.mkdir(exist_ok=True)
    if name in GENERATED:
        file, expr = GENERATED[name]
        path = CACHE / file
        if not path.exists():
            run_fresh(GENERATE.format(x_path=str(path), expr=expr))
        return str(path)
    path = CACHE / f"{name}_rep.npy"
    if not path.exists():
        representation(name)
    return str(path)


def run_side(side: str, x_path: str, y_path: str, env: dict | None = None) -> dict:
    code = SETUP.format(imp=SIDES[side.removesuffix("-empty-cache")], x_path=x_path,
                        y_path=y_path)  # fmt: skip
    return run_fresh(code, env={**THREADS, **(env or {})})


def quality(X: np.ndarray, Y: np.ndarray, n_sub: int = 5000) -> dict:
    from sklearn.manifold import trustworthiness

    from annumap._core.metrics import knn_preservation

    sub = np.sort(np.random.default_rng(0).choice(X.shape[0], min(n_sub, X.shape[0]), False))
    return {
        "trust": float(trustworthiness(X[sub], Y[sub], n_neighbors=15)),
        "knn_pres": float(knn_preservation(X, Y, 15)),
    }


def table(results: dict) -> str:
    lines = [
        "| dataset | side | cold (s) | warm (s) | scanpy/side cold | scanpy/side warm "
        "| umap-learn/side warm | trustworthiness | kNN preservation |",
        "|" + "---|" * 9,
    ]
    for name, r in results.items():
        med = r["median"]
        s, u = med["scanpy"], med["umap-learn"]
        for side, m in med.items():
            lines.append(
                f"| {name} | {side} | {m['cold']:.1f} | {m['warm']:.1f} "
                f"| {s['cold'] / m['cold']:.2f}x | {s['warm'] / m['warm']:.2f}x "
                f"| {u['warm'] / m['warm']:.2f}x | {m['trust']:.4f} | {m['knn_pres']:.4f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sides", nargs="+", default=list(SIDES), choices=list(SIDES))
    parser.add_argument("--empty-cache", action="store_true")
    args = parser.parse_args()
    results = saved("e2e").get("results", {})  # keep the datasets of earlier invocations
    for name in args.datasets:
        x_path = data_path(name)
        X = np.load(x_path)
        sides = list(args.sides) + (["annumap-empty-cache"] if args.empty_cache else [])
        runs: dict[str, list[dict]] = {side: [] for side in sides}
        with tempfile.TemporaryDirectory() as tmp:
            for rep in range(args.repeats):
                for side in sides if rep % 2 == 0 else reversed(sides):
                    print(f"[{name}] {side} run {rep + 1}", file=sys.stderr, flush=True)
                    env = None
                    if side.endswith("-empty-cache"):
                        env = {"NUMBA_CACHE_DIR": tempfile.mkdtemp(dir=tmp)}
                    y_path = str(Path(tmp) / f"{side}_{rep}.npy")
                    res = run_side(side, x_path, y_path, env)
                    res.update(quality(X, np.load(y_path)))
                    runs[side].append(res)
                    print(f"  {res}", file=sys.stderr, flush=True)
        median = {
            side: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            for side, rs in runs.items()
        }
        results[name] = {"n_obs": int(X.shape[0]), "runs": runs, "median": median}
        if {"scanpy", "umap-learn"} <= set(median):
            print(table({name: results[name]}), file=sys.stderr, flush=True)
    save("e2e", {"machine": machine(), "threads": 2, "results": results})
    print(f"Machine: {machine()}\n")
    if all({"scanpy", "umap-learn"} <= set(r["median"]) for r in results.values()):
        print(table(results))


if __name__ == "__main__":
    main()
