"""Docstring fragments shared by the public functions."""

from __future__ import annotations

import re

doc_adata = """\
adata
    Annotated data matrix (in memory; a view is materialised, as scanpy does)."""

doc_copy = """\
copy
    Return a modified copy and leave ``adata`` untouched; otherwise modify ``adata`` in place
    and return ``None``."""

doc_n_jobs = """\
n_jobs
    Threads for this call (``None`` = all cores). Results do not depend on it."""

doc_random_state = """\
random_state
    Seed (an int). The same seed gives bit-identical results for any ``n_jobs``."""


def inject(**fragments: str):
    """Decorator filling ``{name}`` placeholders of a docstring with the fragments.

    A placeholder alone on its line gets every line of the fragment indented like the
    placeholder, so multi-line fragments stay aligned in the numpydoc sections.
    """

    def fill(match: re.Match) -> str:
        indent, name = match.group(1), match.group(2)
        return "\n".join(indent + line if line else line for line in fragments[name].splitlines())

    def wrap(fn):
        doc = re.sub(r"(?m)^([ \t]*)\{(\w+)\}[ \t]*$", fill, fn.__doc__)
        fn.__doc__ = doc.replace("{{", "{").replace("}}", "}")
        return fn

    return wrap
