"""The one place numba is configured: every kernel is compiled with ``cache=True``.

Kernels are defined at module level in :mod:`annumap._core._kernels` (and a few siblings) and
compiled lazily on first call; the on-disk cache makes a second process start fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["njit", "prefetch", "threads"]


def njit(*args: Any, **kwargs: Any) -> Callable:
    """Return :func:`numba.njit` with ``cache=True`` (and ``nogil=True``) enforced."""
    kwargs["cache"] = True
    kwargs.setdefault("nogil", True)
    return numba.njit(*args, **kwargs)  # noqa: TID251


def resolve_n_jobs(n_jobs: int | None) -> int:
    """Translate ``n_jobs`` (None or -1 = all, negative counts from the end) to a thread count."""
    max_threads = numba.config.NUMBA_NUM_THREADS
    if n_jobs is None:
        return max_threads
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int):
        msg = f"n_jobs must be an int or None, got {type(n_jobs).__name__}."
        raise TypeError(msg)
    if n_jobs == 0:
        msg = "n_jobs must not be 0 (use None or -1 for all cores, or a positive count)."
        raise ValueError(msg)
    if n_jobs < 0:
        return max(1, max_threads + 1 + n_jobs)
    return min(n_jobs, max_threads)


@contextmanager
def threads(n_jobs: int | None) -> Iterator[int]:
    """Run numba parallel regions of this thread with ``n_jobs`` threads, then restore."""
    n = resolve_n_jobs(n_jobs)
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(previous)


@intrinsic
def prefetch(typingctx, arr, i, j):  # pragma: no cover - compile time
    """In a kernel: bring the cache line of ``arr[i, j]`` (a 2-D array) into the caches.

    A hint (``llvm.prefetch``: read, high locality, data): it changes no value, only how long a
    later load of that line waits. No bounds check: the address is computed, never read, and
    a prefetch of an address outside the array is harmless.
    """
    if not (
        isinstance(arr, types.Array)
        and arr.ndim == 2
        and isinstance(i, types.Integer)
        and isinstance(j, types.Integer)
    ):
        return None

    def codegen(context, builder, signature, args):
        aryty, ity, jty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        row = context.cast(builder, args[1], ity, types.intp)
        col = context.cast(builder, args[2], jty, types.intp)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [row, col])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        # mangled by llvmlite for the pointer type: p0i8 (typed pointers, LLVM 14), which
        # newer LLVM versions remangle to p0
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, i, j), codegen
