"""Why two threads gain little on the 50k layouts: the positions' cache lines, padded or not.

Run (from the repository root, with the ``test`` extra installed; ~8 min on 2 cores)::

    .venv/bin/python benchmarks/layout_memory.py --dataset gauss50k

On the cached graph of ``benchmarks/_common.py`` it runs the layout's epoch kernel
(``_kernels.sgd_epoch``, 200 epochs, the same graph, colouring, pieces and random init for
every run) with the positions stored at a stride of ``--pads`` floats per vertex: 2 is the
kernel as ``tl.umap`` runs it (8 bytes a vertex: 8 vertices share a 64-byte cache line, the two
buffers of 50k cells take 800 KB and fit one core's 1 MB L2); 16 gives every vertex its own
cache line (6.4 MB: L3). It prints the seconds of each run, 1 and 2 threads alternated, and
checks that every run gives the same embedding (the stride changes no arithmetic). Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

# nothing here imports umap-learn, so benchmarks/ (whose umap.py would shadow it) may lead
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import graph_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="gauss50k")
    parser.add_argument("--pads", type=int, nargs="+", default=[2, 16])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import anndata as ad

    from annumap._core import layout
    from annumap._core._kernels import copy_lists, pow_table, sgd_epoch
    from annumap._core._numba import threads
    from annumap._core._rng import epoch_key
    from annumap._core.curve import find_ab

    G = layout.prepare_graph(ad.read_h5ad(graph_path(args.dataset)).obsp["connectivities"], 200)
    n = G.shape[0]
    init = np.random.default_rng(0).uniform(-10, 10, (n, 2)).astype(np.float32)
    order, bounds = layout.colour_classes(G)
    P = G[order][:, order].tocsr()
    P.sort_indices()
    indptr, indices = P.indptr.astype(np.int64), P.indices.astype(np.int64)
    eps, eps_neg = layout.sampling_schedule(P.data, 5.0)
    pieces, first = layout.class_pieces(bounds, indptr, P.data, 5.0)
    lists = copy_lists(bounds, indptr, indices)
    n_classes = bounds.size - 1
    a, b = find_ab(1.0, 0.5)
    table = pow_table(b)
    rates = layout.learning_rates(1.0, 200)

    def run(pad: int, n_threads: int) -> tuple[float, np.ndarray]:
        S = np.zeros((2, n, pad), dtype=np.float32)[:, :, :2]
        S[0] = S[1] = init[order]
        next_sample, next_negative = eps.copy(), eps_neg.copy()
        parallel = (np.diff(first) > 1) & (n_threads > 1)
        side = 0
        with threads(n_threads):
            t = time.perf_counter()
            for e in range(200):
                sgd_epoch(
                    pieces, parallel, indptr, indices, first, *lists, eps, eps_neg,
                    next_sample, next_negative, S, side, table, a, b, 1.0,
                    float(rates[e]), float(e), epoch_key(0, e),
                )  # fmt: skip
                side = (side + n_classes) % 2
            seconds = time.perf_counter() - t
        return seconds, S[side].copy()

    for pad in args.pads:  # compile each array layout once
        run(pad, 1)
    print(f"{args.dataset}: {n} cells, {n_classes} colour classes")
    reference = None
    times: dict[tuple[int, int], list[float]] = {}
    for _ in range(args.repeats):
        for n_threads in (2, 1):
            for pad in args.pads:
                seconds, Y = run(pad, n_threads)
                reference = Y if reference is None else reference
                same = np.array_equal(Y, reference)
                times.setdefault((pad, n_threads), []).append(seconds)
                print(f"  stride {pad:2d}, {n_threads} threads: {seconds:6.2f} s  same={same}")
    for pad in args.pads:
        one, two = (statistics.median(times[pad, t]) for t in (1, 2))
        print(f"stride {pad:2d}: 1 thread {one:.2f} s, 2 threads {two:.2f} s, {one / two:.2f}x")


if __name__ == "__main__":
    main()
