"""Tools: the UMAP layout, mapping new cells into it, and back from it."""

from ._transform import umap_inverse_transform, umap_transform
from ._umap import umap

__all__ = ["umap", "umap_inverse_transform", "umap_transform"]
