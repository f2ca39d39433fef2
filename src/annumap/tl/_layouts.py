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

__all__ = ["LAYOUTS", "run_layout"]


def _numba_layout(graph, init, *, data=None, **kwargs) -> tuple[np.ndarray, dict[str, Any]]:
    from .._core.layout import optimize_layout

    del data
    return optimize_layout(graph, init, **kwargs), {}


#: method name -> backend
LAYOUTS: dict[str, Callable[..., tuple[np.ndarray, dict[str, Any]]]] = {
    "umap": _numba_layout,
}


def run_layout(method: str, graph, init, **kwargs) -> tuple[np.ndarray, dict[str, Any]]:
    """Run the backend registered for ``method``."""
    return LAYOUTS[method](graph, init, **kwargs)
