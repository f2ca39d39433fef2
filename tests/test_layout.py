"""The layout kernel: umap-learn's schedule, pruning and init (oracles), thread independence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

import annumap
from annumap._core import _kernels, layout
from annumap._core._numba import njit
from annumap._core.curve import find_ab
from annumap._core.fuzzy import fuzzy_simplicial_set
from annumap._core.knn._exact import exact_knn


def _graph(
    n: int, dim: int = 10, k: int = 15, seed: int = 0
) -> tuple[np.ndarray, sparse.csr_matrix]:
    """One connected Gaussian cloud with a few overlapping lobes, and its UMAP graph."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0.0, 1.5, size=(4, dim))
    X = (centres[rng.integers(4, size=n)] + rng.normal(size=(n, dim))).astype(np.float32)
    idx, dist = exact_knn(X, k)
    return X, fuzzy_simplicial_set(idx, dist)


# ---------------------------------------------------------------- oracles: umap-learn 0.5.12


def test_learning_rates_match_umap_learn(monkeypatch):
    umap_layouts = pytest.importorskip("umap.layouts")
    seen: list[float] = []

    def record(*args):
        seen.append(float(args[12]))  # alpha, umap-learn 0.5's single-epoch signature

    monkeypatch.setattr(umap_layouts, "_get_optimize_layout_euclidean_single_epoch_fn",
                        lambda parallel: record)  # fmt: skip
    Y = np.zeros((3, 2), dtype=np.float32)
    edges = np.array([0, 1], dtype=np.int32)
    n_epochs = 7
    umap_layouts.optimize_layout_euclidean(
        Y, Y, edges, edges[::-1].copy(), n_epochs, 3, np.ones(2), 1.0, 1.0,
        np.array([1, 2, 3], dtype=np.int64), initial_alpha=0.8,
    )  # fmt: skip
    np.testing.assert_allclose(layout.learning_rates(0.8, n_epochs), seen, rtol=1e-12)
    assert seen[0] == seen[1] == 0.8  # epochs 0 and 1 both run at alpha


@pytest.mark.parametrize("n_epochs", [5, 50])
def test_pruning_and_spectral_init_match_umap_learn(monkeypatch, n_epochs):
    """The edges the layout samples and the spectral init, against simplicial_set_embedding."""
    umap_ = pytest.importorskip("umap.umap_")
    from annumap._core.init import rescale, spectral_init

    X, G = _graph(600)
    captured = {}

    def capture(head_embedding, tail_embedding, head, tail, n_epochs_, *args, **kwargs):
        captured.update(init=head_embedding.copy(), head=head.copy(), tail=tail.copy())
        return head_embedding

    monkeypatch.setattr(umap_, "optimize_layout_euclidean", capture)
    a, b = find_ab(1.0, 0.5)
    umap_.simplicial_set_embedding(
        X, G.copy(), 2, 1.0, a, b, 1.0, 5, n_epochs, "spectral", np.random.RandomState(0),
        "euclidean", {}, False, {}, False,
    )  # fmt: skip
    P = layout.prepare_graph(G, n_epochs).tocoo()
    ours = set(zip(P.row.tolist(), P.col.tolist(), strict=True))
    theirs = set(zip(captured["head"].tolist(), captured["tail"].tolist(), strict=True))
    assert ours == theirs
    if n_epochs <= 10:  # umap-learn cuts at max / 500 here, not max / n_epochs
        assert P.nnz > (G.data >= G.data.max() / n_epochs).sum()
    rng = np.random.default_rng(0)
    Y = rescale(spectral_init(layout.prepare_graph(G, n_epochs), 2, rng), rng)
    for d in range(2):  # eigenvectors agree up to sign
        r = np.corrcoef(Y[:, d], captured["init"][:, d])[0, 1]
        assert abs(r) > 0.99, (d, r)


def test_umap_uses_the_pruned_graph_for_its_spectral_init(monkeypatch):
    from annumap._core import init as core_init

    X, _ = _graph(300)
    adata = annumap.pp.neighbors(ad.AnnData(X), n_neighbors=15, transformer="exact", copy=True)
    seen = []
    real = core_init.spectral_init

    def spy(graph, *args, **kwargs):
        seen.append(sparse.csr_matrix(graph).nnz)
        return real(graph, *args, **kwargs)

    monkeypatch.setattr(core_init, "spectral_init", spy)
    annumap.tl.umap(adata, maxiter=5)
    C = adata.obsp["connectivities"]
    assert seen == [layout.prepare_graph(C, 5).nnz]


# ---------------------------------------------------------------- colouring


def test_colour_classes_share_no_edge_and_no_neighbour():
    _, G = _graph(2000)
    P = layout.prepare_graph(G, 200)
    order, bounds = layout.colour_classes(P)
    assert np.array_equal(np.sort(order), np.arange(P.shape[0]))
    colour = np.empty(P.shape[0], dtype=np.int64)
    for c in range(bounds.size - 1):
        colour[order[bounds[c] : bounds[c + 1]]] = c
    A = (P != 0).astype(np.int64)
    near = (A + A @ A).tocoo()  # pairs at distance 1 or 2
    off = near.row != near.col
    assert not np.any(colour[near.row[off]] == colour[near.col[off]])
    assert bounds.size - 1 >= np.diff(P.indptr).max() + 1  # a vertex and its neighbours differ


# ---------------------------------------------------------------- the kernel against its semantics


@njit
def _powers(x, table):  # pragma: no cover - numba
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = _kernels._pow(x[i], table)
    return out


@pytest.mark.parametrize("b", [0.5, 0.79, 1.0, 1.334, 1.93, 3.0])
def test_pow_table_power_is_within_2e6_of_numpy(b):
    x = np.exp(np.random.default_rng(0).uniform(-60, 20, 100_000)).astype(np.float32)
    exact = x.astype(np.float64) ** b
    got = _powers(x, _kernels.pow_table(b)).astype(np.float64)
    normal = (exact > 1e-37) & (exact < 3e38)
    assert np.max(np.abs(got[normal] / exact[normal] - 1.0)) < 2e-6
    assert np.all(got[exact <= 1e-37] < 1e-36)


def _serial_reference(G, init, a, b, n_epochs, seed, alpha):
    """The documented semantics, one update at a time in Python: rows class by class, both
    ends of a due edge move, negatives read from the positions as the class started, all seen
    from the position after the positive sample, their steps summed."""
    from annumap._core._rng import draw_indices, epoch_key

    P0 = layout.prepare_graph(G, n_epochs)
    order, bounds = layout.colour_classes(P0)
    P = P0[order][:, order].tocsr()
    P.sort_indices()
    eps, eps_neg = layout.sampling_schedule(P.data, 5.0)
    next_sample, next_negative = eps.copy(), eps_neg.copy()
    Y = init[order].astype(np.float64)
    n = Y.shape[0]
    rates = layout.learning_rates(alpha, n_epochs)

    def clip(v):
        return np.clip(v, -4.0, 4.0)

    for epoch in range(n_epochs):
        key = epoch_key(seed, epoch)
        for c in range(bounds.size - 1):
            snap = Y.copy()
            for i in range(bounds[c], bounds[c + 1]):
                for e in range(P.indptr[i], P.indptr[i + 1]):
                    if next_sample[e] > epoch:
                        continue
                    j = P.indices[e]
                    diff = Y[i] - Y[j]
                    d2 = diff @ diff
                    if d2 > 0:
                        g = clip(-2 * a * b * d2 ** (b - 1) / (a * d2**b + 1) * diff) * rates[epoch]
                        Y[i] += g
                        Y[j] -= g
                    next_sample[e] += eps[e]
                    n_neg = int((epoch - next_negative[e]) / eps_neg[e])
                    if n_neg <= 0:
                        continue
                    draws = draw_indices(key, np.full(n_neg, e), np.arange(n_neg), n)
                    step = np.zeros_like(Y[i])
                    for k in draws.astype(np.int64):
                        if k == i:
                            continue
                        diff = Y[i] - snap[k]  # every negative seen from the same Y[i]
                        d2 = diff @ diff
                        if d2 > 0:
                            step += (
                                clip(2 * b / ((0.001 + d2) * (a * d2**b + 1)) * diff) * rates[epoch]
                            )
                    Y[i] += step
                    next_negative[e] += n_neg * eps_neg[e]
    out = np.empty_like(Y)
    out[order] = Y
    return out


@pytest.mark.parametrize("dim", [2, 3])
def test_kernel_equals_the_serial_sweep_it_documents(dim):
    """Double buffers, row pairs, pieces and copy lists change nothing but the speed."""
    _, G = _graph(400, k=10)
    a, b = find_ab(1.0, 0.5)
    init = np.random.default_rng(1).uniform(0, 10, size=(400, dim)).astype(np.float32)
    # a small learning rate: at alpha = 1 the first epochs are chaotic, and float32 against
    # float64 rounding alone grows to differences of several units within 4 epochs
    ref = _serial_reference(G, init, a, b, 6, seed=3, alpha=0.1)
    saved = layout.PARALLEL_MIN_VERTICES
    layout.PARALLEL_MIN_VERTICES = 16  # several pieces per class
    try:
        got = layout.optimize_layout(G, init, a=a, b=b, n_epochs=6, alpha=0.1, seed=3, n_jobs=2)
    finally:
        layout.PARALLEL_MIN_VERTICES = saved
    assert np.abs(got - init).max() > 0.1  # it moved
    np.testing.assert_allclose(got, ref, atol=1e-3)


def test_copy_lists_name_what_the_previous_class_owned_and_this_one_does_not():
    from annumap._core._kernels import copy_lists

    _, G = _graph(600, k=10)
    P0 = layout.prepare_graph(G, 200)
    order, bounds = layout.colour_classes(P0)
    P = P0[order][:, order].tocsr()
    P.sort_indices()
    indptr, indices = P.indptr.astype(np.int64), P.indices.astype(np.int64)
    ptr, idx, own_ptr, own_idx = copy_lists(bounds, indptr, indices)
    n_classes = bounds.size - 1

    def owned(c):
        rows = np.arange(bounds[c], bounds[c + 1])
        return set(rows) | set(indices[indptr[rows[0]] : indptr[rows[-1] + 1]])

    for c in range(n_classes):
        prev, mine = owned((c - 1) % n_classes), owned(c)
        assert list(idx[ptr[c] : ptr[c + 1]]) == sorted(prev - mine)
        for i in range(bounds[c], bounds[c + 1]):
            row = indices[indptr[i] : indptr[i + 1]]
            assert list(own_idx[own_ptr[i] : own_ptr[i + 1]]) == [j for j in row if j in prev]


# ---------------------------------------------------------------- thread independence

_THREADS = """
import hashlib, json, sys
import anndata as ad
import numpy as np
import anndata as ad
import annumap
from annumap._core import layout
from annumap._core.knn._exact import exact_knn
from annumap._core.fuzzy import fuzzy_simplicial_set

n, min_class = {n}, {min_class}
layout.PARALLEL_MIN_VERTICES = min_class
layout._Chooser.PROBE_EVERY = 2  # both modes in alternate epochs, whatever the load
rng = np.random.default_rng(0)
centres = rng.normal(0.0, 1.5, size=(4, 10))
X = (centres[rng.integers(4, size=n)] + rng.normal(size=(n, 10))).astype(np.float32)
a = ad.AnnData(X)
annumap.pp.neighbors(a, n_neighbors=15, transformer="exact")
P = layout.prepare_graph(a.obsp["connectivities"], 30)
sizes = np.diff(layout.colour_classes(P)[1])
out = {{"edges": int(P.nnz), "parallel_classes": int((sizes >= min_class).sum())}}
query = ad.AnnData(X[:200] + 0.05)
for dim in (2, 3):
    for n_jobs in (1, 2, 4):
        b = annumap.tl.umap(a, maxiter=30, n_components=dim, n_jobs=n_jobs, copy=True)
        h = hashlib.sha256(np.ascontiguousarray(b.obsm["X_umap"]).tobytes()).hexdigest()
        out[f"umap{{dim}}_{{n_jobs}}"] = h
        if dim == 2:
            q = annumap.tl.umap_transform(query, b, n_jobs=n_jobs, copy=True)
            out[f"transform_{{n_jobs}}"] = hashlib.sha256(q.obsm["X_umap"].tobytes()).hexdigest()
print(json.dumps(out))
"""


def _run_threads(n: int, min_class: int) -> dict:
    env = {**os.environ, "NUMBA_NUM_THREADS": "4"}  # more threads than this machine's 2 cores
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_THREADS.format(n=n, min_class=min_class))],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("n", "min_class"),
    [
        pytest.param(3000, 16, id="small-classes-parallel"),
        pytest.param(
            30_000, layout.PARALLEL_MIN_VERTICES, id="default-cut-off", marks=pytest.mark.slow
        ),
    ],
)
def test_same_embedding_for_1_2_and_4_threads(n, min_class):
    """Both kernels and the transform, on graphs where colour classes really run in parallel."""
    out = _run_threads(n, min_class)
    assert out["parallel_classes"] > 0 and out["edges"] > 50_000
    for key in ("umap2", "umap3", "transform"):
        assert out[f"{key}_1"] == out[f"{key}_2"] == out[f"{key}_4"], key
