"""The epoch plan: which samples each rank and each stream reads, as a pure function.

Inputs are only the per-shard sample counts (from dataset.json) and (seed, epoch, rank,
world size, streams, batch size, training); no tar is opened. The plan:

1. orders shards (training: shuffled per epoch, each read from a random rotation point);
2. concatenates them into one sequence and cuts it into ``world_size`` contiguous pieces whose
   lengths differ by at most one, so ranks are balanced to the sample;
3. gives every rank the same number of batches, ``ceil(max piece / batch_size)``: in training
   the missing slots wrap around the rank's own samples, in evaluation they are fill-ins
   marked ``valid=False``, so every sample is seen exactly once across ranks;
4. cuts each rank's slots into ``streams`` contiguous runs of whole batches. A stream is the
   unit a DataLoader worker runs; batch ``i`` of the rank is batch ``i // streams`` of stream
   ``i % streams``. Because streams do not depend on the worker count, the batches are the
   same for any ``num_workers`` that divides ``streams``.

Example:
    >>> p = plan_epoch([10, 7], batch_size=4, seed=0, epoch=0, rank=0, world_size=2, streams=2, training=False)
    >>> p.batches, [s.batches for s in p.streams], p.real_samples
    (3, [2, 1], 8)
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.rng import sample_rng


@dataclass(frozen=True)
class Slice:
    """Samples ``start:stop`` (file order) of shard ``shard``; ``rep`` > 0 marks a repeat, ``valid`` False a fill-in."""

    shard: int
    start: int
    stop: int
    rep: int = 0
    valid: bool = True

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class StreamPlan:
    stream: int
    slices: tuple[Slice, ...]
    batches: int
    segment: int = 0  # > 0: the rest of an epoch resumed on other ranks (see elastic.py)

    @property
    def samples(self) -> int:
        return sum(len(s) for s in self.slices)


@dataclass(frozen=True)
class EpochPlan:
    epoch: int
    rank: int
    world_size: int
    batch_size: int
    batches: int
    real_samples: int
    streams: tuple[StreamPlan, ...]

    def stream_of(self, batch_index: int) -> tuple[int, int]:
        """(stream, batch within stream) of the rank's batch ``batch_index``."""
        return batch_index % len(self.streams), batch_index // len(self.streams)


def _order(counts: list[int], seed: int, epoch: int, training: bool) -> list[Slice]:
    if not training:
        return [Slice(i, 0, n) for i, n in enumerate(counts) if n > 0]
    rng = sample_rng(seed, epoch, "", "shard-order")
    runs: list[Slice] = []
    for i in rng.permutation(len(counts)).tolist():
        n = counts[i]
        if n == 0:
            continue
        r = int(rng.integers(n))
        runs += [Slice(i, r, n)] + ([Slice(i, 0, r)] if r else [])
    return runs


def take_range(runs: list[Slice], start: int, length: int) -> list[Slice]:
    """Positions ``start:start+length`` of the concatenation of ``runs`` (no wrap)."""
    out, pos = [], 0
    for r in runs:
        lo, hi = max(start, pos), min(start + length, pos + len(r))
        if lo < hi:
            out.append(Slice(r.shard, r.start + lo - pos, r.start + hi - pos, r.rep, r.valid))
        pos += len(r)
        if pos >= start + length:
            break
    return out


def _extend(own: list[Slice], fallback: list[Slice], slots: int, training: bool) -> list[Slice]:
    """``own`` followed by wrap-around repeats (training) or fill-ins (evaluation) up to ``slots``."""
    have = sum(len(s) for s in own)
    source = own or fallback
    size = sum(len(s) for s in source)
    out, rep = list(own), 1
    while have < slots:
        piece = take_range(source, 0, min(size, slots - have))
        out += [Slice(s.shard, s.start, s.stop, rep, training) for s in piece]
        have += sum(len(s) for s in piece)
        rep += 1
    return out


def plan_epoch(counts: list[int], *, batch_size: int, seed: int, epoch: int, rank: int, world_size: int,
               streams: int, training: bool) -> EpochPlan:
    """The plan of one rank for one epoch (see the module docstring)."""
    if batch_size < 1 or streams < 1 or not (0 <= rank < world_size):
        raise ValueError(f"bad plan arguments: batch_size={batch_size} streams={streams} rank={rank}/{world_size}")
    if sum(counts) == 0:
        raise ValueError("the selected shards hold no samples")
    return cut(_order(counts, seed, epoch, training), batch_size=batch_size, epoch=epoch, rank=rank,
               world_size=world_size, streams=streams, training=training)


def cut(runs: list[Slice], *, batch_size: int, epoch: int, rank: int, world_size: int, streams: int,
        training: bool, segment: int = 0) -> EpochPlan:
    """Steps 2-4 of the module docstring over ``runs`` (samples in their order): rank ``rank``'s
    piece, its batches and its streams. ``segment`` > 0 marks the rest of a resumed epoch."""
    total = sum(len(r) for r in runs)
    lo, hi = rank * total // world_size, (rank + 1) * total // world_size
    own = take_range(runs, lo, hi - lo)
    batches = -(-(-(-total // world_size)) // batch_size)  # ceil(ceil(total / world) / batch)
    slots = _extend(own, runs, batches * batch_size, training)
    plans, pos = [], 0
    for k in range(streams):
        nb = batches // streams + (k < batches % streams)
        plans.append(StreamPlan(k, tuple(take_range(slots, pos, nb * batch_size)), nb, segment))
        pos += nb * batch_size
    return EpochPlan(epoch, rank, world_size, batch_size, batches, hi - lo, tuple(plans))
