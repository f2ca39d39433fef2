"""Tools: the UMAP layout."""

from ._transform import umap_transform
from ._umap import umap

__all__ = ["umap", "umap_transform"]
