"""kNN stages: the NN-descent's stage rules on and off, side by side in one process.

Run (from the repository root; minutes on 2 cores; not a test)::

    .venv/bin/python benchmarks/knn_stages.py --data mixture --n 200000
    .venv/bin/python benchmarks/knn_stages.py --data mixture --n 1000000 --repeats 1
    .venv/bin/python benchmarks/knn_stages.py --data aniso --n 300000      # not tuned on

Sides: ``rules`` = :func:`nndescent_settings` as shipped; ``without`` = the same with
``--off`` (default: ``skip_light_below`` and ``stop_gain`` set to 0, i.e. the light iterations
always run and the heavy ones end only on ``delta`` or ``n_iters``). Each repeat runs both sides
(``_descent``, warm after a first call, ``n_jobs`` = all threads), order alternated, and prints
the wall time, the estimated recall after the forest and each iteration of both stages, and the
final estimate (exact neighbours of 256 random rows).

Data: ``mixture`` is ``benchmarks/scale.py``'s generator (``_common.scale_mixture``: 50-D, 20
clusters, centres N(0, 4^2), unit noise, seed 0), on which the rules were tuned. ``aniso``
was not: 60-D, 30 Gaussians with random full covariances (``N(0,1)/sqrt(d)`` matrices scaled
by U(0.5, 2)), centres N(0, 3^2), seed 5.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# nothing here imports umap-learn, so benchmarks/ (whose umap.py would shadow it) may lead
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import aniso_mixture, scale_mixture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["mixture", "aniso"], default="mixture")
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--off", default='{"skip_light_below": 0.0, "stop_gain": 0.0}')
    args = parser.parse_args()
    from annumap._core.knn import _nndescent as nd

    X = scale_mixture(args.n)[0] if args.data == "mixture" else aniso_mixture(args.n)
    S = nd._search_matrix(X, "euclidean")
    rules = nd.nndescent_settings(args.n, 15)
    sides = {"rules": rules, "without": {**rules, **json.loads(args.off)}}
    nd._descent(S[:20_000], 15, 100, n_targets=20_000, random_state=0, settings=rules)  # warm
    print(f"{args.data}, n={args.n}, off={args.off}")
    for r in range(args.repeats):
        for name in ("rules", "without") if r % 2 == 0 else ("without", "rules"):
            t = time.perf_counter()
            _, _, stats = nd._descent(S, 15, 100, n_targets=args.n, random_state=0,
                                      settings=sides[name])  # fmt: skip
            light = " ".join(f"{x:.3f}" for x in stats["history"])
            heavy = " ".join(f"{x:.3f}" for x in stats["refine_history"]) or "-"
            print(f"  {name:8s} {time.perf_counter() - t:6.1f} s  light: {light}  heavy: {heavy}"
                  f"  recall {stats['recall'][-1]:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
