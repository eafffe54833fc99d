"""The shuffle buffer, and how many reads it makes before a given batch (for resuming)."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .config import LoaderConfig
from .shards import Sample

# ---------------------------------------------------------------- shuffling

def shuffle(samples: Iterator[Sample], size: int, rng: np.random.Generator, initial: int | None = None,
            resume: tuple[list[int], int] | None = None) -> Iterator[Sample]:
    """Shuffle buffer: starts emitting at ``initial`` samples (fast first batch), then grows to ``size``.

    ``resume`` = (order, target) from :func:`shuffle_state`: the first ``len(order)`` samples are the
    buffer of an interrupted shuffle (read in position order; ``order`` puts them back in buffer
    order), ``target`` its size limit, and ``rng`` is already where that shuffle's was."""
    buf: list[Sample] = []
    target = min(size, initial or size)
    if resume is not None:
        order, target = resume
        held = [next(samples) for _ in order]
        buf = [held[i] for i in order]
    for s in samples:
        buf.append(s)
        if len(buf) < target:
            continue
        j = int(rng.integers(len(buf)))
        buf[j], buf[-1] = buf[-1], buf[j]
        yield buf.pop()
        target = min(size, target + 1)
    while buf:
        j = int(rng.integers(len(buf)))
        buf[j], buf[-1] = buf[-1], buf[j]
        yield buf.pop()


def shuffle_reads(yields: int, size: int, initial: int) -> int:
    """Samples ``shuffle(samples, size, rng, initial)`` has read when it hands out sample number
    ``yields`` (0-based): those handed out before plus its buffer, which starts at
    ``min(size, initial)`` and grows by one per sample handed out up to ``size``."""
    return yields + min(size, min(size, initial) + yields)


def shuffle_state(n: int, size: int, rng: np.random.Generator, initial: int | None, yields: int) -> tuple[list[int], int, int]:
    """The state of ``shuffle`` over ``n`` samples after it handed out ``yields`` of them, found by
    running it on positions (its draws depend only on the buffer's length): (the positions in its
    buffer, in buffer order; the samples it has read; its size limit). Advances ``rng`` as the
    shuffle did, so that ``shuffle(..., rng, resume=...)`` goes on with the same draws."""
    buf: list[int] = []
    target, read, out = min(size, initial or size), 0, 0
    while out < yields and read < n:  # as shuffle's loop over its input
        buf.append(read)
        read += 1
        if len(buf) < target:
            continue
        j = int(rng.integers(len(buf)))
        buf[j], buf[-1] = buf[-1], buf[j]
        buf.pop()
        out += 1
        target = min(size, target + 1)
    while out < yields and buf:  # as its drain once the input is exhausted
        j = int(rng.integers(len(buf)))
        buf[j], buf[-1] = buf[-1], buf[j]
        buf.pop()
        out += 1
    return buf, read, target


def read_batch(offset: int, cfg: LoaderConfig, skip_batches: int = 0) -> int:
    """The batch of its stream (counted after ``skip_batches``) being made when a stream reads its
    sample ``offset``: a training stream's shuffle buffer reads ahead of its batches."""
    b = cfg.batch_size
    if not cfg.training:
        return max(0, offset // b - skip_batches)
    size, initial = cfg.shuffle_buffer, min(cfg.shuffle_buffer, b)
    lo, hi = 0, offset + 1  # the first sample handed out once ``offset`` has been read
    while lo < hi:
        mid = (lo + hi) // 2
        if shuffle_reads(mid, size, initial) > offset:
            hi = mid
        else:
            lo = mid + 1
    return max(0, lo // b - skip_batches)
