"""The training process's objects frozen while forked DataLoader workers share its pages.

A forked worker shares every page of its parent until one of the two writes to it. Python's
cyclic garbage collector writes into the header of each object it traverses, so a collection
in the training process while its workers run copies every page holding such an object, once
for itself and once more for the workers still sharing the original. Measured (2 workers, 2,048
clips, Frontend in the workers, benchmarks/throughput.py (c)): the first worker held ~21 MB of
private copies of the parent's heap and anonymous maps in the middle of an epoch, the second
~6 MB; with the parent's objects frozen before the workers fork, both ~5 MB. This is what the
documentation of ``gc.freeze`` advises for a process that forks without exec.

The objects are frozen only while a loader's workers live (an epoch, or the loader's life with
persistent workers), then handed back to the collector: cyclic garbage made before the epoch is
collected after it. A program that froze objects itself is left alone.

Example:
    >>> hold = freeze_for_workers()
    >>> release(hold)
"""
from __future__ import annotations

import gc
import threading

_LOCK = threading.Lock()
_HOLDS = 0  # loaders whose workers run with the objects frozen by us


def freeze_for_workers() -> bool:
    """Freeze every object the collector tracks now, before workers are forked; True when this
    call holds the freeze (pass it to :func:`release`). False, and nothing done, when the program
    had frozen objects itself."""
    global _HOLDS
    with _LOCK:
        if _HOLDS == 0 and gc.get_freeze_count() > 0:
            return False
        gc.freeze()
        _HOLDS += 1
        return True


def release(hold: bool) -> None:
    """Give up a freeze :func:`freeze_for_workers` returned True for; the last one unfreezes."""
    global _HOLDS
    if not hold:
        return
    with _LOCK:
        _HOLDS -= 1
        if _HOLDS == 0:
            gc.unfreeze()
