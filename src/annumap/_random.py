"""``random_state`` / ``rng`` as scanpy and ehrapy accept them, turned into one recorded seed.

annumap's computations are keyed by a single integer seed (the counter-based generator of the
layout, pynndescent's seed, the PCA's). Every public function turns what the user passed into
that seed here, once, so the seed can be stored in ``.uns`` and a run repeated from the record.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

__all__ = ["MAX_SEED", "RandomStateLike", "resolve_seed"]

#: Largest seed: numpy's legacy range, which pynndescent and scanpy use, and which fits the
#: int64 that h5ad/zarr store.
MAX_SEED = 2**32 - 1

#: What ``random_state`` may be: an int seed, None (draw one), or a seeded numpy generator.
RandomStateLike = int | np.random.RandomState | np.random.Generator | None


def _draw(source: Any) -> int:
    """One seed in ``[0, MAX_SEED]`` drawn from a numpy generator (advances its state once)."""
    if isinstance(source, np.random.Generator):
        return int(source.integers(0, MAX_SEED, endpoint=True))
    if isinstance(source, np.random.RandomState):
        return int(source.randint(0, MAX_SEED + 1, dtype=np.int64))
    if isinstance(source, np.random.SeedSequence):
        return int(source.generate_state(1, dtype=np.uint32)[0])
    msg = f"cannot draw a seed from {type(source).__name__}"  # pragma: no cover - callers check
    raise TypeError(msg)


def _from_int(value: Any, name: str) -> int:
    if not 0 <= value <= MAX_SEED:
        msg = (
            f"{name} must be in [0, 2**32 - 1] (numpy's seed range; it is stored in .uns and "
            f"must fit an int64 there), got {value}."
        )
        raise ValueError(msg)
    return int(value)


def resolve_seed(random_state: Any = 0, rng: Any = None) -> int:
    """The integer seed for ``random_state`` (scanpy <= 1.12) or ``rng`` (scanpy 1.13's name).

    Parameters
    ----------
    random_state
        An int in ``[0, 2**32 - 1]`` (the seed itself); ``None`` (a seed drawn from fresh OS
        entropy); a :class:`numpy.random.RandomState` or :class:`numpy.random.Generator` (one
        seed drawn from it, which advances it: a generator seeded the same way gives the same
        seed, so the same result).
    rng
        scanpy 1.13's spelling: an int (the seed), a :class:`numpy.random.SeedSequence`, a
        ``Generator`` or a ``RandomState``; used instead of ``random_state`` when not None.
        Giving both (``random_state`` other than its default 0) is a TypeError, as in scanpy.

    Returns
    -------
    The seed to use and record.
    """
    if rng is not None:
        if random_state is not None and not (
            isinstance(random_state, numbers.Integral)
            and not isinstance(random_state, bool)
            and random_state == 0
        ):
            msg = "give at most one of rng and random_state (scanpy 1.13 calls random_state rng)."
            raise TypeError(msg)
        value, name = rng, "rng"
    else:
        value, name = random_state, "random_state"
    if value is None and name == "random_state":
        return int(np.random.SeedSequence().generate_state(1, dtype=np.uint32)[0])
    if isinstance(value, np.random.Generator | np.random.RandomState | np.random.SeedSequence):
        return _draw(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        accepted = (
            "an int, a numpy SeedSequence, Generator or RandomState, or None"
            if name == "rng"
            else "an int, None, a numpy RandomState or a numpy Generator"
        )
        msg = f"{name} must be {accepted}; got {type(value).__name__}."
        raise TypeError(msg)
    return _from_int(value, name)
