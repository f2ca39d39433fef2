"""The array-namespace (GPU) layout: run on NumPy here, on CuPy by the ``gpu``-marked tests.

What is checked on NumPy: the scatter shim and the fixed-point sum; the negative samples equal
the numba kernel's stream; each epoch equals a plain-loop reference of umap-learn's "move both
ends" update; the schedule equals the numba layout's; determinism; quality vs scanpy through
``tl.umap(method='cupy')`` (CuPy replaced by NumPy); the error paths leave the AnnData unchanged.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from scipy import sparse

import annumap
from annumap._core import gpu
from annumap._core._rng import draw_indices, epoch_key
from annumap._core.curve import find_ab
from annumap._core.layout import optimize_layout, prepare_graph

from .conftest import assert_adata_equal, make_adata

A, B = find_ab(1.0, 0.5)


@pytest.fixture
def numpy_as_cupy(monkeypatch):
    """Make ``method='cupy'`` run the same code on NumPy (no CuPy or device needed)."""
    monkeypatch.setattr(gpu, "cupy_namespace", lambda: np)


@pytest.fixture
def graph_adata():
    adata = make_adata(300, 8, centers=3, seed=3)
    annumap.pp.neighbors(adata, n_neighbors=10)
    return adata


@pytest.fixture(scope="module")
def small_graph():
    adata = make_adata(60, 5, centers=2, seed=11)
    annumap.pp.neighbors(adata, n_neighbors=6)
    return adata.obsp["connectivities"]


def _knn_preservation(X, Y, k=15):
    from annumap._core.metrics import knn_preservation

    return knn_preservation(np.asarray(X, dtype=np.float32), Y, k)


# ---- the scatter shim and the fixed-point sum


def test_gpu_scatter_shim_exact_with_repeated_indices():
    rng = np.random.default_rng(0)
    target = rng.integers(-50, 50, size=(7, 3)).astype(np.float32)
    index = np.array([0, 3, 3, 3, 6, 0, 1, 3, 6, 6, 6])
    values = rng.integers(-8, 8, size=(index.size, 3)).astype(np.float32) / 4  # exact in float32
    expected = target.astype(np.float64)
    for m, i in enumerate(index):
        expected[i] += values[m]
    gpu.scatter_add(np, target, index, values)
    np.testing.assert_array_equal(target, expected.astype(np.float32))


def test_gpu_fixed_point_sum_is_exact_and_signed():
    rng = np.random.default_rng(1)
    steps = rng.uniform(-4, 4, size=(500, 2)).astype(np.float32)
    steps[::7] = np.float32(2.0**-20)  # small steps survive (resolution 2**-32)
    index = rng.integers(0, 5, size=500)
    acc = np.zeros((5, 2), dtype=np.uint64)
    gpu.scatter_add(np, acc, index, gpu._to_fixed(np, steps))
    got = gpu._from_fixed(np, acc)
    want = np.zeros((5, 2))
    np.add.at(want, index, steps.astype(np.float64))
    np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-7, atol=1e-9)
    # the sum does not depend on the order of the additions
    order = rng.permutation(500)
    acc2 = np.zeros((5, 2), dtype=np.uint64)
    gpu.scatter_add(np, acc2, index[order], gpu._to_fixed(np, steps[order]))
    np.testing.assert_array_equal(acc, acc2)


def test_gpu_shim_rejects_other_modules():
    with pytest.raises(TypeError, match="xp must be the numpy or the cupy module"):
        gpu.scatter_add(sparse, np.zeros(3), np.array([0]), np.ones(1))
    with pytest.raises(TypeError, match="xp must be"):
        gpu.optimize_layout_xp(
            sparse.eye(3, format="csr"), np.zeros((3, 2)), a=A, b=B, n_epochs=2, xp=types
        )


# ---- the same stream and schedule as the numba layout


def test_gpu_negative_draws_equal_the_numba_kernel():
    from annumap._core._kernels import _negative

    rng = np.random.default_rng(2)
    edges = rng.integers(0, 2**40, size=200)
    draws = rng.integers(0, 2**16, size=200)
    for seed, epoch, n in [(0, 0, 700), (7, 123, 3), (2**40 + 5, 9, 1_000_003)]:
        key = epoch_key(seed, epoch)
        got = draw_indices(key, edges, draws, n, np)
        want = [_negative(key, int(e), int(t), n) for e, t in zip(edges, draws, strict=True)]
        np.testing.assert_array_equal(got, want)
        assert got.min() >= 0 and got.max() < n


def _attraction(diff):
    d2 = diff @ diff
    if d2 == 0:
        return np.zeros_like(diff)
    return np.clip(-2 * A * B * d2 ** (B - 1) / (1 + A * d2**B) * diff, -4, 4)


def _reference_epoch(G, Y, next_sample, next_negative, eps, eps_neg, lr, epoch, key, gamma=1.0):
    """Plain loops in float64 over the documented two phases, with umap-learn's update rules.

    Phase 1, from the positions at the start of the epoch: each due pair {i, j} takes
    umap-learn's two edge updates, (i, j) then (j, i), each moving both ends by ``lr``. Phase 2,
    from the positions after phase 1 (rounded to float32 as stored): the repulsion of the
    negative samples of every due edge (the numba kernel's draws).
    """
    from annumap._core._kernels import _negative

    n = Y.shape[0]
    Y0 = Y.astype(np.float64)
    Y1 = Y0.copy()
    due = next_sample <= epoch
    pairs = []
    for i in range(n):
        for e in range(G.indptr[i], G.indptr[i + 1]):
            if not due[e]:
                continue
            j = G.indices[e]
            if i < j:
                back = G.indptr[j] + np.searchsorted(G.indices[G.indptr[j] : G.indptr[j + 1]], i)
                assert due[back]  # both directions are due together
                yi, yj = Y0[i].copy(), Y0[j].copy()
                g = _attraction(yi - yj)  # edge (i, j) moves both ends
                yi, yj = yi + lr * g, yj - lr * g
                g = _attraction(yj - yi)  # then edge (j, i)
                yj, yi = yj + lr * g, yi - lr * g
                Y1[i] += yi - Y0[i]
                Y1[j] += yj - Y0[j]
            next_sample[e] += eps[e]
            n_neg = int((epoch - next_negative[e]) / eps_neg[e])
            for t in range(n_neg):
                k = _negative(key, e, t, n)
                if k != i:
                    pairs.append((i, k))
            if n_neg > 0:
                next_negative[e] += n_neg * eps_neg[e]
    Y1 = Y1.astype(np.float32).astype(np.float64)  # positions are stored in float32
    Y2 = Y1.copy()
    for i, k in pairs:
        diff = Y1[i] - Y1[k]
        d2 = diff @ diff
        if d2 > 0:
            coef = 2 * gamma * B / ((0.001 + d2) * (1 + A * d2**B))
            Y2[i] += lr * np.clip(coef * diff, -4, 4)
    return Y2


def test_gpu_epochs_equal_a_plain_loop_reference(small_graph):
    n_epochs = 40
    G = prepare_graph(small_graph, n_epochs)
    rows, cols, eps, eps_neg = gpu.edge_schedule(G, 5.0)
    ns, nn = eps.copy(), eps_neg.copy()
    ref_ns, ref_nn = eps.copy(), eps_neg.copy()
    Y = np.random.default_rng(4).uniform(0, 10, size=(G.shape[0], 2)).astype(np.float32)
    moved = 0
    for epoch in range(12):
        lr = 1.0 - epoch / n_epochs
        key = epoch_key(5, epoch)
        want = _reference_epoch(G, Y, ref_ns, ref_nn, eps, eps_neg, lr, epoch, key)
        before = Y.copy()
        gpu.sgd_epoch_xp(
            np, rows, cols, eps, eps_neg, ns, nn, Y, a=A, b=B, gamma=1.0, alpha=lr, epoch=epoch,
            key=key,
        )  # fmt: skip
        # float32 vs float64: an ulp of a position, amplified by a short-range repulsion
        np.testing.assert_allclose(Y, want, rtol=0, atol=2e-4)
        assert np.abs(Y - want).mean() < 5e-6
        np.testing.assert_array_equal(ns, ref_ns)
        np.testing.assert_array_equal(nn, ref_nn)
        moved += int(np.any(Y != before))
        Y = want.astype(np.float32)  # no drift between the two
    assert moved >= 10  # the epochs did something


def test_gpu_schedule_equals_the_numba_layout_on_a_matching():
    """Sampling schedule and learning-rate decay equal the numba layout's.

    One edge per vertex and no negative samples, so the numba kernel's edge-by-edge walk and the
    two phases here coincide. At ``alpha = 0.02`` umap-learn's pair update (used here) and a
    plain doubled step agree to 0.003 over the run, so the check holds whichever of the two the
    CPU kernel uses; an epoch's shift in the schedule or the decay moves the result by 0.03.
    """
    n = 40
    w = np.random.default_rng(6).uniform(0.05, 1.0, size=n // 2)
    i = np.arange(0, n, 2)
    G = sparse.csr_matrix(
        (np.concatenate([w, w]), (np.concatenate([i, i + 1]), np.concatenate([i + 1, i]))),
        shape=(n, n),
    )
    init = np.random.default_rng(7).uniform(0, 10, size=(n, 2))
    kwargs = {"a": A, "b": B, "n_epochs": 60, "negative_sample_rate": 0.0, "seed": 3}
    ours = gpu.optimize_layout_xp(G, init, alpha=0.02, **kwargs)
    cpu = optimize_layout(G, init, alpha=0.02, **kwargs)
    assert ours.dtype == np.float32 and ours.shape == (n, 2)
    np.testing.assert_allclose(ours, cpu, rtol=0, atol=0.006)
    assert np.abs(ours - init).max() > 0.1  # pairs moved towards each other


def test_gpu_layout_deterministic_and_inputs_untouched(small_graph):
    init = np.random.default_rng(8).uniform(0, 10, size=(small_graph.shape[0], 2))
    G0, init0 = small_graph.copy(), init.copy()
    runs = [
        gpu.optimize_layout_xp(small_graph, init, a=A, b=B, n_epochs=60, seed=s) for s in (4, 4, 5)
    ]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    assert (small_graph != G0).nnz == 0
    np.testing.assert_array_equal(init, init0)


def test_gpu_layout_edge_cases():
    rng = np.random.default_rng(9)
    empty = sparse.csr_matrix((10, 10), dtype=np.float32)
    init = rng.uniform(0, 10, (10, 3))
    np.testing.assert_allclose(
        gpu.optimize_layout_xp(empty, init, a=1, b=1, n_epochs=5), init, rtol=1e-6
    )
    G = sparse.random(80, 80, density=0.06, random_state=2, format="csr", dtype=np.float32)
    Y = gpu.optimize_layout_xp(G, rng.uniform(0, 10, (80, 3)), a=1.0, b=1.0, n_epochs=30)
    assert Y.shape == (80, 3) and np.isfinite(Y).all()
    coincident = np.zeros((80, 2))  # every distance 0: no force, no NaN
    Y = gpu.optimize_layout_xp(G, coincident, a=A, b=B, n_epochs=10, negative_sample_rate=0)
    np.testing.assert_array_equal(Y, 0.0)
    with pytest.raises(ValueError, match="init has shape"):
        gpu.optimize_layout_xp(G, np.zeros((5, 2)), a=A, b=B, n_epochs=3)


def test_gpu_callback_can_stop(small_graph):
    seen = []

    def cb(epoch, n_epochs, Y):
        seen.append((epoch, n_epochs, type(Y)))
        return epoch == 4

    gpu.optimize_layout_xp(
        small_graph, np.zeros((60, 2)) + np.arange(60)[:, None], a=A, b=B, n_epochs=20,
        callback=cb,
    )  # fmt: skip
    assert seen == [(e, 20, np.ndarray) for e in range(1, 5)]


# ---- tl.umap(method='cupy' | 'rapids')


def test_gpu_method_without_cupy_raises_before_writing(graph_adata, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    before = graph_adata.copy()
    with pytest.raises(ImportError, match=r'pip install "annumap\[gpu-cuda12\]"'):
        annumap.tl.umap(graph_adata, method="cupy", maxiter=5)
    assert_adata_equal(graph_adata, before)
    with (
        pytest.warns(FutureWarning, match="alias of method='cupy'"),
        pytest.raises(ImportError, match="annumap\\[gpu\\]"),
    ):
        annumap.tl.umap(graph_adata, method="rapids", maxiter=5)
    assert_adata_equal(graph_adata, before)


@pytest.mark.parametrize("failure", ["raises", "zero"])
def test_gpu_method_without_device_raises_before_writing(graph_adata, monkeypatch, failure):
    def count():
        if failure == "raises":
            msg = "cudaErrorNoDevice: no CUDA-capable device is detected"
            raise OSError(msg)
        return 0

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=count))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    before = graph_adata.copy()
    with pytest.raises(RuntimeError, match=r"no (usable )?CUDA device"):
        annumap.tl.umap(graph_adata, method="cupy", maxiter=5, key_added="gpu")
    assert_adata_equal(graph_adata, before)


def test_gpu_method_writes_the_scanpy_storage(graph_adata, numpy_as_cupy):
    seen = []

    def cb(epoch, n_epochs, Y):
        seen.append(isinstance(Y, np.ndarray) and Y.shape == (300, 2))
        return epoch == 30

    annumap.tl.umap(graph_adata, method="cupy", maxiter=100, callback=cb)
    Y = graph_adata.obsm["X_umap"]
    assert Y.dtype == np.float32 and Y.shape == (300, 2) and np.isfinite(Y).all()
    assert seen == [True] * 30
    assert graph_adata.uns["umap"]["params"]["method"] == "cupy"
    full = annumap.tl.umap(graph_adata, method="cupy", maxiter=100, copy=True)
    with pytest.warns(FutureWarning, match="method='rapids' is an alias"):
        alias = annumap.tl.umap(graph_adata, method="rapids", maxiter=100, copy=True)
    np.testing.assert_array_equal(alias.obsm["X_umap"], full.obsm["X_umap"])
    # the three blobs stay apart
    labels = graph_adata.obs["label"].cat.codes.to_numpy()
    Y = full.obsm["X_umap"]
    centers = np.array([Y[labels == c].mean(0) for c in range(3)])
    spread = max(Y[labels == c].std(0).mean() for c in range(3))
    gaps = [np.linalg.norm(centers[i] - centers[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 2 * spread


def test_gpu_layout_quality_vs_scanpy_on_pbmc(pbmc, numpy_as_cupy):
    """NumPy run of the GPU layout vs scanpy on the same graph and epochs, mean of 3 seeds.

    One seed moves kNN preservation by about +-0.01 for scanpy and for annumap alike, so the
    thresholds (kNN preservation >= scanpy - 0.01, trustworthiness >= scanpy - 0.005) are
    applied to the means over seeds 0, 1, 2.
    """
    sc = pytest.importorskip("scanpy")
    from sklearn.manifold import trustworthiness

    annumap.pp.neighbors(pbmc)
    X = pbmc.obsm["X_pca"]
    ours, theirs = [], []
    for seed in (0, 1, 2):
        ref = pbmc.copy()
        sc.tl.umap(ref, maxiter=200, random_state=seed)
        out = annumap.tl.umap(pbmc, method="cupy", maxiter=200, random_state=seed, copy=True)
        for Y, into in ((out.obsm["X_umap"], ours), (ref.obsm["X_umap"], theirs)):
            into.append((_knn_preservation(X, Y), trustworthiness(X, Y, n_neighbors=15)))
    (knn_ours, tw_ours), (knn_theirs, tw_theirs) = np.mean(ours, 0), np.mean(theirs, 0)
    assert knn_ours >= knn_theirs - 0.01
    assert tw_ours >= tw_theirs - 0.005


# ---- the real CuPy path (skipped without CuPy and a CUDA device)


@pytest.fixture(scope="module")
def cupy():
    pytest.importorskip("cupy")
    try:
        return gpu.cupy_namespace()
    except RuntimeError as err:
        pytest.skip(str(err))


@pytest.mark.gpu
def test_gpu_cupy_scatter_add_exact_with_repeated_indices(cupy):
    index = np.array([2, 2, 0, 2, 1, 0, 2])
    values = np.arange(14, dtype=np.float32).reshape(7, 2) / 2
    want = np.zeros((3, 2), dtype=np.float32)
    np.add.at(want, index, values)
    target = cupy.zeros((3, 2), dtype=cupy.float32)
    gpu.scatter_add(cupy, target, cupy.asarray(index), cupy.asarray(values))
    np.testing.assert_array_equal(cupy.asnumpy(target), want)
    acc = cupy.zeros((3, 2), dtype=cupy.uint64)
    signed = values - 3.0
    gpu.scatter_add(cupy, acc, cupy.asarray(index), gpu._to_fixed(cupy, cupy.asarray(signed)))
    want_signed = np.zeros((3, 2), dtype=np.float32)
    np.add.at(want_signed, index, signed)
    np.testing.assert_array_equal(cupy.asnumpy(gpu._from_fixed(cupy, acc)), want_signed)


@pytest.mark.gpu
def test_gpu_cupy_draws_equal_numpy(cupy):
    rng = np.random.default_rng(3)
    edges, draws = rng.integers(0, 2**40, 10_000), rng.integers(0, 2**16, 10_000)
    key = epoch_key(11, 17)
    got = draw_indices(key, cupy.asarray(edges), cupy.asarray(draws), 70_000, cupy)
    np.testing.assert_array_equal(cupy.asnumpy(got), draw_indices(key, edges, draws, 70_000))


@pytest.mark.gpu
def test_gpu_cupy_epochs_match_numpy(cupy, small_graph):
    G = prepare_graph(small_graph, 40)
    host = gpu.edge_schedule(G, 5.0)
    dev = [cupy.asarray(v) for v in host]
    state = [host[2].copy(), host[3].copy()]
    dstate = [dev[2].copy(), dev[3].copy()]
    Y = np.random.default_rng(4).uniform(0, 10, size=(G.shape[0], 2)).astype(np.float32)
    for epoch in range(10):
        key, lr = epoch_key(5, epoch), 1.0 - epoch / 40
        kw = {"a": A, "b": B, "gamma": 1.0, "alpha": lr, "epoch": epoch, "key": key}
        Yd = cupy.asarray(Y)
        gpu.sgd_epoch_xp(cupy, *dev, *dstate, Yd, **kw)
        gpu.sgd_epoch_xp(np, *host, *state, Y, **kw)
        np.testing.assert_allclose(cupy.asnumpy(Yd), Y, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(cupy.asnumpy(dstate[0]), state[0])
        np.testing.assert_array_equal(cupy.asnumpy(dstate[1]), state[1])


@pytest.mark.gpu
def test_gpu_cupy_run_to_run_identical(cupy, small_graph):
    init = np.random.default_rng(8).uniform(0, 10, size=(small_graph.shape[0], 2))
    runs = [
        gpu.optimize_layout_xp(small_graph, init, a=A, b=B, n_epochs=100, seed=2, xp=cupy)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert isinstance(runs[0], np.ndarray) and runs[0].dtype == np.float32


@pytest.mark.gpu
def test_gpu_cupy_tl_umap_quality_vs_scanpy(cupy, pbmc):
    sc = pytest.importorskip("scanpy")
    from sklearn.manifold import trustworthiness

    annumap.pp.neighbors(pbmc)
    X = pbmc.obsm["X_pca"]
    ours, theirs = [], []
    for seed in (0, 1, 2):
        ref = pbmc.copy()
        sc.tl.umap(ref, maxiter=200, random_state=seed)
        out = annumap.tl.umap(pbmc, method="cupy", maxiter=200, random_state=seed, copy=True)
        assert out.obsm["X_umap"].dtype == np.float32
        for Y, into in ((out.obsm["X_umap"], ours), (ref.obsm["X_umap"], theirs)):
            into.append((_knn_preservation(X, Y), trustworthiness(X, Y, n_neighbors=15)))
    (knn_ours, tw_ours), (knn_theirs, tw_theirs) = np.mean(ours, 0), np.mean(theirs, 0)
    assert knn_ours >= knn_theirs - 0.01
    assert tw_ours >= tw_theirs - 0.005
