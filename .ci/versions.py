"""Print the versions a CI leg ran with (one line per package; 'absent' when not installed)."""

import importlib.metadata
import platform

PACKAGES = (
    "numpy", "scipy", "anndata", "scanpy", "umap-learn", "pynndescent", "numba",
    "scikit-learn", "ehrapy", "ehrdata",
)  # fmt: skip

print(f"  python       {platform.python_version()}")
for name in PACKAGES:
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        version = "absent"
    print(f"  {name:<12} {version}")
