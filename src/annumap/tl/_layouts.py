"""The layout backends of :func:`annumap.tl.umap`, by ``method`` name.

Each backend takes ``(graph, init, *, a, b, n_epochs, alpha, gamma, negative_sample_rate, seed,
n_jobs, callback, progress, data)`` and returns ``(embedding, extras)``: a float32
(n_obs, n_components) array and a dict of extra, h5ad-serialisable entries for
``.uns[key]`` (empty for most methods). ``data`` is a zero-argument callable returning the
representation the neighbours were computed on (or None). Backends import heavy dependencies
inside themselves and must raise before ``tl.umap`` writes anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["LAYOUTS", "preflight", "run_layout"]


def _numba_layout(graph, init, *, data=None, **kwargs) -> tuple[np.ndarray, dict[str, Any]]:
    from .._core.layout import optimize_layout

    del data
    return optimize_layout(graph, init, **kwargs), {}


def _cupy_layout(
    graph, init, *, data=None, n_jobs=None, callback=None, **kwargs
) -> tuple[np.ndarray, dict[str, Any]]:
    """The experimental GPU layout (:mod:`annumap._core.gpu` on CuPy); imports CuPy lazily."""
    from .._core import gpu

    del data, n_jobs  # the device decides its own parallelism
    xp = gpu.cupy_namespace()  # ImportError / RuntimeError before any work
    on_host = None
    if callback is not None:

        def on_host(epoch, n_epochs, Y):
            return callback(epoch, n_epochs, gpu.to_numpy(xp, Y))

    return gpu.optimize_layout_xp(graph, init, callback=on_host, xp=xp, **kwargs), {}


def _rapids_layout(graph, init, **kwargs) -> tuple[np.ndarray, dict[str, Any]]:
    """The ``method='rapids'`` of ehrapy: an alias of ``'cupy'`` (its preflight warns)."""
    return _cupy_layout(graph, init, **kwargs)


def _parametric_layout(graph, init, **kwargs) -> tuple[np.ndarray, dict[str, Any]]:
    """An MLP encoder trained on the graph (:mod:`annumap._core.parametric`), kept in extras."""
    from .._core.parametric import parametric_layout

    return parametric_layout(graph, init, **kwargs)


#: method name -> backend
LAYOUTS: dict[str, Callable[..., tuple[np.ndarray, dict[str, Any]]]] = {
    "umap": _numba_layout,
    "cupy": _cupy_layout,
    "rapids": _rapids_layout,
    "parametric": _parametric_layout,
}


def _cupy_available() -> None:
    from .._core import gpu

    gpu.cupy_namespace()


def _rapids_deprecated() -> None:
    import warnings

    warnings.warn(
        "method='rapids' is an alias of method='cupy' (annumap's own GPU layout, not "
        "rapids-singlecell/cuML) and will be removed; pass method='cupy'.",
        FutureWarning,
        stacklevel=4,  # _rapids_deprecated <- preflight <- tl.umap <- the caller
    )
    _cupy_available()


#: method name -> a check run while ``tl.umap`` validates, before any computation (so that a
#: missing optional dependency fails fast, not after the initialisation)
PREFLIGHT: dict[str, Callable[[], None]] = {
    "cupy": _cupy_available,
    "rapids": _rapids_deprecated,
}


def preflight(method: str) -> None:
    """Raise now if ``method`` cannot run here (e.g. no CuPy or no CUDA device)."""
    check = PREFLIGHT.get(method)
    if check is not None:
        check()


def run_layout(method: str, graph, init, **kwargs) -> tuple[np.ndarray, dict[str, Any]]:
    """Run the backend registered for ``method``."""
    return LAYOUTS[method](graph, init, **kwargs)
