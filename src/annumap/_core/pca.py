"""Principal components of dense or sparse data (scikit-learn's PCA, imported lazily)."""

from __future__ import annotations

import numpy as np
from scipy import sparse

__all__ = ["pca"]


def pca(X: np.ndarray | sparse.spmatrix, n_comps: int, random_state: int = 0) -> np.ndarray:
    """The first ``n_comps`` principal-component scores of ``X`` (float32, signs made stable).

    Sparse input is centred implicitly (ARPACK), as ``scanpy.pp.pca`` does.
    """
    from sklearn.decomposition import PCA

    n_comps = int(min(n_comps, min(X.shape) - 1 if min(X.shape) > 1 else 1))
    if sparse.issparse(X):
        X = sparse.csr_matrix(X, dtype=np.float32)
        solver = "arpack"
    else:
        X = np.asarray(X, dtype=np.float32)
        solver = "full" if X.shape[1] <= 500 else "auto"
    scores = PCA(n_components=n_comps, svd_solver=solver, random_state=random_state).fit_transform(
        X
    )
    # deterministic signs: the largest-magnitude score of each component is positive
    flip = np.sign(scores[np.abs(scores).argmax(axis=0), np.arange(scores.shape[1])])
    flip[flip == 0] = 1
    return np.ascontiguousarray(scores * flip, dtype=np.float32)
