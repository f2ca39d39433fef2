"""The CuPy extras in pyproject.toml and the install hint of method='cupy' name the same things."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest

from annumap._core import gpu

EXTRAS = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())[
    "project"
]["optional-dependencies"]


def test_gpu_extras_match_the_cuda_builds():
    assert EXTRAS["gpu-cuda12"] == ["cupy-cuda12x>=13"]
    assert EXTRAS["gpu-cuda13"] == ["cupy-cuda13x>=14"]
    assert EXTRAS["gpu"] == EXTRAS["gpu-cuda12"]  # the alias docs/install.md describes


def test_install_hint_names_existing_extras(monkeypatch):
    named = set(re.findall(r"annumap\[([\w-]+)\]", gpu._INSTALL_HINT))
    assert {"gpu-cuda12", "gpu-cuda13"} <= named
    assert named <= set(EXTRAS)
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    with pytest.raises(ImportError, match=re.escape(gpu._INSTALL_HINT)):
        gpu.cupy_namespace()
