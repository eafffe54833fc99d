"""Freed memory kept for reuse inside a DataLoader worker.

Every batch a worker makes allocates the same large arrays again (decoded clips, resampled clips,
spectrogram chunks, features). glibc returns freed memory to the kernel eagerly and serves the
next allocations with fresh pages that are faulted in and zeroed on first touch: with 5-s clips
that was ~450 page faults and ~2 ms of kernel time per clip, ~13 % of a worker's CPU time
(benchmarks/throughput.py setup, 2 workers). Keeping freed memory in the heap halved both.
(Collating into a recycled batch buffer was tried too and changed nothing measurable: numpy
already maps arrays that large with huge pages.)

Kept memory fragments: a persistent worker's heap held the same 116 MB of live data every epoch
while its free chunks grew from 30 to 48 MB over 10 epochs (mallinfo2; 2 workers, 512 clips of
5 s, Frontend in the workers), so its resident memory grew ~3 MB an epoch. :func:`release_freed_memory`
at the start of each epoch gives those pages back: what the epoch before freed is not kept into
the next.

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
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _glibc(function: str):  # noqa: ANN202 - a ctypes function, or None where there is none
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return getattr(ctypes.CDLL(name), function)
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> bool:
    """Give the kernel back every whole free page of the heap (glibc's ``malloc_trim(0)``, which also
    releases free chunks below the top), once per epoch in a loader worker, so that the resident
    memory no longer creeps up with the heap's fragmentation. The next epoch faults in again the
    pages it uses: the call took 0.07 ms, and the epoch ran at 340-342 clips/s with it against
    341-349 without it in the same hour (benchmarks/throughput.py (c)). Returns False where there
    is no glibc."""
    trim = _glibc("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True
