"""annumap's NN-descent backend: accuracy against scikit-learn, determinism for any thread count."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import annumap
from annumap._core import knn as knn_mod
from annumap._core.knn import choose_backend, query_knn
from annumap._core.knn._nndescent import nndescent_knn, nndescent_query_knn

from .conftest import blobs


def _brute(X, k, metric="euclidean", Y=None):
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric=metric).fit(X)
    return nn.kneighbors(X if Y is None else Y)


def _recall(found, true):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, true, strict=True)])


@pytest.fixture(scope="module")
def data():
    """6,000 points in 12 overlapping 20-D clusters (hard enough that recall is not trivial)."""
    X, _ = blobs(6000, 20, centers=12, seed=3, spread=2.0)
    return X


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "correlation"])
def test_recall_against_sklearn_brute_force(data, metric):
    idx, dist = nndescent_knn(data, 15, metric=metric, random_state=0)
    _, true_i = _brute(data, 15, metric)
    assert (idx[:, 0] == np.arange(data.shape[0])).all() and (dist[:, 0] == 0).all()
    assert _recall(idx[:, 1:], true_i[:, 1:]) >= 0.95
    assert (np.diff(dist, axis=1) >= 0).all()
    # the returned distances are the true ones of the returned neighbours (float64-measured)
    from sklearn.metrics import pairwise_distances

    for r in range(0, data.shape[0], 97):
        X64 = data.astype(np.float64)
        ref = pairwise_distances(X64[r : r + 1], X64[idx[r]], metric=metric)[0]
        ref[0] = 0.0
        np.testing.assert_allclose(dist[r], ref, rtol=1e-6, atol=1e-6)


def test_bit_identical_for_one_and_two_threads_and_seed_matters(data):
    a = nndescent_knn(data, 15, random_state=7, n_jobs=1)
    b = nndescent_knn(data, 15, random_state=7, n_jobs=2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = nndescent_knn(data, 15, random_state=8, n_jobs=2)
    assert not np.array_equal(a[0], c[0])  # the seed reaches the trees and the samples


def test_four_threads_in_a_fresh_process_give_the_same_graph(data, tmp_path):
    """NUMBA_NUM_THREADS=4 in a child process, so that 4 threads really run on any machine."""
    np.save(tmp_path / "X.npy", data)
    code = (
        "import numpy as np, json, sys\n"
        "from annumap._core.knn._nndescent import nndescent_knn\n"
        f"X = np.load({str(tmp_path / 'X.npy')!r})\n"
        "i, d = nndescent_knn(X, 15, random_state=7, n_jobs=4)\n"
        f"np.save({str(tmp_path / 'i.npy')!r}, i); np.save({str(tmp_path / 'd.npy')!r}, d)\n"
        "import numba; print(json.dumps(numba.config.NUMBA_NUM_THREADS))\n"
    )
    env = {**os.environ, "NUMBA_NUM_THREADS": "4"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert json.loads(out.stdout.strip().splitlines()[-1]) == 4
    a = nndescent_knn(data, 15, random_state=7, n_jobs=1)
    np.testing.assert_array_equal(np.load(tmp_path / "i.npy"), a[0])
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), a[1])


def test_recall_on_high_intrinsic_dimension():
    """50-D isotropic clusters (the hard case of benchmarks/scale.py): NN-descent's sizing.

    With 15 candidates and 4 extra heap slots recall was 0.82 here (0.74 at 200k points, 0.5
    at 1M); the sizing of :func:`nndescent_settings` lifts it above 0.93.
    """
    X, _ = blobs(10_000, 50, centers=2, seed=0, spread=4.0)
    idx, _ = nndescent_knn(X, 15, random_state=0)
    rows = np.arange(0, X.shape[0], 5)
    _, true_i = _brute(X, 15, Y=X[rows])
    assert _recall(idx[rows, 1:], true_i[:, 1:]) >= 0.93


def test_transposes_do_not_depend_on_the_chunk_count():
    """The reverse graph and the candidate transposes are split by target range for threads."""
    from annumap._core.knn._nndescent import _transpose

    rng = np.random.default_rng(0)
    n, K = 1000, 7
    heap = rng.integers(-1, n, size=(n, K)).astype(np.int32)
    flag = rng.integers(0, 2, size=(n, K)).astype(np.uint8)
    count = rng.integers(0, K + 1, size=n).astype(np.int64)
    places = np.empty((n, 0), np.uint8)
    results = []
    for n_chunks in (1, 2, 5, 64):
        rev = np.empty(n + 1, np.int64), np.empty(n * K, np.int32), np.empty(n * K, np.uint8)
        _transpose(heap, np.full(n, K, np.int64), flag, *rev, n_chunks)
        tr = np.empty(n + 1, np.int64), np.empty(n * K, np.int32), np.empty(n * K, np.int8)
        _transpose(np.maximum(heap, 0), count, places, *tr, n_chunks)
        results.append([a[: rev[0][-1]] for a in rev[1:]] + [rev[0]]
                       + [a[: tr[0][-1]] for a in tr[1:]] + [tr[0]])  # fmt: skip
    for other in results[1:]:
        for x, y in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(x, y)
    src, src_flag, ptr, mem, pos, tptr = results[0]
    lists = np.maximum(heap, 0)
    for v in (0, 17, 999):
        # the reverse lists: v lists u once per slot of u holding v, ascending in u, with its flag
        expected = [(u, flag[u, s]) for u in range(n) for s in range(K) if heap[u, s] == v]
        span = slice(ptr[v], ptr[v + 1])
        got = list(zip(src[span].tolist(), src_flag[span].tolist(), strict=True))
        assert got == expected
        # the transposes: the rows listing v among their first count[u] entries, and the place
        expected = [(u, t) for u in range(n) for t in range(count[u]) if lists[u, t] == v]
        span = slice(tptr[v], tptr[v + 1])
        got = list(zip(mem[span].tolist(), pos[span].tolist(), strict=True))
        assert got == expected


def test_duplicates_and_tiny_inputs():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 5)).astype(np.float32)
    X = np.vstack([base, base, base])  # every point three times
    idx, dist = nndescent_knn(X, 6, random_state=0, settings={"n_iters": 10})
    assert (idx[:, 0] == np.arange(X.shape[0])).all()
    # the two copies of each point are at distance 0 and come right after it
    assert (dist[:, 1:3] == 0).all()
    twins = np.sort(idx[:, 1:3], axis=1)
    own = np.arange(X.shape[0]) % 300
    np.testing.assert_array_equal(twins % 300, np.stack([own, own], axis=1))
    # fewer points than a leaf: one leaf, the search is exact
    small = rng.normal(size=(20, 3)).astype(np.float32)
    i2, _ = nndescent_knn(small, 20)
    _, true_i = _brute(small, 20)
    np.testing.assert_array_equal(np.sort(i2, axis=1), np.sort(true_i, axis=1))


def test_query_search_recall_and_determinism(data):
    ref, query = data[:5000], data[5000:]
    i1, d1 = nndescent_query_knn(ref, query, 15, random_state=1, n_jobs=1)
    i2, d2 = nndescent_query_knn(ref, query, 15, random_state=1, n_jobs=2)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(d1, d2)
    assert (i1 < 5000).all() and (np.diff(d1, axis=1) >= 0).all()
    _, true_i = _brute(ref, 15, Y=query)
    assert _recall(i1, true_i) >= 0.95
    idx, _, backend = query_knn(ref, query, 15, backend="nndescent", random_state=1)
    assert backend == "nndescent"
    np.testing.assert_array_equal(idx, i1)


def test_automatic_choice():
    assert choose_backend(3000, 50, "euclidean", is_sparse=False) == "exact"
    assert choose_backend(10_000, 50, "euclidean", is_sparse=False) == "exact"
    assert choose_backend(70_000, 50, "euclidean", is_sparse=False) == "nndescent"
    assert choose_backend(70_000, 50, "cosine", is_sparse=False) == "nndescent"
    assert choose_backend(70_000, 50, "manhattan", is_sparse=False) == "pynndescent"
    assert choose_backend(3000, 50, "manhattan", is_sparse=False) == "exact"
    assert choose_backend(2_000_000, 20_000, "euclidean", is_sparse=True) == "pynndescent"
    # the query search uses the same rule: few queries against a large reference stay exact
    assert choose_backend(70_000, 50, "euclidean", is_sparse=False, n_query=100) == "exact"
    assert choose_backend(70_000, 50, "euclidean", is_sparse=False, n_query=20_000) == "nndescent"


def test_pp_neighbors_auto_path_is_thread_independent(monkeypatch, data):
    """With the threshold lowered the automatic choice is NN-descent on 6,000 cells."""
    import anndata as ad

    monkeypatch.setattr(knn_mod, "EXACT_MAX_WORK", 1e6)
    monkeypatch.setattr(knn_mod, "EXACT_MIN_ROWS", 100)
    graphs = []
    for n_jobs in (1, 2):
        a = ad.AnnData(data.copy())
        annumap.pp.neighbors(a, n_neighbors=15, random_state=3, n_jobs=n_jobs)
        assert a.uns["neighbors"]["params"]["knn_backend"] == "nndescent"
        graphs.append(a)
    for key in ("distances", "connectivities"):
        x, y = graphs[0].obsp[key], graphs[1].obsp[key]
        np.testing.assert_array_equal(x.indptr, y.indptr)
        np.testing.assert_array_equal(x.indices, y.indices)
        np.testing.assert_array_equal(x.data, y.data)
    # explicit choice, and the transform's query search follows the same rule
    b = ad.AnnData(data.copy())
    annumap.pp.neighbors(b, n_neighbors=15, random_state=3, transformer="nndescent")
    assert (b.obsp["distances"] != graphs[0].obsp["distances"]).nnz == 0
    _, _, backend = query_knn(data[:5000], data[5000:], 15)
    assert backend == "nndescent"


def _estimate(X, settings=None):
    """The search's recall estimate and refinement, and the true recall of its heaps."""
    from annumap._core.knn._nndescent import _descent, _search_matrix, nndescent_settings

    conf = {**nndescent_settings(X.shape[0], 15), **(settings or {})}
    S = _search_matrix(X, "euclidean")
    heap_idx, _, stats = _descent(S, 14, X.shape[0] - 1, n_targets=X.shape[0],
                                          random_state=0, settings=conf)  # fmt: skip
    _, true_i = _brute(X, 15)
    found = np.mean([np.intersect1d(h, t).size / 14 for h, t in zip(heap_idx, true_i[:, 1:],
                                                                    strict=True)])  # fmt: skip
    return stats, found


def test_the_recall_check_refines_only_where_the_light_search_falls_short():
    """Easy data (low intrinsic dimension) stop after the light search; 50-D isotropic
    clusters fall below the target and are refined. The estimate (256 rows) is the true
    recall of the heaps within a few points either way."""
    rng = np.random.default_rng(0)
    easy = (rng.normal(size=(8000, 4)) @ rng.normal(size=(4, 30))).astype(np.float32)
    stats, found = _estimate(easy)
    assert not stats["refined"] and len(stats["recall"]) == 1
    assert stats["recall"][0] >= 0.97 and abs(stats["recall"][0] - found) < 0.03
    hard, _ = blobs(8000, 50, centers=2, seed=0, spread=4.0)
    stats, found = _estimate(hard)
    assert stats["refined"] and stats["recall"][0] < 0.97
    assert stats["recall"][1] > stats["recall"][0] + 0.03
    assert abs(stats["recall"][1] - found) < 0.03


def test_forced_refinement_improves_and_a_zero_target_skips_it(data):
    none, found_none = _estimate(data, {"target_recall": 0.0})
    always, found_always = _estimate(data, {"target_recall": 1.01})
    assert not none["refined"] and always["refined"]
    # the same light search, cut short where the target is out of its reach
    assert always["history"] == none["history"][: len(always["history"])]
    assert found_always > found_none


@pytest.mark.parametrize(
    ("history", "short"),
    [
        ([0.1, 0.5], False),  # too few iterations to see the trend
        ([0.1, 0.5, 0.98], False),  # at the target
        ([0.1, 0.8, 0.95], False),  # gains 0.7, 0.15: 0.04 more to come, 0.99
        ([0.1, 0.5, 0.7], True),  # gains 0.4, 0.2: 0.2 more to come, 0.90
        ([0.1, 0.2, 0.4], False),  # gains growing: not judged yet
        ([0.5, 0.7, 0.7], True),  # stalled below the target
    ],
)
def test_the_light_search_is_judged_by_its_projected_recall(history, short):
    from annumap._core.knn._nndescent import _falls_short

    assert _falls_short(history, 0.97) is short


def test_hard_data_switch_to_the_heavy_sizing_early():
    """Where the light search's gains show it cannot reach the target, the heavy sizing takes
    over at once; the result is as good as after the full light search."""
    hard, _ = blobs(8000, 50, centers=2, seed=0, spread=4.0)
    early, found_early = _estimate(hard, {"skip_light_below": 0.0})
    late, found_late = _estimate(hard, {"early_switch": False})
    assert early["refined"] and late["refined"]
    assert not early["skipped_light"] and not late["skipped_light"]
    assert 1 < len(early["history"]) < len(late["history"])
    assert early["history"] == late["history"][: len(early["history"])]
    assert found_early > found_late - 0.01


def test_a_forest_far_from_the_neighbours_skips_the_light_iterations():
    """50-D isotropic clusters: the forest alone finds a tenth of the neighbours, and the heavy
    iterations start from it; data of low intrinsic dimension (forest above the threshold)
    keep the light search. Skipping loses no recall against switching after it."""
    hard, _ = blobs(8000, 50, centers=2, seed=0, spread=4.0)
    skipped, found_skipped = _estimate(hard)
    switched, found_switched = _estimate(hard, {"skip_light_below": 0.0})
    assert skipped["history"][0] < 0.2
    assert skipped["skipped_light"] and skipped["refined"] and len(skipped["history"]) == 1
    assert skipped["history"] == switched["history"][:1]
    assert found_skipped > found_switched - 0.01 and found_skipped > 0.97
    rng = np.random.default_rng(0)
    easy = (rng.normal(size=(8000, 4)) @ rng.normal(size=(4, 30))).astype(np.float32)
    stats, _ = _estimate(easy)
    assert stats["history"][0] >= 0.2 and not stats["skipped_light"] and not stats["refined"]


def test_the_refinement_stops_where_its_gains_level_off():
    """The refinement's iterations end once their projected remaining gain is below
    ``stop_gain``: the same iterations as without the rule, cut short, at nearly their
    recall."""
    hard, _ = blobs(8000, 50, centers=2, seed=0, spread=4.0)
    stopped, found_stopped = _estimate(hard)
    full, found_full = _estimate(hard, {"stop_gain": 0.0})
    a, b = stopped["refine_history"], full["refine_history"]
    assert 3 <= len(a) < len(b) and a == b[: len(a)]
    assert found_stopped > found_full - 0.005


@pytest.mark.parametrize(
    ("history", "rest"),
    [
        ([0.1, 0.5], None),  # one gain: no trend yet
        ([0.1, 0.2, 0.4], None),  # gains growing
        ([0.5, 0.7, 0.7], 0.0),  # stalled
        ([0.1, 0.5, 0.7], 0.2),  # gains 0.4, 0.2: ratio 1/2, 0.2 to come
        ([0.6, 0.9, 0.93], 0.1 * 0.03 / 0.9),  # gains 0.3, 0.03: ratio 1/10
        ([0.3, 0.8, 0.99], 0.01),  # the series' 0.15 to come, but the recall stops at 1
        ([0.3, 0.8, 1.0], 0.0),
    ],
)
def test_the_remaining_gain_is_projected_from_the_last_two(history, rest):
    from annumap._core.knn._nndescent import _levels_off, _projected_gain

    got = _projected_gain(history)
    if rest is None:
        assert got is None and not _levels_off(history, 0.005)
    else:
        assert got == pytest.approx(rest)
        assert _levels_off(history, rest + 1e-9) and not _levels_off(history, rest - 1e-9)


@pytest.mark.parametrize(
    "conf",
    [{"target_recall": 0.0}, {"target_recall": 1.01}, {"skip_light_below": 1.01}],
    ids=["light", "refined", "skipped"],
)
def test_both_stages_are_bit_identical_for_one_and_two_threads(data, conf):
    a = nndescent_knn(data, 15, random_state=3, n_jobs=1, settings=conf)
    b = nndescent_knn(data, 15, random_state=3, n_jobs=2, settings=conf)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
