"""A counter-based random generator: ``splitmix64`` hashing of (seed, epoch, edge, draw).

The same integer arithmetic runs in numba kernels (:mod:`._kernels`) and, vectorised, on NumPy or
CuPy arrays (:mod:`.gpu`), so every backend draws the same stream, independent of thread count
or evaluation order. Unsigned 64-bit arithmetic wraps modulo 2**64 in all three.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GOLDEN", "MIX1", "MIX2", "epoch_key", "mix64"]

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
#: Bits of the draw number within a counter: ``counter = edge << DRAW_BITS | draw``.
DRAW_BITS = np.uint64(16)


def mix64(z):
    """splitmix64's finaliser on uint64 scalars or arrays (any array module)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * MIX1
        z = (z ^ (z >> np.uint64(27))) * MIX2
        return z ^ (z >> np.uint64(31))


def epoch_key(seed: int, epoch: int) -> np.uint64:
    """The per-epoch key from which all draws of that epoch are hashed."""
    with np.errstate(over="ignore"):
        s = mix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) + GOLDEN)
        return mix64(s ^ (np.uint64(epoch) * GOLDEN + np.uint64(1)))


def draw_indices(key, edges, draws, n: int, xp=np):
    """Vertex indices in ``[0, n)`` for each (edge, draw) pair (vectorised twin of the kernel)."""
    with np.errstate(over="ignore"):
        counter = (edges.astype(xp.uint64) << DRAW_BITS) | draws.astype(xp.uint64)
        h = mix64(xp.uint64(key) + counter * GOLDEN)
        return ((h >> np.uint64(32)) * xp.uint64(n)) >> np.uint64(32)
