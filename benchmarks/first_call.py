"""What a notebook user waits for: import + first pp.neighbors + first tl.umap, new process.

Run (from the repository root, with the ``test`` extra installed; ~10 min on 2 cores)::

    .venv/bin/python benchmarks/first_call.py
    .venv/bin/python benchmarks/first_call.py --datasets cbmc --repeats 3

Each run is a fresh Python process that imports the package, reads the PCA-50 representation
(prepared and cached by ``_common.representation``: the same array for both sides) into an
AnnData and calls ``neighbors`` then ``umap`` with default arguments (``use_rep='X_pca'``).
annumap's numba kernels come from their on-disk cache (as for any user after the first run
ever); scanpy's pynndescent path compiles in every new process. For scanpy above 8,192 cells
the pynndescent transformer is wrapped to return a ``csr_matrix`` (see ``neighbors.py``: scanpy
1.11.5 crashes on SciPy 1.17 otherwise). Sides alternate; medians of ``--repeats`` runs.
Targets (DESIGN.md section 7): CBMC <= 10 s, MNIST 70k <= 25 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CACHE, machine, representation, run_fresh, save

DATASETS = ("cbmc", "mnist70k")

CODE = """
t0 = time.perf_counter()
import numpy as np, anndata as ad
{imp}
t_import = time.perf_counter() - t0
X = np.load({path!r})
adata = ad.AnnData(np.zeros((X.shape[0], 1), dtype=np.float32))
adata.obsm["X_pca"] = X
t = time.perf_counter(); {neighbors}; t_nb = time.perf_counter() - t
t = time.perf_counter(); {umap}; t_umap = time.perf_counter() - t
print(json.dumps({{"import": t_import, "neighbors": t_nb, "umap": t_umap,
                  "total": time.perf_counter() - t0}}))
"""

SCANPY_NEIGHBORS = """
import scanpy as sc
from scipy import sparse
from pynndescent import PyNNDescentTransformer

class CsrMatrixNND(PyNNDescentTransformer):
    def fit_transform(self, X, y=None, **kw):
        return sparse.csr_matrix(super().fit_transform(X, y, **kw))

def scanpy_neighbors(adata):
    n = adata.n_obs
    if n < 8192:
        sc.pp.neighbors(adata, use_rep="X_pca")
    else:
        tr = CsrMatrixNND(n_neighbors=15, metric="euclidean", random_state=0,
                          n_trees=min(64, 5 + int(round(n ** 0.5 / 20.0))),
                          n_iters=max(5, int(round(np.log2(n)))))
        sc.pp.neighbors(adata, use_rep="X_pca", transformer=tr)
"""

SIDES = {
    "annumap": {
        "imp": "import annumap",
        "neighbors": "annumap.pp.neighbors(adata, use_rep='X_pca')",
        "umap": "annumap.tl.umap(adata)",
    },
    "scanpy": {
        "imp": SCANPY_NEIGHBORS,
        "neighbors": "scanpy_neighbors(adata)",
        "umap": "sc.tl.umap(adata)",
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {}
    lines = [
        "| dataset | side | import (s) | neighbors (s) | umap (s) | total (s) "
        "| ratio scanpy/side |",
        "|" + "---|" * 7,
    ]
    for name in args.datasets:
        representation(name)
        path = str(CACHE / f"{name}_rep.npy")
        runs: dict[str, list[dict]] = {s: [] for s in SIDES}
        for rep in range(args.repeats):
            for side in SIDES if rep % 2 == 0 else reversed(SIDES):
                print(f"[{name}] {side} run {rep + 1}", file=sys.stderr, flush=True)
                runs[side].append(run_fresh(CODE.format(path=path, **SIDES[side])))
        med = {s: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for s, rs in runs.items()}
        results[name] = {"runs": runs, "median": med}
        for side, m in med.items():
            lines.append(
                f"| {name} | {side} | {m['import']:.2f} | {m['neighbors']:.2f} | {m['umap']:.2f} "
                f"| {m['total']:.2f} | {med['scanpy']['total'] / m['total']:.1f}x |"
            )
        print("\n".join(lines[-2:]), file=sys.stderr, flush=True)
    save("first_call", {"machine": machine(), "results": results})
    print(f"Machine: {machine()}\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
