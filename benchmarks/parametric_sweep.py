r"""Parametric UMAP training settings on MNIST 70k: trustworthiness and time per setting.

Run (from the repository root; about 1-2 min per setting on 2 cores)::

    printf '%s\n' '{"rounds": 40}' '{"rounds": 5, "kw": {"n_training_epochs": 100}}' \
        | .venv/bin/python benchmarks/parametric_sweep.py

Each input line is one setting: ``kw`` (``parametric_kwds``), ``rounds``
(:data:`annumap._core.parametric.NEGATIVE_ROUNDS`, default 40), ``nsr``
(``negative_sample_rate``, 5), ``gamma`` (1) and ``seed`` (0). The graph is the cached exact
15-NN graph of MNIST's PCA 50 (``_common.graph_path``), pruned as ``tl.umap`` prunes it for its
200 epochs; ``min_dist=0.5``, ``spread=1`` (``tl.umap``'s defaults); 2 threads. Per setting one
JSON line: the setting, the time of the training plus the embedding of all cells (``s``),
trustworthiness (k=15, 5,000-point sample) and 15-NN preservation (``_common.quality``), the
epochs run and kept, and the coordinate range. Results of the issue-13 sweep (some on code
variants that are gone; each row says which): ``results/parametric_sweep.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import graph_path, quality


def main() -> None:
    import anndata as ad

    from annumap._core import parametric as P
    from annumap._core.curve import find_ab
    from annumap._core.layout import prepare_graph

    a = ad.read_h5ad(graph_path("mnist70k"))
    X, G = a.obsm["X_pca"], a.obsp["connectivities"]
    A, B = find_ab(1.0, 0.5)
    graph = prepare_graph(G, 200)
    for line in sys.stdin:
        if not line.strip():
            continue
        cfg = json.loads(line)
        P.NEGATIVE_ROUNDS = int(cfg.get("rounds", 40))
        s = P.check_parametric_kwds(cfg.get("kw", {})).resolved(None, 1.0)
        t = time.perf_counter()
        res = P.fit_parametric(X, graph, a=A, b=B, settings=s, n_jobs=2,
                               seed=cfg.get("seed", 0), gamma=cfg.get("gamma", 1.0),
                               negative_sample_rate=cfg.get("nsr", 5.0))  # fmt: skip
        Y = res.encoder.transform(X, n_jobs=2)
        elapsed = time.perf_counter() - t
        q = quality(X, Y, G, A, B)
        print(json.dumps({
            "cfg": cfg, "s": round(elapsed, 1), "trust": round(q["trust"], 4),
            "knn": round(q["knn_pres"], 4), "epochs_run": int(res.info["n_epochs_run"]),
            "best_epoch": int(res.info["best_epoch"]),
            "range": round(float(np.ptp(Y, axis=0).max()), 1),
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
