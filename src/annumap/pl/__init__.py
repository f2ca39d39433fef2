"""Plotting (matplotlib, optional extra ``plot``); ``scanpy.pl.umap`` works on the output too."""

from ._umap import umap

__all__ = ["umap"]
