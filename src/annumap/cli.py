"""The ``annumap`` command: embed an .h5ad file (or the bundled CBMC cells) and plot it.

``annumap embed [INPUT.h5ad] -o OUTPUT.h5ad [--plot umap.png] [--color KEY] ...`` reads the file,
optionally preprocesses raw counts, runs :func:`annumap.pp.neighbors` and :func:`annumap.tl.umap`,
writes the result and a picture. Progress goes to stderr, a one-line summary to stdout; errors
are plain messages with an exit status that says what went wrong (see :data:`EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["EXIT_CODES", "main"]

logger = logging.getLogger("annumap.cli")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_FILE = 3
EXIT_NO_KEY = 4
#: Exit status of :func:`main` -> meaning.
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILED: "the computation failed (e.g. NaN in the data); the message says why",
    EXIT_USAGE: "bad command-line options",
    EXIT_NO_FILE: "the input file is missing or is not a readable .h5ad file",
    EXIT_NO_KEY: (
        "a key given on the command line (--color, --use-rep, ...) or needed from the file "
        "(a neighbors entry, PAGA positions) is not in the data"
    ),
}

#: The dataset embedded when no INPUT is given (raw UMI counts; see data/README.md).
BUNDLED = "cbmc_citeseq_8617x500.h5ad"
_INITS = ("spectral", "paga", "pca", "random")
_PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".tif", ".tiff")


class CliError(Exception):
    """A plain-language error with the exit status it maps to."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def bundled_path() -> Path | None:
    """The bundled CBMC file: ``data/`` of the source checkout, else ``./data``; None if absent."""
    candidates = (
        Path(__file__).resolve().parents[2] / "data" / BUNDLED,
        Path.cwd() / "data" / BUNDLED,
    )
    return next((p for p in candidates if p.is_file()), None)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        msg = f"expected a positive integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if value < 1:
        msg = f"expected a positive integer, got {value}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        msg = f"expected a non-negative integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if value < 0:
        msg = f"expected a non-negative integer, got {value}"
        raise argparse.ArgumentTypeError(msg)
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``annumap`` command."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="annumap",
        description="UMAP for AnnData files: scanpy-compatible neighbours and embedding.",
        epilog="Exit status: "
        + "; ".join(f"{code} {text}" for code, text in EXIT_CODES.items())
        + ".",
    )
    parser.add_argument("--version", action="version", version=f"annumap {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    embed = commands.add_parser(
        "embed",
        help="compute neighbours and a UMAP embedding of an .h5ad file, write it and a plot",
        description=(
            "Read INPUT (default: the bundled CBMC cells, raw counts), preprocess it if asked, "
            "run annumap.pp.neighbors and annumap.tl.umap, and write OUTPUT with the graph in "
            ".obsp/.uns['neighbors'] and the embedding in .obsm['X_umap']. Progress is printed "
            "to stderr, a one-line summary to stdout."
        ),
    )
    embed.add_argument(
        "input",
        nargs="?",
        metavar="INPUT.h5ad",
        help=f"AnnData file to embed (default: data/{BUNDLED} of the annumap checkout)",
    )
    embed.add_argument(
        "-o", "--output", required=True, metavar="OUTPUT.h5ad", help="where to write the result"
    )
    embed.add_argument(
        "--plot", metavar="FILE.png", help="also save a scatter plot (.png, .pdf, .svg)"
    )
    embed.add_argument(
        "--color",
        action="append",
        metavar="KEY",
        help="obs column or variable to colour the plot by (repeat for more panels)",
    )
    embed.add_argument(
        "--preprocess",
        choices=("counts", "none"),
        help=(
            "'counts': normalise total, log1p, PCA 50 (scanpy's functions when installed, else "
            "NumPy/SciPy) for raw counts; 'none': use the data as it is. Default: 'counts' for "
            "the bundled data, 'none' for INPUT"
        ),
    )
    embed.add_argument(
        "-q", "--quiet", action="store_true", help="no progress on stderr (errors still shown)"
    )
    graph = embed.add_argument_group("neighbours (annumap.pp.neighbors)")
    graph.add_argument(
        "--n-neighbors",
        type=_positive_int,
        default=15,
        metavar="K",
        help="neighbourhood size, the cell included (default 15)",
    )
    graph.add_argument(
        "--n-pcs",
        type=_non_negative_int,
        metavar="N",
        help="use the first N principal components (0 = .X)",
    )
    graph.add_argument(
        "--use-rep", metavar="KEY", help="'X' or an .obsm key to search on (default: scanpy's rule)"
    )
    graph.add_argument("--metric", default="euclidean", help="distance metric (default euclidean)")
    graph.add_argument(
        "--neighbors-key",
        metavar="KEY",
        help="reuse the graph stored in .uns[KEY] instead of computing one",
    )
    layout = embed.add_argument_group("embedding (annumap.tl.umap)")
    layout.add_argument(
        "--min-dist", type=float, default=0.5, metavar="D", help="minimum distance (default 0.5)"
    )
    layout.add_argument(
        "--spread", type=float, default=1.0, metavar="S", help="scale of the points (default 1.0)"
    )
    layout.add_argument(
        "--n-components", type=_positive_int, default=2, metavar="N", help="dimensions (default 2)"
    )
    layout.add_argument(
        "--maxiter",
        type=_positive_int,
        metavar="EPOCHS",
        help="epochs (default 500 up to 10,000 cells, else 200)",
    )
    layout.add_argument(
        "--alpha", type=float, default=1.0, metavar="A", help="initial learning rate (default 1.0)"
    )
    layout.add_argument(
        "--gamma", type=float, default=1.0, metavar="G", help="repulsion weight (default 1.0)"
    )
    layout.add_argument(
        "--negative-sample-rate",
        type=float,
        default=5.0,
        metavar="R",
        help="negative samples per positive one (default 5)",
    )
    layout.add_argument(
        "--init-pos",
        default="spectral",
        metavar="INIT",
        help="spectral, paga, pca, random or an .obsm key (default spectral)",
    )
    layout.add_argument(
        "--random-state",
        type=_non_negative_int,
        default=0,
        metavar="SEED",
        help="seed (default 0); results do not depend on --n-jobs",
    )
    layout.add_argument(
        "--n-jobs", type=_positive_int, metavar="N", help="threads (default: all cores)"
    )
    layout.add_argument(
        "--key-added", metavar="KEY", help="store the embedding in .obsm[KEY] (default X_umap)"
    )
    return parser


def _check_options(args: argparse.Namespace) -> None:
    """Every check that needs no data: raises CliError(EXIT_USAGE)."""
    from ._core.knn import METRICS
    from .tl._umap import check_params

    if Path(args.output).suffix != ".h5ad":
        msg = f"--output must end in .h5ad, got {args.output!r}."
        raise CliError(msg, EXIT_USAGE)
    if args.plot is not None:
        if Path(args.plot).suffix.lower() not in _PLOT_SUFFIXES:
            msg = f"--plot must end in one of {', '.join(_PLOT_SUFFIXES)}, got {args.plot!r}."
            raise CliError(msg, EXIT_USAGE)
        try:
            import matplotlib
        except ImportError:
            msg = "--plot needs matplotlib: pip install 'annumap[plot]'."
            raise CliError(msg, EXIT_USAGE) from None
        del matplotlib
    elif args.color:
        msg = "--color needs --plot FILE.png."
        raise CliError(msg, EXIT_USAGE)
    if args.n_neighbors < 2:
        msg = f"--n-neighbors must be >= 2 (the cell itself plus one), got {args.n_neighbors}."
        raise CliError(msg, EXIT_USAGE)
    if args.metric not in METRICS:
        msg = f"--metric {args.metric!r} is unknown; choose one of: {', '.join(sorted(METRICS))}."
        raise CliError(msg, EXIT_USAGE)
    try:
        check_params(
            min_dist=args.min_dist, spread=args.spread, n_components=args.n_components,
            maxiter=args.maxiter, alpha=args.alpha, gamma=args.gamma,
            negative_sample_rate=args.negative_sample_rate, a=None, b=None,
        )  # fmt: skip
    except (ValueError, TypeError) as err:
        msg = str(err).replace("_", "-")
        raise CliError(f"--{msg}", EXIT_USAGE) from None


def _read(args: argparse.Namespace) -> tuple[AnnData, Path, bool]:
    """The input AnnData, its path and whether it is the bundled dataset."""
    import anndata as ad

    if args.input is None:
        path = bundled_path()
        if path is None:
            msg = (
                f"no INPUT given and the bundled data/{BUNDLED} was not found (it ships with the "
                "annumap git checkout, not with the wheel); pass an .h5ad file."
            )
            raise CliError(msg, EXIT_NO_FILE)
        bundled = True
    else:
        path, bundled = Path(args.input), False
        if not path.is_file():
            msg = f"input file {str(path)!r} does not exist."
            raise CliError(msg, EXIT_NO_FILE)
    try:
        adata = ad.read_h5ad(path)
    except Exception as err:  # h5py/anndata raise many types for a file that is not .h5ad
        msg = f"cannot read {str(path)!r} as an .h5ad file: {err}"
        raise CliError(msg, EXIT_NO_FILE) from None
    return adata, path, bundled


def _check_keys(adata: AnnData, args: argparse.Namespace, preprocess: str) -> None:
    """Every key named on the command line exists (or will be made): raises CliError."""
    for key in args.color or []:
        if key not in adata.obs.columns and key not in adata.var_names:
            columns = ", ".join(map(str, adata.obs.columns)) or "none"
            msg = f"--color {key!r} is neither an .obs column ({columns}) nor a variable name."
            raise CliError(msg, EXIT_NO_KEY)
    made = {"X_pca"} if preprocess == "counts" else set()
    obsm = set(adata.obsm) | made
    if args.use_rep is not None and args.use_rep != "X" and args.use_rep not in obsm:
        msg = f"--use-rep {args.use_rep!r} is not 'X' nor an .obsm key ({sorted(obsm)})."
        raise CliError(msg, EXIT_NO_KEY)
    if args.init_pos not in _INITS and args.init_pos not in obsm:
        msg = (
            f"--init-pos {args.init_pos!r} is neither one of {', '.join(_INITS)} nor an .obsm "
            f"key ({sorted(obsm)})."
        )
        raise CliError(msg, EXIT_NO_KEY)
    if args.init_pos == "paga" and "pos" not in adata.uns.get("paga", {}):
        msg = "--init-pos paga needs .uns['paga']['pos'] (run scanpy.tl.paga and scanpy.pl.paga)."
        raise CliError(msg, EXIT_NO_KEY)
    if args.neighbors_key is not None and args.neighbors_key not in adata.uns:
        msg = f"--neighbors-key {args.neighbors_key!r} is not in .uns ({sorted(adata.uns)})."
        raise CliError(msg, EXIT_NO_KEY)


def preprocess_counts(adata: AnnData, *, n_comps: int = 50, use_scanpy: bool = True) -> str:
    """Normalise total counts, log1p and PCA in place; returns which implementation ran.

    ``.X`` becomes the log-normalised values (the counts stay in the input file) and
    ``.obsm['X_pca']`` the first ``n_comps`` principal components. With scanpy installed (and
    ``use_scanpy``) its ``normalize_total``, ``log1p`` and ``pca`` run; otherwise the same steps
    in NumPy/SciPy: each cell scaled to the median total count, ``log(1 + x)``, and a PCA with
    implicit centring for sparse data.
    """
    import numpy as np
    from scipy import sparse

    X = adata.X
    values = X.data if sparse.issparse(X) else np.asarray(X)
    if values.dtype.kind not in "biuf":
        msg = f"--preprocess counts needs numeric counts in .X, got dtype {values.dtype}."
        raise CliError(msg, EXIT_FAILED)
    if values.size and (not np.isfinite(values).all() or values.min() < 0):
        msg = (
            "--preprocess counts needs raw counts (finite, >= 0) in .X; this .X has negative "
            "or NaN values: use --preprocess none for data that is already processed."
        )
        raise CliError(msg, EXIT_FAILED)
    n_comps = int(min(n_comps, adata.n_obs - 1, adata.n_vars - 1))
    sc = None
    if use_scanpy:
        try:
            import scanpy as sc
        except ImportError:
            sc = None
    if sc is not None:
        if not np.issubdtype(adata.X.dtype, np.floating):
            adata.X = adata.X.astype(np.float32)
        sc.pp.normalize_total(adata)
        sc.pp.log1p(adata)
        sc.pp.pca(adata, n_comps=n_comps)
        used = "scanpy"
    else:
        from ._core.pca import pca

        adata.X = log_normalize(X)
        adata.obsm["X_pca"] = pca(adata.X, n_comps)
        used = "NumPy/SciPy"
    return f"normalise total, log1p, PCA {n_comps} ({used})"


def log_normalize(X: Any) -> Any:
    """``log(1 + x * median_total / total)`` per cell (float32; zero-count cells stay zero)."""
    import numpy as np
    from scipy import sparse

    if sparse.issparse(X):
        X = sparse.csr_matrix(X, dtype=np.float32, copy=True)
    else:
        X = np.array(X, dtype=np.float32)
    totals = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    positive = totals > 0
    target = float(np.median(totals[positive])) if positive.any() else 1.0
    scale = np.zeros_like(totals)
    scale[positive] = target / totals[positive]
    if sparse.issparse(X):
        X = sparse.csr_matrix(sparse.diags(scale.astype(np.float32)) @ X)
        np.log1p(X.data, out=X.data)
    else:
        X *= scale.astype(np.float32)[:, None]
        np.log1p(X, out=X)
    return X


def _embed(args: argparse.Namespace) -> int:
    from . import pp, tl

    start = time.perf_counter()
    _check_options(args)
    adata, path, bundled = _read(args)
    preprocess = args.preprocess or ("counts" if bundled else "none")
    logger.info("read %s: %d cells x %d variables", path, adata.n_obs, adata.n_vars)
    _check_keys(adata, args, preprocess)

    if preprocess == "counts":
        t = time.perf_counter()
        done = preprocess_counts(adata)
        logger.info("preprocessed: %s, %.1f s", done, time.perf_counter() - t)
    if args.neighbors_key is None:
        t = time.perf_counter()
        pp.neighbors(
            adata, n_neighbors=args.n_neighbors, n_pcs=args.n_pcs, use_rep=args.use_rep,
            metric=args.metric, random_state=args.random_state, n_jobs=args.n_jobs,
        )  # fmt: skip
        params = adata.uns["neighbors"]["params"]
        logger.info(
            "neighbours: k=%d, %s search, %.1f s",
            params["n_neighbors"],
            params.get("knn_backend", "?"),
            time.perf_counter() - t,
        )
    t = time.perf_counter()
    tl.umap(
        adata, min_dist=args.min_dist, spread=args.spread, n_components=args.n_components,
        maxiter=args.maxiter, alpha=args.alpha, gamma=args.gamma,
        negative_sample_rate=args.negative_sample_rate, init_pos=args.init_pos,
        random_state=args.random_state, neighbors_key=args.neighbors_key,
        key_added=args.key_added, n_jobs=args.n_jobs,
        progress=not args.quiet and sys.stderr.isatty(),
    )  # fmt: skip
    key = args.key_added or "X_umap"
    uns_key = args.key_added or "umap"
    logger.info(
        "umap: %d epochs, init %s, %.1f s",
        adata.uns[uns_key]["params"]["n_epochs"],
        adata.uns[uns_key]["params"]["init_pos"],
        time.perf_counter() - t,
    )

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(output)
    logger.info("wrote %s", output)
    summary = (
        f"annumap embed: {adata.n_obs} cells x {adata.n_vars} variables -> {output} "
        f"(.obsm[{key!r}], {adata.obsm[key].shape[1]}-D)"
    )
    if args.plot is not None:
        if "matplotlib.pyplot" not in sys.modules:  # a fresh process: files only, no display
            import matplotlib

            matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from . import pl
        from .pl._umap import _root_figure

        plot = Path(args.plot)
        plot.parent.mkdir(parents=True, exist_ok=True)
        colors = args.color if args.color and len(args.color) > 1 else (args.color or [None])[0]
        axes = pl.umap(adata, color=colors, key=key, save=plot)
        plt.close(_root_figure(axes[0] if isinstance(axes, list) else axes))
        logger.info("wrote %s", plot)
        summary += f", plot {plot}"
    sys.stdout.write(f"{summary} in {time.perf_counter() - start:.1f} s\n")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``annumap`` command with ``argv`` (default ``sys.argv[1:]``); returns the status.

    Parameters
    ----------
    argv
        Command-line arguments, e.g. ``["embed", "in.h5ad", "-o", "out.h5ad"]``.

    Returns
    -------
    The exit status: 0 on success, else one of :data:`EXIT_CODES`.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or argparse's usage error (2)
        return int(exit_.code or 0)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("annumap: %(message)s"))
    package = logging.getLogger("annumap")
    levels = package.level, logger.level
    package.addHandler(handler)
    package.setLevel(logging.WARNING)  # the library's own warnings, not its info lines
    logger.setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return _embed(args)
    except CliError as err:
        sys.stderr.write(f"annumap: error: {err}\n")
        return err.code
    except KeyboardInterrupt:
        sys.stderr.write("annumap: interrupted\n")
        return 130
    except Exception as err:  # every failure ends in a plain message and a documented status
        code, message = _failure(err)
        sys.stderr.write(f"annumap: error: {message}\n")
        return code
    finally:
        package.removeHandler(handler)
        package.setLevel(levels[0])
        logger.setLevel(levels[1])


def _failure(err: Exception) -> tuple[int, str]:
    """The exit status and one-line message for an exception raised while embedding.

    annumap's own "this key is not in the data" (:class:`annumap._anndata.MissingKeyError`)
    is :data:`EXIT_NO_KEY`; everything else (ValueError, TypeError, FloatingPointError,
    RuntimeError, MemoryError, OSError, and a KeyError from inside a library, which is not a
    key the user named) is :data:`EXIT_FAILED`. The messages annumap writes say what to do, so
    they are shown as they are; other exceptions are prefixed with their type.
    """
    from ._anndata import MissingKeyError

    if isinstance(err, MissingKeyError):
        return EXIT_NO_KEY, str(err)
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    if isinstance(
        err, ValueError | TypeError | ArithmeticError | RuntimeError | ImportError | OSError
    ):
        return EXIT_FAILED, text or type(err).__name__
    return EXIT_FAILED, f"{type(err).__name__}: {text}" if text else type(err).__name__


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one plain line on stderr (no source line)."""
    del filename, lineno, file, line
    sys.stderr.write(f"annumap: warning: {message} ({category.__name__})\n")


if __name__ == "__main__":
    sys.exit(main())
