"""annumap.pl.umap: colours, legends, errors; it and scanpy's pl.umap read annumap's output."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

import annumap

from .conftest import assert_adata_equal, make_adata

mpl = pytest.importorskip("matplotlib")
mpl.use("Agg")
plt = pytest.importorskip("matplotlib.pyplot")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def _embedded():
    adata = make_adata(n=300, centers=3)
    annumap.pp.neighbors(adata, n_neighbors=10)
    annumap.tl.umap(adata, maxiter=30)
    adata.obs["score"] = np.linspace(0.0, 1.0, adata.n_obs)
    adata.obs["name"] = np.where(np.arange(adata.n_obs) % 2 == 0, "even", "odd")
    return adata


@pytest.fixture
def embedded(_embedded):
    return _embedded.copy()


def _facecolors(ax, i=-1):
    return ax.collections[i].get_facecolors()


def test_categorical_colours_and_legend(embedded):
    before = embedded.copy()
    ax = annumap.pl.umap(embedded, color="label")
    cats = list(embedded.obs["label"].cat.categories)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == cats
    # every point's colour is its category's colour (tab10 order)
    points = ax.collections[-1]
    xy = points.get_offsets()
    colours = points.get_facecolors()
    tab10 = np.array([mpl.colors.to_rgba(c) for c in mpl.colormaps["tab10"].colors])
    Y = embedded.obsm["X_umap"]
    codes = embedded.obs["label"].cat.codes.to_numpy()
    for k in range(0, embedded.n_obs, 37):
        row = np.flatnonzero((xy[:, 0] == Y[k, 0]) & (xy[:, 1] == Y[k, 1]))[0]
        np.testing.assert_allclose(colours[row], tab10[codes[k]])
    assert ax.get_xlabel() == "UMAP1" and ax.get_ylabel() == "UMAP2"
    assert ax.get_title() == "label"
    assert_adata_equal(embedded, before)  # plotting writes nothing


def test_scanpy_colours_in_uns_are_used(embedded):
    embedded.uns["label_colors"] = ["#000000", "#ff0000", "#00ff00"]
    ax = annumap.pl.umap(embedded, color="label")
    used = {tuple(c) for c in _facecolors(ax)}
    assert used == {mpl.colors.to_rgba(c) for c in embedded.uns["label_colors"]}


def test_palette_mapping_and_errors(embedded):
    mapping = {"c0": "black", "c1": "red", "c2": "blue"}
    ax = annumap.pl.umap(embedded, color="label", palette=mapping)
    assert {tuple(c) for c in _facecolors(ax)} == {mpl.colors.to_rgba(c) for c in mapping.values()}
    with pytest.raises(ValueError, match="no colour for categories"):
        annumap.pl.umap(embedded, color="label", palette={"c0": "black"})
    with pytest.raises(ValueError, match="colormap"):
        annumap.pl.umap(embedded, color="label", palette="not-a-cmap")


def test_strings_become_categories_and_missing_values_are_na(embedded):
    embedded.obs.loc[embedded.obs_names[:5], "name"] = None
    ax = annumap.pl.umap(embedded, color="name")
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["even", "odd", "NA"]
    na = ax.collections[0]  # drawn first, underneath
    assert len(na.get_offsets()) == 5
    np.testing.assert_allclose(na.get_facecolors()[0], mpl.colors.to_rgba("lightgray"))


def test_continuous_obs_and_variable(embedded):
    ax = annumap.pl.umap(embedded, color="score", cmap="magma")
    points = ax.collections[-1]
    values = np.asarray(points.get_array())
    assert np.all(np.diff(values) >= 0)  # high values drawn last (on top)
    np.testing.assert_allclose(np.sort(values), np.sort(embedded.obs["score"].to_numpy()))
    assert ax.get_legend() is None
    assert points.get_cmap().name == "magma"
    gene = embedded.var_names[3]
    ax = annumap.pl.umap(embedded, color=gene, vmin=0, vmax=1)
    values = np.asarray(ax.collections[-1].get_array())
    np.testing.assert_allclose(np.sort(values), np.sort(embedded[:, gene].X.ravel()), rtol=1e-6)
    assert ax.collections[-1].get_clim() == (0, 1)


def test_colour_limits_per_panel_and_percentiles(embedded):
    axes = annumap.pl.umap(embedded, color=["score", "score"], vmin=[None, 0.2], vmax=["p50", 2])
    assert axes[0].collections[-1].get_clim() == pytest.approx((0.0, 0.5))
    assert axes[1].collections[-1].get_clim() == (0.2, 2.0)
    for bad in (["p50"], "q9", "p101", True):
        with pytest.raises(ValueError, match="vmax"):
            annumap.pl.umap(embedded, color=["score", "score"], vmax=bad)


def test_variable_from_sparse_layer(embedded):
    from scipy import sparse

    embedded.layers["counts"] = sparse.csr_matrix(np.abs(embedded.X).round())
    gene = embedded.var_names[0]
    ax = annumap.pl.umap(embedded, color=gene, layer="counts")
    values = np.asarray(ax.collections[-1].get_array())
    expected = embedded.layers["counts"][:, 0].toarray().ravel()
    np.testing.assert_allclose(np.sort(values), np.sort(expected))
    with pytest.raises(KeyError, match="layer"):
        annumap.pl.umap(embedded, color=gene, layer="nope")


def test_list_of_colours_makes_a_grid(embedded):
    axes = annumap.pl.umap(embedded, color=["label", "score", "name"], ncols=2)
    assert isinstance(axes, list) and len(axes) == 3
    assert [ax.get_title() for ax in axes] == ["label", "score", "name"]
    from annumap.pl._umap import _root_figure

    fig = _root_figure(axes[0])  # matplotlib < 3.10 has no get_figure(root=True)
    assert fig.get_size_inches()[0] > fig.get_size_inches()[1]  # two columns, two rows


def test_on_data_legend_and_no_legend(embedded):
    ax = annumap.pl.umap(embedded, color="label", legend_loc="on data")
    assert ax.get_legend() is None
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["c0", "c1", "c2"]
    for text in ax.texts:  # each label sits at its category's median position
        code = list(embedded.obs["label"].cat.categories).index(text.get_text())
        member = embedded.obs["label"].cat.codes.to_numpy() == code
        np.testing.assert_allclose(
            text.get_position(), np.median(embedded.obsm["X_umap"][member], axis=0), rtol=1e-5
        )
    ax = annumap.pl.umap(embedded, color="label", legend_loc=None)
    assert ax.get_legend() is None and not ax.texts


def test_key_components_and_given_ax(embedded, tmp_path):
    annumap.tl.umap(embedded, n_components=3, maxiter=10, key_added="X_umap3")
    ax = plt.figure().subfigures(1, 2)[1].add_subplot()  # an Axes inside a SubFigure
    out = annumap.pl.umap(
        embedded, key="X_umap3", components=(2, 0), ax=ax, title="three", save=tmp_path / "a.pdf"
    )
    assert (tmp_path / "a.pdf").read_bytes()[:4] == b"%PDF"
    assert out is ax
    xy = ax.collections[-1].get_offsets()
    Y = embedded.obsm["X_umap3"]
    assert set(map(tuple, np.asarray(xy))) == set(map(tuple, Y[:, [2, 0]].astype(np.float64)))
    assert ax.get_xlabel() == "UMAP33" and ax.get_ylabel() == "UMAP31"
    assert ax.get_title() == "three"


def test_save_writes_an_image(embedded, tmp_path):
    path = tmp_path / "umap.png"
    annumap.pl.umap(embedded, color="label", save=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"key": "X_nope"}, KeyError, "X_nope"),
        ({"color": "nope"}, KeyError, "nope"),
        ({"color": ["label", "score"], "ax": "AX"}, ValueError, "one panel"),
        ({"legend_loc": "upper left"}, ValueError, "legend_loc"),
        ({"components": (0, 0)}, ValueError, "components"),
        ({"components": (0, 2)}, ValueError, "components"),
        ({"size": -1}, ValueError, "size"),
        ({"ncols": 0}, ValueError, "ncols"),
        ({"color": 3}, TypeError, "color"),
        ({"color": []}, ValueError, "empty"),
        ({"color": ["label"], "title": ["a", "b"]}, ValueError, "title"),
    ],
)
def test_bad_arguments(embedded, kwargs, error, match):
    if kwargs.get("ax") == "AX":
        kwargs["ax"] = plt.subplots()[1]
    n_figures = len(plt.get_fignums())
    with pytest.raises(error, match=match):
        annumap.pl.umap(embedded, **kwargs)
    if "ax" not in kwargs:
        assert len(plt.get_fignums()) == n_figures  # validation happens before any drawing


def test_not_anndata():
    with pytest.raises(TypeError, match="AnnData"):
        annumap.pl.umap(np.zeros((3, 2)))


def test_ambiguous_key(embedded):
    embedded.obs[embedded.var_names[0]] = 1.0
    with pytest.raises(ValueError, match="both"):
        annumap.pl.umap(embedded, color=embedded.var_names[0])


def test_without_matplotlib(embedded, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"annumap\[plot\]"):
        annumap.pl.umap(embedded, color="label")


def test_many_categories_get_distinct_colours(embedded):
    embedded.obs["many"] = pd.Categorical([f"g{i % 25}" for i in range(embedded.n_obs)])
    ax = annumap.pl.umap(embedded, color="many")
    assert len({tuple(c) for c in _facecolors(ax)}) == 25
    assert len(ax.get_legend().get_texts()) == 25


# scanpy 1.11.5 calls a colormap method that matplotlib >= 3.11 marks for deprecation
@pytest.mark.filterwarnings("ignore:The set_bad function:PendingDeprecationWarning")
def test_scanpy_pl_umap_reads_annumap_output(pbmc):
    sc = pytest.importorskip("scanpy")
    annumap.pp.neighbors(pbmc)
    annumap.tl.umap(pbmc, maxiter=20)
    ax = sc.pl.umap(pbmc, color="bulk_labels", show=False)
    offsets = np.asarray(ax.collections[0].get_offsets())
    assert offsets.shape == (pbmc.n_obs, 2)
    assert set(map(tuple, offsets)) == set(map(tuple, pbmc.obsm["X_umap"].astype(np.float64)))
    ours = annumap.pl.umap(pbmc, color="bulk_labels")  # and ours uses scanpy's stored colours
    assert {tuple(c) for c in _facecolors(ours)} == {
        mpl.colors.to_rgba(c) for c in pbmc.uns["bulk_labels_colors"]
    }
