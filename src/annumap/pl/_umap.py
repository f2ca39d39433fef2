"""``annumap.pl.umap``: a small matplotlib scatter of an embedding, coloured by ``obs`` or a gene.

matplotlib is imported inside the function (extra ``plot``); nothing is written to the AnnData.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

__all__ = ["umap"]

_LEGEND_LOCS = ("right margin", "on data", "none")
_NA_LABEL = "NA"


def _require_matplotlib():
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        msg = (
            "annumap.pl needs matplotlib, which is not installed: "
            "pip install 'annumap[plot]' (or pip install matplotlib)."
        )
        raise ImportError(msg) from err
    return plt


def _axis_name(key: str) -> str:
    """``'X_umap'`` -> ``'UMAP'``; ``'X_umap_paga'`` -> ``'UMAP_PAGA'``; other keys unchanged."""
    name = key[2:] if key.startswith("X_") else key
    return name.upper() if name.lower().startswith("umap") else name


def _embedding(adata: AnnData, key: str, components: Sequence[int]) -> np.ndarray:
    if not isinstance(key, str):
        msg = f"key must be a str (an .obsm key), got {type(key).__name__}."
        raise TypeError(msg)
    if key not in adata.obsm:
        msg = (
            f"key={key!r} is not in adata.obsm (keys: {list(adata.obsm)}); run "
            "annumap.tl.umap first (with key_added=... if you pass key=...)."
        )
        raise KeyError(msg)
    Y = adata.obsm[key]
    Y = np.asarray(Y.to_numpy() if hasattr(Y, "to_numpy") else Y)
    if Y.ndim != 2 or Y.dtype.kind not in "biuf":
        msg = f"adata.obsm[{key!r}] must be a numeric 2-D array, got {Y.dtype} {Y.shape}."
        raise ValueError(msg)
    comps = tuple(components)
    valid = len(comps) == 2 and all(
        isinstance(c, int | np.integer) and not isinstance(c, bool) for c in comps
    )
    if not valid or comps[0] == comps[1] or min(comps) < 0 or max(comps) >= Y.shape[1]:
        msg = (
            f"components must be two different column indices of adata.obsm[{key!r}] "
            f"(0..{Y.shape[1] - 1}), got {components!r}."
        )
        raise ValueError(msg)
    return Y[:, list(comps)].astype(np.float64)


def _values(adata: AnnData, name: str, layer: str | None) -> tuple[str, Any]:
    """``('categorical', pandas.Categorical)`` or ``('continuous', float array)`` for ``name``."""
    import pandas as pd

    in_obs = name in adata.obs.columns
    in_var = name in adata.var_names
    if in_obs and in_var:
        msg = f"color={name!r} is both an .obs column and a variable name; rename one of them."
        raise ValueError(msg)
    if in_obs:
        col = adata.obs[name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            return "categorical", pd.Categorical(col)
        if col.dtype.kind in "iuf":
            return "continuous", col.to_numpy(dtype=np.float64, na_value=np.nan)
        return "categorical", pd.Categorical(col.astype(object).where(col.notna(), None))
    if in_var:
        if layer is not None and layer not in adata.layers:
            msg = f"layer={layer!r} is not in adata.layers (keys: {list(adata.layers)})."
            raise KeyError(msg)
        X = adata.layers[layer] if layer is not None else adata.X
        if X is None:
            msg = f"color={name!r} is a variable but adata.X is None; pass layer=..."
            raise ValueError(msg)
        column = X[:, adata.var_names.get_loc(name)]
        column = column.toarray() if hasattr(column, "toarray") else np.asarray(column)
        return "continuous", np.asarray(column, dtype=np.float64).ravel()
    msg = (
        f"color={name!r} is neither a column of adata.obs ({list(adata.obs.columns)}) "
        "nor a variable name (adata.var_names)."
    )
    raise KeyError(msg)


def _palette(adata: AnnData, name: str, categories: Sequence[Any], palette: Any) -> list[Any]:
    """One colour per category: ``palette`` if given, else scanpy's ``uns[name + '_colors']``."""
    import matplotlib as mpl

    n = len(categories)
    if palette is None:
        stored = adata.uns.get(f"{name}_colors")
        if stored is not None and len(stored) >= n:
            return [mpl.colors.to_rgba(c) for c in list(stored)[:n]]
        if n <= 10:
            palette = "tab10"
        elif n <= 20:  # tab20's dark shades first, then the light ones: distinct up to 10
            tab20 = list(mpl.colormaps["tab20"].colors)
            return [mpl.colors.to_rgba(c) for c in (tab20[0::2] + tab20[1::2])[:n]]
        else:
            base = [mpl.colormaps[c].colors for c in ("tab20", "tab20b", "tab20c")]
            colours = [c for group in base for c in group]
            if n > len(colours):
                colours = list(mpl.colormaps["turbo"](np.linspace(0.0, 1.0, n)))
            return [mpl.colors.to_rgba(c) for c in colours[:n]]
    if isinstance(palette, str):
        if palette not in mpl.colormaps:
            msg = f"palette={palette!r} is not a matplotlib colormap name."
            raise ValueError(msg)
        cmap = mpl.colormaps[palette]
        if hasattr(cmap, "colors") and len(cmap.colors) >= n:
            return [mpl.colors.to_rgba(c) for c in cmap.colors[:n]]
        return list(cmap(np.linspace(0.0, 1.0, max(n, 1))))
    if isinstance(palette, Mapping):
        missing = [c for c in categories if c not in palette]
        if missing:
            msg = f"palette has no colour for categories {missing} of {name!r}."
            raise ValueError(msg)
        return [mpl.colors.to_rgba(palette[c]) for c in categories]
    colours = list(palette)
    if len(colours) < n:
        msg = f"palette has {len(colours)} colours; {name!r} has {n} categories."
        raise ValueError(msg)
    return [mpl.colors.to_rgba(c) for c in colours[:n]]


def _per_panel(spec: Any, n: int, name: str) -> list[float | str | None]:
    """``vmin``/``vmax`` as one validated entry per panel."""
    many = not isinstance(spec, str) and isinstance(spec, Sequence)
    specs = list(spec) if many else [spec] * n
    if len(specs) != n:
        msg = f"{name} has {len(specs)} entries for {n} colors."
        raise ValueError(msg)
    for item in specs:
        ok = item is None or (isinstance(item, int | float) and not isinstance(item, bool))
        if isinstance(item, str):
            try:
                ok = item.startswith("p") and 0.0 <= float(item[1:]) <= 100.0
            except ValueError:
                ok = False
        if not ok:
            msg = f"{name} entries must be numbers, percentiles like 'p99', or None; got {item!r}."
            raise ValueError(msg)
    return specs


def _limit(spec: float | str | None, x: np.ndarray) -> float | None:
    if isinstance(spec, str):
        finite = x[np.isfinite(x)]
        return float(np.percentile(finite, float(spec[1:]))) if finite.size else None
    return None if spec is None else float(spec)


def _check_args(
    colors: list[str | None], ax: Any, legend_loc: Any, size: Any, ncols: Any, save: Any
) -> None:
    if ax is not None and len(colors) > 1:
        msg = f"ax can hold one panel; got {len(colors)} colors (pass ax=None for a grid)."
        raise ValueError(msg)
    if legend_loc is not None and legend_loc not in _LEGEND_LOCS:
        msg = f"legend_loc must be one of {_LEGEND_LOCS} or None, got {legend_loc!r}."
        raise ValueError(msg)
    if size is not None and (
        isinstance(size, bool) or not isinstance(size, int | float) or not size > 0
    ):
        msg = f"size must be a positive number or None, got {size!r}."
        raise ValueError(msg)
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        msg = f"ncols must be a positive int, got {ncols!r}."
        raise ValueError(msg)
    if save is not None and not isinstance(save, str | os.PathLike):
        msg = f"save must be a path or None, got {type(save).__name__}."
        raise TypeError(msg)


def umap(
    adata: AnnData,
    color: str | Sequence[str] | None = None,
    *,
    key: str = "X_umap",
    components: Sequence[int] = (0, 1),
    layer: str | None = None,
    ax: Axes | None = None,
    size: float | None = None,
    palette: str | Sequence[Any] | Mapping[Any, Any] | None = None,
    cmap: str = "viridis",
    vmin: float | str | Sequence[float | str | None] | None = None,
    vmax: float | str | Sequence[float | str | None] | None = None,
    na_color: str = "lightgray",
    legend_loc: str | None = "right margin",
    title: str | Sequence[str] | None = None,
    ncols: int = 3,
    save: str | os.PathLike[str] | None = None,
    dpi: float = 150,
) -> Axes | list[Axes]:
    """Scatter plot of a UMAP embedding, coloured by an ``obs`` column or a variable.

    A small, dependency-light alternative to :func:`scanpy.pl.umap` (which also works on
    annumap's output). Categorical columns (and strings or booleans) get one colour per
    category and a legend; numeric columns and variables (genes) a colour map and a colour bar.
    Reads ``adata``, never writes to it.

    Parameters
    ----------
    adata
        Annotated data matrix holding the embedding in ``.obsm[key]``.
    color
        An ``.obs`` column or a variable name (values read from ``.X`` or ``layer``), a list of
        them for one panel each, or ``None`` for a single-coloured plot.
    key
        The ``.obsm`` key of the embedding: ``'X_umap'``, or the ``key_added`` given to
        :func:`annumap.tl.umap`.
    components
        The two columns of the embedding to plot (0-based).
    layer
        Read variable values from ``.layers[layer]`` instead of ``.X``.
    ax
        Draw into this matplotlib Axes (one colour only); by default a new figure is made.
    size
        Marker area in points²; default ``120000 / n_obs`` clipped to [0.5, 50].
    palette
        Categorical colours: a matplotlib colormap name, a list of colours, or a mapping from
        category to colour. Default: scanpy's ``.uns[color + '_colors']`` when present, else
        ``tab10`` up to 10 categories, ``tab20`` (dark shades first) up to 20, then
        ``tab20``, ``tab20b`` and ``tab20c`` together (``turbo`` beyond 60).
    cmap
        Colormap for continuous values.
    vmin, vmax
        Limits of the colour scale for continuous values: a number, a percentile of the
        values such as ``'p99'``, ``None`` for the data range, or a list of these (one per
        panel) when ``color`` is a list.
    na_color
        Colour of missing values (drawn underneath the others, listed as ``NA`` in a legend).
    legend_loc
        ``'right margin'`` (a legend beside the axes), ``'on data'`` (labels at each category's
        median position), or ``'none'``/``None``.
    title
        Title of the panel (one per panel for a list of colours); default: the colour key.
    ncols
        Panels per row when ``color`` is a list.
    save
        Write the figure to this path (format from the suffix, e.g. ``.png`` or ``.pdf``).
    dpi
        Resolution used by ``save``.

    Returns
    -------
    The :class:`matplotlib.axes.Axes` of the plot, or a list of them (one per colour) when
    ``color`` is a list.

    Examples
    --------
    >>> import scanpy as sc, annumap
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> annumap.pp.neighbors(adata)
    >>> annumap.tl.umap(adata)
    >>> ax = annumap.pl.umap(adata, color="bulk_labels")  # doctest: +SKIP
    >>> axes = annumap.pl.umap(adata, color=["bulk_labels", "n_genes"])  # doctest: +SKIP
    """
    from anndata import AnnData

    # ---- validate everything before drawing
    if not isinstance(adata, AnnData):
        msg = f"adata must be an AnnData, got {type(adata).__name__}."
        raise TypeError(msg)
    many = not isinstance(color, str) and color is not None
    if many and not isinstance(color, Sequence):
        msg = f"color must be a str, a list of str or None, got {type(color).__name__}."
        raise TypeError(msg)
    colors: list[str | None] = list(color) if many else [color]  # type: ignore[arg-type]
    if many and not colors:
        msg = "color is an empty list; pass None for a plot without colours."
        raise ValueError(msg)
    if not all(c is None or isinstance(c, str) for c in colors):
        msg = f"color must be a str, a list of str or None, got {color!r}."
        raise TypeError(msg)
    _check_args(colors, ax, legend_loc, size, ncols, save)
    titles: list[str | None]
    if title is None or isinstance(title, str):
        titles = [title] * len(colors) if title is not None else list(colors)
    else:
        titles = list(title)
        if len(titles) != len(colors):
            msg = f"title has {len(titles)} entries for {len(colors)} colors."
            raise ValueError(msg)
    lows = _per_panel(vmin, len(colors), "vmin")
    highs = _per_panel(vmax, len(colors), "vmax")
    Y = _embedding(adata, key, components)
    values = [None if c is None else _values(adata, c, layer) for c in colors]
    plt = _require_matplotlib()
    palettes = [
        _palette(adata, c, list(v[1].categories), palette)
        if v is not None and v[0] == "categorical"
        else None
        for c, v in zip(colors, values, strict=True)
    ]

    # ---- draw
    n = adata.n_obs
    s = float(size) if size is not None else float(np.clip(120000 / n, 0.5, 50.0))
    if ax is None:
        cols = min(ncols, len(colors))
        rows = -(-len(colors) // cols)
        width = 4.2 + max(_margin_width(v, legend_loc) for v in values)
        fig = plt.figure(figsize=(width * cols, 4.0 * rows), layout="constrained")
        cells = np.atleast_1d(fig.subfigures(rows, cols, squeeze=False).ravel())
        axes = [cell.add_subplot() for cell in cells[: len(colors)]]
    else:
        fig, axes = _root_figure(ax), [ax]
    order = np.random.default_rng(0).permutation(n)  # no category systematically on top
    name = _axis_name(key)
    for panel, v, pal, t, lo, hi in zip(axes, values, palettes, titles, lows, highs, strict=True):
        if v is None:
            panel.scatter(Y[:, 0], Y[:, 1], s=s, c="tab:blue", linewidths=0, rasterized=n > 5000)
        elif v[0] == "categorical":
            _categorical(panel, Y, v[1], pal, order, s, na_color, legend_loc)
        else:
            limits = _limit(lo, v[1]), _limit(hi, v[1])
            _continuous(panel, Y, v[1], s, cmap, *limits, na_color)
        panel.set_xticks([])
        panel.set_yticks([])
        panel.set_xlabel(f"{name}{components[0] + 1}")
        panel.set_ylabel(f"{name}{components[1] + 1}")
        if t is not None:
            panel.set_title(t)
    if save is not None:
        fig.savefig(save, dpi=dpi, bbox_inches="tight")
    return axes if many else axes[0]


def _root_figure(ax: Axes) -> Any:
    """The top-level Figure of ``ax`` (``ax.figure`` may be a SubFigure)."""
    fig = ax.figure
    while getattr(fig, "figure", fig) is not fig:
        fig = fig.figure
    return fig


def _margin_width(values: tuple[str, Any] | None, legend_loc: str | None) -> float:
    """Inches to add to a panel for its colour bar or its legend in the right margin."""
    if values is None:
        return 0.0
    if values[0] == "continuous":
        return 0.9
    if legend_loc != "right margin":
        return 0.0
    labels = [str(c) for c in values[1].categories] + [_NA_LABEL]
    n_cols = 1 if len(labels) <= 15 else (2 if len(labels) <= 31 else 3)
    return 0.5 + n_cols * (0.35 + 0.075 * max(len(label) for label in labels))


def _categorical(ax, Y, cat, colours, order, s, na_color, legend_loc) -> None:
    import matplotlib as mpl
    from matplotlib import patheffects
    from matplotlib.lines import Line2D

    codes = np.asarray(cat.codes)
    missing = codes < 0
    rasterized = Y.shape[0] > 5000
    if missing.any():
        ax.scatter(
            *Y[missing].T,
            s=s,
            c=[mpl.colors.to_rgba(na_color)],
            linewidths=0,
            rasterized=rasterized,
        )
    shown = order[~missing[order]]
    table = np.asarray(colours, dtype=np.float64).reshape(-1, 4)
    ax.scatter(*Y[shown].T, s=s, c=table[codes[shown]], linewidths=0, rasterized=rasterized)
    present = [i for i in range(len(cat.categories)) if (codes == i).any()]
    if legend_loc == "right margin":
        handles = [
            Line2D(
                [],
                [],
                marker="o",
                linestyle="",
                markersize=7,
                markerfacecolor=table[i],
                markeredgewidth=0,
                label=str(cat.categories[i]),
            )
            for i in present
        ]
        if missing.any():
            handles.append(
                Line2D(
                    [],
                    [],
                    marker="o",
                    linestyle="",
                    markersize=7,
                    markeredgewidth=0,
                    markerfacecolor=mpl.colors.to_rgba(na_color),
                    label=_NA_LABEL,
                )
            )
        n_items = len(handles)
        ax.legend(
            handles=handles,
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            frameon=False,
            ncol=1 if n_items <= 14 else (2 if n_items <= 30 else 3),
            handletextpad=0.2,
            borderaxespad=0.5,
            fontsize="small" if n_items > 14 else "medium",
        )
    elif legend_loc == "on data":
        outline = [patheffects.withStroke(linewidth=3, foreground="white")]
        for i in present:
            x, y = np.median(Y[codes == i], axis=0)
            ax.text(
                x,
                y,
                str(cat.categories[i]),
                ha="center",
                va="center",
                fontsize="small",
                fontweight="bold",
                path_effects=outline,
            )


def _continuous(ax, Y, x, s, cmap, vmin, vmax, na_color) -> None:
    missing = ~np.isfinite(x)
    rasterized = Y.shape[0] > 5000
    if missing.any():
        ax.scatter(*Y[missing].T, s=s, c=na_color, linewidths=0, rasterized=rasterized)
    idx = np.flatnonzero(~missing)
    idx = idx[np.argsort(x[idx], kind="stable")]  # high values drawn on top
    points = ax.scatter(
        *Y[idx].T,
        s=s,
        c=x[idx],
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        linewidths=0,
        rasterized=rasterized,
    )
    ax.figure.colorbar(points, ax=ax, fraction=0.05, pad=0.02)
