"""The UMAP layout written once against an array module ``xp`` (NumPy or CuPy).

Each epoch works on the edges due in that epoch as whole arrays: gather both ends, compute the
gradients, clip, and scatter-add the steps into the positions. There is no Python loop over
edges or vertices; the only Python loop is over the epochs, as in :mod:`.layout`. NumPy runs it
in the test suite; CuPy runs the same code on a GPU.

Shared with the numba layout (:mod:`.layout`, :mod:`._kernels`): the graph preparation
(:func:`.layout.prepare_graph`), the sampling schedule (:func:`.layout.sampling_schedule`: an
edge of weight ``w`` is due every ``max(w) / w`` epochs, with the same number of negative samples
per due edge), umap-learn's learning rates (:func:`.layout.learning_rates`) and the
counter-based generator of negative samples (:func:`._rng.draw_indices` hashes
``edge << 16 | draw`` under the per-epoch key :func:`._rng.epoch_key`; the edge ids are
positions in this layout's CSR order, so the two layouts do not draw the same vertices).

The attraction of a pair: umap-learn stores each pair as (i, j) and (j, i), samples both in the
same epochs and moves both ends of a sampled edge: i steps by ``g1 = clip(c(r) r)`` along
``r = y_i - y_j`` (and j by ``-g1``), then by ``g2 = clip(c(r2) r2)`` at ``r2 = r + 2 alpha
g1``. Edge (i, j) here moves only i, by ``alpha (g1 + g2)``, and edge (j, i) moves j by the
mirror image. (A plain doubled step ``2 alpha g1`` overshoots while ``alpha`` is near 1.)

Where it differs from the numba kernel, which runs umap-learn's serial updates (each step sees
the previous ones, both ends of an edge move at once) class by class of a graph colouring: here
an epoch runs in two phases, each computed from the positions at the start of the phase.
(1) The attraction of every due edge, from the positions at the start of the epoch, summed per
vertex. (2) The repulsion of every negative sample due, from the positions after phase 1
(coefficient ``2 gamma b / ((0.001 + d^2)(1 + a d^(2b)))``, clipped, step ``alpha``; the sample
does not move, and a draw of the source itself exerts no force as it is at distance 0). Summing
every step from one position overshoots a little: on CBMC its clusters come out somewhat looser
than umap-learn's (median within/between-label distance ratio 0.15 vs 0.10-0.15 over seeds,
coordinate range in umap-learn's; ``benchmarks/look.py``). Its quality is tested against scanpy
and umap-learn (``tests/test_gpu.py``, ``docs/gpu.md``).

Sums are taken in 32.32 fixed point (int64, scatter-added as uint64, which wraps like two's
complement): integer addition is associative, so the result does not depend on the order in which
a GPU's atomic additions land, and a seed reproduces the layout on a given device and library
version. NumPy and CuPy agree to floating-point rounding (``pow`` may differ in the last bit),
not bit for bit.

Memory is O(edges): the graph in CSR order plus, per epoch, arrays over the due edges and their
negative samples.
"""

from __future__ import annotations

import logging
import sys
from types import ModuleType
from typing import Any

import numpy as np
from scipy import sparse

from .._types import LayoutCallback
from ._rng import draw_indices, epoch_key

__all__ = [
    "cupy_namespace",
    "edge_schedule",
    "optimize_layout_xp",
    "scatter_add",
    "sgd_epoch_xp",
    "to_numpy",
]

logger = logging.getLogger("annumap")

#: Fixed-point scale of the summed steps: 2**32 (a resolution of 2.3e-10; a vertex may move by
#: up to 2**31 in one epoch before the int64 accumulator would overflow).
_FIXED_BITS = 32
_INSTALL_HINT = 'pip install "annumap[gpu]"'


def cupy_namespace() -> ModuleType:
    """Import CuPy and check for a CUDA device; returns the ``cupy`` module.

    Raises
    ------
    ImportError
        CuPy is not installed (the message says how to install it).
    RuntimeError
        CuPy is installed but finds no usable CUDA device.
    """
    try:
        import cupy
    except ImportError as err:
        msg = (
            "method='cupy' needs CuPy, which is not installed (or failed to import: "
            f"{err}). Install the GPU extra: {_INSTALL_HINT} (CUDA 12), or use method='umap'."
        )
        raise ImportError(msg) from err
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as err:  # CUDARuntimeError, or a driver/library failure
        msg = f"method='cupy': CuPy found no usable CUDA device ({err}). Use method='umap'."
        raise RuntimeError(msg) from err
    if count < 1:
        msg = "method='cupy': CuPy found no CUDA device. Use method='umap'."
        raise RuntimeError(msg)
    return cupy


def _is_numpy(xp: Any) -> bool:
    return xp is np


def _is_cupy(xp: Any) -> bool:
    return isinstance(xp, ModuleType) and xp.__name__ == "cupy"


def _check_xp(xp: Any) -> None:
    if not (_is_numpy(xp) or _is_cupy(xp)):
        msg = f"xp must be the numpy or the cupy module, got {xp!r}."
        raise TypeError(msg)


def scatter_add(xp: ModuleType, target: Any, index: Any, values: Any) -> None:
    """``target[index[m]] += values[m]`` for every ``m``, in place; repeated indices all add.

    ``numpy.add.at`` for NumPy, ``cupyx.scatter_add`` (atomic additions) for CuPy. ``index``
    selects along the first axis of ``target``; ``values`` has shape
    ``index.shape + target.shape[1:]``.
    """
    _check_xp(xp)
    if _is_numpy(xp):
        np.add.at(target, index, values)
    else:
        import cupyx

        cupyx.scatter_add(target, index, values)


def to_numpy(xp: ModuleType, array: Any) -> np.ndarray:
    """``array`` as a NumPy array on the host (a no-op for NumPy)."""
    _check_xp(xp)
    if _is_numpy(xp):
        return np.asarray(array)
    return xp.asnumpy(array)


def _to_fixed(xp: ModuleType, values: Any) -> Any:
    """float32 steps -> uint64 bit patterns of their int64 fixed-point values."""
    scaled = xp.rint(values.astype(xp.float64) * float(2**_FIXED_BITS))
    return scaled.astype(xp.int64).view(xp.uint64)


def _from_fixed(xp: ModuleType, acc: Any) -> Any:
    """uint64 accumulator (two's complement int64 fixed point) -> float32 steps."""
    return (acc.view(xp.int64).astype(xp.float64) * 2.0**-_FIXED_BITS).astype(xp.float32)


def _gradient_coefficients(xp: ModuleType, d2: Any, a: float, b: float, gamma: float):
    """Attraction and repulsion coefficients of squared distances ``d2`` (0 where ``d2 == 0``)."""
    f32 = xp.float32
    positive = d2 > 0
    safe = xp.where(positive, d2, f32(1.0))
    pb = safe ** f32(b)
    denom = f32(a) * pb + f32(1.0)
    attract = f32(-2.0 * a * b) * (pb / safe) / denom
    repulse = f32(2.0 * gamma * b) / ((f32(0.001) + safe) * denom)
    zero = f32(0.0)
    return xp.where(positive, attract, zero), xp.where(positive, repulse, zero)


def _clipped(xp: ModuleType, coef: Any, diff: Any) -> Any:
    """``clip(coef * diff, -4, 4)`` per component (float32)."""
    return xp.clip(coef[:, None] * diff, -4.0, 4.0).astype(xp.float32, copy=False)


def sgd_epoch_xp(
    xp: ModuleType,
    rows: Any,
    cols: Any,
    epochs_per_sample: Any,
    epochs_per_negative: Any,
    next_sample: Any,
    next_negative: Any,
    Y: Any,
    *,
    a: float,
    b: float,
    gamma: float,
    alpha: float,
    epoch: int,
    key: np.uint64,
) -> None:
    """One epoch on the due edges; updates ``Y`` and the sampling state in place.

    Edge ``e`` (``rows[e] -> cols[e]``, in CSR order) is due when ``next_sample[e] <= epoch``.
    Phase 1, from the positions at the start of the epoch: the source of every due edge takes
    umap-learn's pair update (``alpha (g1 + g2)``, see the module docstring; attraction
    coefficient ``-2ab d^(2(b-1)) / (1 + a d^(2b))``, components clipped to [-4, 4]). Phase 2,
    from the positions after phase 1: the source is pushed away from
    ``trunc((epoch - next_negative[e]) / epochs_per_negative[e])`` negative samples
    ``draw_indices(key, e, 0..n_neg-1, n)``. Steps are summed per vertex in fixed point.
    Coincident points (``d == 0``) exert no force.
    """
    n, dim = Y.shape
    due = xp.nonzero(next_sample <= float(epoch))[0]
    m = int(due.shape[0])
    if m == 0:
        return
    src = rows[due]
    diff = Y[src] - Y[cols[due]]
    d2 = xp.sum(diff * diff, axis=1)
    coef, _ = _gradient_coefficients(xp, d2, a, b, gamma)
    g1 = _clipped(xp, coef, diff)
    diff += xp.float32(2.0 * alpha) * g1  # the pair's difference after umap-learn's first step
    coef, _ = _gradient_coefficients(xp, xp.sum(diff * diff, axis=1), a, b, gamma)
    attract = (g1 + _clipped(xp, coef, diff)) * xp.float32(alpha)
    next_sample[due] += epochs_per_sample[due]

    per_negative = epochs_per_negative[due]
    n_neg = xp.trunc((float(epoch) - next_negative[due]) / per_negative)
    n_neg = xp.maximum(n_neg, 0.0)
    next_negative[due] += n_neg * per_negative
    counts = n_neg.astype(xp.int64)
    ends = xp.cumsum(counts)
    total = int(ends[-1])

    acc = xp.zeros((n, dim), dtype=xp.uint64)
    scatter_add(xp, acc, src, _to_fixed(xp, attract))
    Y += _from_fixed(xp, acc)
    if total == 0:
        return
    flat = xp.arange(total, dtype=xp.int64)
    owner = xp.searchsorted(ends, flat, side="right")  # due-edge position of each draw
    draw = flat - (ends - counts)[owner]
    neg_src = src[owner]
    k = draw_indices(key, due[owner], draw, n, xp).astype(xp.int64)
    diff = Y[neg_src] - Y[k]  # a draw of the source itself has d == 0: no force
    d2 = xp.sum(diff * diff, axis=1)
    _, coef = _gradient_coefficients(xp, d2, a, b, gamma)
    acc[...] = 0
    scatter_add(xp, acc, neg_src, _to_fixed(xp, _clipped(xp, coef, diff) * xp.float32(alpha)))
    Y += _from_fixed(xp, acc)


def edge_schedule(G: sparse.csr_matrix, negative_sample_rate: float):
    """Host arrays over the edges of a prepared CSR graph, in CSR order (the edge ids).

    Returns ``rows``, ``cols`` (int64), ``epochs_per_sample = max(w) / w`` and
    ``epochs_per_negative = epochs_per_sample / negative_sample_rate`` (float64; 1e30, i.e.
    never, when the rate is 0): the numba layout's schedule. The sampling state starts at these
    values (nothing is due in epoch 0, as in umap-learn).
    """
    from .layout import sampling_schedule

    rows = np.repeat(np.arange(G.shape[0], dtype=np.int64), np.diff(G.indptr))
    cols = G.indices.astype(np.int64)
    eps, eps_neg = sampling_schedule(G.data, negative_sample_rate)
    return rows, cols, eps, eps_neg


def optimize_layout_xp(
    graph: sparse.spmatrix,
    init: np.ndarray,
    *,
    a: float,
    b: float,
    n_epochs: int,
    alpha: float = 1.0,
    gamma: float = 1.0,
    negative_sample_rate: float = 5.0,
    seed: int = 0,
    callback: LayoutCallback | None = None,
    progress: bool | None = None,
    xp: ModuleType = np,
) -> np.ndarray:
    """Optimise the embedding of ``graph`` from ``init`` on the array module ``xp``.

    Parameters
    ----------
    graph
        (n, n) non-negative weights (UMAP connectivities); copied, pruned and symmetrised as by
        :func:`annumap._core.layout.prepare_graph`.
    init
        (n, dim) starting positions (host array).
    a, b
        Parameters of the low-dimensional similarity ``1 / (1 + a d^(2b))``.
    n_epochs
        Number of epochs; an edge of weight ``w`` is sampled every ``max(w) / w`` epochs.
    alpha
        Initial learning rate, decayed linearly as umap-learn does
        (:func:`annumap._core.layout.learning_rates`).
    gamma
        Weight of the repulsion.
    negative_sample_rate
        Negative samples per positive sample.
    seed
        Key of the counter-based generator of negative samples.
    callback
        ``callback(epoch, n_epochs, embedding)`` after each epoch, with the live ``xp`` array
        (a CuPy array on the GPU: read it, do not modify it); returning True stops.
    progress
        Show a tqdm bar (None: only in interactive sessions for long runs).
    xp
        ``numpy`` or ``cupy``.

    Returns
    -------
    The embedding, a new float32 NumPy array of shape (n, dim).
    """
    from .layout import _show_progress, learning_rates, prepare_graph

    _check_xp(xp)
    G = prepare_graph(graph, n_epochs)
    n = G.shape[0]
    host = np.array(init, dtype=np.float32, order="C", copy=True)
    if host.ndim != 2 or host.shape[0] != n:
        msg = f"init has shape {host.shape}; the graph has {n} vertices."
        raise ValueError(msg)
    if G.nnz == 0:
        return host
    rows, cols, eps, eps_neg = edge_schedule(G, negative_sample_rate)
    rows_x, cols_x, eps_x, eps_neg_x = (xp.asarray(v) for v in (rows, cols, eps, eps_neg))
    next_sample = eps_x.copy()
    next_negative = eps_neg_x.copy()
    Y = xp.asarray(host)
    a, b, gamma = float(a), float(b), float(gamma)
    rates = learning_rates(alpha, n_epochs)

    bar = None
    if _show_progress(progress, float(G.nnz) * n_epochs):
        from tqdm.auto import tqdm

        bar = tqdm(total=n_epochs, desc="umap layout (xp)", unit="epoch", file=sys.stderr)
    try:
        for epoch in range(n_epochs):
            sgd_epoch_xp(
                xp, rows_x, cols_x, eps_x, eps_neg_x, next_sample, next_negative, Y,
                a=a, b=b, gamma=gamma, alpha=float(rates[epoch]),
                epoch=epoch, key=epoch_key(seed, epoch),
            )  # fmt: skip
            if bar is not None:
                bar.update(1)
            if callback is not None and callback(epoch + 1, n_epochs, Y):
                logger.info("layout: stopped by the callback after epoch %d", epoch + 1)
                break
    finally:
        if bar is not None:
            bar.close()
    return np.ascontiguousarray(to_numpy(xp, Y), dtype=np.float32)
