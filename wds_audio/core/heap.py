"""Freed memory kept for reuse inside a DataLoader worker.

Every batch a worker makes allocates the same large arrays again (decoded clips, resampled clips,
spectrogram chunks, features). glibc returns freed memory to the kernel eagerly and serves the
next allocations with fresh pages that are faulted in and zeroed on first touch: with 5-s clips
that was ~450 page faults and ~2 ms of kernel time per clip, ~13 % of a worker's CPU time
(benchmarks/throughput.py setup, 2 workers). Keeping freed memory in the heap halved both.
(Collating into a recycled batch buffer was tried too and changed nothing measurable: numpy
already maps arrays that large with huge pages.)

Example:
    >>> keep_freed_memory()   # in a process of our own, e.g. a DataLoader worker   # doctest: +SKIP
    True
"""
from __future__ import annotations

import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 512 << 20


def keep_freed_memory() -> bool:
    """Ask glibc to serve allocations up to 32 MB from the heap and to keep up to 512 MB of freed
    heap instead of returning it: the next batch's arrays reuse pages that are already mapped.

    Both settings are needed together: either alone turns off glibc's adaptive threshold and
    measured worse than neither. The price: a worker's resident memory stays at its peak working
    set (about two batches' arrays) instead of shrinking between batches (measured: peak RSS of a
    2-worker run +1 %, growth over 5 epochs 1.4 %). Only called in the loader's own worker
    processes; returns False where there is no glibc (the loader works the same, a little slower)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
