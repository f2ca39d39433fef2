"""Tools: the UMAP layout."""

from ._umap import umap

__all__ = ["umap"]
