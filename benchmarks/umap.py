"""tl.umap: annumap vs scanpy (umap-learn) on the same cached graph, side by side.

Run (from the repository root, with the ``test`` extra installed; ~25 min on 2 cores)::

    .venv/bin/python benchmarks/umap.py                      # all datasets
    .venv/bin/python benchmarks/umap.py --datasets pbmc68k cbmc --repeats 3

For each dataset (pbmc68k_reduced 700, CBMC 8.6k, MNIST 50k subsample, MNIST 70k; PCA 50 and
annumap's exact 15-NN graph, the same for both sides):

* **warm**: one process; both sides called once to compile, then alternately annumap with 2
  threads, scanpy, annumap with 1 thread, ``--repeats`` times; medians and ratios
  (scanpy / annumap, > 1 means annumap is faster). Both use their default spectral init and the
  default epochs (500 up to 10k cells, 200 above). scanpy's layout runs single-threaded because
  it passes a seed to umap-learn.
* **cold**: a fresh process per side: the first call (numba's on-disk cache present) and a
  second call in the same process.
* **peak memory**: in the same fresh process, the peak RSS increase during the second call
  (``/proc/self/clear_refs`` resets the high-water mark before it), i.e. the memory of the
  computation itself; the first call's increase also holds one-off costs such as loading numba
  and the compiled kernels (scanpy imports numba at ``import scanpy``, annumap on first use) and
  is recorded as ``peak_first`` in the JSON.
* **quality** of the last warm run: kNN preservation (k=15, vs the PCA space), trustworthiness
  (k=15, 5,000-point subsample) and fuzzy cross-entropy (lower is better).

Results go to ``benchmarks/results/umap.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

# this file is called umap.py: keep its folder off sys.path so that `import umap` finds umap-learn
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]


def _load_common():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_common", _HERE / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_c = _load_common()
DATASETS, graph_path, machine, quality, run_fresh, save = (
    _c.DATASETS, _c.graph_path, _c.machine, _c.quality, _c.run_fresh, _c.save
)  # fmt: skip


def warm(name: str, repeats: int) -> dict:
    import anndata as ad
    import scanpy as sc

    import annumap

    warnings.filterwarnings("ignore")
    a = ad.read_h5ad(graph_path(name))
    small = a[:300].copy()
    annumap.pp.neighbors(small, use_rep="X_pca")
    annumap.tl.umap(small, maxiter=5)  # compile / load caches
    sc.tl.umap(small, maxiter=5)
    times: dict[str, list[float]] = {"annumap_2t": [], "scanpy": [], "annumap_1t": []}
    out = {}
    for _ in range(repeats):
        for side in times:
            b = a.copy()
            t = time.perf_counter()
            if side == "scanpy":
                sc.tl.umap(b)
            else:
                annumap.tl.umap(b, n_jobs=2 if side == "annumap_2t" else 1)
            times[side].append(time.perf_counter() - t)
            out[side] = b.obsm["X_umap"]
    G = a.obsp["connectivities"]
    X = a.obsm["X_pca"]
    pa = a.copy()
    annumap.tl.umap(pa, maxiter=1)
    ab = pa.uns["umap"]["params"]["a"], pa.uns["umap"]["params"]["b"]
    res = {"n_obs": a.n_obs, "times": times}
    res["median"] = {k: statistics.median(v) for k, v in times.items()}
    res["quality"] = {
        "annumap": quality(X, out["annumap_2t"], G, *ab),
        "scanpy": quality(X, out["scanpy"], G, *ab),
    }
    res["same_1t_2t"] = bool(np.array_equal(out["annumap_1t"], out["annumap_2t"]))
    return res


COLD = """
t0 = time.perf_counter()
import anndata as ad
{imp}
t_import = time.perf_counter() - t0
a = ad.read_h5ad({path!r})
b = a.copy()
base = reset_peak()
t = time.perf_counter(); {call}; first = time.perf_counter() - t
peak_first = peak() - base
base = reset_peak()
t = time.perf_counter(); {call2}; second = time.perf_counter() - t
peak_inc = peak() - base
print(json.dumps({{"import": t_import, "first": first, "second": second, "peak_inc": peak_inc,
                  "peak_first": peak_first}}))
"""

SIDES = {
    "annumap": ("import annumap", "annumap.tl.umap(a)", "annumap.tl.umap(b)"),
    "scanpy": ("import scanpy as sc", "sc.tl.umap(a)", "sc.tl.umap(b)"),
}


def cold(name: str) -> dict:
    path = str(graph_path(name))
    res = {}
    for side, (imp, call, call2) in SIDES.items():
        res[side] = run_fresh(COLD.format(imp=imp, path=path, call=call, call2=call2))
    return res


def table(results: dict) -> str:
    lines = [
        "| dataset | n | annumap 2t (s) | annumap 1t (s) | scanpy (s) | speed-up 2t | speed-up 1t "
        "| cold first - warm (s) | peak MB annumap / scanpy | kNN pres. a / s | trust. a / s "
        "| fuzzy CE a / s |",
        "|" + "---|" * 12,
    ]
    for name, r in results.items():
        m, q, c = r["median"], r["quality"], r["cold"]
        qa, qs = q["annumap"], q["scanpy"]
        lines.append(
            f"| {name} | {r['n_obs']} | {m['annumap_2t']:.2f} | {m['annumap_1t']:.2f} "
            f"| {m['scanpy']:.2f} | {m['scanpy'] / m['annumap_2t']:.1f}x "
            f"| {m['scanpy'] / m['annumap_1t']:.1f}x "
            f"| {c['annumap']['first'] - c['annumap']['second']:+.2f} "
            f"| {c['annumap']['peak_inc'] / 2**20:.0f} / {c['scanpy']['peak_inc'] / 2**20:.0f} "
            f"| {qa['knn_pres']:.3f} / {qs['knn_pres']:.3f} "
            f"| {qa['trust']:.4f} / {qs['trust']:.4f} "
            f"| {qa['fuzzy_ce'] / qs['fuzzy_ce']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {}
    for name in args.datasets:
        print(f"[{name}] warm ...", file=sys.stderr, flush=True)
        r = warm(name, args.repeats)
        print(f"[{name}] cold ...", file=sys.stderr, flush=True)
        r["cold"] = cold(name)
        results[name] = r
        print(table({name: r}).splitlines()[-1], file=sys.stderr, flush=True)
    path = Path(__file__).resolve().parent / "results" / "umap.json"
    if path.exists():  # keep the datasets not re-run this time
        import json

        old = json.loads(path.read_text()).get("results", {})
        results = {**old, **results}
    save("umap", {"machine": machine(), "results": results})
    print(f"Machine: {machine()}\n")
    print(table(results))
    print("\n(fuzzy CE column: annumap's cross-entropy / scanpy's; < 1 is better.)")


if __name__ == "__main__":
    main()
