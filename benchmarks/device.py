"""The device run: ``tl.umap(method='cupy')`` against ``method='umap'``, and the CPU layout's
thread scaling, in one process; one JSON of results.

Run (from the repository root; ``benchmarks/device.sh`` calls it on the device machine)::

    python3 benchmarks/device.py --prepare           # here: cache MNIST's PCA and labels
    python3 benchmarks/device.py --out device.json   # on the device (about 5 min)
    python3 benchmarks/device.py --small             # dry run: 5k-cell graphs, 1 repeat, 50 epochs

Datasets:

* ``mnist70k``: MNIST's 70,000 images, PCA 50 (``benchmarks/_common.py``), annumap's exact
  15-NN graph (``_common.graph_path``, built on first use), labels for the global-shape
  statistics. ``--prepare`` writes ``.bench_cache/mnist70k_rep.npy`` and
  ``.bench_cache/mnist70k_labels.npy`` here, which the device run gets carried (the MNIST file
  itself lives outside the repository). ``--small``: a random 5,000-image subsample and its own
  exact graph.
* ``synth1m``: 1,000,000 points of a 5-D Gaussian mixture (20 clusters, sizes proportional to
  1..20, unequal spreads; ``_common.gaussian_mixture``), their exact 15 nearest neighbours
  (self included) from ``scipy.spatial.cKDTree`` (cheap in 5-D: no kNN heuristics), and
  annumap's fuzzy simplicial set of that table (``annumap._core.fuzzy.fuzzy_simplicial_set``),
  stored as ``pp.neighbors`` stores it. ``--small``: 5,000 points.

For each dataset, ``method='umap'`` (all cores) and ``method='cupy'``: a cold call (the first in
this process on that dataset; with fresh numba and CuPy kernel caches when ``device.sh`` sets
``NUMBA_CACHE_DIR``/``CUPY_CACHE_DIR``, MNIST's cold call includes the compilation, the later
datasets' do not), then ``--repeats`` warm calls, alternating the two
methods; each CuPy call ends with ``cupy.cuda.Device().synchronize()`` inside the timed
region. A method's warm calls stop once its calls on a dataset took ``--method-budget`` seconds
(default 90; at least one warm call), so that the CPU side of the 1M graph fits the device's
time; the JSON lists every call. MNIST uses the default spectral initialisation (``tl.umap``
end to end); synth1m uses ``init_pos='random'`` for both (the same positions: the layout is what
is timed, not an eigensolver on a 1M graph). Default epochs (200 above 10,000 cells;
``--small``: 50).

Per method: the times, the quality of the last run (``_common.quality``: kNN preservation,
trustworthiness on 5,000 points, fuzzy cross-entropy; above 100,000 points the kNN
preservation's neighbours come from ``cKDTree`` instead of a brute-force search, the same exact
neighbours), ``annumap._core.metrics.global_shape`` against the labels and ``X``, and whether
every call with the one seed gave the bit-identical embedding (``reproducible``).

Order: MNIST, the thread scaling (on MNIST), then synth1m, the longest part, last.

Thread scaling: ``method='umap'`` with ``n_jobs`` 1, 2, 4, 8, 16 (capped at ``os.cpu_count()``)
on the MNIST graph (``--scaling-on synth1m`` for the other), ``--scaling-repeats`` calls each
(median; one call when a call takes over a quarter of ``--method-budget``), the speed-up
against ``n_jobs=1`` and whether each embedding equals ``n_jobs=1``'s bit for bit.

Without CuPy or a CUDA device every CuPy part is skipped with a printed ``SKIP`` line; the rest
runs. The JSON (``--out``, default ``$OUT/device.json`` or ``out/device.json``) is rewritten
after every section, so a run cut short keeps what it finished; a device run's JSON is then
copied to ``benchmarks/results/device.json`` by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
import _common as _c  # noqa: E402

warnings.filterwarnings("ignore")

CACHE = _c.CACHE


def log(*parts) -> None:
    print(*parts, flush=True)


# ---- CuPy and the device


def find_cupy():
    """``(cupy, info)`` or ``(None, reason)``; uses annumap's own check."""
    from annumap._core import gpu

    try:
        cp = gpu.cupy_namespace()
    except (ImportError, RuntimeError) as err:
        return None, str(err)
    props = cp.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    info = {
        "name": name,
        "memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
        "cupy": cp.__version__,
        "cuda_runtime": int(cp.cuda.runtime.runtimeGetVersion()),
        "cuda_driver": int(cp.cuda.runtime.driverGetVersion()),
    }
    return cp, info


# ---- datasets


def prepare() -> None:
    """Cache MNIST 70k's PCA representation and its labels in ``.bench_cache/`` (run here)."""
    X = _c.representation("mnist70k")
    y = np.load(_c._mnist_path())["y"]
    np.save(CACHE / "mnist70k_labels.npy", y)
    for p in ("mnist70k_rep.npy", "mnist70k_labels.npy"):
        log(f"wrote {CACHE / p} ({(CACHE / p).stat().st_size / 2**20:.1f} MiB)")
    assert X.shape[0] == y.shape[0]


def mnist_labels() -> np.ndarray:
    path = CACHE / "mnist70k_labels.npy"
    if path.exists():
        return np.load(path)
    return np.load(_c._mnist_path())["y"]


def _neighbors_adata(X: np.ndarray):
    import anndata as ad

    import annumap

    a = ad.AnnData(np.zeros((X.shape[0], 1), dtype=np.float32))
    a.obsm["X_pca"] = X
    annumap.pp.neighbors(a, n_neighbors=15, use_rep="X_pca", transformer="exact")
    return a


def load_mnist(small: bool):
    import anndata as ad

    y = mnist_labels()
    if small:
        X = _c.representation("mnist70k")
        sub = np.sort(np.random.default_rng(0).choice(X.shape[0], 5000, replace=False))
        return _neighbors_adata(np.ascontiguousarray(X[sub])), y[sub]
    a = ad.read_h5ad(_c.graph_path("mnist70k"))
    return a, y


def load_synth(n: int):
    """The synthetic graph: exact 15-NN (cKDTree) of a 5-D Gaussian mixture, fuzzy set."""
    import anndata as ad
    from scipy.spatial import cKDTree

    from annumap._core.fuzzy import fuzzy_simplicial_set, knn_to_csr

    k = 15
    X, labels = _c.gaussian_mixture(n=n, k=20, dim=5, seed=0, return_labels=True)
    X = X.astype(np.float32)
    t = time.perf_counter()
    dist, idx = cKDTree(X).query(X, k=k, workers=-1)
    idx = idx.astype(np.int64)
    # cKDTree may list a duplicate point before the point itself: put self in column 0
    self_pos = np.argmax(idx == np.arange(n)[:, None], axis=1)
    rows = np.flatnonzero(self_pos != 0)
    idx[rows, self_pos[rows]] = idx[rows, 0]
    idx[rows, 0] = rows
    dist = dist.astype(np.float32)
    conn = fuzzy_simplicial_set(idx, dist)
    dists = knn_to_csr(idx, dist, n)
    a = ad.AnnData(np.zeros((n, 1), dtype=np.float32))
    a.obsm["X_pca"] = X
    a.obsp["connectivities"] = conn
    a.obsp["distances"] = dists
    a.uns["neighbors"] = {
        "connectivities_key": "connectivities",
        "distances_key": "distances",
        "params": {"n_neighbors": k, "method": "umap", "metric": "euclidean",
                   "random_state": 0, "knn_backend": "exact", "use_rep": "X_pca"},
    }  # fmt: skip
    log(f"  synthetic graph: {n} points, {conn.nnz} edges, {time.perf_counter() - t:.1f} s")
    return a, labels


# ---- quality


def _knn_pres_tree(X: np.ndarray, Y: np.ndarray, k: int = 15) -> float:
    from scipy.spatial import cKDTree

    a = cKDTree(X).query(X, k=k + 1, workers=-1)[1][:, 1:]
    b = cKDTree(Y).query(Y, k=k + 1, workers=-1)[1][:, 1:]
    hits = 0
    for s in range(0, X.shape[0], 100_000):
        aa, bb = a[s : s + 100_000], b[s : s + 100_000]
        hits += int((aa[:, :, None] == bb[:, None, :]).any(axis=2).sum())
    return hits / (X.shape[0] * k)


def quality(adata, labels, X) -> dict:
    from annumap._core.metrics import global_shape

    Y = adata.obsm["X_umap"]
    G = adata.obsp["connectivities"]
    p = adata.uns["umap"]["params"]
    if X.shape[0] <= 100_000:
        q = _c.quality(X, Y, G, p["a"], p["b"])
    else:  # brute force on 1M points is too slow; a tree gives the same exact neighbours
        q = _c.quality(X, Y, G, p["a"], p["b"], knn_pres=_knn_pres_tree)
        q["knn_pres_search"] = "cKDTree (exact)"
    q.update(global_shape(Y, labels, X))
    return q


# ---- timings


def one_call(adata, method: str, cp, init, maxiter, n_jobs=None) -> tuple[float, np.ndarray]:
    import annumap

    t = time.perf_counter()
    annumap.tl.umap(adata, method=method, init_pos=init, maxiter=maxiter, random_state=0,
                    n_jobs=n_jobs, progress=False)  # fmt: skip
    if method == "cupy":
        cp.cuda.Device().synchronize()
    return time.perf_counter() - t, np.array(adata.obsm["X_umap"])


def compare(name: str, adata, labels, cp, args, init) -> dict:
    X = np.asarray(adata.obsm["X_pca"], dtype=np.float32)
    methods = ["umap"] + (["cupy"] if cp is not None else [])
    if cp is None:
        log(f"  SKIP {name} method='cupy': no CuPy or no CUDA device")
    out: dict = {"n_obs": int(adata.n_obs), "init": init, "maxiter": args.maxiter}
    runs: dict = {m: {"cold_s": None, "warm_s": [], "Y": []} for m in methods}
    for m in methods:
        t, Y = one_call(adata, m, cp, init, args.maxiter)
        runs[m]["cold_s"], runs[m]["Y"] = t, [Y]
        log(f"  {name} {m:4s} cold {t:8.2f} s")
    for r in range(args.repeats):
        for m in methods:
            spent = runs[m]["cold_s"] + sum(runs[m]["warm_s"])
            if r > 0 and spent > args.method_budget:
                log(f"  {name} {m:4s} warm {r} left out: {spent:.0f} s spent > --method-budget")
                continue
            t, Y = one_call(adata, m, cp, init, args.maxiter)
            runs[m]["warm_s"].append(t)
            runs[m]["Y"].append(Y)
            log(f"  {name} {m:4s} warm {r} {t:8.2f} s")
    for m in methods:
        Ys = runs[m].pop("Y")
        adata.obsm["X_umap"] = Ys[-1]
        q = quality(adata, labels, X)
        runs[m]["quality"] = q
        log(f"  {name} {m:4s} quality " + ", ".join(f"{k}={v:.4g}" for k, v in q.items()
                                                     if isinstance(v, float)))  # fmt: skip
        if m == "cupy":
            runs[m]["pool_gib"] = round(cp.get_default_memory_pool().total_bytes() / 2**30, 3)
        runs[m]["reproducible"] = bool(all(np.array_equal(Ys[0], Y) for Y in Ys[1:]))
        runs[m]["warm_median_s"] = statistics.median(runs[m]["warm_s"])
        log(f"  {name} {m:4s} same seed, bit-identical over {len(Ys)} calls: "
            f"{runs[m]['reproducible']}")  # fmt: skip
    out["methods"] = runs
    if cp is not None:
        out["cpu_over_gpu_warm"] = runs["umap"]["warm_median_s"] / runs["cupy"]["warm_median_s"]
        log(f"  {name} warm speed-up cupy vs umap: {out['cpu_over_gpu_warm']:.2f}x")
    return out


def scaling(name: str, adata, args, init) -> dict:
    cpus = os.cpu_count() or 1
    counts = [n for n in (1, 2, 4, 8, 16) if n <= cpus]
    out: dict = {"dataset": name, "n_obs": int(adata.n_obs), "init": init, "cpu_count": cpus,
                 "n_jobs": {}}  # fmt: skip
    ref = None
    for n in counts:
        times, Y = [], None
        for _ in range(args.scaling_repeats):
            t, Y = one_call(adata, "umap", None, init, args.maxiter, n_jobs=n)
            times.append(t)
            if t > args.method_budget / 4:  # one call is enough at this size
                break
        ref = Y if ref is None else ref
        med = statistics.median(times)
        out["n_jobs"][str(n)] = {"times_s": times, "median_s": med,
                                 "identical_to_1": bool(np.array_equal(Y, ref))}  # fmt: skip
    base = out["n_jobs"]["1"]["median_s"]
    for n, row in out["n_jobs"].items():
        row["speedup"] = base / row["median_s"]
        log(
            f"  scaling {name} n_jobs={n:>2s} {row['median_s']:8.2f} s  speed-up "
            f"{row['speedup']:5.2f}  bit-identical to n_jobs=1: {row['identical_to_1']}"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="dry run: 5k cells, 1 repeat, 50 epochs")
    ap.add_argument("--prepare", action="store_true", help="cache MNIST's PCA and labels, exit")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=None, help="warm calls per method (3)")
    ap.add_argument("--scaling-repeats", type=int, default=None, help="calls per n_jobs (2)")
    ap.add_argument("--scaling-on", choices=["mnist70k", "synth1m"], default="mnist70k")
    ap.add_argument("--maxiter", type=int, default=None, help="epochs (default: tl.umap's)")
    ap.add_argument(
        "--method-budget",
        type=float,
        default=90.0,
        help="seconds per method and dataset after which no further warm call starts "
        "(at least one warm call always runs)",
    )
    ap.add_argument("--skip-synth", action="store_true", help="leave out the 1M-cell graph")
    args = ap.parse_args()
    if args.prepare:
        prepare()
        return
    if args.small:
        args.repeats = args.repeats or 1
        args.scaling_repeats = args.scaling_repeats or 1
        args.maxiter = args.maxiter or 50
    args.repeats = args.repeats or 3
    args.scaling_repeats = args.scaling_repeats or 2
    out_path = args.out or (Path(os.environ["OUT"]) / "device.json" if os.environ.get("OUT")
                            else _c.ROOT / "out" / "device.json")  # fmt: skip
    import annumap

    cp, info = find_cupy()
    if cp is None:
        log(f"SKIP every CuPy part: {info}")
    else:
        log(f"device: {info}")
    res: dict = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": _c.machine(),
        "gpu": info if cp is not None else None,
        "gpu_skip_reason": None if cp is not None else info,
        "annumap": annumap.__version__,
        "python": platform.python_version(),
        "small": args.small,
        "repeats": args.repeats,
        "numba_threads": None,
        "datasets": {},
    }
    import numba

    res["numba_threads"] = int(numba.config.NUMBA_NUM_THREADS)

    def write():
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(res, indent=1))

    t0 = time.perf_counter()
    graphs = {}
    names = {"mnist70k": "mnist5k" if args.small else "mnist70k",
             "synth1m": "synth5k" if args.small else "synth1m"}  # fmt: skip
    log(f"== {names['mnist70k']}")
    graphs["mnist70k"] = load_mnist(args.small)
    res["datasets"][names["mnist70k"]] = compare(names["mnist70k"], *graphs["mnist70k"], cp, args,
                                                 "spectral")  # fmt: skip
    write()

    def run_scaling(key: str) -> None:
        log(f"== thread scaling on {names[key]}")
        init = "spectral" if key == "mnist70k" else "random"
        res["scaling"] = scaling(names[key], graphs[key][0], args, init)
        write()

    if args.scaling_on == "mnist70k" or args.skip_synth:
        run_scaling("mnist70k")
    if not args.skip_synth:
        log(f"== {names['synth1m']}")
        graphs["synth1m"] = load_synth(5000 if args.small else 1_000_000)
        res["datasets"][names["synth1m"]] = compare(names["synth1m"], *graphs["synth1m"], cp,
                                                    args, "random")  # fmt: skip
        write()
    if args.scaling_on == "synth1m" and not args.skip_synth:
        run_scaling("synth1m")
    res["total_s"] = time.perf_counter() - t0
    write()
    log(f"wrote {out_path} ({res['total_s']:.0f} s)")


if __name__ == "__main__":
    main()
