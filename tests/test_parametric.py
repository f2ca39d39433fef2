"""Parametric UMAP: gradients of every loss, the training loop, parametric_kwds, storage in .uns,
h5ad/zarr round trips (and files of the previous layout), inverse transform."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

import annumap
from annumap._core import parametric as P

from .conftest import assert_adata_equal, make_adata

A, B = 0.58303, 1.33417


def _tiny_params(rng, sizes):
    params = []
    for i in range(len(sizes) - 1):
        params.append(rng.normal(scale=0.7, size=(sizes[i], sizes[i + 1])))
        params.append(rng.normal(scale=0.1, size=sizes[i + 1]))
    return params


def _numeric_grad(f, params, h=1e-6):
    out = []
    for p in params:
        num = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + h
            up = f()
            p[idx] = old - h
            down = f()
            p[idx] = old
            num[idx] = (up - down) / (2 * h)
        out.append(num)
    return out


CASES = {
    "umap": {},
    "umap_b<1": {"b": 0.89506},
    "reconstruction": {"dec": True},
    "autoencoder": {"dec": True, "autoencoder_loss": True, "reconstruction_weight": 0.7},
    "correlation": {"correlation_weight": 1.5},
    "everything_tanh": {
        "dec": True,
        "autoencoder_loss": True,
        "correlation_weight": 0.5,
        "activation": "tanh",
    },
    "elu": {"activation": "elu", "dec": True},
    "sigmoid": {"activation": "sigmoid"},
    "softplus": {"activation": "softplus", "correlation_weight": 1.0},
    "leaky_relu": {"activation": "leaky_relu"},
    "tails_as_negatives": {"pool": "tails", "dec": True, "correlation_weight": 0.5},
    "tails_as_negatives_autoencoder": {"pool": "tails", "dec": True, "autoencoder_loss": True},
}


@pytest.mark.parametrize("case", list(CASES))
def test_gradients_equal_finite_differences(case):
    """Every loss term's backprop, through encoder and decoder, against central differences."""
    cfg = dict(CASES[case])
    rng = np.random.default_rng(0)
    enc = _tiny_params(rng, (4, 6, 5, 2))
    dec = _tiny_params(rng, (2, 5, 4)) if cfg.pop("dec", False) else None
    Xh, Xt, Xn = (rng.normal(size=(7, 4)) for _ in range(3))
    if cfg.pop("pool", None) == "tails":  # training's negatives: the batch's own tails
        Xn = None
    offsets = np.array([1, 3, 6])
    kw = {"a": A, "b": cfg.pop("b", B), "gamma": 1.3, **cfg}
    if dec is not None:
        kw["decoder_input"] = (np.array([0.3, -0.2]), 1.7)

    def run():
        return P.batch_loss_and_grads(enc, dec, Xh, Xt, Xn, offsets, **kw)

    losses, g_enc, g_dec, _ = run()
    assert losses["umap"] > 0 and all(np.isfinite(float(v)) for v in losses.values())
    assert ("reconstruction" in losses) == (dec is not None)
    assert ("correlation" in losses) == ("correlation_weight" in cfg)
    # the encoder sees the reconstruction loss only with autoencoder_loss (stop-gradient)
    enc_terms = [k for k in losses if k != "reconstruction" or kw.get("autoencoder_loss")]

    def f_enc():
        out = run()[0]
        return sum(float(out[k]) for k in enc_terms)

    for g, num in zip(g_enc, _numeric_grad(f_enc, enc), strict=True):
        np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-7)
    if dec is not None:

        def f_dec():
            return float(run()[0]["reconstruction"])

        for g, num in zip(g_dec, _numeric_grad(f_dec, dec), strict=True):
            np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-7)


def test_tails_as_negatives_is_the_same_loss_as_a_copy_of_them():
    rng = np.random.default_rng(1)
    enc = _tiny_params(rng, (4, 6, 2))
    Xh, Xt = rng.normal(size=(9, 4)), rng.normal(size=(9, 4))
    kw = {"a": A, "b": B, "gamma": 0.25}
    offsets = np.array([2, 5, 7])
    own = P.batch_loss_and_grads(enc, None, Xh, Xt, None, offsets, **kw)
    copy = P.batch_loss_and_grads(enc, None, Xh, Xt, Xt.copy(), offsets, **kw)
    np.testing.assert_allclose(float(own[0]["umap"]), float(copy[0]["umap"]), rtol=1e-12)
    for g1, g2 in zip(own[1], copy[1], strict=True):
        np.testing.assert_allclose(g1, g2, rtol=1e-10, atol=1e-12)
    assert own[3].shape == (18, 2)


def test_negative_rounds_keep_the_expected_repulsion():
    assert P.negative_rounds(5.0, 1.0) == (P.NEGATIVE_ROUNDS, 5.0 / P.NEGATIVE_ROUNDS)
    assert P.negative_rounds(P.NEGATIVE_ROUNDS + 10, 2.0) == (P.NEGATIVE_ROUNDS + 10, 2.0)
    assert P.negative_rounds(P.NEGATIVE_ROUNDS - 0.5, 1.0) == (
        P.NEGATIVE_ROUNDS,
        1.0 - 0.5 / P.NEGATIVE_ROUNDS,
    )
    assert P.negative_rounds(0.5, 1.0) == (P.NEGATIVE_ROUNDS, 0.5 / P.NEGATIVE_ROUNDS)
    assert P.negative_rounds(0.0, 1.0) == (0, 1.0)
    # equidistant negatives: the loss of R negatives of weight rate/R is rate negatives' loss
    Yh = np.zeros((40, 2))
    Yt = np.full((40, 2), 0.3)
    Yn = np.tile([[1.0, 2.0]], (40, 1))
    few = P.umap_batch_loss(Yh, Yt, Yn, np.arange(1, 6), a=A, b=B, gamma=1.0, xp=np)
    rounds, w = P.negative_rounds(5, 1.0)
    many = P.umap_batch_loss(Yh, Yt, Yn, np.arange(1, rounds + 1), a=A, b=B, gamma=w, xp=np)
    np.testing.assert_allclose(float(few[0]), float(many[0]), rtol=1e-12)
    np.testing.assert_allclose(few[1], many[1], rtol=1e-12)


def test_correlation_loss_is_pearson_of_pairwise_distances_and_its_gradient():
    from scipy.spatial.distance import pdist

    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(9, 5)), rng.normal(size=(9, 2))
    loss, dY = P.correlation_loss(X, Y, 2.0, np)
    r = np.corrcoef(pdist(X), pdist(Y))[0, 1]
    np.testing.assert_allclose(float(loss), -2.0 * r, rtol=1e-9)

    def f():
        return float(P.correlation_loss(X, Y, 2.0, np)[0])

    (num,) = _numeric_grad(f, [Y])
    np.testing.assert_allclose(dY, num, rtol=1e-5, atol=1e-8)
    # the embedding that is a scaled copy of the data has correlation 1 (the minimum loss)
    loss_best, _ = P.correlation_loss(X[:, :2], 3 * X[:, :2], 1.0, np)
    np.testing.assert_allclose(float(loss_best), -1.0, rtol=1e-9)


def test_pair_gradients_are_umaps_coefficients():
    # without the eps regulariser the per-pair gradients are UMAP's attraction and repulsion
    diff = np.array([[0.3, -0.4], [1.5, 2.0], [-3.0, 0.1]])
    d2 = (diff**2).sum(1)
    _, g_pos = P._pair_terms(diff.T, A, B, positive=True, gamma=1.0, xp=np)
    attract = 2 * A * B * d2 ** (B - 1) / (1 + A * d2**B)
    np.testing.assert_allclose(g_pos.T, attract[:, None] * diff, rtol=1e-12)
    _, g_neg = P._pair_terms(diff.T, A, B, positive=False, gamma=2.0, xp=np)
    repel = 2 * 2.0 * B / (d2 * (1 + A * d2**B))
    np.testing.assert_allclose(g_neg.T, -repel[:, None] * diff, rtol=2e-3)


def test_chunked_passes_equal_one_pass():
    rng = np.random.default_rng(5)
    params = [p.astype(np.float32) for p in _tiny_params(rng, (6, 40, 40, 2))]
    X = rng.normal(size=(1300, 6)).astype(np.float32)
    one = P._Passes(None, np, chunk=10_000)
    many = P._Passes(None, np, chunk=128)
    Y1, t1 = one.forward(params, X, "relu")
    Y2, t2 = many.forward(params, X, "relu")
    np.testing.assert_allclose(Y1, Y2, rtol=1e-5, atol=1e-5)
    g1, _ = one.backward(params, t1, Y1)
    g2, _ = many.backward(params, t2, Y1)
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_model_dicts_round_trip_and_validation():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 6)).astype(np.float32)
    enc = P.init_encoder(X, 3, (8, 5), rng, activation="tanh")
    assert enc.layer_sizes == (6, 8, 5, 3)
    d = enc.to_dict()
    back = P.Encoder.from_dict(d)
    np.testing.assert_array_equal(back.transform(X), enc.transform(X))
    for W in d["layers"].values():
        assert W.dtype == np.float32
    assert d["layer_sizes"].dtype == np.int64 and d["activation"] == "tanh"
    dec = P.init_decoder(enc, (5, 8), rng, activation="elu")
    assert dec.layer_sizes == (3, 5, 8, 6)
    Y = enc.transform(X)
    np.testing.assert_array_equal(P.Decoder.from_dict(dec.to_dict()).transform(Y), dec.transform(Y))

    def broken(**change):
        out = {**d, "layers": dict(d["layers"])}
        for key, value in change.items():
            if key in ("W1", "b0"):
                out["layers"][key] = value
            else:
                out[key] = value
        return out

    with pytest.raises(ValueError, match="W1 has shape"):
        P.Encoder.from_dict(broken(W1=np.zeros((8, 4), np.float32)))
    with pytest.raises(ValueError, match="NaN"):
        P.Encoder.from_dict(broken(b0=np.full(8, np.nan, np.float32)))
    with pytest.raises(ValueError, match="supported"):
        P.Encoder.from_dict(broken(activation="swish"))
    with pytest.raises(ValueError, match="input_scale"):
        P.Encoder.from_dict(broken(input_scale=0.0))
    with pytest.raises(ValueError, match="format_version"):
        P.Encoder.from_dict(broken(format_version=99))
    with pytest.raises(KeyError, match="missing"):
        P.Encoder.from_dict({"layers": {}})
    with pytest.raises(KeyError, match="missing"):
        P.Decoder.from_dict(d)  # an encoder's dict is not a decoder's
    with pytest.raises(ValueError, match="expects 6 input features"):
        enc.transform(X[:, :5])
    with pytest.raises(ValueError, match="expects 3-D"):
        dec.transform(X)


def test_forward_pass_is_thread_independent():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(3000, 10)).astype(np.float32)
    enc = P.init_encoder(X, 2, P.DEFAULT_HIDDEN, rng)
    full = enc.transform(X, batch_size=512, n_jobs=2)
    np.testing.assert_array_equal(full, enc.transform(X, batch_size=512, n_jobs=1))
    np.testing.assert_allclose(full[1234:1300], enc.transform(X[1234:1300]), atol=1e-5)
    np.testing.assert_array_equal(full, enc.transform(sparse.csr_matrix(X), batch_size=512))


# ---------------------------------------------------------------------------------------------
# the training loop


def _blob_graph(n=500, seed=0):
    from annumap._core.fuzzy import fuzzy_simplicial_set
    from annumap._core.knn._exact import exact_knn

    from .conftest import blobs

    X, labels = blobs(n=n, dim=8, centers=3, seed=seed)
    idx, dist = exact_knn(X, 15)
    return X, labels, fuzzy_simplicial_set(idx, dist)


def _settings(**kw):
    base = {"encoder_layers": (32, 32), "n_training_epochs": 30, "patience": 100}
    return P.ParametricSettings(**{**base, **kw}).resolved(500, 1.0)


def test_training_is_deterministic_thread_independent_and_learns():
    X, labels, G = _blob_graph(n=700)
    s = _settings(
        parametric_reconstruction=True, global_correlation_loss_weight=0.2, batch_size=400
    )  # fmt: skip  (2 x 400 rows: chunks of 512 on 2 threads)
    kw = {"a": A, "b": B, "settings": s}
    r1 = P.fit_parametric(X, G, seed=3, n_jobs=1, **kw)
    r2 = P.fit_parametric(X, G, seed=3, n_jobs=2, **kw)
    for m1, m2 in ((r1.encoder, r2.encoder), (r1.decoder, r2.decoder)):
        for w1, w2 in zip(m1.weights + m1.biases, m2.weights + m2.biases, strict=True):
            np.testing.assert_array_equal(w1, w2)
    assert r1.history.keys() == r2.history.keys()
    for k in r1.history:
        np.testing.assert_array_equal(r1.history[k], r2.history[k])
    r3 = P.fit_parametric(X, G, seed=4, n_jobs=1, **kw)
    assert not np.array_equal(r3.encoder.weights[0], r1.encoder.weights[0])
    h = r1.history
    assert set(h) == {
        "loss",
        "umap_loss",
        "reconstruction_loss",
        "correlation_loss",
        "val_loss",
        "val_umap_loss",
        "val_reconstruction_loss",
        "val_correlation_loss",
    }
    assert all(v.shape == (30,) and v.dtype == np.float32 for v in h.values())
    np.testing.assert_allclose(
        h["loss"], h["umap_loss"] + h["reconstruction_loss"] + h["correlation_loss"], rtol=1e-5
    )
    assert h["val_umap_loss"][-5:].mean() < 0.8 * h["val_umap_loss"][:2].mean()
    assert h["correlation_loss"][-5:].mean() < -0.2 * 0.8  # r > 0.8: distances correlate
    assert r1.info["n_validation"] == 70 and r1.info["n_train"] == 630
    # held-out cells: reconstructed better than by the training mean
    assert h["val_reconstruction_loss"][-1] < 0.5 * r1.info["val_reconstruction_baseline"]
    # the embedding separates the blobs: every point's 10 nearest neighbours share its label
    from sklearn.neighbors import KNeighborsClassifier

    Y = r1.encoder.transform(X)
    assert (KNeighborsClassifier(10).fit(Y, labels).predict(Y) == labels).mean() > 0.99


def test_early_stopping_stops_on_a_plateau_and_keeps_the_best_epoch():
    X, _, G = _blob_graph(n=300)
    s = _settings(n_training_epochs=400, patience=4, min_delta=0.01, learning_rate=1e-2)
    r = P.fit_parametric(X, G, a=A, b=B, settings=s)
    n_run = r.info["n_epochs_run"]
    assert r.info["stopped_early"] and n_run < 400
    assert n_run == r.info["best_epoch"] + 4
    val = r.history["val_loss"]
    assert val.size == n_run
    best = r.info["best_epoch"] - 1
    # no later epoch improved on the kept one by the relative min_delta
    assert (val[best + 1 :] >= val[best] * (1 - 0.01)).all()
    # the kept weights are the best epoch's: evaluating them again gives its validation loss
    s_all = _settings(n_training_epochs=n_run, patience=1000, min_delta=0.01,
                      learning_rate=1e-2)  # fmt: skip
    full = P.fit_parametric(X, G, a=A, b=B, settings=s_all)
    assert not np.array_equal(full.encoder.weights[0], r.encoder.weights[0])
    # without a validation split the training loss is monitored
    s0 = _settings(n_training_epochs=400, patience=3, min_delta=0.01, validation_fraction=0.0)
    r0 = P.fit_parametric(X, G, a=A, b=B, settings=s0)
    assert r0.info["stopped_early"] and "val_loss" not in r0.history
    assert r0.info["n_validation"] == 0 and r0.info["n_train"] == 300


def test_callback_sees_each_epoch_and_can_stop():
    X, _, G = _blob_graph(n=200)
    seen = []

    def stop_at_3(epoch, n_epochs, Y):
        seen.append((epoch, n_epochs, Y.shape))
        return epoch == 3

    _, hist = P.train_encoder(X, G, a=A, b=B, n_epochs=10, hidden=(8,), callback=stop_at_3)
    assert seen == [(1, 10, (200, 2)), (2, 10, (200, 2)), (3, 10, (200, 2))]
    assert hist.shape == (3,)


def test_training_rejects_an_edgeless_graph_and_unresolved_settings():
    X = np.zeros((10, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="no edges"):
        P.train_encoder(X, sparse.csr_matrix((10, 10)), a=A, b=B, n_epochs=1)
    _, _, G = _blob_graph(n=100)
    with pytest.raises(ValueError, match="resolved"):
        P.fit_parametric(X, G, a=A, b=B, settings=P.ParametricSettings())


# ---------------------------------------------------------------------------------------------
# tl.umap(method='parametric', parametric_kwds=...)


@pytest.fixture(scope="module")
def parametric_blobs():
    adata = make_adata(n=600, dim=10, centers=4, seed=5)
    annumap.pp.neighbors(adata, n_neighbors=15)
    # a small data set: a smaller step than the default 2e-2 lets the decoder settle in 25 epochs
    kw = {"parametric_reconstruction": True, "n_training_epochs": 25, "encoder_layers": [64, 64],
          "learning_rate": 1e-2}  # fmt: skip
    annumap.tl.umap(adata, method="parametric", parametric_kwds=kw)
    return adata


def _plain(value):
    if isinstance(value, dict):
        return all(_plain(v) for v in value.values())
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "fib"
    return isinstance(value, bool | int | float | str | np.bool_)


def test_tl_umap_parametric_stores_plain_model_history_and_settings(parametric_blobs):
    adata = parametric_blobs
    Y = adata.obsm["X_umap"]
    assert Y.dtype == np.float32 and Y.shape == (600, 2) and np.isfinite(Y).all()
    uns = adata.uns["umap"]
    assert set(uns) == {"params", "encoder", "decoder", "history", "training"}
    assert _plain(dict(uns))
    params = uns["params"]
    assert params["method"] == "parametric"
    kw = params["parametric_kwds"]
    assert kw["parametric_reconstruction"] is True and kw["n_training_epochs"] == 25
    assert list(kw["decoder_layers"]) == [64, 64] and kw["learning_rate"] == 1e-2
    assert list(uns["encoder"]["layer_sizes"]) == [10, 64, 64, 2]
    assert list(uns["decoder"]["layer_sizes"]) == [2, 64, 64, 10]
    n_run = uns["training"]["n_epochs_run"]
    assert all(v.shape == (n_run,) for v in uns["history"].values())
    # .obsm['X_umap'] is the encoder's forward pass of the training data
    model = P.Encoder.from_dict(uns["encoder"])
    np.testing.assert_array_equal(model.transform(np.asarray(adata.X)), Y)
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(15).fit(Y, adata.obs["label"])
    assert (clf.predict(Y) == adata.obs["label"]).mean() > 0.99


def test_default_parametric_settings_and_rules():
    s = P.ParametricSettings().resolved(None, 0.5)
    assert s.n_training_epochs == 60 and s.learning_rate == pytest.approx(1e-2)
    assert P.ParametricSettings().resolved(500, 1.0).n_training_epochs == 60
    assert s.decoder_layers == (100, 100, 100) and s.patience == 10
    assert P.ParametricSettings(encoder_layers=(8, 16)).resolved(200, 1.0).decoder_layers == (
        16,
        8,
    )
    assert P.ParametricSettings().resolved(200, 1.0).n_training_epochs == 24


def test_tl_umap_parametric_is_reproducible_across_threads(parametric_blobs):
    adata = parametric_blobs
    kw = {"n_training_epochs": 5, "parametric_reconstruction": True}
    runs = [
        annumap.tl.umap(adata, method="parametric", n_jobs=n, copy=True, parametric_kwds=kw)
        for n in (1, 2)
    ]
    np.testing.assert_array_equal(runs[0].obsm["X_umap"], runs[1].obsm["X_umap"])
    assert_adata_equal(runs[0], runs[1])
    other = annumap.tl.umap(
        adata, method="parametric", random_state=1, copy=True, parametric_kwds=kw
    )
    assert not np.array_equal(other.obsm["X_umap"], runs[0].obsm["X_umap"])


@pytest.mark.parametrize(
    ("kwds", "err", "match"),
    [
        ({"hidden": (8,)}, KeyError, r"unknown keys \['hidden'\]; valid keys: \['encoder_layers'"),
        ({"encoder_layer": 3, "dims": 2}, KeyError, r"\['dims', 'encoder_layer'\]"),
        ({"encoder_layers": [8, 0]}, ValueError, "encoder_layers"),
        ({"encoder_layers": "big"}, TypeError, "encoder_layers"),
        ({"activation": "gelu"}, ValueError, "activation"),
        ({"batch_size": 1}, ValueError, "batch_size"),
        ({"batch_size": 64.0}, TypeError, "batch_size"),
        ({"n_training_epochs": 0}, ValueError, "n_training_epochs"),
        ({"learning_rate": 0}, ValueError, "learning_rate"),
        ({"validation_fraction": 1.0}, ValueError, "validation_fraction"),
        ({"patience": True}, TypeError, "patience"),
        ({"global_correlation_loss_weight": -1}, ValueError, "global_correlation"),
        ({"parametric_reconstruction": 1}, TypeError, "parametric_reconstruction"),
        ({"autoencoder_loss": True}, ValueError, "needs parametric_reconstruction=True"),
        ([("batch_size", 8)], TypeError, "parametric_kwds must be a dict"),
    ],
)
def test_bad_parametric_kwds_fail_before_any_work(kwds, err, match):
    adata = make_adata(n=100)
    annumap.pp.neighbors(adata, n_neighbors=10)
    before = adata.copy()
    with pytest.raises(err, match=match):
        annumap.tl.umap(adata, method="parametric", parametric_kwds=kwds)
    assert_adata_equal(adata, before)


def test_parametric_kwds_need_method_parametric():
    adata = make_adata(n=100)
    annumap.pp.neighbors(adata, n_neighbors=10)
    with pytest.raises(ValueError, match="only used by method='parametric'"):
        annumap.tl.umap(adata, parametric_kwds={"batch_size": 64})


def _write_read(adata, tmp_path, fmt):
    if fmt == "h5ad":
        adata.write_h5ad(tmp_path / "a.h5ad")
        return ad.read_h5ad(tmp_path / "a.h5ad")
    adata.write_zarr(tmp_path / "a.zarr")
    return ad.read_zarr(tmp_path / "a.zarr")


@pytest.mark.parametrize("fmt", ["h5ad", "zarr"])
@pytest.mark.filterwarnings("ignore:.*zarr.*:UserWarning")
def test_round_trip_keeps_the_model_bit_identical(parametric_blobs, tmp_path, fmt):
    adata = parametric_blobs
    query = make_adata(n=120, dim=10, centers=4, seed=5)  # same blobs, new cells
    query.X = query.X + np.float32(0.01)
    before = annumap.tl.umap_transform(query, adata, copy=True)
    assert before.uns["umap_transform"]["params"]["method"] == "parametric"
    inv_before = annumap.tl.umap_inverse_transform(adata, before.obsm["X_umap"])
    loaded = _write_read(adata, tmp_path, fmt)
    assert_adata_equal(loaded, adata)  # every array of the model, history and settings
    after = annumap.tl.umap_transform(query, loaded, copy=True)
    np.testing.assert_array_equal(after.obsm["X_umap"], before.obsm["X_umap"])
    inv_after = annumap.tl.umap_inverse_transform(loaded, before.obsm["X_umap"])
    np.testing.assert_array_equal(inv_after.X, inv_before.X)
    # the stored embedding is what a forward pass of the loaded model gives
    reloaded = annumap.tl.umap_transform(adata.copy(), loaded, copy=True)
    np.testing.assert_array_equal(reloaded.obsm["X_umap"], adata.obsm["X_umap"])


def test_h5ad_holds_numbers_and_strings_only(parametric_blobs, tmp_path):
    import h5py

    path = tmp_path / "ref.h5ad"
    parametric_blobs.write_h5ad(path)
    kinds = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            string = h5py.check_string_dtype(obj.dtype) is not None
            kinds.append("str" if string else obj.dtype.kind)

    with h5py.File(path, "r") as f:
        for part in ("encoder", "decoder", "history", "training"):
            f[f"uns/umap/{part}"].visititems(visit)
    assert kinds and set(kinds) <= {"f", "i", "b", "str"}, kinds


def _previous_layout(adata):
    """``.uns['umap']`` as annumap wrote it before parametric_kwds (format 1: the encoder dict
    holds loss_history and the settings; no decoder, history or training entries)."""
    from annumap._core.layout import prepare_graph

    G = prepare_graph(adata.obsp["connectivities"], 100)
    enc, hist = P.train_encoder(np.asarray(adata.X), G, a=A, b=B, n_epochs=5)
    record = enc.to_dict()
    record.update(format_version=1, loss_history=hist, n_epochs=int(hist.size),
                  batch_size=1024, learning_rate=3e-3)  # fmt: skip
    adata.obsm["X_umap"] = enc.transform(np.asarray(adata.X))
    adata.uns["umap"] = {
        "params": {"a": A, "b": B, "min_dist": 0.5, "spread": 1.0, "n_components": 2,
                   "n_epochs": 100, "alpha": 1.0, "gamma": 1.0, "negative_sample_rate": 5.0,
                   "init_pos": "spectral", "method": "parametric",
                   "neighbors_key": "neighbors"},
        "encoder": record,
    }  # fmt: skip
    return enc


def test_a_model_of_the_previous_layout_still_loads(tmp_path):
    adata = make_adata(n=300, dim=10, centers=4, seed=5)
    annumap.pp.neighbors(adata, n_neighbors=15)
    enc = _previous_layout(adata)
    loaded = _write_read(adata, tmp_path, "h5ad")
    query = make_adata(n=50, dim=10, centers=4, seed=6)
    out = annumap.tl.umap_transform(query, loaded, copy=True)
    assert out.uns["umap_transform"]["params"]["method"] == "parametric"
    np.testing.assert_array_equal(out.obsm["X_umap"], enc.transform(np.asarray(query.X)))
    with pytest.raises(KeyError, match="an encoder but no decoder"):
        annumap.tl.umap_inverse_transform(loaded, out.obsm["X_umap"])


def test_parametric_transform_can_be_bypassed(parametric_blobs):
    adata = parametric_blobs
    query = make_adata(n=80, dim=10, centers=4, seed=5)
    out = annumap.tl.umap_transform(query, adata, method="umap", copy=True, maxiter=30)
    assert out.uns["umap_transform"]["params"]["method"] == "umap"
    enc = annumap.tl.umap_transform(query, adata, copy=True)
    assert not np.array_equal(out.obsm["X_umap"], enc.obsm["X_umap"])


def test_corrupt_stored_model_is_refused_before_writing(parametric_blobs):
    bad = parametric_blobs.copy()
    bad.uns["umap"]["encoder"]["layers"]["W2"] = np.zeros((3, 3), dtype=np.float32)
    query = make_adata(n=30, dim=10, centers=4, seed=5)
    before = query.copy()
    with pytest.raises(ValueError, match="W2 has shape"):
        annumap.tl.umap_transform(query, bad)
    assert_adata_equal(query, before)


def test_parametric_needs_the_representation():
    adata = make_adata(n=200)
    adata.obsm["X_rep"] = np.asarray(adata.X)
    annumap.pp.neighbors(adata, use_rep="X_rep")
    del adata.obsm["X_rep"]
    before = adata.copy()
    with (
        pytest.warns(UserWarning, match="X_rep"),
        pytest.raises(ValueError, match=r"parametric.*X_rep"),
    ):
        annumap.tl.umap(adata, method="parametric", maxiter=5)
    assert_adata_equal(adata, before)


# ---------------------------------------------------------------------------------------------
# tl.umap_inverse_transform


def test_inverse_transform_of_x_reconstructs_the_cells(parametric_blobs):
    adata = parametric_blobs
    before = adata.copy()
    out = annumap.tl.umap_inverse_transform(adata, adata.obsm["X_umap"])
    assert_adata_equal(adata, before)  # the reference is not modified
    assert out.shape == adata.shape and out.X.dtype == np.float32
    assert list(out.var_names) == list(adata.var_names)
    assert "X_pca" not in out.obsm
    np.testing.assert_array_equal(out.obsm["X_umap"], adata.obsm["X_umap"])
    p = out.uns["umap_inverse_transform"]["params"]
    assert p["gene_space"] is True and p["representation"] == "adata.X"
    X = np.asarray(adata.X)
    mse = ((out.X - X) ** 2).mean()
    baseline = ((X - X.mean(axis=0)) ** 2).mean()
    assert mse < 0.2 * baseline, (mse, baseline)
    one = annumap.tl.umap_inverse_transform(adata, adata.obsm["X_umap"][3])
    np.testing.assert_allclose(one.X[0], out.X[3], rtol=1e-5, atol=1e-5)


def test_inverse_transform_errors(parametric_blobs):
    adata = parametric_blobs
    with pytest.raises(ValueError, match=r"expected \(n_points, 2\)"):
        annumap.tl.umap_inverse_transform(adata, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        annumap.tl.umap_inverse_transform(adata, np.full((2, 2), np.nan))
    with pytest.raises(TypeError, match="numeric"):
        annumap.tl.umap_inverse_transform(adata, np.array([["a", "b"]]))
    plain = make_adata(n=100)
    annumap.pp.neighbors(plain, n_neighbors=10)
    annumap.tl.umap(plain, maxiter=10)
    with pytest.raises(KeyError, match="no parametric model"):
        annumap.tl.umap_inverse_transform(plain, np.zeros((1, 2)))
    annumap.tl.umap(plain, method="parametric", parametric_kwds={"n_training_epochs": 2})
    with pytest.raises(KeyError, match="parametric_reconstruction"):
        annumap.tl.umap_inverse_transform(plain, np.zeros((1, 2)))


def test_inverse_transform_maps_pca_reconstructions_to_gene_space():
    sc = pytest.importorskip("scanpy")
    rng = np.random.default_rng(4)
    centres = rng.gamma(1.0, 2.0, size=(3, 80))
    labels = rng.integers(3, size=700)
    adata = ad.AnnData(X=sparse.csr_matrix(np.log1p(rng.poisson(centres[labels]))
                                           .astype(np.float32)))  # fmt: skip
    sc.pp.pca(adata, n_comps=20, random_state=0)
    annumap.pp.neighbors(adata, n_neighbors=15, n_pcs=15)
    annumap.tl.umap(
        adata,
        method="parametric",
        parametric_kwds={"parametric_reconstruction": True, "n_training_epochs": 30},
    )
    out = annumap.tl.umap_inverse_transform(adata, adata.obsm["X_umap"])
    p = out.uns["umap_inverse_transform"]["params"]
    assert p["representation"] == "adata.obsm['X_pca'][:, :15]" and p["gene_space"] is True
    rec = out.obsm["X_pca"]
    assert rec.shape == (700, 15) and out.X.shape == (700, 80)
    # gene space is the PCA back-projection of the reconstruction plus the mean expression
    PCs = adata.varm["PCs"][:, :15]
    mean = np.asarray(adata.X.mean(axis=0)).ravel()
    np.testing.assert_allclose(out.X, rec @ PCs.T + mean, rtol=1e-4, atol=1e-4)
    # and projecting it again gives the reconstruction back
    np.testing.assert_allclose((out.X - mean) @ PCs, rec, rtol=1e-3, atol=1e-3)
    # reconstructions are closer to the cells than the mean cell is
    X = adata.X.toarray()
    assert ((out.X - X) ** 2).mean() < ((X - mean) ** 2).mean()
    # loadings that no longer match .X: the PCA-space reconstruction only, and why
    changed = adata.copy()
    changed.X = changed.X * 3
    out2 = annumap.tl.umap_inverse_transform(changed, adata.obsm["X_umap"][:5])
    assert out2.X is None and out2.uns["umap_inverse_transform"]["params"]["gene_space"] is False
    assert "does not reproduce" in out2.uns["umap_inverse_transform"]["params"]["gene_space_from"]
    np.testing.assert_allclose(out2.obsm["X_pca"], rec[:5], atol=1e-5)  # BLAS batch rounding


def test_batch_loss_equals_one_round_at_a_time():
    # reference: each round's negatives are the pool rolled by the round's offset
    rng = np.random.default_rng(11)
    Yh, Yt, Yn = (rng.normal(size=(37, 3)) for _ in range(3))
    offsets = rng.integers(1, 37, size=9)
    kw = {"a": A, "b": B, "gamma": 0.3}

    def terms(diff, positive):
        loss, g = P._pair_terms(diff.T, positive=positive, xp=np, **kw)
        return loss, g.T

    total, g_pos = terms(Yh - Yt, True)
    total = total.sum()
    gh, gn = g_pos.copy(), np.zeros_like(Yn)
    for off in offsets:
        loss, g = terms(Yh - np.roll(Yn, -off, axis=0), False)
        total += loss.sum()
        gh += g
        gn -= np.roll(g, off, axis=0)
    for block in (P._PAIR_BLOCK, 37 * 2, 1):  # all rounds at once, two at a time, one
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(P, "_PAIR_BLOCK", block)
            got = P.umap_batch_loss(Yh, Yt, Yn, offsets, xp=np, **kw)
        np.testing.assert_allclose(float(got[0]), total / 37, rtol=1e-12)
        np.testing.assert_allclose(got[1], gh / 37, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(got[2], -g_pos / 37, rtol=1e-12)
        np.testing.assert_allclose(got[3], gn / 37, rtol=1e-10, atol=1e-14)
