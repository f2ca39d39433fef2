"""Parametric UMAP: the MLP's gradients, Adam training, storage in .uns and h5ad round trips."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

import annumap
from annumap._core import parametric as P

from .conftest import assert_adata_equal, make_adata

A, B = 0.58303, 1.33417


def _tiny_params(rng, sizes=(4, 6, 5, 2)):
    params = []
    for i in range(len(sizes) - 1):
        params.append(rng.normal(scale=0.7, size=(sizes[i], sizes[i + 1])))
        params.append(rng.normal(scale=0.1, size=sizes[i + 1]))
    return params


@pytest.mark.parametrize("b", [B, 0.89506])
def test_gradients_equal_finite_differences(b):
    rng = np.random.default_rng(0)
    params = _tiny_params(rng)
    Xh, Xt, Xn = (rng.normal(size=(7, 4)) for _ in range(3))
    kw = {"a": A, "b": b, "gamma": 1.3, "n_rounds": 3}
    loss, grads = P.encoder_loss_and_grads(params, Xh, Xt, Xn, **kw)
    assert np.isfinite(loss) and loss > 0
    h = 1e-6
    for p, g in zip(params, grads, strict=True):
        num = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + h
            up, _ = P.encoder_loss_and_grads(params, Xh, Xt, Xn, **kw)
            p[idx] = old - h
            down, _ = P.encoder_loss_and_grads(params, Xh, Xt, Xn, **kw)
            p[idx] = old
            num[idx] = (up - down) / (2 * h)
        np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-7)


def test_pair_gradients_are_umaps_coefficients():
    # without the eps regulariser the per-pair gradients are UMAP's attraction and repulsion
    diff = np.array([[0.3, -0.4], [1.5, 2.0], [-3.0, 0.1]])
    d2 = (diff**2).sum(1)
    _, g_pos = P._pair_terms(diff, A, B, positive=True, gamma=1.0, xp=np)
    attract = 2 * A * B * d2 ** (B - 1) / (1 + A * d2**B)
    np.testing.assert_allclose(g_pos, attract[:, None] * diff, rtol=1e-12)
    _, g_neg = P._pair_terms(diff, A, B, positive=False, gamma=2.0, xp=np)
    repel = 2 * 2.0 * B / (d2 * (1 + A * d2**B))
    np.testing.assert_allclose(g_neg, -repel[:, None] * diff, rtol=2e-3)


def test_encoder_dict_round_trip_and_validation():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 6)).astype(np.float32)
    enc = P.init_encoder(X, 3, (8, 5), rng)
    assert enc.layer_sizes == (6, 8, 5, 3)
    d = enc.to_dict()
    back = P.Encoder.from_dict(d)
    np.testing.assert_array_equal(back.transform(X), enc.transform(X))
    for W in d["layers"].values():
        assert W.dtype == np.float32
    assert d["layer_sizes"].dtype == np.int64 and d["activation"] == "relu"

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
    with pytest.raises(ValueError, match="only 'relu'"):
        P.Encoder.from_dict(broken(activation="tanh"))
    with pytest.raises(ValueError, match="input_scale"):
        P.Encoder.from_dict(broken(input_scale=0.0))
    with pytest.raises(ValueError, match="format_version"):
        P.Encoder.from_dict(broken(format_version=99))
    with pytest.raises(KeyError, match="missing"):
        P.Encoder.from_dict({"layers": {}})
    with pytest.raises(ValueError, match="expects 6 input features"):
        enc.transform(X[:, :5])


def test_forward_pass_is_thread_independent():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(3000, 10)).astype(np.float32)
    enc = P.init_encoder(X, 2, P.DEFAULT_HIDDEN, rng)
    full = enc.transform(X, batch_size=512, n_jobs=2)
    np.testing.assert_array_equal(full, enc.transform(X, batch_size=512, n_jobs=1))
    np.testing.assert_allclose(full[1234:1300], enc.transform(X[1234:1300]), atol=1e-5)
    np.testing.assert_array_equal(full, enc.transform(sparse.csr_matrix(X), batch_size=512))


def _blob_graph(n=500, seed=0):
    from annumap._core.fuzzy import fuzzy_simplicial_set
    from annumap._core.knn._exact import exact_knn

    from .conftest import blobs

    X, labels = blobs(n=n, dim=8, centers=3, seed=seed)
    idx, dist = exact_knn(X, 15)
    return X, labels, fuzzy_simplicial_set(idx, dist)


def test_training_is_deterministic_and_reduces_the_loss():
    X, labels, G = _blob_graph()
    kw = {"a": A, "b": B, "n_epochs": 30, "hidden": (32, 32)}
    enc1, hist1 = P.train_encoder(X, G, seed=3, **kw)
    enc2, hist2 = P.train_encoder(X, G, seed=3, **kw)
    for w1, w2 in zip(enc1.weights + enc1.biases, enc2.weights + enc2.biases, strict=True):
        np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(hist1, hist2)
    enc3, _ = P.train_encoder(X, G, seed=4, **kw)
    assert not np.array_equal(enc3.weights[0], enc1.weights[0])
    assert hist1.shape == (30,) and hist1.dtype == np.float32
    assert hist1[-5:].mean() < 0.6 * hist1[:2].mean()
    # the embedding separates the blobs: every point's 10 nearest neighbours share its label
    from sklearn.neighbors import KNeighborsClassifier

    Y = enc1.transform(X)
    clf = KNeighborsClassifier(10).fit(Y, labels)
    assert (clf.predict(Y) == labels).mean() > 0.99


def test_callback_sees_each_epoch_and_can_stop():
    X, _, G = _blob_graph(n=200)
    seen = []

    def stop_at_3(epoch, n_epochs, Y):
        seen.append((epoch, n_epochs, Y.shape))
        return epoch == 3

    _, hist = P.train_encoder(X, G, a=A, b=B, n_epochs=10, hidden=(8,), callback=stop_at_3)
    assert seen == [(1, 10, (200, 2)), (2, 10, (200, 2)), (3, 10, (200, 2))]
    assert hist.shape == (3,)


def test_training_rejects_an_edgeless_graph():
    X = np.zeros((10, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="no edges"):
        P.train_encoder(X, sparse.csr_matrix((10, 10)), a=A, b=B, n_epochs=1)


# ---------------------------------------------------------------------------------------------
# tl.umap(method='parametric')


@pytest.fixture(scope="module")
def parametric_blobs():
    adata = make_adata(n=600, dim=10, centers=4, seed=5)
    annumap.pp.neighbors(adata, n_neighbors=15)
    annumap.tl.umap(adata, method="parametric", maxiter=100)
    return adata


def test_tl_umap_parametric_stores_a_plain_model(parametric_blobs):
    adata = parametric_blobs
    Y = adata.obsm["X_umap"]
    assert Y.dtype == np.float32 and Y.shape == (600, 2) and np.isfinite(Y).all()
    uns = adata.uns["umap"]
    assert uns["params"]["method"] == "parametric"
    enc = uns["encoder"]
    assert list(enc["layer_sizes"]) == [10, 100, 100, 100, 2]
    assert enc["n_epochs"] == 40 and enc["loss_history"].shape == (40,)  # 0.4 * maxiter

    def plain(value):
        if isinstance(value, dict):
            return all(plain(v) for v in value.values())
        if isinstance(value, np.ndarray):
            return value.dtype.kind in "fi"
        return isinstance(value, int | float | str)

    assert plain(enc)
    # .obsm['X_umap'] is the encoder's forward pass of the training data
    model = P.Encoder.from_dict(enc)
    np.testing.assert_array_equal(model.transform(np.asarray(adata.X)), Y)
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(15).fit(Y, adata.obs["label"])
    assert (clf.predict(Y) == adata.obs["label"]).mean() > 0.99


def test_tl_umap_parametric_is_reproducible_across_threads(parametric_blobs):
    adata = parametric_blobs
    runs = [
        annumap.tl.umap(adata, method="parametric", maxiter=20, n_jobs=n, copy=True) for n in (1, 2)
    ]
    np.testing.assert_array_equal(runs[0].obsm["X_umap"], runs[1].obsm["X_umap"])
    other = annumap.tl.umap(adata, method="parametric", maxiter=20, random_state=1, copy=True)
    assert not np.array_equal(other.obsm["X_umap"], runs[0].obsm["X_umap"])


def test_h5ad_round_trip_keeps_the_model(parametric_blobs, tmp_path):
    ad = pytest.importorskip("anndata")
    adata = parametric_blobs
    query = make_adata(n=120, dim=10, centers=4, seed=5)  # same blobs, new cells
    query.X = query.X + np.float32(0.01)
    before = annumap.tl.umap_transform(query, adata, copy=True)
    assert before.uns["umap_transform"]["params"]["method"] == "parametric"
    path = tmp_path / "ref.h5ad"
    adata.write_h5ad(path)
    loaded = ad.read_h5ad(path)
    after = annumap.tl.umap_transform(query, loaded, copy=True)
    np.testing.assert_array_equal(after.obsm["X_umap"], before.obsm["X_umap"])
    # and the stored embedding is what a forward pass of the loaded model gives
    reloaded = annumap.tl.umap_transform(adata.copy(), loaded, copy=True)
    np.testing.assert_array_equal(reloaded.obsm["X_umap"], adata.obsm["X_umap"])
    # the model is stored as numeric arrays and strings only (nothing opaque to unpickle)
    import h5py

    kinds = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            string = h5py.check_string_dtype(obj.dtype) is not None
            kinds.append("str" if string else obj.dtype.kind)

    with h5py.File(path, "r") as f:
        f["uns/umap/encoder"].visititems(visit)
    assert kinds and set(kinds) <= {"f", "i", "str"}, kinds


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
