"""The training process's objects frozen while forked DataLoader workers share its pages.

A forked worker shares every page of its parent until one of them writes to it. Python's cyclic
garbage collector writes into the header of each object it traverses, so a collection that
traverses the parent's objects while workers run copies every page holding one: the writer gets
a private copy, and the others keep the original. This is what the documentation of
``gc.freeze`` advises against for a process that forks without exec.

Measured (2 workers, 2,048 5-s clips, Frontend in the workers, benchmarks/throughput.py (c)): in
the middle of an epoch the first worker held ~31 MB of private copies of pages it had inherited
(14 of a 22-MB anonymous map, 13 of the heap, 5 of another map), the second ~6 MB; with the
parent's objects frozen before the workers forked, both ~5 MB, and the peak PSS of the process
tree went from 621 to 545 MB (3 paired rounds; the tutorial pipeline's: 559). Whose collections
wrote those pages was not isolated.

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
