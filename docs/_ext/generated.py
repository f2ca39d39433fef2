"""Sphinx extension: the API list and the CLI help are generated from the code.

- In any page, a line ``<!-- api:annumap.tl -->`` is replaced at read time by an autosummary
  table and the full ``autofunction`` entries of every name in that module's ``__all__``, so a
  new public function appears in the reference without editing the docs.
- Napoleon renders a numpydoc ``name : type`` entry as ``**name**``; where the name is itself
  literal (``.obsm['X_umap']`` in a Returns section) the nesting is not valid reStructuredText
  and would show the backquotes, so the bold is dropped there.
- At ``builder-inited`` the ``annumap embed --help`` text is written to
  ``docs/_generated/cli_embed_help.txt`` for ``cli.md`` to include.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
from pathlib import Path

__all__ = ["api_block", "setup"]

_MARKER = re.compile(r"^<!-- api:([\w.]+) -->$", flags=re.MULTILINE)
_BOLD_LITERAL = re.compile(r"\*\*(``[^`]+``)\*\*")


def api_block(module_name: str) -> str:
    """MyST text documenting every public name of ``module_name``."""
    module = importlib.import_module(module_name)
    names = list(getattr(module, "__all__", []))
    if not names:
        msg = f"{module_name} has no __all__ to document"
        raise ValueError(msg)
    table = "\n".join(f"   {module_name}.{name}" for name in names)
    entries = "\n\n".join(f".. autofunction:: {module_name}.{name}" for name in names)
    return f"```{{eval-rst}}\n.. autosummary::\n\n{table}\n\n{entries}\n```"


def _on_source_read(app, docname: str, source: list[str]) -> None:
    del app, docname
    source[0] = _MARKER.sub(lambda m: api_block(m.group(1)), source[0])


def _on_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    del app, what, name, obj, options
    lines[:] = [_BOLD_LITERAL.sub(r"\1", line) for line in lines]


def _on_builder_inited(app) -> None:
    from annumap import cli

    out = Path(app.srcdir) / "_generated"
    out.mkdir(exist_ok=True)
    buffer = io.StringIO()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "96"
    try:
        with contextlib.redirect_stdout(buffer):
            code = cli.main(["embed", "--help"])
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    if code != 0:
        msg = f"annumap embed --help exited with {code}"
        raise RuntimeError(msg)
    (out / "cli_embed_help.txt").write_text(buffer.getvalue(), encoding="utf-8")


def setup(app):
    """Register the generators with Sphinx."""
    app.connect("builder-inited", _on_builder_inited)
    app.connect("source-read", _on_source_read)
    app.connect("autodoc-process-docstring", _on_docstring, priority=600)  # after napoleon
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
