"""Where tl.umap's time goes: preparation, colouring, and the epoch kernel's parts.

Run (from the repository root, with the ``test`` extra installed; ~3 min on 2 cores)::

    .venv/bin/python benchmarks/profile_layout.py --dataset mnist50k

On the cached graph of ``benchmarks/_common.py`` (default: MNIST 50k) it times, warm, with 1
and 2 threads: the whole ``tl.umap``; the initialisation; the graph preparation and colouring;
the layout with ``negative_sample_rate=0`` (the due-edge scan, the attraction and the class
barriers) and with the default 5 (the difference is the negative samples); and the layout with
every class run on one thread (what the per-class parallel regions cost or save). Medians of 3.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]


def _load_common():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_common", _HERE / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist50k")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import anndata as ad

    import annumap
    from annumap._core import layout
    from annumap._core.curve import find_ab

    c = _load_common()
    a = ad.read_h5ad(c.graph_path(args.dataset))
    G = a.obsp["connectivities"]
    n_epochs = layout.default_n_epochs(a.n_obs)
    A, B = find_ab(1.0, 0.5)
    init = np.random.default_rng(0).uniform(0, 10, size=(a.n_obs, 2)).astype(np.float32)
    small = a[:500].copy()
    annumap.pp.neighbors(small, use_rep="X_pca")
    annumap.tl.umap(small, maxiter=3)  # compile / load the kernels
    P = layout.prepare_graph(G, n_epochs)
    _, bounds = layout.colour_classes(P)
    sizes = np.diff(bounds)
    rows = {
        "vertices": a.n_obs,
        "edges": int(P.nnz),
        "classes": int(sizes.size),
        "parallel classes": int((sizes >= layout.PARALLEL_MIN_VERTICES).sum()),
        "prepare_graph (s)": median_time(lambda: layout.prepare_graph(G, n_epochs), args.repeats),
        "colour_classes (s)": median_time(lambda: layout.colour_classes(P), args.repeats),
    }

    def run(nj, **kw):
        return lambda: layout.optimize_layout(G, init, a=A, b=B, n_epochs=n_epochs, n_jobs=nj, **kw)

    for nj in (1, 2):
        rows[f"tl.umap {nj}t (s)"] = median_time(
            lambda nj=nj: annumap.tl.umap(a.copy(), n_jobs=nj), args.repeats
        )
        rows[f"layout {nj}t (s)"] = median_time(run(nj), args.repeats)
        rows[f"layout, no negatives {nj}t (s)"] = median_time(
            run(nj, negative_sample_rate=0.0), args.repeats
        )
    saved = layout.PARALLEL_MIN_VERTICES
    layout.PARALLEL_MIN_VERTICES = a.n_obs + 1
    try:
        rows["layout 2t, every class serial (s)"] = median_time(run(2), args.repeats)
    finally:
        layout.PARALLEL_MIN_VERTICES = saved
    print(f"Machine: {c.machine()}; dataset {args.dataset}, {n_epochs} epochs\n")
    print("| quantity | value |\n|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {v:.3g} |" if isinstance(v, float) else f"| {k} | {v} |")


if __name__ == "__main__":
    main()
