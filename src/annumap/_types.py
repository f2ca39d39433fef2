"""Literal aliases and protocols shared by the public API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "InitPos",
    "KnnTransformerLike",
    "LayoutCallback",
    "NeighborsMethod",
    "UmapMethod",
]

NeighborsMethod = Literal["umap", "gauss"]
UmapMethod = Literal["umap", "cupy", "rapids", "parametric"]
InitPos = Literal["spectral", "paga", "pca", "random"]
KnownTransformer = Literal["exact", "sklearn", "pynndescent"]


@runtime_checkable
class KnnTransformerLike(Protocol):
    """An object with scikit-learn's ``KNeighborsTransformer`` API."""

    def fit_transform(self, X: Any, y: Any = None) -> Any: ...

    def get_params(self, deep: bool = True) -> dict[str, Any]: ...


#: ``callback(epoch, n_epochs, embedding) -> bool | None``; return True to stop early.
LayoutCallback = Callable[[int, int, np.ndarray], bool | None]
