"""The ``annumap`` command: the happy path, preprocessing, and plain errors with exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from annumap import cli

from .conftest import make_adata


def _counts(n: int = 240, genes: int = 80, seed: int = 0):
    """Raw-count AnnData: three groups with different Poisson rates, CSR float32."""
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(seed)
    group = rng.integers(3, size=n)
    rates = rng.gamma(1.0, 2.0, size=(3, genes))
    depth = rng.uniform(0.5, 2.0, size=(n, 1))
    X = rng.poisson(rates[group] * depth).astype(np.float32)
    obs = pd.DataFrame(
        {"group": pd.Categorical([f"g{g}" for g in group])}, index=[f"c{i}" for i in range(n)]
    )
    var = pd.DataFrame(index=[f"gene{j}" for j in range(genes)])
    return ad.AnnData(X=sparse.csr_matrix(X), obs=obs, var=var)


@pytest.fixture
def counts_file(tmp_path):
    path = tmp_path / "counts.h5ad"
    _counts().write_h5ad(path)
    return path


def _run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_embed_counts_writes_result_plot_and_summary(counts_file, tmp_path, capsys):
    import anndata as ad

    pytest.importorskip("matplotlib")
    out_file, png = tmp_path / "out" / "emb.h5ad", tmp_path / "fig" / "emb.png"
    code, out, err = _run(
        capsys, "embed", counts_file, "-o", out_file, "--plot", png, "--color", "group",
        "--preprocess", "counts", "--n-neighbors", 12, "--maxiter", 30, "--min-dist", 0.3,
    )  # fmt: skip
    assert code == 0, err
    # one summary line on stdout, progress on stderr
    assert out.count("\n") == 1 and "240 cells x 80 variables" in out and str(out_file) in out
    assert "preprocessed: normalise total, log1p, PCA" in err and "wrote" in err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = ad.read_h5ad(out_file)
    assert result.obsm["X_umap"].shape == (240, 2) and result.obsm["X_umap"].dtype == np.float32
    assert result.obsm["X_pca"].shape[1] == 50
    assert result.uns["neighbors"]["params"]["n_neighbors"] == 12
    assert result.uns["umap"]["params"]["n_epochs"] == 30
    assert result.uns["umap"]["params"]["min_dist"] == pytest.approx(0.3)
    assert (result.obsp["distances"].getnnz(axis=1) == 11).all()
    # the groups separate: most neighbours share a group
    D = result.obsp["distances"].tocoo()
    g = result.obs["group"].to_numpy()
    assert (g[D.row] == g[D.col]).mean() > 0.9


def test_same_seed_same_file_content(counts_file, tmp_path, capsys):
    import anndata as ad

    runs = []
    for name, jobs in (("a", 1), ("b", 2)):
        path = tmp_path / f"{name}.h5ad"
        code, _, err = _run(
            capsys, "embed", counts_file, "-o", path, "--use-rep", "X", "--maxiter", 20,
            "--random-state", 7, "--n-jobs", jobs, "-q",
        )  # fmt: skip
        assert code == 0, err
        assert err == ""  # --quiet: no progress
        runs.append(ad.read_h5ad(path))
    np.testing.assert_array_equal(runs[0].obsm["X_umap"], runs[1].obsm["X_umap"])
    assert runs[0].uns["umap"]["params"]["random_state"] == 7


def test_key_added_and_reused_graph(counts_file, tmp_path, capsys):
    import anndata as ad

    first = tmp_path / "first.h5ad"
    assert _run(capsys, "embed", counts_file, "-o", first, "--use-rep", "X", "--maxiter", 5)[0] == 0
    second = tmp_path / "second.h5ad"
    code, _, err = _run(
        capsys, "embed", first, "-o", second, "--neighbors-key", "neighbors",
        "--key-added", "X_umap_3d", "--n-components", 3, "--maxiter", 5, "--init-pos", "random",
    )  # fmt: skip
    assert code == 0, err
    assert "neighbours:" not in err  # the stored graph was reused
    result = ad.read_h5ad(second)
    assert result.obsm["X_umap_3d"].shape == (240, 3)
    assert result.uns["X_umap_3d"]["params"]["init_pos"] == "random"
    np.testing.assert_array_equal(
        result.obsm["X_umap"], ad.read_h5ad(first).obsm["X_umap"]
    )  # the earlier embedding is kept


@pytest.mark.parametrize("use_scanpy", [True, False])
def test_preprocess_counts_matches_scanpy(use_scanpy):
    sc = pytest.importorskip("scanpy")
    adata = _counts(n=200, genes=60)
    reference = adata.copy()
    sc.pp.normalize_total(reference)
    sc.pp.log1p(reference)
    sc.pp.pca(reference, n_comps=20)
    done = cli.preprocess_counts(adata, n_comps=20, use_scanpy=use_scanpy)
    assert ("scanpy" in done) == use_scanpy and "PCA 20" in done
    np.testing.assert_allclose(adata.X.toarray(), reference.X.toarray(), rtol=1e-5, atol=1e-6)
    ours, theirs = adata.obsm["X_pca"], reference.obsm["X_pca"]
    assert ours.shape == theirs.shape == (200, 20)
    # same components up to sign
    for k in range(5):
        c = np.corrcoef(ours[:, k], theirs[:, k])[0, 1]
        assert abs(c) > 0.999


def test_log_normalize_dense_and_zero_cells():
    X = np.array([[1.0, 3.0], [0.0, 0.0], [2.0, 2.0], [10.0, 0.0]])
    out = cli.log_normalize(X)
    target = np.median([4.0, 4.0, 10.0])  # cells with zero counts do not count
    expected = np.log1p(X * np.array([target / 4, 0.0, target / 4, target / 10])[:, None])
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    sparse_out = cli.log_normalize(sparse.csr_matrix(X))
    np.testing.assert_allclose(sparse_out.toarray(), expected, rtol=1e-6)
    assert out.dtype == np.float32


def test_bundled_dataset_is_found_and_default_preprocessing(tmp_path, capsys):
    path = cli.bundled_path()
    assert path is not None and path.name == cli.BUNDLED
    out_file = tmp_path / "bundled.h5ad"
    code, out, err = _run(capsys, "embed", "-o", out_file, "--maxiter", 2, "--init-pos", "random")
    assert code == 0, err
    assert "8617 cells x 500 variables" in out
    assert "preprocessed: normalise total, log1p, PCA 50" in err  # raw counts: preprocessed


def test_missing_file(tmp_path, capsys):
    code, out, err = _run(capsys, "embed", tmp_path / "nope.h5ad", "-o", tmp_path / "o.h5ad")
    assert code == cli.EXIT_NO_FILE
    assert "nope.h5ad" in err and "does not exist" in err and "Traceback" not in err
    assert out == "" and not (tmp_path / "o.h5ad").exists()


def test_unreadable_file(tmp_path, capsys):
    bad = tmp_path / "bad.h5ad"
    bad.write_text("not hdf5")
    code, _, err = _run(capsys, "embed", bad, "-o", tmp_path / "o.h5ad")
    assert code == cli.EXIT_NO_FILE and "cannot read" in err


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--plot", "p.png", "--color", "nope"], "--color 'nope'"),
        (["--use-rep", "X_nope"], "--use-rep 'X_nope'"),
        (["--init-pos", "X_nope"], "--init-pos 'X_nope'"),
        (["--init-pos", "paga"], "uns['paga']"),
        (["--neighbors-key", "graph"], "--neighbors-key 'graph'"),
    ],
)
def test_missing_key(counts_file, tmp_path, capsys, extra, needle):
    pytest.importorskip("matplotlib")
    out_file = tmp_path / "o.h5ad"
    code, out, err = _run(capsys, "embed", counts_file, "-o", out_file, *extra)
    assert code == cli.EXIT_NO_KEY, err
    assert needle in err and "Traceback" not in err
    assert out == "" and not out_file.exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--min-dist", "-1"], "--min-dist"),
        (["--min-dist", "2", "--spread", "1"], "spread"),
        (["--spread", "0"], "--spread"),
        (["--n-neighbors", "1"], "--n-neighbors"),
        (["--n-neighbors", "abc"], "--n-neighbors"),
        (["--metric", "nope"], "--metric 'nope'"),
        (["--maxiter", "0"], "--maxiter"),
        (["--preprocess", "tpm"], "--preprocess"),
        (["--color", "group"], "--color needs --plot"),
        (["--plot", "x.txt"], "--plot must end"),
    ],
)
def test_bad_options(counts_file, tmp_path, capsys, extra, needle):
    out_file = tmp_path / "o.h5ad"
    code, out, err = _run(capsys, "embed", counts_file, "-o", out_file, *extra)
    assert code == cli.EXIT_USAGE, err
    assert needle in err and "Traceback" not in err
    assert out == "" and not out_file.exists()


def test_output_must_be_h5ad(counts_file, tmp_path, capsys):
    code, _, err = _run(capsys, "embed", counts_file, "-o", tmp_path / "o.csv")
    assert code == cli.EXIT_USAGE and "--output" in err


def test_nan_in_data_is_a_plain_failure(tmp_path, capsys):
    adata = make_adata(n=100)
    adata.X[3, 2] = np.nan
    path = tmp_path / "nan.h5ad"
    adata.write_h5ad(path)
    code, out, err = _run(capsys, "embed", path, "-o", tmp_path / "o.h5ad")
    assert code == cli.EXIT_FAILED
    assert "NaN" in err and "Impute" in err and "Traceback" not in err
    assert out == ""
    code, _, err = _run(capsys, "embed", path, "-o", tmp_path / "o.h5ad", "--preprocess", "counts")
    assert code == cli.EXIT_FAILED and "raw counts" in err


def test_help_and_version(capsys):
    code, out, _ = _run(capsys, "embed", "--help")
    assert code == 0
    for option in ("--plot", "--color", "--preprocess", "--n-neighbors", "--min-dist", "--n-jobs"):
        assert option in out
    code, out, _ = _run(capsys, "--version")
    assert code == 0 and out.startswith("annumap ")
    code, _, err = _run(capsys)
    assert code == cli.EXIT_USAGE and "COMMAND" in err


def test_module_entry_point_exit_status(tmp_path):
    """``python -m annumap.cli`` propagates the status and prints no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "annumap.cli", "embed", str(tmp_path / "x.h5ad"), "-o", "y.h5ad"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == cli.EXIT_NO_FILE
    assert (
        result.stderr.strip()
        == f"annumap: error: input file '{tmp_path / 'x.h5ad'}' does not exist."
    )
    assert not Path(tmp_path / "y.h5ad").exists()


@pytest.mark.parametrize(
    ("error", "code", "shown"),
    [
        (FloatingPointError("the layout produced non-finite coordinates"), cli.EXIT_FAILED, None),
        (RuntimeError("no CUDA device"), cli.EXIT_FAILED, None),
        (MemoryError("cannot allocate"), cli.EXIT_FAILED, "MemoryError: cannot allocate"),
        (KeyError("internal"), cli.EXIT_FAILED, "KeyError: internal"),
        (ValueError("bad value"), cli.EXIT_FAILED, None),
        (AssertionError(), cli.EXIT_FAILED, "AssertionError"),
    ],
    ids=["FloatingPointError", "RuntimeError", "MemoryError", "KeyError", "ValueError", "bare"],
)
def test_every_failure_is_a_plain_message_with_a_status(
    counts_file, tmp_path, capsys, monkeypatch, error, code, shown
):
    """Any exception from the computation ends in one line and a documented status."""
    import annumap

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(annumap.tl, "umap", fail)
    out_file = tmp_path / "o.h5ad"
    status, out, err = _run(capsys, "embed", counts_file, "-o", out_file, "--use-rep", "X")
    assert status == code
    assert err.strip().splitlines()[-1] == f"annumap: error: {shown or error}"
    assert "Traceback" not in err and out == "" and not out_file.exists()


def test_a_key_missing_from_the_file_is_exit_4(counts_file, tmp_path, capsys):
    """A neighbors entry without its graph: annumap's own missing-key error maps to 4."""
    import anndata as ad

    adata = ad.read_h5ad(counts_file)
    adata.uns["nb"] = {"connectivities_key": "nb_connectivities", "params": {}}
    path = tmp_path / "broken.h5ad"
    adata.write_h5ad(path)
    code, out, err = _run(capsys, "embed", path, "-o", tmp_path / "o.h5ad", "--neighbors-key", "nb")
    assert code == cli.EXIT_NO_KEY, err
    assert "nb_connectivities" in err and "Traceback" not in err and out == ""
