"""annumap: UMAP for AnnData.

``annumap.pp.neighbors`` builds the neighbour graph and ``annumap.tl.umap`` lays it out; both
read and write exactly where scanpy does. Importing annumap is cheap: anndata, numba kernels and
the kNN libraries are loaded on first use.
"""

from . import pl, pp, tl
from ._version import __version__

__all__ = ["__version__", "pl", "pp", "tl"]
