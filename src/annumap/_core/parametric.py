"""Parametric UMAP: MLPs trained with the UMAP loss, written once against an array namespace.

An **encoder** maps the representation the neighbours were computed on to the embedding:
``x -> (x - input_mean) / input_scale -> [Linear -> act] * len(hidden) -> Linear``. An optional
**decoder** maps embedding coordinates back: ``y -> (y - input_mean) / input_scale -> [Linear
-> act] * len(hidden) -> Linear -> out * output_scale + output_mean``. Its targets are the
standardised inputs (``output_mean``/``output_scale`` are the encoder's
``input_mean``/``input_scale``); its input standardisation follows the embedding while it forms
(exponential moving averages, momentum 0.9 per step, of the mean and scale of each batch's
embedding, treated as constants within a step), so its first layer sees inputs of order 1
whatever the spread of the map; its Adam step is the encoder's times
:data:`DECODER_LR_FACTOR`.

Both are trained together by Adam (:func:`fit_parametric`) on batches of graph edges. The loss of
a batch of ``B`` positive pairs, each a graph edge drawn with probability proportional to its
weight (either end first), is

- the UMAP fuzzy cross-entropy: ``log(1 + a d2^b)`` per positive pair, ``d2`` the squared
  embedding distance; ``-w log(1 - q(d2) + 1e-4)`` per negative pair, ``q = 1 / (1 + a
  d2^b)``; each head is paired with ``R = max(80, ceil(negative_sample_rate))`` negatives
  (:data:`NEGATIVE_ROUNDS`) of weight ``w = gamma * negative_sample_rate / R`` (so the expected
  repulsion is that of ``negative_sample_rate`` negatives of weight ``gamma``, estimated from
  more of them), taken from the batch's tails, as ParametricUMAP takes its negatives from the
  batch (tail ``(i + offset_r) % B`` in round ``r``, the offsets drawn per batch; a tail is
  drawn by edge weight, about uniformly over the cells of a kNN graph); the sum is divided by
  ``B``. Without the ``1e-4`` the gradients are UMAP's attraction and repulsion coefficients
  times ``y_i - y_j``;
- with ``parametric_reconstruction``: ``weight * mean((decoder(y) - x_std)^2)`` over the batch's
  heads and tails (the mean squared error of the standardised representation). The gradient
  reaches the encoder only with ``autoencoder_loss`` (otherwise it stops at the embedding, as
  ParametricUMAP's stop-gradient);
- with ``global_correlation_loss_weight = w > 0``: ``-w r``, ``r`` the Pearson correlation of
  the pairwise distances among the first ``min(B, 256)`` heads in the data (standardised) and in
  the embedding (ParametricUMAP correlates the distances of consecutive batch members instead).

Every gradient is exact (checked against finite differences in the tests) and unclipped.

An epoch is ``ceil(n_train / B)`` steps (about one positive edge per training cell). Before the
training, ``validation_fraction`` of the cells are held out: the training edges join two
training cells; a fixed set of edges leaving a held-out cell (and the held-out cells themselves,
for the reconstruction) gives the validation losses after every epoch. Training stops when the
monitored loss (the validation total, or the training total without a validation split) has not
improved by a relative ``min_delta`` for ``patience`` epochs; the best weights are kept.

Deterministic for a seed whatever the number of threads: the index draws come from a seeded NumPy
generator on the host, and every forward and backward pass splits its rows into fixed chunks of
:data:`CHUNK_ROWS` (spread over threads, each with one BLAS thread) whose gradients are summed in
a fixed order. The arithmetic uses only ``@``, elementwise functions, axis sums and gathers by
integer arrays (no scatter-add, whose order a GPU does not fix), so ``xp=cupy``
runs the same code on a GPU (one chunk per pass there).

Models are stored as plain arrays, ints and strings (:meth:`Encoder.to_dict`,
:meth:`Decoder.to_dict`), so an ``.h5ad`` or zarr store carries them and loading never unpickles.
"""

from __future__ import annotations

import logging
import math
import numbers
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse

__all__ = [
    "ACTIVATIONS",
    "CHUNK_ROWS",
    "DEFAULT_HIDDEN",
    "NEGATIVE_ROUNDS",
    "Decoder",
    "Encoder",
    "ParametricResult",
    "ParametricSettings",
    "batch_loss_and_grads",
    "check_parametric_kwds",
    "correlation_loss",
    "fit_parametric",
    "init_decoder",
    "init_encoder",
    "negative_rounds",
    "parametric_layout",
    "train_encoder",
    "umap_batch_loss",
]

logger = logging.getLogger("annumap")

#: Hidden layer widths of the default encoder (umap-learn's ParametricUMAP default).
DEFAULT_HIDDEN = (100, 100, 100)
#: Activations of the hidden layers (the output layers are linear).
ACTIVATIONS = ("relu", "leaky_relu", "elu", "tanh", "sigmoid", "softplus")
_LEAKY_SLOPE = 0.01
#: Regulariser of ``-log(1 - q + eps)`` in the repulsion term.
_EPS_Q = 1e-4
#: Adam's constants (Kingma & Ba 2015).
_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-7
#: Rows per chunk of a forward/backward pass (fixed, so results do not depend on ``n_jobs``).
#: A default batch (1,024 heads and their tails) is two chunks: on MNIST 70k (2 threads) 12
#: epochs took 5.1 s with chunks of 1,024 rows, 5.6 s with 512 and 6.3 s with 2,048.
CHUNK_ROWS = 1024
#: Heads whose pairwise distances enter the global correlation loss.
_CORR_ROWS = 256
#: Validation edges (and held-out cells for the reconstruction) evaluated after each epoch.
_VAL_ROWS = 4096
#: Largest default batch (positive edges per step).
DEFAULT_BATCH_SIZE = 1024
#: Format of the stored dicts: 1 = annumap <= 0.x (encoder only, ReLU, history inside it),
#: 2 = encoder and decoder with any of :data:`ACTIVATIONS`, history kept beside them.
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
#: Negatives paired with each head per batch (at least): the repulsion of
#: ``negative_sample_rate`` negatives per positive is estimated from this many, each weighted
#: ``negative_sample_rate / rounds`` (the expected loss is unchanged, its variance lower; a
#: round costs elementwise work on ``B`` pairs, no rows to embed). MNIST 70k, 60 epochs,
#: trustworthiness (15-NN, 5,000-point sample) with negatives from the batch's tails: 0.923 with
#: 5 of weight 1, 0.938 with 20 of weight 1/4, 0.941 with 40 of weight 1/8 (0.928 with 5 drawn
#: uniformly, a third block of ``B`` rows to embed: 1.5x the cost of a step). Seeds 0, 1, 2
#: once the rounds ran as one set of array operations: 40 rounds 0.938 / 0.930 / 0.937 (fit
#: 20-23 s), 80 rounds 0.940 / 0.942 / 0.940 (20-23 s), 160 rounds 0.941 / 0.944 / 0.937
#: (26-29 s); the non-parametric layout 0.947.
NEGATIVE_ROUNDS = 80
#: Default ``n_training_epochs`` (an epoch draws about one positive edge per training cell, so
#: its cost grows with ``n_obs`` as a layout epoch's does): on CBMC it takes about as long as
#: the 500-epoch layout, and MNIST 70k gains trustworthiness up to it and beyond (with 5
#: uniform negatives of weight 1: 0.928 at 60 epochs, 0.932 at 100; with
#: :data:`NEGATIVE_ROUNDS` 0.940 at 60) where the layout runs 200 epochs.
DEFAULT_TRAINING_EPOCHS = 60
#: ``tl.umap``'s ``maxiter`` times this is ``n_training_epochs`` when ``maxiter`` is given.
EPOCH_SCALE = 0.12
#: Adam's step size for ``alpha = 1`` (``tl.umap``'s ``alpha`` scales it), decayed linearly to a
#: tenth over ``n_training_epochs``. Larger than Keras' 1e-3 (ParametricUMAP's), for short
#: trainings: 60 epochs (5 uniform negatives) gave trustworthiness (15-NN) 0.935 / 0.936 /
#: 0.937 on CBMC (3,000-cell sample) and 0.929 / 0.928 / 0.900 on MNIST 70k (5,000-point
#: sample) at 1e-2 / 2e-2 / 5e-2 (200 epochs at 3e-3: 0.938 on CBMC); on MNIST, decaying to 0
#: instead of a tenth gave 0.921 (cosine: 0.927), batches of 512 / 2048 edges 0.924 / 0.919.
DEFAULT_LEARNING_RATE = 2e-2


# ---------------------------------------------------------------------------------------------
# settings (the ``parametric_kwds`` of tl.umap)


@dataclass(frozen=True)
class ParametricSettings:
    """The training options, by umap-learn's ``ParametricUMAP`` names where it has them.

    ``None`` for ``n_training_epochs`` and ``learning_rate`` means ``tl.umap``'s rule:
    :data:`DEFAULT_TRAINING_EPOCHS`, or ``max(1, round(0.12 * maxiter))`` for a custom
    ``maxiter``, and ``2e-2 * alpha``; ``None`` for ``decoder_layers`` means
    the encoder's hidden sizes reversed; ``None`` for ``batch_size`` means
    ``min(1024, max(32, n_train // 8))`` positive edges (an epoch has at least about 8 steps).
    """

    encoder_layers: tuple[int, ...] = DEFAULT_HIDDEN
    decoder_layers: tuple[int, ...] | None = None
    activation: str = "relu"
    parametric_reconstruction: bool = False
    parametric_reconstruction_loss_weight: float = 1.0
    autoencoder_loss: bool = False
    batch_size: int | None = None
    n_training_epochs: int | None = None
    learning_rate: float | None = None
    global_correlation_loss_weight: float = 0.0
    validation_fraction: float = 0.1
    patience: int = 10
    min_delta: float = 1e-3

    def resolved(self, maxiter: int | None, alpha: float) -> ParametricSettings:
        """A copy with every ``None`` replaced (``maxiter``: tl.umap's, None for its default)."""
        from dataclasses import replace

        return replace(
            self,
            decoder_layers=(
                tuple(reversed(self.encoder_layers))
                if self.decoder_layers is None
                else self.decoder_layers
            ),
            n_training_epochs=(
                self.n_training_epochs
                if self.n_training_epochs is not None
                else DEFAULT_TRAINING_EPOCHS
                if maxiter is None
                else max(1, round(EPOCH_SCALE * maxiter))
            ),
            learning_rate=(
                DEFAULT_LEARNING_RATE * float(alpha)
                if self.learning_rate is None
                else self.learning_rate
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists of ints as int64 arrays; ``None`` left out) for ``.uns``."""
        out: dict[str, Any] = {}
        for name in PARAMETRIC_KEYS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, tuple):
                value = np.asarray(value, dtype=np.int64)
            out[name] = value
        return out


#: The keys ``parametric_kwds`` accepts.
PARAMETRIC_KEYS = tuple(ParametricSettings.__dataclass_fields__)


def _layers(value: Any, name: str, *, empty_ok: bool) -> tuple[int, ...]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list | tuple):
        msg = f"parametric_kwds[{name!r}] must be a list of layer sizes, got {value!r}."
        raise TypeError(msg)
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            msg = f"parametric_kwds[{name!r}] must hold ints >= 1, got {list(value)!r}."
            raise ValueError(msg)
        out.append(int(v))
    if not out and not empty_ok:
        msg = f"parametric_kwds[{name!r}] must not be empty."
        raise ValueError(msg)
    return tuple(out)


def _kw_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        msg = f"parametric_kwds[{name!r}] must be a bool, got {type(value).__name__}."
        raise TypeError(msg)
    return bool(value)


def _kw_real(value: Any, name: str, low: float, high: float | None = None, *, open_low=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = f"parametric_kwds[{name!r}] must be a real number, got {type(value).__name__}."
        raise TypeError(msg)
    v = float(value)
    bad = not math.isfinite(v) or (v <= low if open_low else v < low)
    bad = bad or (high is not None and v >= high)
    if bad:
        rng = f"{'>' if open_low else '>='} {low}" + ("" if high is None else f" and < {high}")
        msg = f"parametric_kwds[{name!r}] must be finite and {rng}, got {value!r}."
        raise ValueError(msg)
    return v


def _kw_int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        msg = f"parametric_kwds[{name!r}] must be an int, got {type(value).__name__}."
        raise TypeError(msg)
    if value < low:
        msg = f"parametric_kwds[{name!r}] must be >= {low}, got {value}."
        raise ValueError(msg)
    return int(value)


def check_parametric_kwds(kwds: Mapping[str, Any] | None) -> ParametricSettings:
    """Validate ``tl.umap``'s ``parametric_kwds`` (unknown keys: a KeyError listing the keys)."""
    if kwds is None:
        return ParametricSettings()
    if not isinstance(kwds, Mapping):
        msg = f"parametric_kwds must be a dict or None, got {type(kwds).__name__}."
        raise TypeError(msg)
    unknown = sorted(str(k) for k in kwds if k not in PARAMETRIC_KEYS)
    if unknown:
        msg = f"parametric_kwds has unknown keys {unknown}; valid keys: {list(PARAMETRIC_KEYS)}."
        raise KeyError(msg)
    out: dict[str, Any] = {}
    for name, value in kwds.items():
        if name == "encoder_layers":
            out[name] = _layers(value, name, empty_ok=True)
        elif name == "decoder_layers":
            out[name] = None if value is None else _layers(value, name, empty_ok=True)
        elif name == "activation":
            if value not in ACTIVATIONS:
                msg = f"parametric_kwds['activation'] must be one of {ACTIVATIONS}, got {value!r}."
                raise ValueError(msg)
            out[name] = str(value)
        elif name in ("parametric_reconstruction", "autoencoder_loss"):
            out[name] = _kw_bool(value, name)
        elif name == "batch_size":
            out[name] = None if value is None else _kw_int(value, name, 2)
        elif name == "n_training_epochs":
            out[name] = None if value is None else _kw_int(value, name, 1)
        elif name == "patience":
            out[name] = _kw_int(value, name, 1)
        elif name == "learning_rate":
            out[name] = None if value is None else _kw_real(value, name, 0.0, open_low=True)
        elif name == "validation_fraction":
            out[name] = _kw_real(value, name, 0.0, 1.0)
        else:  # the loss weights and min_delta
            out[name] = _kw_real(value, name, 0.0)
    settings = ParametricSettings(**out)
    if settings.autoencoder_loss and not settings.parametric_reconstruction:
        msg = (
            "parametric_kwds['autoencoder_loss']=True trains the encoder on the reconstruction "
            "loss and needs parametric_reconstruction=True (a decoder)."
        )
        raise ValueError(msg)
    return settings


# ---------------------------------------------------------------------------------------------
# models


def _activation_name(value: Any, where: str) -> str:
    name = value if isinstance(value, str) else str(np.asarray(value).item())
    if name not in ACTIVATIONS:
        msg = f"{where}['activation'] = {name!r}; supported: {ACTIVATIONS}."
        raise ValueError(msg)
    return name


def _read_layers(d: Mapping[str, Any], where: str) -> tuple[list, list]:
    sizes = np.asarray(d["layer_sizes"]).astype(np.int64).ravel()
    if sizes.size < 2 or (sizes < 1).any():
        msg = f"{where}['layer_sizes'] = {sizes.tolist()} is not a valid architecture."
        raise ValueError(msg)
    layers = d["layers"]
    weights, biases = [], []
    for i in range(sizes.size - 1):
        if f"W{i}" not in layers or f"b{i}" not in layers:
            msg = f"{where}['layers'] lacks W{i}/b{i} for layer sizes {sizes.tolist()}."
            raise KeyError(msg)
        W = np.asarray(layers[f"W{i}"], dtype=np.float32)
        bias = np.asarray(layers[f"b{i}"], dtype=np.float32)
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
    return weights, biases


def _check_stored(d: Any, where: str, required: set[str]) -> None:
    if not isinstance(d, Mapping):
        msg = f"{where} must be a dict, got {type(d).__name__}."
        raise TypeError(msg)
    missing = required - set(d)
    if missing:
        msg = f"{where} is missing {sorted(missing)}; it was not written by annumap."
        raise KeyError(msg)
    version = int(np.asarray(d.get("format_version", 1)))
    if version not in _READABLE_VERSIONS:
        msg = f"{where} has format_version {version}; this annumap reads {_READABLE_VERSIONS}."
        raise ValueError(msg)


def _scale_vector(value: Any, n: int, name: str, where: str) -> np.ndarray:
    v = np.asarray(value, dtype=np.float32).ravel()
    if v.shape != (n,) or not np.isfinite(v).all():
        msg = f"{where}[{name!r}] must be {n} finite values, got shape {v.shape}."
        raise ValueError(msg)
    return v


def _positive_scalar(value: Any, name: str, where: str) -> float:
    s = float(np.asarray(value))
    if not (np.isfinite(s) and s > 0):
        msg = f"{where}[{name!r}] must be finite and > 0, got {s}."
        raise ValueError(msg)
    return s


def _layer_dict(weights, biases) -> dict[str, np.ndarray]:
    layers = {}
    for i, (W, bias) in enumerate(zip(weights, biases, strict=True)):
        layers[f"W{i}"] = np.ascontiguousarray(W, dtype=np.float32)
        layers[f"b{i}"] = np.ascontiguousarray(bias, dtype=np.float32)
    return layers


def _sizes(weights) -> tuple[int, ...]:
    return (int(weights[0].shape[0]), *(int(w.shape[1]) for w in weights))


def _run_batches(fn: Callable[[int], None], n: int, batch_size: int, n_jobs, xp) -> None:
    """``fn(start)`` for every batch start, on threads with one BLAS thread each (NumPy)."""
    starts = range(0, n, batch_size)
    if xp is not np:
        for start in starts:
            fn(start)
        return
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    from ._numba import resolve_n_jobs

    workers = min(resolve_n_jobs(n_jobs), len(starts))
    with threadpool_limits(1):
        if workers <= 1:
            for start in starts:
                fn(start)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(fn, starts))


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
        Activation of the hidden layers (one of :data:`ACTIVATIONS`); the last layer is linear.
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    input_mean: np.ndarray
    input_scale: float
    activation: str = "relu"

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """``(n_in, *hidden, n_out)``."""
        return _sizes(self.weights)

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
        params = _to_xp(self.weights, self.biases, xp)
        out = np.empty((X.shape[0], self.n_out), dtype=np.float32)

        def run(start: int) -> None:
            block = _standardise(X[start : start + batch_size], self, xp)
            Y = _forward(params, block, self.activation, xp)[-1]
            out[start : start + block.shape[0]] = _as_numpy(Y)

        _run_batches(run, X.shape[0], batch_size, n_jobs, xp)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain arrays, ints and strings (h5ad-serialisable; no pickle needed to read it)."""
        return {
            "format_version": FORMAT_VERSION,
            "layer_sizes": np.asarray(self.layer_sizes, dtype=np.int64),
            "activation": self.activation,
            "input_mean": np.ascontiguousarray(self.input_mean, dtype=np.float32),
            "input_scale": float(self.input_scale),
            "layers": _layer_dict(self.weights, self.biases),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "encoder") -> Encoder:
        """Rebuild an encoder from :meth:`to_dict`'s output (format 1 or 2), checking every field.

        Extra keys (format 1 kept ``loss_history`` and the settings here) are ignored.
        """
        _check_stored(d, where, {"layer_sizes", "activation", "input_mean", "input_scale",
                                 "layers"})  # fmt: skip
        activation = _activation_name(d["activation"], where)
        weights, biases = _read_layers(d, where)
        mean = _scale_vector(d["input_mean"], weights[0].shape[0], "input_mean", where)
        scale = _positive_scalar(d["input_scale"], "input_scale", where)
        return cls(tuple(weights), tuple(biases), mean, scale, activation)


@dataclass(frozen=True)
class Decoder:
    """A trained MLP decoder from the embedding back to the representation (float32).

    ``x = MLP((y - input_mean) / input_scale) * output_scale + output_mean``; hidden layers use
    ``activation``, the last layer is linear.
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    input_mean: np.ndarray
    input_scale: float
    output_mean: np.ndarray
    output_scale: float
    activation: str = "relu"

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """``(n_components, *hidden, n_features)``."""
        return _sizes(self.weights)

    @property
    def n_in(self) -> int:
        """Dimensions of the embedding."""
        return self.layer_sizes[0]

    @property
    def n_out(self) -> int:
        """Features of the reconstructed representation."""
        return self.layer_sizes[-1]

    def transform(
        self, Y: Any, *, batch_size: int = 4096, n_jobs: int | None = None, xp: Any = np
    ) -> np.ndarray:
        """Reconstruct rows of the representation from embedding coordinates ``Y`` (float32).

        Same batching (and independence of ``n_jobs``) as :meth:`Encoder.transform`.
        """
        if len(Y.shape) != 2 or Y.shape[1] != self.n_in:
            msg = f"the decoder expects {self.n_in}-D coordinates, got shape {Y.shape}."
            raise ValueError(msg)
        params = _to_xp(self.weights, self.biases, xp)
        mean, scale = xp.asarray(self.output_mean), xp.float32(self.output_scale)
        in_mean, in_inv = xp.asarray(self.input_mean), xp.float32(1.0 / self.input_scale)
        out = np.empty((Y.shape[0], self.n_out), dtype=np.float32)

        def run(start: int) -> None:
            block = (xp.asarray(Y[start : start + batch_size], dtype=xp.float32) - in_mean) * in_inv
            Z = _forward(params, block, self.activation, xp)[-1]
            out[start : start + block.shape[0]] = _as_numpy(Z * scale + mean)

        _run_batches(run, Y.shape[0], batch_size, n_jobs, xp)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain arrays, ints and strings (h5ad-serialisable)."""
        return {
            "format_version": FORMAT_VERSION,
            "layer_sizes": np.asarray(self.layer_sizes, dtype=np.int64),
            "activation": self.activation,
            "input_mean": np.ascontiguousarray(self.input_mean, dtype=np.float32),
            "input_scale": float(self.input_scale),
            "output_mean": np.ascontiguousarray(self.output_mean, dtype=np.float32),
            "output_scale": float(self.output_scale),
            "layers": _layer_dict(self.weights, self.biases),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "decoder") -> Decoder:
        """Rebuild a decoder from :meth:`to_dict`'s output, checking every field."""
        _check_stored(d, where, {"layer_sizes", "activation", "input_mean", "input_scale",
                                 "output_mean", "output_scale", "layers"})  # fmt: skip
        activation = _activation_name(d["activation"], where)
        weights, biases = _read_layers(d, where)
        in_mean = _scale_vector(d["input_mean"], weights[0].shape[0], "input_mean", where)
        in_scale = _positive_scalar(d["input_scale"], "input_scale", where)
        mean = _scale_vector(d["output_mean"], weights[-1].shape[1], "output_mean", where)
        scale = _positive_scalar(d["output_scale"], "output_scale", where)
        return cls(tuple(weights), tuple(biases), in_mean, in_scale, mean, scale, activation)


def _he_layers(sizes: tuple[int, ...], rng: np.random.Generator) -> tuple[list, list]:
    weights, biases = [], []
    for i in range(len(sizes) - 1):
        std = np.sqrt(2.0 / sizes[i]) if i < len(sizes) - 2 else np.sqrt(1.0 / sizes[i])
        weights.append((rng.standard_normal((sizes[i], sizes[i + 1])) * std).astype(np.float32))
        biases.append(np.zeros(sizes[i + 1], dtype=np.float32))
    return weights, biases


def init_encoder(
    X: np.ndarray,
    n_out: int,
    hidden: tuple[int, ...] = DEFAULT_HIDDEN,
    rng: np.random.Generator | None = None,
    activation: str = "relu",
) -> Encoder:
    """A fresh encoder for the data ``X``: He-normal weights, zero biases, standardised input."""
    rng = np.random.default_rng(0) if rng is None else rng
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    scale = float(np.sqrt(np.mean(np.sum((X - mean) ** 2, axis=1)) / X.shape[1]))
    if not np.isfinite(scale) or scale <= 0:
        scale = 1.0
    weights, biases = _he_layers((X.shape[1], *hidden, n_out), rng)
    return Encoder(tuple(weights), tuple(biases), mean.astype(np.float32), scale, activation)


def init_decoder(
    encoder: Encoder,
    hidden: tuple[int, ...],
    rng: np.random.Generator | None = None,
    activation: str = "relu",
) -> Decoder:
    """A fresh decoder to ``encoder``'s standardised inputs.

    He-normal weights, zero biases; no input standardisation yet (training sets it).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    weights, biases = _he_layers((encoder.n_out, *hidden, encoder.n_in), rng)
    return Decoder(
        tuple(weights), tuple(biases), np.zeros(encoder.n_out, np.float32), 1.0,
        encoder.input_mean, encoder.input_scale, activation,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# array-namespace kernels (NumPy on the CPU, CuPy on a GPU)


def _as_numpy(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _to_xp(weights, biases, xp: Any) -> list[Any]:
    """``[W0, b0, W1, b1, ...]`` as arrays of ``xp``."""
    out = []
    for W, bias in zip(weights, biases, strict=True):
        out += [xp.asarray(W), xp.asarray(bias)]
    return out


def _standardise(X: Any, enc: Encoder, xp: Any) -> Any:
    if sparse.issparse(X):
        X = X.toarray()
    X = xp.asarray(X, dtype=xp.float32)
    return (X - xp.asarray(enc.input_mean)) * xp.float32(1.0 / enc.input_scale)


def _activate(h: Any, name: str, xp: Any) -> Any:
    """The activation of ``h``; ReLU overwrites ``h`` (a fresh product) in place."""
    if name == "relu":
        return xp.maximum(h, 0, out=h)
    if name == "leaky_relu":
        return xp.where(h > 0, h, h * h.dtype.type(_LEAKY_SLOPE))
    if name == "elu":
        return xp.where(h > 0, h, xp.expm1(xp.minimum(h, 0)))
    if name == "tanh":
        return xp.tanh(h)
    if name == "sigmoid":
        return 1 / (1 + xp.exp(-h))
    # softplus, computed without overflow
    return xp.maximum(h, 0) + xp.log1p(xp.exp(-xp.abs(h)))


def _activation_slope(out: Any, name: str, xp: Any) -> Any:
    """The activation's derivative, written in terms of its output ``out``."""
    one = out.dtype.type(1)
    if name == "relu":
        return out > 0  # multiplies as 0/1
    if name == "leaky_relu":
        return xp.where(out > 0, one, out.dtype.type(_LEAKY_SLOPE))
    if name == "elu":
        return xp.where(out > 0, one, out + one)
    if name == "tanh":
        return one - out * out
    if name == "sigmoid":
        return out * (one - out)
    return -xp.expm1(-out)  # softplus: sigmoid(z) = 1 - exp(-softplus(z))


def _forward(params: list[Any], X: Any, activation: str, xp: Any) -> list[Any]:
    """Activations of every layer: ``[X, h1, ..., output]`` (linear output layer)."""
    acts = [X]
    n_layers = len(params) // 2
    h = X
    for i in range(n_layers):
        h = h @ params[2 * i]
        h += params[2 * i + 1]  # in place: ~1/3 of a pass is elementwise work on fresh arrays
        if i < n_layers - 1:
            h = _activate(h, activation, xp)
        acts.append(h)
    return acts


def _backward(
    params: list[Any], acts: list[Any], dY: Any, activation: str, xp: Any, *, need_dx: bool
) -> tuple[list[Any], Any]:
    """Gradients ``[dW0, db0, ...]`` (and ``dL/dX`` if ``need_dx``) for ``dL/doutput = dY``."""
    n_layers = len(params) // 2
    grads: list[Any] = [None] * len(params)
    delta = dY
    for i in range(n_layers - 1, -1, -1):
        grads[2 * i] = acts[i].T @ delta
        grads[2 * i + 1] = delta.sum(axis=0)
        if i > 0:
            delta = delta @ params[2 * i].T
            delta *= _activation_slope(acts[i], activation, xp)
        elif need_dx:
            delta = delta @ params[0].T
    return grads, (delta if need_dx else None)


class _Passes:
    """Forward and backward passes over fixed row chunks, on a thread pool (NumPy) or not.

    The chunking depends only on the number of rows (:data:`CHUNK_ROWS`), and the chunk
    gradients are summed in chunk order, so the result does not depend on the number of
    threads.
    """

    def __init__(self, pool: Any, xp: Any, chunk: int = CHUNK_ROWS):
        self.pool, self.xp, self.chunk = pool, xp, chunk

    def _map(self, fn, items):
        if self.pool is None or len(items) == 1:
            return [fn(item) for item in items]
        return list(self.pool.map(fn, items))

    def forward(self, params: list[Any], X: Any, activation: str) -> tuple[Any, list]:
        xp = self.xp
        n = X.shape[0]
        step = n if xp is not np else self.chunk
        bounds = [(s, min(n, s + step)) for s in range(0, n, step)]
        acts = self._map(lambda se: _forward(params, X[se[0] : se[1]], activation, xp), bounds)
        Y = acts[0][-1] if len(acts) == 1 else xp.concatenate([a[-1] for a in acts])
        return Y, [bounds, acts, activation]

    def backward(self, params: list[Any], tape: list, dY: Any, *, need_dx: bool = False):
        bounds, acts, activation = tape
        xp = self.xp

        def one(k):
            s, e = bounds[k]
            return _backward(params, acts[k], dY[s:e], activation, xp, need_dx=need_dx)

        parts = self._map(one, list(range(len(bounds))))
        grads = list(parts[0][0])
        for g, _ in parts[1:]:
            for i, gi in enumerate(g):
                grads[i] = grads[i] + gi
        dX = None
        if need_dx:
            dX = parts[0][1] if len(parts) == 1 else xp.concatenate([p[1] for p in parts])
        return grads, dX


def _pair_terms(diff: Any, a: float, b: float, *, positive: bool, gamma: float, xp: Any):
    """Loss per pair and ``dL/dy_i`` for ``diff = y_i - y_j`` (``y_j`` gets the opposite).

    ``diff`` has the coordinates on its first axis, ``(dim, ...)``; the loss has the other axes.
    The arithmetic runs in place on a few arrays (a fresh array per operation cost more than
    the operations on a batch's 80 x 1,024 negative pairs).
    """
    dt = diff.dtype.type
    d2 = diff[0] * diff[0]
    for k in range(1, diff.shape[0]):
        d2 += diff[k] * diff[k]
    safe = xp.maximum(d2, dt(1e-30), out=d2)
    apb = safe**b
    apb *= dt(a)
    if positive:
        loss = xp.log1p(apb)
        den = apb + dt(1.0)
        den *= safe
        coef = xp.divide(apb, den, out=den)
        coef *= dt(2.0 * b)
    else:
        q = apb + dt(1.0)
        q = xp.divide(dt(1.0), q, out=q)
        away = dt(1.0 + _EPS_Q) - q  # 1 - q + 1e-4
        loss = xp.log(away)
        loss *= dt(-gamma)
        coef = apb
        coef *= q
        coef *= q
        away *= safe
        coef /= away
        coef *= dt(-2.0 * gamma * b)
    # at d = 0 (diff = 0) the coefficient is finite (d^2 is floored at 1e-30), so the gradient
    # is exactly 0 there without a mask
    return loss, coef[None] * diff


#: Negative pairs evaluated in one set of array operations at most (the rounds are split into
#: sets of equal size). Measured on a batch of 1,024 (NumPy, one thread): with 40 rounds, one
#: set of operations per round 4.7 ms, all rounds as ``(B, rounds, dim)`` 4.8 ms (fancy
#: indexing and sums over the short last axes), as ``(dim, rounds, B)`` with ``take`` (as here)
#: 0.4 ms; with 80 rounds, sets of 80 / 40 / 27 / 16 rounds 3.3-3.7 / 2.0-2.6 / 1.4 / 1.2-1.3 ms
#: (a set's arrays must stay in the core's cache). The heads split in two on the training's two
#: threads were no faster (15 epochs of MNIST 70k: 6.5-6.7 s against 5.8-6.4 s).
_PAIR_BLOCK = 1 << 14


def _wrap(i: np.ndarray, B: int) -> np.ndarray:
    """``i mod B`` for int64 ``i`` in ``[-B, 2B)``, in place.

    Two masked updates: ``%`` of int64 arrays took longer than the pair terms.
    """
    i[i >= B] -= B
    i[i < 0] += B
    return i


def umap_batch_loss(
    Yh: Any, Yt: Any, Yn: Any, offsets: Any, *, a: float, b: float, gamma: float, xp: Any
) -> tuple[Any, Any, Any, Any]:
    """UMAP loss of a batch (sum over pairs / B) and its gradients at heads, tails, negatives.

    Row ``i`` of ``Yh``/``Yt`` is a positive pair; head ``i`` is also paired with negative
    ``(i + offsets[r]) % B`` for every ``r`` (``Yn`` has ``B`` rows; it may be ``Yt`` itself,
    then add the tail and negative gradients), each negative pair weighted ``gamma``. The
    rounds are evaluated in sets (``rounds x B`` pairs at a time, up to :data:`_PAIR_BLOCK`),
    and a negative's gradient is gathered from the heads that drew it (no scatter, so the sum
    is the same on every backend).
    """
    B = Yh.shape[0]
    YhT = xp.ascontiguousarray(Yh.T)
    YnT = xp.ascontiguousarray(Yn.T)
    loss_pos, g = _pair_terms(YhT - Yt.T, a, b, positive=True, gamma=gamma, xp=xp)
    gh, gt = g, -g
    gn = xp.zeros_like(YnT)
    total = loss_pos.sum()
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1) % B
    heads = np.arange(B, dtype=np.int64)[None, :]
    sets = max(1, -(-(offsets.size * B) // _PAIR_BLOCK))
    group = max(1, -(-offsets.size // sets))  # rounds per set, the sets of equal size
    for s in range(0, offsets.size, group):
        off = offsets[s : s + group][:, None]
        drawn = xp.asarray(_wrap(heads + off, B))  # [r, i]: the negative of head i in round r
        neg = xp.take(YnT, drawn.reshape(-1), axis=1).reshape(-1, *drawn.shape)
        loss_neg, g = _pair_terms(YhT[:, None, :] - neg, a, b, positive=False, gamma=gamma,
                                  xp=xp)  # fmt: skip
        total = total + loss_neg.sum()
        gh = gh + g.sum(axis=1)
        # [r, j]: the head whose round-r negative is row j, as an index into g's (r, i) plane
        drew = xp.asarray(_wrap(heads - off, B) + B * np.arange(off.shape[0])[:, None])
        flat = g.reshape(g.shape[0], -1)
        gn = gn - xp.take(flat, drew.reshape(-1), axis=1).reshape(g.shape).sum(axis=1)
    inv = 1.0 / B
    return total * inv, (gh * inv).T, (gt * inv).T, (gn * inv).T


def _pairwise_dist(Z: Any, xp: Any) -> Any:
    sq = (Z * Z).sum(axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (Z @ Z.T)
    return xp.maximum(d2, 0)


def correlation_loss(X: Any, Y: Any, weight: float, xp: Any) -> tuple[Any, Any]:
    """``-weight * r`` and its gradient at ``Y``.

    ``r`` is the Pearson correlation of the pairwise distances (all ordered pairs ``i != j``)
    of the rows of ``X`` and of ``Y``.
    """
    m = X.shape[0]
    mask = 1.0 - xp.eye(m, dtype=Y.dtype)
    count = float(m * (m - 1))
    dx = xp.sqrt(_pairwise_dist(X, xp))
    dz = xp.sqrt(_pairwise_dist(Y, xp) + Y.dtype.type(1e-12))
    ax = (dx - (dx * mask).sum() / count) * mask
    bz = (dz - (dz * mask).sum() / count) * mask
    sa, sb = (ax * ax).sum(), (bz * bz).sum()
    norm = xp.sqrt(sa * sb) + 1e-30
    r = (ax * bz).sum() / norm
    dr_db = ax / norm - r * bz / (sb + 1e-30)  # zero on the diagonal
    G = (-weight) * dr_db / dz
    # pairs (i, j) and (j, i) are both counted: dL/dy_i = 2 sum_j G_ij (y_i - y_j)
    dY = 2.0 * (G.sum(axis=1)[:, None] * Y - G @ Y)
    return -weight * r, dY.astype(Y.dtype)


def batch_loss_and_grads(
    enc_params: list[Any],
    dec_params: list[Any] | None,
    X_head: Any,
    X_tail: Any,
    X_neg: Any | None,
    offsets: Any,
    *,
    a: float,
    b: float,
    gamma: float,
    activation: str = "relu",
    reconstruction_weight: float = 1.0,
    autoencoder_loss: bool = False,
    correlation_weight: float = 0.0,
    decoder_input: tuple[Any, float] | None = None,
    passes: _Passes | None = None,
    xp: Any = np,
) -> tuple[dict[str, Any], list[Any], list[Any] | None, Any]:
    """The losses of one batch (module docstring) and the gradients of their sum.

    ``X_*`` are standardised inputs (heads, tails, negative pool; ``X_neg=None``: the tails are
    the pool, as in training, so the batch embeds ``2 B`` rows); ``decoder_input`` is the
    decoder's ``(input_mean, input_scale)`` (constants here; default ``(0, 1)``). Returns
    ``({'umap': ..., 'reconstruction': ..., 'correlation': ...}, encoder grads, decoder grads or
    None, embedding of the heads and tails)``; the loss values are 0-d arrays of ``xp`` (entries
    only for the terms that are on).
    """
    passes = passes or _Passes(None, xp)
    B = X_head.shape[0]
    X = xp.concatenate([X_head, X_tail] if X_neg is None else [X_head, X_tail, X_neg])
    Y, tape = passes.forward(enc_params, X, activation)
    Yh, Yt = Y[:B], Y[B : 2 * B]
    Yn = Yt if X_neg is None else Y[2 * B :]
    loss_umap, gh, gt, gn = umap_batch_loss(Yh, Yt, Yn, offsets, a=a, b=b, gamma=gamma, xp=xp)
    dY = xp.concatenate([gh, gt + gn] if X_neg is None else [gh, gt, gn])
    losses = {"umap": loss_umap}
    dec_grads = None
    if dec_params is not None:
        target = X[: 2 * B]
        shift, dscale = (0.0, 1.0) if decoder_input is None else decoder_input
        inv = 1.0 / float(dscale)
        recon, dtape = passes.forward(dec_params, (Y[: 2 * B] - shift) * Y.dtype.type(inv),
                                      activation)  # fmt: skip
        resid = recon - target
        scale = reconstruction_weight / float(resid.size)
        losses["reconstruction"] = (resid * resid).sum() * scale
        dec_grads, dYr = passes.backward(
            dec_params, dtape, resid * resid.dtype.type(2.0 * scale), need_dx=autoencoder_loss
        )
        if autoencoder_loss:
            dY = dY + xp.concatenate([dYr * dYr.dtype.type(inv), xp.zeros_like(Y[2 * B :])])
    if correlation_weight > 0:
        m = min(B, _CORR_ROWS)
        loss_corr, dYc = correlation_loss(X_head[:m], Yh[:m], correlation_weight, xp)
        losses["correlation"] = loss_corr
        dY = dY + xp.concatenate([dYc, xp.zeros_like(Y[m:])])
    enc_grads, _ = passes.backward(enc_params, tape, dY.astype(Y.dtype))
    return losses, enc_grads, dec_grads, Y[: 2 * B]


# ---------------------------------------------------------------------------------------------
# training


@dataclass
class ParametricResult:
    """What :func:`fit_parametric` returns."""

    encoder: Encoder
    decoder: Decoder | None
    #: per epoch (float32 arrays of equal length): ``loss`` (training total) and its terms
    #: ``umap_loss`` [, ``reconstruction_loss``, ``correlation_loss``]; with a validation split
    #: ``val_loss``, ``val_umap_loss`` [, ``val_reconstruction_loss``, ``val_correlation_loss``]
    history: dict[str, np.ndarray]
    #: ``best_epoch`` (1-based, whose weights were kept), ``stopped_early``, ``n_train``,
    #: ``n_validation``, and with a decoder and a validation split
    #: ``val_reconstruction_baseline`` (the reconstruction loss of predicting the training mean)
    info: dict[str, Any] = field(default_factory=dict)


def _edges(graph: sparse.spmatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heads, tails and weights of the undirected edges (upper triangle, positive weight)."""
    G = sparse.triu(sparse.csr_matrix(graph), k=1).tocoo()
    keep = G.data > 0
    return G.row[keep].astype(np.int64), G.col[keep].astype(np.int64), G.data[keep]


def _weighted_picks(rng, cdf, size):
    """``size`` indices drawn with probabilities ``diff(cdf)`` (``cdf`` the cumulative weights).

    The keys are searched in sorted order (then put back in draw order): searching random keys
    in a table of a million edges missed the cache at most of its ~20 steps (0.8 ms for 1,024
    keys while training), sorted keys walk it once.
    """
    u = rng.random(size) * cdf[-1]
    order = np.argsort(u, kind="stable")
    pick = np.empty(size, dtype=np.int64)
    pick[order] = np.searchsorted(cdf, u[order], side="right")
    return np.minimum(pick, cdf.size - 1, out=pick)


def _draw_edges(rng, heads, tails, cdf, size):
    """``size`` edges drawn by weight (``cdf`` over the edges), a random end first."""
    pick = _weighted_picks(rng, cdf, size)
    flip = rng.random(size) < 0.5
    return np.where(flip, tails[pick], heads[pick]), np.where(flip, heads[pick], tails[pick])


def _offsets(rng: np.random.Generator, n_rounds: int, pool: int) -> np.ndarray:
    if n_rounds == 0:
        return np.zeros(0, dtype=np.int64)
    return rng.integers(1, max(2, pool), size=n_rounds) if pool > 1 else np.zeros(n_rounds, int)


def negative_rounds(negative_sample_rate: float, gamma: float) -> tuple[int, float]:
    """Negatives per head and the weight of each: ``(rounds, gamma * rate / rounds)``.

    ``rounds`` is ``max(NEGATIVE_ROUNDS, ceil(rate))`` (0 when the rate is 0), so the expected
    repulsion per positive pair is ``gamma * negative_sample_rate``, a fractional rate included.
    """
    if negative_sample_rate <= 0:
        return 0, float(gamma)
    rounds = max(NEGATIVE_ROUNDS, math.ceil(negative_sample_rate))
    return rounds, float(gamma) * float(negative_sample_rate) / rounds


def _adam_step(params, grads, m1, m2, lr: float, step: int, xp) -> None:
    """One Adam update of ``params`` in place (moments ``m1``, ``m2`` updated too)."""
    c1 = 1.0 - _BETA1**step
    c2 = 1.0 - _BETA2**step
    for p, g, u, v in zip(params, grads, m1, m2, strict=True):
        u *= _BETA1
        u += (1.0 - _BETA1) * g
        v *= _BETA2
        v += (1.0 - _BETA2) * (g * g)
        p -= xp.float32(lr / c1) * u / (xp.sqrt(v * xp.float32(1.0 / c2)) + _ADAM_EPS)


def _with_params(model, params: list[Any], norm: tuple[Any, float] | None = None):
    weights = tuple(np.array(_as_numpy(p), dtype=np.float32) for p in params[0::2])
    biases = tuple(np.array(_as_numpy(p), dtype=np.float32) for p in params[1::2])
    if isinstance(model, Encoder):
        return Encoder(weights, biases, model.input_mean, model.input_scale, model.activation)
    mean, scale = norm if norm is not None else (model.input_mean, model.input_scale)
    return Decoder(
        weights, biases, np.asarray(_as_numpy(mean), dtype=np.float32), float(scale),
        model.output_mean, model.output_scale, model.activation,
    )  # fmt: skip


#: The decoder's Adam step is the encoder's times this: a regression head takes Adam steps of
#: 5e-2 badly (its outputs overshoot and ReLUs die; measured on blobs), 1e-2 well.
DECODER_LR_FACTOR = 0.5
#: Momentum (per step) of the moving averages that standardise the decoder's input.
_NORM_MOMENTUM = 0.9


def _follow_embedding(norm: tuple[Any, float], Y: Any) -> tuple[Any, float]:
    """The decoder's input standardisation moved towards the stats of ``Y``.

    Moving averages; rescaling the first layer so that the decoder's function stays fixed
    trained worse (on blobs).
    """
    mean, scale = norm
    bmean, bscale = _embedding_stats(Y)
    return (
        mean * _NORM_MOMENTUM + bmean * (1.0 - _NORM_MOMENTUM),
        scale * _NORM_MOMENTUM + bscale * (1.0 - _NORM_MOMENTUM),
    )


def _embedding_stats(Y: Any) -> tuple[Any, float]:
    """Mean and one global scale (as :func:`init_encoder`'s) of embedding rows ``Y``."""
    mean = Y.mean(axis=0)
    scale = float(((Y - mean) ** 2).sum(axis=1).mean() / Y.shape[1]) ** 0.5
    return mean, max(scale, 1e-6)


def fit_parametric(
    X: np.ndarray | sparse.spmatrix,
    graph: sparse.spmatrix,
    *,
    a: float,
    b: float,
    settings: ParametricSettings,
    n_components: int = 2,
    negative_sample_rate: float = 5.0,
    gamma: float = 1.0,
    seed: int = 0,
    n_jobs: int | None = None,
    callback: Callable[[int, int, np.ndarray], bool | None] | None = None,
    progress: bool | None = None,
    xp: Any = np,
) -> ParametricResult:
    """Train an encoder (and a decoder) on the symmetric weighted ``graph`` of the rows of ``X``.

    The one training loop of every option (module docstring).

    Parameters
    ----------
    X
        (n, n_features) representation (dense or sparse; densified once).
    graph
        (n, n) symmetric non-negative weights (the pruned UMAP connectivities).
    a, b
        Parameters of ``q(d2) = 1 / (1 + a d2^b)``.
    settings
        The options, resolved (:meth:`ParametricSettings.resolved`: no ``None`` left).
    n_components
        Output dimensions.
    negative_sample_rate
        Expected negatives per positive pair: each head gets ``max(NEGATIVE_ROUNDS,
        ceil(rate))`` negatives from the batch's tails, weighted so that their sum is the
        repulsion of ``rate`` negatives (:func:`negative_rounds`; 0: none).
    gamma
        Weight of the repulsion (per expected negative).
    seed
        Seed of the weight initialisation, the validation split and the batch draws.
    n_jobs
        Threads of the forward/backward passes (None = all); the result does not depend on it.
    callback
        ``callback(epoch, n_training_epochs, embedding)`` after each epoch (the embedding of all
        rows); returning True stops the training (the current weights are kept).
    progress
        Show a tqdm bar (None: in interactive sessions only).
    xp
        Array namespace of the arithmetic (NumPy, or CuPy for a GPU).
    """
    from threadpoolctl import threadpool_limits

    s = settings
    if s.n_training_epochs is None or s.learning_rate is None or s.decoder_layers is None:
        msg = "settings must be resolved (ParametricSettings.resolved) before training."
        raise ValueError(msg)
    n = X.shape[0]
    if n < 2:
        msg = "training an encoder needs at least 2 observations."
        raise ValueError(msg)
    heads, tails, weights = _edges(graph)
    if heads.size == 0:
        msg = "the graph has no edges: there is nothing to train the encoder on."
        raise ValueError(msg)
    dense = np.asarray(X.toarray() if sparse.issparse(X) else X, dtype=np.float32)

    # validation split (cells), then the edges of each part
    split = np.random.default_rng([seed, 3])
    n_val = round(s.validation_fraction * n)
    is_val = np.zeros(n, dtype=bool)
    if n_val:
        is_val[split.permutation(n)[:n_val]] = True
    train_cells = np.flatnonzero(~is_val)
    inside = ~is_val[heads] & ~is_val[tails]
    if train_cells.size < 2 or not inside.any():
        msg = (
            f"validation_fraction={s.validation_fraction} leaves {train_cells.size} training "
            "cells and no edge between them; lower parametric_kwds['validation_fraction']."
        )
        raise ValueError(msg)
    th, tt = heads[inside], tails[inside]
    tcdf = np.cumsum(weights[inside].astype(np.float64))

    enc = init_encoder(dense[train_cells], n_components, tuple(s.encoder_layers),
                       np.random.default_rng([seed, 1]), s.activation)  # fmt: skip
    dec = None
    if s.parametric_reconstruction:
        dec = init_decoder(enc, tuple(s.decoder_layers), np.random.default_rng([seed, 4]),
                           s.activation)  # fmt: skip
    Xs = _standardise(dense, enc, xp)
    params = [xp.array(p, copy=True) for p in _to_xp(enc.weights, enc.biases, xp)]
    dparams = None if dec is None else [
        xp.array(p, copy=True) for p in _to_xp(dec.weights, dec.biases, xp)
    ]  # fmt: skip
    all_params = params + ([] if dparams is None else dparams)
    m1 = [xp.zeros_like(p) for p in all_params]
    m2 = [xp.zeros_like(p) for p in all_params]
    n_rounds, gamma_neg = negative_rounds(negative_sample_rate, gamma)
    wanted = s.batch_size or min(DEFAULT_BATCH_SIZE, max(32, train_cells.size // 8))
    batch = int(min(wanted, max(2, th.size)))
    steps = max(1, -(-train_cells.size // batch))
    n_epochs = int(s.n_training_epochs)
    total_steps = n_epochs * steps
    rng = np.random.default_rng([seed, 2])
    kw = {
        "a": a, "b": b, "gamma": gamma_neg, "activation": s.activation,
        "reconstruction_weight": s.parametric_reconstruction_loss_weight,
        "autoencoder_loss": s.autoencoder_loss,
        "correlation_weight": s.global_correlation_loss_weight,
    }  # fmt: skip

    val = _validation_set(is_val, heads, tails, weights, batch, n_rounds, Xs, split, xp)
    info: dict[str, Any] = {
        "n_train": int(train_cells.size),
        "n_validation": int(n_val),
        "stopped_early": False,
    }
    if val is not None and dec is not None:
        centred = Xs[val["cells"]] - Xs[xp.asarray(train_cells)].mean(axis=0)
        info["val_reconstruction_baseline"] = float((centred * centred).mean()) * float(
            s.parametric_reconstruction_loss_weight
        )
    names = ["loss", "umap_loss"]
    if dec is not None:
        names.append("reconstruction_loss")
    if s.global_correlation_loss_weight > 0:
        names.append("correlation_loss")
    if val is not None:
        names += ["val_" + k for k in names]
    history: dict[str, list[float]] = {k: [] for k in names}

    bar = None
    show = progress if progress is not None else (hasattr(sys, "ps1") and total_steps > 2000)
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_epochs, desc="parametric umap", unit="epoch", file=sys.stderr)
    best, best_epoch, since = math.inf, 0, 0
    best_params = best_norm = norm = None
    if dec is not None:  # the decoder's input standardisation starts at the initial embedding
        first = xp.asarray(train_cells[:_VAL_ROWS])
        with threadpool_limits(1 if xp is np else None):
            norm = _embedding_stats(_forward(params, Xs[first], s.activation, xp)[-1])
    step = 0
    pool = None
    if xp is np:
        from concurrent.futures import ThreadPoolExecutor

        from ._numba import resolve_n_jobs

        workers = resolve_n_jobs(n_jobs)
        pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
    passes = _Passes(pool, xp)
    # small products: one BLAS thread per chunk is fastest and keeps results independent of
    # n_jobs (the chunks run on the pool)
    try:
        with threadpool_limits(1 if xp is np else None):
            for epoch in range(n_epochs):
                acc = {k: 0.0 for k in names if not k.startswith("val_") and k != "loss"}
                drawn_h, drawn_t = _draw_edges(rng, th, tt, tcdf, steps * batch)
                for k in range(steps):
                    h = drawn_h[k * batch : (k + 1) * batch]
                    t = drawn_t[k * batch : (k + 1) * batch]
                    offsets = _offsets(rng, n_rounds, batch)
                    Xb = Xs[xp.asarray(np.concatenate([h, t]))]
                    losses, grads, dgrads, Yb = batch_loss_and_grads(
                        params, dparams, Xb[:batch], Xb[batch:], None,
                        offsets, decoder_input=norm, passes=passes, xp=xp, **kw,
                    )  # fmt: skip
                    if norm is not None:
                        norm = _follow_embedding(norm, Yb)
                    for k, v in losses.items():
                        acc[k + "_loss"] += v
                    step += 1
                    frac = (step - 1) / max(1, total_steps - 1)
                    lr = float(s.learning_rate) * (1.0 - 0.9 * frac)
                    ne = len(params)
                    _adam_step(params, grads, m1[:ne], m2[:ne], lr, step, xp)
                    if dgrads is not None:
                        lr_dec = lr * DECODER_LR_FACTOR
                        _adam_step(dparams, dgrads, m1[ne:], m2[ne:], lr_dec, step, xp)
                epoch_losses = {k: float(v) / steps for k, v in acc.items()}
                epoch_losses["loss"] = sum(epoch_losses.values())
                if val is not None:
                    vl = _validation_losses(params, dparams, norm, val, passes, xp, kw)
                    epoch_losses.update({"val_" + k: v for k, v in vl.items()})
                for k in names:
                    history[k].append(epoch_losses[k])
                monitored = epoch_losses["val_loss" if val is not None else "loss"]
                if not math.isfinite(monitored):
                    msg = "encoder training diverged (non-finite loss); lower the learning rate."
                    raise FloatingPointError(msg)
                if bar is not None:
                    bar.update(1)
                if monitored < best - s.min_delta * abs(best) or best_params is None:
                    best, best_epoch, since = monitored, epoch + 1, 0
                    best_params = [xp.array(p, copy=True) for p in all_params]
                    best_norm = norm
                else:
                    since += 1
                if callback is not None:
                    current = _with_params(enc, params)
                    if callback(epoch + 1, n_epochs, current.transform(dense, xp=xp)):
                        logger.info("parametric: stopped by the callback after epoch %d", epoch + 1)
                        best_params, best_epoch, best_norm = None, epoch + 1, norm
                        break
                if since >= s.patience and epoch + 1 < n_epochs:
                    info["stopped_early"] = True
                    logger.info(
                        "parametric: no improvement for %d epochs; stopped after epoch %d, "
                        "keeping epoch %d",
                        s.patience, epoch + 1, best_epoch,
                    )  # fmt: skip
                    break
    finally:
        if pool is not None:
            pool.shutdown()
        if bar is not None:
            bar.close()
    if best_params is not None:
        for p, kept in zip(all_params, best_params, strict=True):
            p[...] = kept
        norm = best_norm
    info["best_epoch"] = int(best_epoch)
    info["n_epochs_run"] = len(history["loss"])
    out_hist = {k: np.asarray(v, dtype=np.float32) for k, v in history.items()}
    return ParametricResult(
        _with_params(enc, params),
        None if dec is None else _with_params(dec, dparams, norm),
        out_hist,
        info,
    )


def _validation_set(is_val, heads, tails, weights, batch, n_rounds, Xs, rng, xp):
    """Fixed validation edges (each leaving a held-out cell), negative offsets, held-out cells."""
    if not is_val.any():
        return None
    cross = is_val[heads] | is_val[tails]
    if not cross.any():
        return None
    vh, vt, vw = heads[cross], tails[cross], weights[cross]
    # orient every edge so that its head is a held-out cell
    swap = ~is_val[vh]
    vh, vt = np.where(swap, vt, vh), np.where(swap, vh, vt)
    size = int(min(_VAL_ROWS, max(batch, vh.size)))
    pick = _weighted_picks(rng, np.cumsum(vw.astype(np.float64)), size)
    h, t = vh[pick], vt[pick]
    val_cells = np.flatnonzero(is_val)
    cells = val_cells[:_VAL_ROWS] if val_cells.size > _VAL_ROWS else val_cells
    return {
        "X_head": Xs[xp.asarray(h)],
        "X_tail": Xs[xp.asarray(t)],
        "offsets": _offsets(rng, n_rounds, size),
        "cells": xp.asarray(cells),
        "X_cells": Xs[xp.asarray(cells)],
    }


def _validation_losses(params, dparams, norm, val, passes, xp, kw) -> dict[str, float]:
    """The validation losses (same definitions as the training ones) of the current weights."""
    act = kw["activation"]
    B = val["X_head"].shape[0]
    X = xp.concatenate([val["X_head"], val["X_tail"]])
    Y, _ = passes.forward(params, X, act)
    loss, *_ = umap_batch_loss(Y[:B], Y[B:], Y[B:], val["offsets"], a=kw["a"], b=kw["b"],
                               gamma=kw["gamma"], xp=xp)  # fmt: skip
    out = {"umap_loss": float(loss)}
    if dparams is not None:
        Yc, _ = passes.forward(params, val["X_cells"], act)
        R, _ = passes.forward(dparams, (Yc - norm[0]) * Yc.dtype.type(1.0 / norm[1]), act)
        resid = R - val["X_cells"]
        out["reconstruction_loss"] = float((resid * resid).mean()) * kw["reconstruction_weight"]
    if kw["correlation_weight"] > 0:
        m = min(B, _CORR_ROWS)
        loss_corr, _ = correlation_loss(val["X_head"][:m], Y[:m], kw["correlation_weight"], xp)
        out["correlation_loss"] = float(loss_corr)
    out["loss"] = sum(out.values())
    return out


def train_encoder(
    X: np.ndarray | sparse.spmatrix,
    graph: sparse.spmatrix,
    *,
    a: float,
    b: float,
    n_components: int = 2,
    n_epochs: int = 200,
    hidden: tuple[int, ...] = DEFAULT_HIDDEN,
    batch_size: int = 1024,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    negative_sample_rate: float = 5.0,
    gamma: float = 1.0,
    seed: int = 0,
    callback: Callable[[int, int, np.ndarray], bool | None] | None = None,
    progress: bool | None = None,
    xp: Any = np,
) -> tuple[Encoder, np.ndarray]:
    """An encoder alone, trained for exactly ``n_epochs`` on all cells (no validation split).

    A shorthand of :func:`fit_parametric`; returns the encoder and the training loss per epoch.
    """
    settings = ParametricSettings(
        encoder_layers=tuple(hidden), decoder_layers=(), batch_size=batch_size,
        n_training_epochs=n_epochs, learning_rate=learning_rate, validation_fraction=0.0,
        patience=n_epochs + 1,
    )  # fmt: skip
    result = fit_parametric(
        X, graph, a=a, b=b, settings=settings, n_components=n_components,
        negative_sample_rate=negative_sample_rate, gamma=gamma, seed=seed, callback=callback,
        progress=progress, xp=xp,
    )  # fmt: skip
    return result.encoder, result.history["loss"]


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
    settings: ParametricSettings | None = None,
    xp: Any = np,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The ``method='parametric'`` backend of ``tl.umap`` (the layout-backend signature).

    Trains on ``graph`` (pruned and symmetrised as the layout does for ``n_epochs``) with the
    resolved ``settings`` (default: :class:`ParametricSettings` resolved for ``alpha``).
    ``init`` only fixes the number of dimensions: the encoder starts from random weights.
    Returns the encoder's embedding of the training data and the extras for ``.uns[key]``:
    ``encoder``
    (:meth:`Encoder.to_dict`), ``decoder`` (with ``parametric_reconstruction``), ``history``
    (plain float32 arrays per epoch, :class:`ParametricResult`) and ``training`` (the
    :class:`ParametricResult` info: ``best_epoch``, ``stopped_early``, ...).
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
    s = settings if settings is not None else ParametricSettings().resolved(None, alpha)
    result = fit_parametric(
        X,
        prepare_graph(graph, n_epochs),
        a=a,
        b=b,
        settings=s,
        n_components=int(init.shape[1]),
        negative_sample_rate=negative_sample_rate,
        gamma=gamma,
        seed=seed,
        n_jobs=n_jobs,
        callback=callback,
        progress=progress,
        xp=xp,
    )
    embedding = result.encoder.transform(X, n_jobs=n_jobs, xp=xp)
    extras: dict[str, Any] = {
        "encoder": result.encoder.to_dict(),
        "history": result.history,
        "training": {k: (bool(v) if isinstance(v, bool) else v) for k, v in result.info.items()},
    }
    if result.decoder is not None:
        extras["decoder"] = result.decoder.to_dict()
    return embedding, extras
