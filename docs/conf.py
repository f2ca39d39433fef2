"""Sphinx configuration: MyST pages, the API from docstrings, tutorials rendered as pages."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent / "src"))

import annumap  # noqa: E402

project = "annumap"
author = "The annumap developers"
copyright = "The annumap developers"
version = release = annumap.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "tutorials",
    "generated",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

autosummary_generate = False
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_param = True

html_theme = "alabaster"
html_static_path = ["_static"]
html_title = f"annumap {release}"
html_theme_options = {
    "description": "UMAP for AnnData",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "230px",
}
