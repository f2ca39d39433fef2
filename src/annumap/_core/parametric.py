"""Parametric UMAP: a small MLP encoder trained with the UMAP loss (NumPy, any array namespace).

The encoder maps the representation the neighbours were computed on to the embedding:
``x -> (x - input_mean) / input_scale -> [Linear -> ReLU] * len(hidden) -> Linear``. It is
trained with Adam on UMAP's fuzzy cross-entropy, estimated on batches of edges:

- a positive pair ``(i, j)`` is an edge of the (pruned, symmetric) graph drawn with probability
  proportional to its weight; its loss is ``-log q(d2) = log(1 + a d2^b)``, where ``d2`` is the
  squared embedding distance and ``q(d2) = 1 / (1 + a d2^b)``;
- each positive head ``i`` is paired with ``negative_sample_rate`` vertices drawn uniformly from
  all vertices; their loss is ``-gamma log(1 - q(d2) + eps)`` (``eps = 1e-4``).

Without ``eps`` the gradients of both terms equal UMAP's attraction and repulsion coefficients
(``2ab d2^(b-1) / (1 + a d2^b)`` and ``2 gamma b / (d2 (1 + a d2^b))`` times ``y_i - y_j``); here
they are backpropagated through the network to its weights instead of moving points. The
gradient is exact (checked against finite differences in the tests), unclipped.

Everything is deterministic for a seed: batches come from a seeded NumPy generator drawn on the
host, training runs single-threaded BLAS, and the forward pass splits its input into fixed
batches, so no result depends on the number of threads.
The arithmetic uses only ``@``, elementwise functions and axis sums, so passing
``xp=cupy`` runs the same code on a GPU (only the index draws stay on the host).

The trained model is stored as plain arrays and scalars (:meth:`Encoder.to_dict`), so an
``.h5ad`` file carries it and loading it never unpickles anything.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

__all__ = [
    "DEFAULT_HIDDEN",
    "Encoder",
    "encoder_loss_and_grads",
    "init_encoder",
    "parametric_layout",
    "train_encoder",
]

logger = logging.getLogger("annumap")

#: Hidden layer widths of the default encoder (umap-learn's ParametricUMAP default).
DEFAULT_HIDDEN = (100, 100, 100)
#: Regulariser of ``-log(1 - q + eps)`` in the repulsion term.
_EPS_Q = 1e-4
#: Adam's constants (Kingma & Ba 2015).
_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-7
#: Format of :meth:`Encoder.to_dict`; bumped if the layout of the stored dict changes.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Encoder:
    """A trained MLP encoder (immutable; arrays are float32).

    Attributes
    ----------
    weights
        Per layer an (n_in, n_out) matrix; the last layer maps to the embedding.
    biases
        Per layer an (n_out,) vector.
    input_mean, input_scale
        Inputs are standardised as ``(x - input_mean) / input_scale`` (one global scale, so
        relative distances of the representation are kept).
    activation
        Activation of the hidden layers (``'relu'``).
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    input_mean: np.ndarray
    input_scale: float
    activation: str = "relu"

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """``(n_in, *hidden, n_out)``."""
        return (int(self.weights[0].shape[0]), *(int(w.shape[1]) for w in self.weights))

    @property
    def n_in(self) -> int:
        """Number of input features."""
        return self.layer_sizes[0]

    @property
    def n_out(self) -> int:
        """Dimensions of the embedding."""
        return self.layer_sizes[-1]

    def transform(
        self, X: Any, *, batch_size: int = 4096, n_jobs: int | None = None, xp: Any = np
    ) -> np.ndarray:
        """Embed the rows of ``X`` (n, n_in); returns a float32 (n, n_out) NumPy array.

        Rows are processed in fixed batches of ``batch_size``, each with single-threaded BLAS,
        and the batches are spread over ``n_jobs`` threads (None = all), so the result does not
        depend on ``n_jobs``. (BLAS may round a row differently, by ~1e-7, when it comes in
        another batch: embedding a subset can differ from the same rows of the full result at
        that level.)
        """
        if len(X.shape) != 2 or X.shape[1] != self.n_in:
            msg = f"the encoder expects {self.n_in} input features, got shape {X.shape}."
            raise ValueError(msg)
        params = _to_xp(self, xp)
        out = np.empty((X.shape[0], self.n_out), dtype=np.float32)

        def run(start: int) -> None:
            block = _standardise(X[start : start + batch_size], self, xp)
            out[start : start + block.shape[0]] = _as_numpy(_forward(params, block, xp)[-1])

        starts = range(0, X.shape[0], batch_size)
        if xp is not np:
            for start in starts:
                run(start)
            return out
        from concurrent.futures import ThreadPoolExecutor

        from threadpoolctl import threadpool_limits

        from ._numba import resolve_n_jobs

        workers = min(resolve_n_jobs(n_jobs), len(starts))
        with threadpool_limits(1):
            if workers <= 1:
                for start in starts:
                    run(start)
            else:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    list(pool.map(run, starts))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain arrays, ints and strings (h5ad-serialisable; no pickle needed to read it)."""
        layers = {}
        for i, (W, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            layers[f"W{i}"] = np.ascontiguousarray(W, dtype=np.float32)
            layers[f"b{i}"] = np.ascontiguousarray(bias, dtype=np.float32)
        return {
            "format_version": FORMAT_VERSION,
            "layer_sizes": np.asarray(self.layer_sizes, dtype=np.int64),
            "activation": self.activation,
            "input_mean": np.ascontiguousarray(self.input_mean, dtype=np.float32),
            "input_scale": float(self.input_scale),
            "layers": layers,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "encoder") -> Encoder:
        """Rebuild an encoder from :meth:`to_dict`'s output, checking every field."""
        if not isinstance(d, Mapping):
            msg = f"{where} must be a dict, got {type(d).__name__}."
            raise TypeError(msg)
        missing = {"layer_sizes", "activation", "input_mean", "input_scale", "layers"} - set(d)
        if missing:
            msg = f"{where} is missing {sorted(missing)}; it was not written by annumap."
            raise KeyError(msg)
        version = int(np.asarray(d.get("format_version", FORMAT_VERSION)))
        if version != FORMAT_VERSION:
            msg = f"{where} has format_version {version}; this annumap reads {FORMAT_VERSION}."
            raise ValueError(msg)
        sizes = np.asarray(d["layer_sizes"]).astype(np.int64).ravel()
        activation = str(np.asarray(d["activation"]).item() if not isinstance(d["activation"], str)
                         else d["activation"])  # fmt: skip
        if activation != "relu":
            msg = f"{where}['activation'] = {activation!r}; only 'relu' is supported."
            raise ValueError(msg)
        if sizes.size < 2 or (sizes < 1).any():
            msg = f"{where}['layer_sizes'] = {sizes.tolist()} is not a valid architecture."
            raise ValueError(msg)
        layers = d["layers"]
        weights, biases = [], []
        for i in range(sizes.size - 1):
            W = np.asarray(layers.get(f"W{i}"), dtype=np.float32) if f"W{i}" in layers else None
            bias = np.asarray(layers.get(f"b{i}"), dtype=np.float32) if f"b{i}" in layers else None
            if W is None or bias is None:
                msg = f"{where}['layers'] lacks W{i}/b{i} for layer sizes {sizes.tolist()}."
                raise KeyError(msg)
            if W.shape != (sizes[i], sizes[i + 1]) or bias.shape != (sizes[i + 1],):
                msg = (
                    f"{where}['layers']: W{i} has shape {W.shape} and b{i} {bias.shape}; "
                    f"expected ({sizes[i]}, {sizes[i + 1]}) and ({sizes[i + 1]},)."
                )
                raise ValueError(msg)
            if not (np.isfinite(W).all() and np.isfinite(bias).all()):
                msg = f"{where}['layers']: W{i}/b{i} contain NaN or infinite values."
                raise ValueError(msg)
            weights.append(W)
            biases.append(bias)
        mean = np.asarray(d["input_mean"], dtype=np.float32).ravel()
        scale = float(np.asarray(d["input_scale"]))
        if mean.shape != (sizes[0],) or not np.isfinite(mean).all():
            msg = f"{where}['input_mean'] must be {sizes[0]} finite values, got {mean.shape}."
            raise ValueError(msg)
        if not (np.isfinite(scale) and scale > 0):
            msg = f"{where}['input_scale'] must be finite and > 0, got {scale}."
            raise ValueError(msg)
        return cls(tuple(weights), tuple(biases), mean, scale, activation)


def init_encoder(
    X: np.ndarray,
    n_out: int,
    hidden: tuple[int, ...] = DEFAULT_HIDDEN,
    rng: np.random.Generator | None = None,
) -> Encoder:
    """A fresh encoder for the data ``X``: He-normal weights, zero biases, standardised input."""
    rng = np.random.default_rng(0) if rng is None else rng
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    scale = float(np.sqrt(np.mean(np.sum((X - mean) ** 2, axis=1)) / X.shape[1]))
    if not np.isfinite(scale) or scale <= 0:
        scale = 1.0
    sizes = (X.shape[1], *hidden, n_out)
    weights, biases = [], []
    for i in range(len(sizes) - 1):
        std = np.sqrt(2.0 / sizes[i]) if i < len(sizes) - 2 else np.sqrt(1.0 / sizes[i])
        weights.append((rng.standard_normal((sizes[i], sizes[i + 1])) * std).astype(np.float32))
        biases.append(np.zeros(sizes[i + 1], dtype=np.float32))
    return Encoder(tuple(weights), tuple(biases), mean.astype(np.float32), scale)


# ---------------------------------------------------------------------------------------------
# array-namespace kernels (NumPy on the CPU, CuPy on a GPU)


def _as_numpy(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _to_xp(enc: Encoder, xp: Any) -> list[Any]:
    """``[W0, b0, W1, b1, ...]`` as arrays of ``xp``."""
    out = []
    for W, bias in zip(enc.weights, enc.biases, strict=True):
        out += [xp.asarray(W), xp.asarray(bias)]
    return out


def _standardise(X: Any, enc: Encoder, xp: Any) -> Any:
    if sparse.issparse(X):
        X = X.toarray()
    X = xp.asarray(X, dtype=xp.float32)
    return (X - xp.asarray(enc.input_mean)) * xp.float32(1.0 / enc.input_scale)


def _forward(params: list[Any], X: Any, xp: Any) -> list[Any]:
    """Activations of every layer: ``[X, h1, ..., output]`` (ReLU on the hidden layers)."""
    acts = [X]
    n_layers = len(params) // 2
    h = X
    for i in range(n_layers):
        h = h @ params[2 * i] + params[2 * i + 1]
        if i < n_layers - 1:
            h = xp.maximum(h, 0)
        acts.append(h)
    return acts


def _backward(params: list[Any], acts: list[Any], dY: Any) -> list[Any]:
    """Gradients ``[dW0, db0, ...]`` of a loss with gradient ``dY`` at the output."""
    n_layers = len(params) // 2
    grads: list[Any] = [None] * len(params)
    delta = dY
    for i in range(n_layers - 1, -1, -1):
        grads[2 * i] = acts[i].T @ delta
        grads[2 * i + 1] = delta.sum(axis=0)
        if i > 0:
            delta = (delta @ params[2 * i].T) * (acts[i] > 0)
    return grads


def _pair_terms(diff: Any, a: float, b: float, *, positive: bool, gamma: float, xp: Any):
    """Loss per pair and ``dL/dy_i`` for ``diff = y_i - y_j`` (``y_j`` gets the opposite)."""
    d2 = (diff * diff).sum(axis=1)
    safe = xp.maximum(d2, xp.float32(1e-30))
    pb = safe**b
    if positive:
        loss = xp.log1p(a * d2**b)
        coef = 2.0 * a * b * (pb / safe) / (1.0 + a * pb)
    else:
        q = 1.0 / (1.0 + a * d2**b)
        loss = -gamma * xp.log(1.0 - q + _EPS_Q)
        coef = -2.0 * gamma * a * b * (pb / safe) * q * q / (1.0 - q + _EPS_Q)
    coef = xp.where(d2 > 0, coef, 0).astype(diff.dtype)
    return loss, coef[:, None] * diff


def encoder_loss_and_grads(
    params: list[Any],
    X_head: Any,
    X_tail: Any,
    X_neg: Any,
    *,
    a: float,
    b: float,
    gamma: float,
    n_rounds: int,
    xp: Any = np,
) -> tuple[float, list[Any]]:
    """UMAP loss of one batch and its gradient with respect to ``params``.

    Row ``i`` of ``X_head``/``X_tail`` is a positive pair; in round ``r`` (of ``n_rounds``) head
    ``i`` is paired with negative ``(i + r) % B``. The loss is the sum of the pair terms divided
    by the number of positive pairs ``B``.
    """
    B = X_head.shape[0]
    acts = _forward(params, xp.concatenate([X_head, X_tail, X_neg]), xp)
    Y = acts[-1]
    Yh, Yt, Yn = Y[:B], Y[B : 2 * B], Y[2 * B :]
    loss_pos, g = _pair_terms(Yh - Yt, a, b, positive=True, gamma=gamma, xp=xp)
    gh = g
    gt = -g
    gn = xp.zeros_like(Yn)
    total = loss_pos.sum()
    for r in range(n_rounds):
        Yr = xp.roll(Yn, -r, axis=0)
        loss_neg, g = _pair_terms(Yh - Yr, a, b, positive=False, gamma=gamma, xp=xp)
        total = total + loss_neg.sum()
        gh = gh + g
        gn = gn - xp.roll(g, r, axis=0)
    dY = xp.concatenate([gh, gt, gn]) * xp.float32(1.0 / B)
    return float(total) / B, _backward(params, acts, dY)


# ---------------------------------------------------------------------------------------------
# training


def _edge_sampler(graph: sparse.spmatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heads, tails and the cumulative weights of the undirected edges (upper triangle)."""
    G = sparse.triu(sparse.csr_matrix(graph), k=1).tocoo()
    keep = G.data > 0
    heads = G.row[keep].astype(np.int64)
    tails = G.col[keep].astype(np.int64)
    cdf = np.cumsum(G.data[keep].astype(np.float64))
    return heads, tails, cdf


def train_encoder(
    X: np.ndarray | sparse.spmatrix,
    graph: sparse.spmatrix,
    *,
    a: float,
    b: float,
    n_components: int = 2,
    n_epochs: int = 200,
    steps_per_epoch: int | None = None,
    hidden: tuple[int, ...] = DEFAULT_HIDDEN,
    batch_size: int = 1024,
    learning_rate: float = 3e-3,
    negative_sample_rate: float = 5.0,
    gamma: float = 1.0,
    seed: int = 0,
    callback: Callable[[int, int, np.ndarray], bool | None] | None = None,
    progress: bool | None = None,
    xp: Any = np,
) -> tuple[Encoder, np.ndarray]:
    """Train an encoder on the symmetric weighted ``graph`` of the rows of ``X``.

    Parameters
    ----------
    X
        (n, n_features) representation (dense or sparse; densified per batch).
    graph
        (n, n) symmetric non-negative weights (the pruned UMAP connectivities).
    a, b
        Parameters of ``q(d2) = 1 / (1 + a d2^b)``.
    n_components
        Output dimensions.
    n_epochs
        Training epochs of ``steps_per_epoch`` Adam steps each.
    steps_per_epoch
        Steps per epoch (default: enough batches to draw about ``n`` positive edges, at least 1).
    hidden
        Widths of the hidden layers.
    batch_size
        Positive edges per step (each with ``round(negative_sample_rate)`` negatives).
    learning_rate
        Adam's step size, decayed linearly to a tenth of it over the training.
    negative_sample_rate
        Negatives per positive, rounded to an int (at least 1 if > 0).
    gamma
        Weight of the repulsion.
    seed
        Seed of the weight initialisation and the batch draws.
    callback
        ``callback(epoch, n_epochs, embedding)`` after each epoch (the embedding of all rows);
        returning True stops the training.
    progress
        Show a tqdm bar (None: in interactive sessions only).
    xp
        Array namespace of the arithmetic (NumPy, or CuPy for a GPU).

    Returns
    -------
    encoder, loss_history
        The trained :class:`Encoder` and the mean batch loss of each epoch (float32).
    """
    from threadpoolctl import threadpool_limits

    n = X.shape[0]
    if n < 2:
        msg = "training an encoder needs at least 2 observations."
        raise ValueError(msg)
    heads, tails, cdf = _edge_sampler(graph)
    if heads.size == 0:
        msg = "the graph has no edges: there is nothing to train the encoder on."
        raise ValueError(msg)
    dense = np.asarray(X.toarray() if sparse.issparse(X) else X, dtype=np.float32)
    enc = init_encoder(dense, n_components, tuple(hidden), np.random.default_rng([seed, 1]))
    rng = np.random.default_rng([seed, 2])
    Xs = _standardise(dense, enc, xp)
    params = [xp.array(p, copy=True) for p in _to_xp(enc, xp)]
    m1 = [xp.zeros_like(p) for p in params]
    m2 = [xp.zeros_like(p) for p in params]
    n_rounds = 0 if negative_sample_rate <= 0 else max(1, round(negative_sample_rate))
    batch = int(min(batch_size, max(8, heads.size)))
    steps = steps_per_epoch or max(1, -(-n // batch))
    total_steps = n_epochs * steps
    history = np.zeros(n_epochs, dtype=np.float32)

    bar = None
    show = progress if progress is not None else (hasattr(sys, "ps1") and total_steps > 2000)
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_epochs, desc="parametric umap", unit="epoch", file=sys.stderr)
    step = 0
    # small products: one BLAS thread is fastest and keeps the result independent of n_jobs
    with threadpool_limits(1 if xp is np else None):
        try:
            for epoch in range(n_epochs):
                acc = 0.0
                for _ in range(steps):
                    rows = xp.asarray(np.concatenate(_draw_batch(rng, heads, tails, cdf, n, batch)))
                    Xb = Xs[rows]
                    loss, grads = encoder_loss_and_grads(
                        params, Xb[:batch], Xb[batch : 2 * batch], Xb[2 * batch :], a=a, b=b,
                        gamma=gamma, n_rounds=n_rounds, xp=xp,
                    )  # fmt: skip
                    acc += loss
                    step += 1
                    lr = learning_rate * (1.0 - 0.9 * (step - 1) / max(1, total_steps - 1))
                    _adam_step(params, grads, m1, m2, lr, step, xp)
                history[epoch] = acc / steps
                if not np.isfinite(history[epoch]):
                    msg = "encoder training diverged (non-finite loss); lower the learning rate."
                    raise FloatingPointError(msg)
                if bar is not None:
                    bar.update(1)
                if callback is not None:
                    current = _with_params(enc, params)
                    if callback(epoch + 1, n_epochs, current.transform(dense, xp=xp)):
                        logger.info("parametric: stopped by the callback after epoch %d", epoch + 1)
                        history = history[: epoch + 1]
                        break
        finally:
            if bar is not None:
                bar.close()
    return _with_params(enc, params), history


def _draw_batch(
    rng: np.random.Generator,
    heads: np.ndarray,
    tails: np.ndarray,
    cdf: np.ndarray,
    n: int,
    batch: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``batch`` edges drawn proportionally to weight (either end first) and uniform negatives."""
    pick = np.searchsorted(cdf, rng.random(batch) * cdf[-1], side="right")
    pick = np.minimum(pick, heads.size - 1)
    flip = rng.random(batch) < 0.5
    h = np.where(flip, tails[pick], heads[pick])
    t = np.where(flip, heads[pick], tails[pick])
    return h, t, rng.integers(0, n, size=batch)


def _adam_step(
    params: list[Any], grads: list[Any], m1: list[Any], m2: list[Any], lr: float, step: int, xp
) -> None:
    """One Adam update of ``params`` in place (moments ``m1``, ``m2`` updated too)."""
    c1 = 1.0 - _BETA1**step
    c2 = 1.0 - _BETA2**step
    for p, g, u, v in zip(params, grads, m1, m2, strict=True):
        u *= _BETA1
        u += (1.0 - _BETA1) * g
        v *= _BETA2
        v += (1.0 - _BETA2) * (g * g)
        p -= xp.float32(lr / c1) * u / (xp.sqrt(v * xp.float32(1.0 / c2)) + _ADAM_EPS)


def _with_params(enc: Encoder, params: list[Any]) -> Encoder:
    weights = tuple(np.array(_as_numpy(p), dtype=np.float32) for p in params[0::2])
    biases = tuple(np.array(_as_numpy(p), dtype=np.float32) for p in params[1::2])
    return Encoder(weights, biases, enc.input_mean, enc.input_scale, enc.activation)


#: ``tl.umap``'s ``n_epochs`` times this is the number of parametric epochs of about ``n_obs``
#: positive edges each: 200 for the default 500 epochs (up to 10,000 cells), 80 for 200.
EPOCH_SCALE = 0.4
#: Adam's step size for ``alpha = 1`` (``tl.umap``'s ``alpha`` scales it).
DEFAULT_LEARNING_RATE = 3e-3
#: Positive edges per Adam step.
DEFAULT_BATCH_SIZE = 1024


def parametric_layout(
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
    n_jobs: int | None = None,
    callback: Callable[[int, int, np.ndarray], bool | None] | None = None,
    progress: bool | None = None,
    data: Callable[[], Any] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The ``method='parametric'`` backend of ``tl.umap`` (the layout-backend signature).

    Trains an encoder (:data:`DEFAULT_HIDDEN`, ReLU) on ``graph`` (pruned and symmetrised as
    the layout does) for ``max(1, round(EPOCH_SCALE * n_epochs))`` epochs of about ``n_obs``
    positive edges, with Adam's step ``DEFAULT_LEARNING_RATE * alpha``. ``init`` only fixes the
    number of dimensions: the encoder starts from random weights. Returns the encoder's
    embedding of the training data and ``{'encoder': ...}``: :meth:`Encoder.to_dict` plus
    ``loss_history`` (mean batch loss per epoch) and the training settings.
    """
    from .layout import prepare_graph

    X = data() if data is not None else None
    if X is None:
        msg = (
            "method='parametric' trains an encoder on the representation the neighbours were "
            "computed on, and it is not available (use_rep/n_pcs of the neighbors params)."
        )
        raise ValueError(msg)
    if X.shape[0] != graph.shape[0]:
        msg = f"the representation has {X.shape[0]} rows; the graph has {graph.shape[0]}."
        raise ValueError(msg)
    epochs = max(1, round(EPOCH_SCALE * n_epochs))
    lr = DEFAULT_LEARNING_RATE * float(alpha)
    enc, history = train_encoder(
        X,
        prepare_graph(graph, n_epochs),
        a=a,
        b=b,
        n_components=int(init.shape[1]),
        n_epochs=epochs,
        batch_size=DEFAULT_BATCH_SIZE,
        learning_rate=lr,
        negative_sample_rate=negative_sample_rate,
        gamma=gamma,
        seed=seed,
        callback=callback,
        progress=progress,
    )
    embedding = enc.transform(X, n_jobs=n_jobs)
    record = enc.to_dict()
    record.update(
        loss_history=history,
        n_epochs=int(history.size),
        batch_size=DEFAULT_BATCH_SIZE,
        learning_rate=lr,
    )
    return embedding, {"encoder": record}
