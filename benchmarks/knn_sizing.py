"""kNN sizing: recall and cost of annumap's NN-descent sizings against pynndescent's.

Run (from the repository root; minutes per run on 2 cores; not a test)::

    .venv/bin/python benchmarks/knn_sizing.py --n 200000                     # 20 clusters
    .venv/bin/python benchmarks/knn_sizing.py --n 100000 --clusters 2        # 1M's density
    .venv/bin/python benchmarks/knn_sizing.py --n 200000 --sides pynndescent
    .venv/bin/python benchmarks/knn_sizing.py --n 200000 \\
        --settings '{"max_candidates": 15, "extra": 4}'                       # first sizing

Data: ``benchmarks/scale.py``'s generator (50-D, centres N(0, 4^2) per coordinate, unit
noise, float32, seed 0) with ``--clusters`` clusters; ``--n 1000000`` with 20 clusters is
scale.py's 1M set, and 2 clusters of 100,000 points have its 50k points per cluster. Recall of
the 14 exact neighbours on 2,000 random rows (scikit-learn brute force on those rows, cached).
Each side runs in its own fresh process with ``n_jobs=2``: ``annumap`` = ``nndescent_knn``
with :func:`nndescent_settings` updated by ``--settings``; ``pynndescent`` = pynndescent with
umap-learn's sizing (``index_settings``, its JIT compilation included). Reports wall and CPU
time (the CPU time is the steadier figure on a shared machine) and the process's peak RSS.
Results are appended to ``benchmarks/results/knn_sizing.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CACHE, IMPORT_MIXTURE, machine, run_fresh

MAKE = (
    IMPORT_MIXTURE
    + """
import numpy as np
X, _ = scale_mixture({n}, {c})
np.save({x_path!r}, X)
from sklearn.neighbors import NearestNeighbors
rows = np.sort(np.random.default_rng(7).choice({n}, 2000, replace=False))
true = NearestNeighbors(n_neighbors=15, algorithm="brute").fit(X).kneighbors(X[rows])[1]
np.save({true_path!r}, np.concatenate([rows[:, None], true], axis=1))
print(json.dumps({{}}))
"""
)

SIDE = """
import numpy as np, resource
X = np.load({x_path!r})
ref = np.load({true_path!r})
rows, true = ref[:, 0], ref[:, 1:]
t, c = time.perf_counter(), time.process_time()
if {side!r} == "annumap":
    from annumap._core.knn._nndescent import nndescent_knn, nndescent_settings
    conf = {{**nndescent_settings(X.shape[0], 15), **{settings!r}}}
    idx, _ = nndescent_knn(X, 15, random_state=0, n_jobs=2, settings=conf)
else:
    from annumap._core.knn._pynndescent import index_settings, pynndescent_knn
    conf = index_settings(X.shape[0])
    idx, _ = pynndescent_knn(X, 15, random_state=0, n_jobs=2)
wall, cpu = time.perf_counter() - t, time.process_time() - c
recall = np.mean([len(set(idx[r, 1:15]) & set(true[i, 1:15])) / 14 for i, r in enumerate(rows)])
print(json.dumps({{"side": {side!r}, "settings": conf, "wall_s": wall, "cpu_s": cpu,
                  "recall": float(recall),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--sides", nargs="+", default=["annumap"])
    parser.add_argument("--settings", default="{}", help="JSON override of the NN-descent sizing")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    CACHE.mkdir(exist_ok=True)
    stem = f"sizing_{args.n}_{args.clusters}"
    fmt = {
        "n": args.n, "c": args.clusters,
        "x_path": str(CACHE / f"{stem}_X.npy"), "true_path": str(CACHE / f"{stem}_true.npy"),
    }  # fmt: skip
    if not Path(fmt["true_path"]).exists():
        run_fresh(MAKE.format(**fmt), timeout=args.timeout)
    out = Path(__file__).resolve().parent / "results" / "knn_sizing.json"
    results = json.loads(out.read_text()) if out.exists() else {"machine": machine(), "runs": []}
    for side in args.sides:
        res = run_fresh(
            SIDE.format(side=side, settings=json.loads(args.settings), **fmt), timeout=args.timeout
        )
        res.update(n_obs=args.n, clusters=args.clusters)
        print(json.dumps(res), flush=True)
        results["runs"].append(res)
    out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
