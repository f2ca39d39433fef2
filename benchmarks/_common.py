"""Shared pieces of the benchmarks: datasets (cached), fresh-process runs, memory and quality.

Datasets (all offline): scanpy's bundled ``pbmc68k_reduced`` (700 cells, its ``X_pca``), CBMC
(8,617 cells from ``data/``, normalise-total + log1p + PCA 50), MNIST 70k (from
``../shared/data``, PCA 50), a random 50k subsample of it, and ``gauss50k``: a 50-D Gaussian
mixture of 20 clusters of unequal sizes (500-5,000) and spreads, 50,000 points. The prepared
representation and the graph are cached in ``.bench_cache/`` so that both sides run on the same
graph.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".bench_cache"
SHARED = ROOT.parent / "shared" / "data"
DATASETS = ("pbmc68k", "cbmc", "mnist50k", "gauss50k", "mnist70k")


def representation(name: str) -> np.ndarray:
    """The (n_obs, n_pcs) float32 representation of a benchmark dataset (cached)."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"{name}_rep.npy"
    if path.exists():
        return np.load(path)
    if name == "pbmc68k":
        import scanpy as sc

        X = sc.datasets.pbmc68k_reduced().obsm["X_pca"]
    elif name == "cbmc":
        import anndata as ad
        import scanpy as sc

        a = ad.read_h5ad(ROOT / "data" / "cbmc_citeseq_8617x500.h5ad")
        sc.pp.normalize_total(a)
        sc.pp.log1p(a)
        sc.pp.pca(a, n_comps=50, random_state=0)
        X = a.obsm["X_pca"]
    elif name.startswith("mnist"):
        from sklearn.decomposition import PCA

        m = np.load(_mnist_path())
        X = PCA(50, random_state=0).fit_transform(m["X"].astype(np.float32) / 255)
        if name == "mnist50k":
            X = X[np.sort(np.random.default_rng(0).choice(X.shape[0], 50_000, replace=False))]
    elif name == "gauss50k":
        X = gaussian_mixture()
    else:
        raise ValueError(name)
    X = np.ascontiguousarray(X, dtype=np.float32)
    np.save(path, X)
    return X


def gaussian_mixture(
    n: int = 50_000, k: int = 20, dim: int = 50, seed: int = 0, *, return_labels: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``k`` Gaussian clusters in ``dim``-D, sizes proportional to 1..k, unequal spreads
    (and, with ``return_labels``, each point's cluster)."""
    rng = np.random.default_rng(seed)
    sizes = np.arange(1, k + 1, dtype=np.float64)
    sizes = np.floor(sizes / sizes.sum() * n).astype(int)
    sizes[-1] += n - sizes.sum()
    centres = rng.normal(0.0, 4.0, size=(k, dim))
    spreads = rng.uniform(0.5, 2.0, size=k)
    parts = [
        c + s * rng.normal(size=(m, dim)) for c, s, m in zip(centres, spreads, sizes, strict=True)
    ]
    order = rng.permutation(n)
    X = np.concatenate(parts)[order]
    if return_labels:
        return X, np.repeat(np.arange(k), sizes)[order]
    return X


def scale_mixture(n: int, clusters: int = 20, dim: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """``benchmarks/scale.py``'s data: ``n`` points in ``dim``-D around ``clusters`` centres
    N(0, 4^2) per coordinate, unit noise, cluster of each point uniform at random, seed 0;
    returns (X float32, labels). Also serves ``e2e.py``'s ``mix200k``, ``knn_sizing.py`` and
    ``knn_stages.py``."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=4.0, size=(clusters, dim)).astype(np.float32)
    labels = rng.integers(clusters, size=n)
    X = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        X[start:stop] = centres[labels[start:stop]] + rng.normal(size=(stop - start, dim))
    return X, labels


def aniso_mixture(n: int, d: int = 60, c: int = 30) -> np.ndarray:
    """``n`` float32 points in ``d``-D from ``c`` Gaussians with random full covariances
    (``N(0,1)/sqrt(d)`` matrices scaled by U(0.5, 2)), centres N(0, 3^2), cluster of each point
    uniform at random, seed 5: a set no kNN or layout setting was tuned on (``knn_stages.py
    --data aniso``, ``e2e.py``'s ``aniso100k``)."""
    rng = np.random.default_rng(5)
    labels = rng.integers(c, size=n)
    X = np.empty((n, d), dtype=np.float32)
    for k in range(c):
        rows = np.flatnonzero(labels == k)
        A = rng.normal(size=(d, d)) / np.sqrt(d) * rng.uniform(0.5, 2)
        X[rows] = rng.normal(scale=3.0, size=d) + rng.normal(size=(rows.size, d)) @ A
    return X


def branch_tree(n: int, d: int = 50, latent: int = 10, branches: int = 15) -> np.ndarray:
    """``n`` float32 points in ``d``-D along a random tree of ``branches`` segments, a
    differentiation-like set: each segment starts at a uniform point of an earlier one (the
    first at the origin) and runs U(3, 8) in a random direction of a ``latent``-D space; a
    point picks a segment with probability proportional to its length times U(0.5, 2), a place
    along it uniformly, latent noise N(0, 0.3^2); the latent space is mapped to ``d``-D by an
    ``N(0, 1)/sqrt(latent)`` matrix, plus N(0, 0.1^2) noise per coordinate. Seed 11. Made for
    ``e2e.py``'s ``branch150k`` after every kNN and layout rule was set: tuned on by nothing."""
    rng = np.random.default_rng(11)
    starts = np.zeros((branches, latent))
    steps = np.empty((branches, latent))
    for b in range(branches):
        if b:
            parent = rng.integers(b)
            starts[b] = starts[parent] + rng.uniform() * steps[parent]
        u = rng.normal(size=latent)
        steps[b] = u / np.linalg.norm(u) * rng.uniform(3, 8)
    weight = np.linalg.norm(steps, axis=1) * rng.uniform(0.5, 2, size=branches)
    seg = rng.choice(branches, size=n, p=weight / weight.sum())
    Z = (
        starts[seg]
        + rng.uniform(size=(n, 1)) * steps[seg]
        + rng.normal(scale=0.3, size=(n, latent))
    )
    M = rng.normal(size=(latent, d)) / np.sqrt(latent)
    return (Z @ M + rng.normal(scale=0.1, size=(n, d))).astype(np.float32)


#: Code for :func:`run_fresh` that imports :func:`scale_mixture` (the subprocess runs in ROOT).
IMPORT_MIXTURE = "sys.path.insert(0, 'benchmarks')\nfrom _common import scale_mixture\n"


def _mnist_path() -> Path:
    for p in (SHARED / "mnist_70k.npz", ROOT / "data" / "mnist_70k.npz"):
        if p.exists():
            return p
    msg = "mnist_70k.npz not found in ../shared/data or data/"
    raise FileNotFoundError(msg)


def graph_path(name: str) -> Path:
    """An .h5ad with ``obsm['X_pca']`` and annumap's neighbours graph (exact kNN, k=15), cached."""
    path = CACHE / f"{name}_graph.h5ad"
    if not path.exists():
        import anndata as ad

        import annumap

        X = representation(name)
        a = ad.AnnData(np.zeros((X.shape[0], 1), dtype=np.float32))
        a.obsm["X_pca"] = X
        annumap.pp.neighbors(a, n_neighbors=15, use_rep="X_pca", transformer="exact")
        a.write_h5ad(path)
    return path


PEAK_HELPERS = textwrap.dedent(
    """
    import json, os, sys, time, warnings
    warnings.filterwarnings("ignore")

    def _status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
        return 0

    def reset_peak():
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        return _status("VmRSS:")

    def peak():
        return _status("VmHWM:")
    """
)


def run_fresh(code: str, env: dict[str, str] | None = None, timeout: float = 3600) -> dict:
    """Run ``code`` in a new Python process; it must print one JSON object as its last line."""
    full = PEAK_HELPERS + textwrap.dedent(code)
    proc = subprocess.run(
        [sys.executable, "-c", full],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def quality(
    X: np.ndarray, Y: np.ndarray, graph, a: float, b: float, *, n_sub: int = 5000, knn_pres=None
) -> dict:
    """kNN preservation (k=15, all points), trustworthiness (k=15, on a fixed subsample of
    ``n_sub`` points) and the fuzzy cross-entropy of ``Y`` against ``graph``. ``knn_pres``
    replaces annumap's ``knn_preservation`` (same signature), e.g. by a tree search in low-D."""
    from sklearn.manifold import trustworthiness

    from annumap._core.metrics import fuzzy_cross_entropy, knn_preservation

    knn_preservation = knn_pres or knn_preservation
    sub = np.arange(X.shape[0])
    if X.shape[0] > n_sub:
        sub = np.sort(np.random.default_rng(0).choice(X.shape[0], n_sub, replace=False))
    return {
        "knn_pres": knn_preservation(X, Y, 15),
        "trust": float(trustworthiness(X[sub], Y[sub], n_neighbors=15)),
        "fuzzy_ce": fuzzy_cross_entropy(graph, Y, a, b),
    }


def machine() -> str:
    """One line naming the machine the figures come from."""
    import platform

    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def saved(name: str) -> dict:
    """The payload of ``benchmarks/results/<name>.json`` (empty where there is none)."""
    path = ROOT / "benchmarks" / "results" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save(name: str, payload: dict) -> Path:
    """Write results to ``benchmarks/results/<name>.json``."""
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1))
    return path
