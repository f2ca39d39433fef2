"""Every ``tutorials/*.py`` runs headless as a script, offline, writing figures only to its dir.

The tutorials are jupytext percent-format notebooks; the docs render them as pages through
``docs/_ext/tutorials.py``, which is tested here too.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("*.py"))
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"%PDF", b"<?xml", b"<svg")


def _converter():
    path = ROOT / "docs" / "_ext" / "tutorials.py"
    spec = importlib.util.spec_from_file_location("annumap_docs_tutorials", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tutorials_are_there():
    names = [p.name for p in TUTORIALS]
    for expected in ("01_scrnaseq_cbmc.py", "02_ehr_nhanes.py", "03_reproducibility_speed.py"):
        assert expected in names


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_is_percent_format_with_a_title(path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# %% [markdown]\n# # "), "start with a markdown cell holding the title"
    markers = re.findall(r"^# %%.*$", text, flags=re.MULTILINE)
    assert set(markers) <= {"# %%", "# %% [markdown]"}, set(markers)
    assert "# %%" in markers and "# %% [markdown]" in markers
    compile(text, str(path), "exec")
    assert "ANNUMAP_FIGDIR" in text or "savefig" not in text


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs_headless_and_offline(path, tmp_path):
    figdir = tmp_path / "figures"
    stray = ROOT / "figures"
    existed = stray.exists()
    env = {
        **os.environ,
        "MPLBACKEND": "Agg",
        "ANNUMAP_FIGDIR": str(figdir),
        # any attempt to download goes to a closed port and fails the run
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
        "NO_PROXY": "",
        "no_proxy": "",
    }
    result = subprocess.run(
        [sys.executable, str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"{path.name} failed:\n{result.stderr[-4000:]}"
    assert "Traceback" not in result.stderr
    written = sorted(figdir.glob("*")) if figdir.exists() else []
    for figure in written:
        assert figure.read_bytes()[:8].startswith(IMAGE_MAGIC), figure.name
    if "savefig" in path.read_text(encoding="utf-8") or "save=" in path.read_text("utf-8"):
        assert written, f"{path.name} saves figures but none landed in $ANNUMAP_FIGDIR"
    assert stray.exists() == existed, "figures must go to $ANNUMAP_FIGDIR, not ./figures"


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_docs_page_keeps_all_code_and_text(path):
    text = path.read_text(encoding="utf-8")
    page = _converter().percent_to_myst(text)
    assert page.startswith("# ")  # the title cell becomes the page title
    assert "# %%" not in page
    fences = re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL)
    code_in_page = "".join(fences)
    for line in text.splitlines():
        if line.startswith("# %%") or not line.strip():
            continue
        if line.startswith("#") and not line.startswith("#!"):
            # markdown cells lose their comment prefix; comments inside code stay in a fence
            assert line[2:] in page or line in code_in_page, line
        else:
            assert line in code_in_page, line


def test_converter_on_a_small_notebook():
    source = (
        "# %% [markdown]\n# # Title\n#\n# Some *text*.\n\n"
        "# %%\nx = 1  # a comment\n\n\n# %% [markdown]\n# More.\n\n# %%\nprint(x)\n"
    )
    page = _converter().percent_to_myst(source)
    assert page == (
        "# Title\n\nSome *text*.\n\n```python\nx = 1  # a comment\n```\n\nMore.\n\n"
        "```python\nprint(x)\n```\n"
    )
