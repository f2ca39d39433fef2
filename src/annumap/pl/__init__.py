"""Plotting (matplotlib, optional extra ``plot``); ``scanpy.pl.umap`` works on the output too."""

__all__: list[str] = []
