"""An epoch resumed with another world size or stream count: what is left of it, planned anew.

A checkpoint taken after ``batches`` batches of every rank (ranks go in step: their batch counts
are equal) records the world size and the streams it ran with. Resumed with others (a preempted
job back on fewer or more GPUs), the loader plans the rest of that epoch from the samples none of
the old ranks had handed out yet:

1. for each old rank and stream, in order, the samples it had not handed out: in evaluation,
   those after its consumed batches; in training, those still in its shuffle buffer and those it
   had not read (found by running the shuffle on positions, as a resume does: stream.resume_of),
   without the wrap-around repeats and the evaluation fill-ins, which are not samples of the epoch;
2. that pool, in that order, is cut across the new ranks and streams exactly as plan.py cuts an
   epoch: contiguous pieces whose lengths differ by at most one, the same number of batches on
   every rank (training wraps around a rank's own samples, evaluation pads with fill-ins).

So each sample not yet consumed is seen exactly once across the new ranks. In training the rest
is shuffled again: each new stream has its own shuffle buffer, seeded by (seed, epoch, rank,
stream, segment), so its order is not the one the old run would have taken, but the same for
every run resumed from the same checkpoint with the same settings. The epochs after it are
planned as usual. A checkpoint of a resumed epoch keeps the chain (``segments``): resuming it again,
with yet another world size, plans the rest of the rest.

Example:
    >>> from wds_audio.pipeline.config import LoaderConfig
    >>> cfg = LoaderConfig("unused", batch_size=2, training=False, streams=1)
    >>> p = epoch_plan(cfg, [6], epoch=0, rank=0, world_size=1, segments=[(2, 1, 1)])
    >>> p.batches, [(s.start, s.stop) for s in p.streams[0].slices]
    (1, [(2, 3), (5, 6)])
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .config import LoaderConfig
from .plan import EpochPlan, Slice, StreamPlan, cut, plan_epoch, take_range
from .shuffle import shuffle_state
from .stream import shuffle_rng

Segment = tuple[int, int, int]  # (world size, streams, batches handed out by every rank)


@dataclass(frozen=True)
class _Settings:
    """What of a LoaderConfig the plans and shuffles depend on (hashable, for the cache)."""

    batch_size: int
    seed: int
    training: bool
    shuffle_buffer: int


def epoch_plan(cfg: LoaderConfig, counts: list[int], *, epoch: int, rank: int, world_size: int,
               segments: list[Segment] | tuple[Segment, ...] = ()) -> EpochPlan:
    """Rank ``rank``'s plan of ``epoch``: plan_epoch's, or after ``segments`` the rest of it."""
    if not segments:
        return plan_epoch(counts, batch_size=cfg.batch_size, seed=cfg.seed, epoch=epoch, rank=rank,
                          world_size=world_size, streams=cfg.streams, training=cfg.training)
    key = _Settings(cfg.batch_size, cfg.seed, cfg.training, cfg.shuffle_buffer)
    pool = left_after(key, tuple(counts), epoch, tuple(tuple(s) for s in segments))
    return cut(list(pool), batch_size=cfg.batch_size, epoch=epoch, rank=rank, world_size=world_size,
               streams=cfg.streams, training=cfg.training, segment=len(segments))


@lru_cache(maxsize=8)
def left_after(cfg: _Settings, counts: tuple[int, ...], epoch: int, segments: tuple[Segment, ...]) -> tuple[Slice, ...]:
    """The samples of ``epoch`` that the ranks of the last of ``segments`` had not handed out."""
    *before, (world, streams, done) = segments
    pool: list[Slice] = []
    for r in range(world):
        plan = _segment_plan(cfg, counts, epoch, r, world, streams, tuple(before))
        for sp in plan.streams:
            pool += _unconsumed(cfg, sp, epoch, r, len(range(sp.stream, done, streams)))
    return tuple(_merged(pool))


def _segment_plan(cfg: _Settings, counts: tuple[int, ...], epoch: int, rank: int, world: int, streams: int,
                  before: tuple[Segment, ...]) -> EpochPlan:
    if not before:
        return plan_epoch(list(counts), batch_size=cfg.batch_size, seed=cfg.seed, epoch=epoch, rank=rank,
                          world_size=world, streams=streams, training=cfg.training)
    return cut(list(left_after(cfg, counts, epoch, before)), batch_size=cfg.batch_size, epoch=epoch, rank=rank,
               world_size=world, streams=streams, training=cfg.training, segment=len(before))


def _unconsumed(cfg: _Settings, sp: StreamPlan, epoch: int, rank: int, batches_done: int) -> list[Slice]:
    """The real samples of stream plan ``sp`` not handed out in its first ``batches_done`` batches."""
    n, consumed = sp.samples, batches_done * cfg.batch_size
    if not cfg.training:
        positions: list[int] | range = range(min(consumed, n), n)
    else:
        buf, read, _ = shuffle_state(n, cfg.shuffle_buffer, shuffle_rng(cfg, epoch, rank, sp),
                                     min(cfg.shuffle_buffer, cfg.batch_size), consumed)
        positions = sorted(buf) + list(range(read, n))
    out = []
    for p in positions:
        (sl,) = take_range(sp.slices, p, 1)
        if sl.rep == 0 and sl.valid:
            out.append(Slice(sl.shard, sl.start, sl.stop))
    return out


def _merged(slices: list[Slice]) -> list[Slice]:
    out: list[Slice] = []
    for sl in slices:
        if out and out[-1].shard == sl.shard and out[-1].stop == sl.start:
            out[-1] = Slice(sl.shard, out[-1].start, sl.stop)
        else:
            out.append(sl)
    return out
