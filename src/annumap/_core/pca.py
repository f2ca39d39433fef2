"""Principal components of dense or sparse data (scikit-learn's PCA, imported lazily)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

__all__ = ["PcaFit", "pca", "pca_fit"]


@dataclass(frozen=True)
class PcaFit:
    """Scores, loadings and explained variance of a PCA (what ``scanpy.pp.pca`` stores)."""

    scores: np.ndarray
    """(n_obs, n_comps) float32."""
    loadings: np.ndarray
    """(n_vars, n_comps) float32, with ``scores == (X - mean) @ loadings``."""
    variance: np.ndarray
    variance_ratio: np.ndarray
    solver: str


def pca_fit(X: np.ndarray | sparse.spmatrix, n_comps: int, random_state: int = 0) -> PcaFit:
    """The first ``n_comps`` principal components of ``X`` (signs made stable).

    Sparse input is centred implicitly (ARPACK, scikit-learn >= 1.4), as ``scanpy.pp.pca``
    does. The sign of each component makes its largest-magnitude score positive; loadings carry
    the same sign, so ``scores == (X - X.mean(0)) @ loadings``.
    """
    from sklearn.decomposition import PCA

    n_comps = int(min(n_comps, min(X.shape) - 1 if min(X.shape) > 1 else 1))
    if sparse.issparse(X):
        X = sparse.csr_matrix(X, dtype=np.float32)
        solver = "arpack"
    else:
        X = np.asarray(X, dtype=np.float32)
        solver = "full" if X.shape[1] <= 500 else "auto"
    model = PCA(n_components=n_comps, svd_solver=solver, random_state=random_state)
    scores = model.fit_transform(X)
    # deterministic signs: the largest-magnitude score of each component is positive
    flip = np.sign(scores[np.abs(scores).argmax(axis=0), np.arange(scores.shape[1])])
    flip[flip == 0] = 1
    return PcaFit(
        scores=np.ascontiguousarray(scores * flip, dtype=np.float32),
        loadings=np.ascontiguousarray((model.components_ * flip[:, None]).T, dtype=np.float32),
        variance=np.asarray(model.explained_variance_, dtype=np.float64),
        variance_ratio=np.asarray(model.explained_variance_ratio_, dtype=np.float64),
        solver=solver,
    )


def pca(X: np.ndarray | sparse.spmatrix, n_comps: int, random_state: int = 0) -> np.ndarray:
    """The first ``n_comps`` principal-component scores of ``X`` (float32, signs made stable).

    Sparse input is centred implicitly (ARPACK), as ``scanpy.pp.pca`` does.
    """
    return pca_fit(X, n_comps, random_state=random_state).scores
