"""Preprocessing: the neighbour graph."""

from ._neighbors import neighbors

__all__ = ["neighbors"]
