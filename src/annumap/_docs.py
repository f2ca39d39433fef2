"""Docstring fragments shared by the public functions."""

from __future__ import annotations

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
    """Decorator filling ``{name}`` placeholders of a docstring with the fragments."""

    def wrap(fn):
        fn.__doc__ = fn.__doc__.format(**fragments)
        return fn

    return wrap
