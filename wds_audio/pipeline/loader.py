"""The torch back end: plan + CPU stages on DataLoader workers, in order, resumable.

Example:
    >>> import wds_audio                                                     # doctest: +SKIP
    >>> loader = wds_audio.loader("data/demo", split="train", folds=[1, 2, 3], batch_size=64,
    ...                           sample_rate=16000, clip_seconds=2.0, num_workers=4, seed=0)
    >>> for batch in loader:
    ...     batch.audio.shape, batch.targets.shape      # (64, 32000), (64, 22)
"""
from __future__ import annotations

import gc
import os
import random
import time
import weakref
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..core.forking import freeze_for_workers, release
from ..core.heap import keep_freed_memory, release_freed_memory
from ..core.rng import seed_of
from ..core.threads import EpochStart, TailWidth, cpu_count
from ..io.fetchqueue import FetchQueue
from ..io.options import SourceOptions
from ..io.request import share_checked_versions
from .batch import Batch
from .catalog import Catalog
from .config import LoaderConfig
from .metrics import LoaderMetrics
from .elastic import Segment, epoch_plan
from .plan import EpochPlan
from .shards import ShardReader, is_remote
from .stream import Width, open_stream, stream_batches


def dist_info(cfg: LoaderConfig) -> tuple[int, int]:
    """(rank, world size): explicit config, else torch.distributed, else RANK/WORLD_SIZE, else (0, 1)."""
    if cfg.rank is not None or cfg.world_size is not None:
        return cfg.rank or 0, cfg.world_size or 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


@dataclass
class OpenStreams:
    """A worker's streams of one epoch, opened: their remote reads queued in one FetchQueue."""

    queue: FetchQueue | None
    sources: dict[int, tuple[Any, Iterator[Any]]]

    def close(self) -> None:
        if self.queue is not None:
            self.queue.close()


def open_streams(cfg: LoaderConfig, catalog: Catalog, plan: EpochPlan, streams: list[int], start: int,
                 first_round: bool = False) -> OpenStreams:
    """Open ``streams`` to be read from global batch ``start`` on. Their remote reads start now,
    most needed first (see wds_audio.io.fetchqueue), but only those of this worker's first batch
    (``first_round``: the first batch of each of its streams) until its first batch is made
    (:func:`run_streams` lifts that): the other streams' downloads would otherwise take the CPU
    that batch is made with."""
    k = len(plan.streams)
    done = _done(plan, streams, start)
    depth = (cfg.source_options or SourceOptions()).prefetch
    queue = FetchQueue(depth, depth) if depth > 0 else None
    sources = {s: open_stream(cfg, catalog, plan.streams[s], done[s], queue, k, epoch=plan.epoch, rank=plan.rank)
               for s in streams}
    left = [done[s] * k + s for s in streams if done[s] < plan.streams[s].batches]
    if queue is not None and left:
        # a resumed stream reads parts of shards first: their indexes, for all streams at once
        resumed = [src[2] for src in sources.values() if src[2] is not None]
        if resumed and any(is_remote(catalog, r.slices) for r in resumed):
            ShardReader(catalog, cfg.source_options).warm_offsets(set().union(*(r.partial_shards(catalog) for r in resumed)))
        queue.start(horizon=max(left) if first_round else min(left))
    return OpenStreams(queue, sources)


def _done(plan: EpochPlan, streams: list[int], start: int) -> dict[int, int]:
    """Batches of each stream before global batch ``start``."""
    return {s: len(range(s, start, len(plan.streams))) for s in streams}


def run_streams(cfg: LoaderConfig, catalog: Catalog, plan: EpochPlan, streams: list[int], start: int,
                rebalance: Any = None, threads: Width = 1, begin: EpochStart | None = None,
                opened: OpenStreams | None = None, fetched: Callable[[], None] | None = None) -> Iterator[Batch]:
    """Batches of ``streams`` in the rank's global order, from global batch ``start`` on.

    ``threads``: samples shaped at once per stream (or a function giving it, asked per sample);
    ``begin``: how this worker starts (see :class:`~wds_audio.core.threads.EpochStart`); ``opened``:
    the streams opened already by :func:`open_streams` (by default now); ``fetched``: called once,
    after a batch, when every remote read of these streams has been started."""
    begin = begin or EpochStart()
    k = len(plan.streams)
    done = _done(plan, streams, start)
    left = [(done[s] * k + s, s) for s in streams if done[s] < plan.streams[s].batches]
    first = min(left)[1] if left else None  # the stream of this worker's first batch
    opened = opened or open_streams(cfg, catalog, plan, streams, start)
    gens = {s: stream_batches(cfg, catalog, plan.streams[s], epoch=plan.epoch, rank=plan.rank, skip_batches=done[s],
                              rebalance=rebalance, threads=threads,
                              first_threads=begin.first_threads() if s == first else threads,
                              on_first=partial(_first_made, begin, opened.queue) if s == first else None,
                              source=opened.sources[s])
            for s in streams}
    counts = dict(done)
    try:
        begin.wait()  # the streams above have started fetching; shaping waits for the lead's first samples
        for rnd in range(max((sp.batches for sp in plan.streams), default=0)):
            for s in streams:
                if counts[s] == rnd and rnd < plan.streams[s].batches:
                    counts[s] += 1
                    yield _numbered(next(gens[s]), rnd * k + s)  # not held here once handed on (see batch.batches)
                    if fetched is not None and opened.queue is not None and opened.queue.all_started():
                        fetched()
                        fetched = None
    finally:
        opened.close()


def _numbered(b: Batch, index: int) -> Batch:
    b.index = index
    return b


def _first_made(begin: EpochStart, queue: FetchQueue | None) -> None:
    begin.done()
    if queue is not None:
        queue.release()  # the worker's first batch is out: every stream fetches ahead from now on


class _EpochDataset(IterableDataset):
    """What each DataLoader worker runs: its share of the planned streams."""

    def __init__(self, cfg: LoaderConfig, catalog: Catalog, rank: int, world: int, rebalance: Any) -> None:
        self.cfg, self.catalog, self.rank, self.world, self.rebalance = cfg, catalog, rank, world, rebalance
        self.resumed: tuple[int, tuple[Segment, ...]] | None = None  # (epoch, its segments): see elastic.py
        # epoch, start batch, first batch out (seen by persistent workers)
        self.state = torch.zeros(3, dtype=torch.int64).share_memory_()
        self.finished = torch.zeros(max(cfg.num_workers, 1), dtype=torch.uint8).share_memory_()  # see TailWidth
        # the shard versions whose sha256 a worker has checked (sources.CheckedVersions), for all of them
        self.checked = torch.zeros(max(1024, 4 * len(catalog.shards)), dtype=torch.int64).share_memory_()

    def plan(self, epoch: int) -> EpochPlan:
        segments = self.resumed[1] if self.resumed is not None and self.resumed[0] == epoch else ()
        return epoch_plan(self.cfg, [s.samples for s in self.catalog.shards], epoch=epoch, rank=self.rank,
                          world_size=self.world, segments=segments)

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        epoch, start, _ = (int(v) for v in self.state.tolist())
        plan = self.plan(epoch)
        mine = _streams_of(plan, wid, nw)
        threads, begin = self.cfg.decode_threads or 1, EpochStart()  # the training process: 1 unless asked
        if info is not None:
            release_freed_memory()  # a persistent worker does not carry the last epoch's freed pages on
            share_checked_versions(self.checked.numpy())
            cpus = cpu_count()
            threads = self.cfg.decode_threads or TailWidth(self.finished, cpus)
            # worker 0 is asked first: when it holds batch `start`, it makes it with every core. Not
            # with a Frontend in the workers: threads in one process reach ~1.4 cores of 2 there (the
            # GIL between decoding and the features), so the waiting workers' cores went mostly
            # unused, and their epoch ended a batch later (measured, 512 clips, 2 workers on 2 cores:
            # first batch 0.35 s gated, 0.48 s not, epoch 248-278 clips/s gated, 292-293 not).
            lead = self.cfg.frontend is None and (start % len(plan.streams)) % nw == 0
            begin = EpochStart(self.state[2:], lead=lead and wid == 0, gated=lead and wid != 0,
                               threads=max(self.cfg.decode_threads or 1, cpus))
        key = (id(self), epoch, start, wid, nw)
        ahead = partial(self._open_ahead, epoch + 1, wid, nw) if info is not None and self.cfg.persistent_workers else None
        batches = run_streams(self.cfg, self.catalog, plan, mine, start, self.rebalance, threads, begin,
                              _take_ahead(key), fetched=ahead)
        if isinstance(threads, TailWidth):
            batches = _then(batches, partial(threads.mark, wid))
        if info is not None and len(plan.streams) % nw:
            batches = _in_slots(batches, worker_slots(plan.batches, len(plan.streams), start, nw)[wid])
        return batches

    def _open_ahead(self, epoch: int, wid: int, nw: int) -> None:
        """A persistent worker whose remote reads of this epoch have all been started opens its
        streams of the next epoch (from its start: what the loader does next unless told otherwise)
        and fetches what the first batch of each of them reads, while it makes its last batches:
        the next epoch does not begin by waiting for the network, nor by sharing the CPU with these
        fetches. Kept until that epoch begins; dropped if another does.

        Measured (HTTP 20 ms latency): reading ahead every stream's first batch instead of only the
        worker's own gave 0.5-14 % more clips/s (decode + crop, 6 alternating runs). Started after
        the worker's last batch, the fetches of the worker that ends last ran into the next epoch's
        first batch: the lead worker made it in 113-203 ms, against 75-83 ms with a 0.4-s pause
        between epochs and 47-94 ms from local disk.

        Called by :func:`run_streams` only when this epoch fetched through a queue, i.e. read remote
        shards; it fires at the latest after the last batch, when every read has started."""
        plan = self.plan(epoch)
        mine = _streams_of(plan, wid, nw)
        if any(is_remote(self.catalog, plan.streams[s].slices) for s in mine):
            opened = open_streams(self.cfg, self.catalog, plan, mine, 0, first_round=True)
            _AHEAD[os.getpid()] = ((id(self), epoch, 0, wid, nw), opened)


def _streams_of(plan: EpochPlan, worker: int, workers: int) -> list[int]:
    return [s for s in range(len(plan.streams)) if s % workers == worker]


def worker_slots(batches: int, streams: int, start: int, workers: int) -> list[list[int]]:
    """Per worker, the global batch index it hands out at each of its turns, or -1 for a turn
    with nothing (a placeholder), from batch ``start`` on.

    A DataLoader asks its workers in turn and hands on their results in that order. When the
    workers do not share the streams evenly (8 streams, 3 workers), a worker with fewer streams
    would run ahead of the epoch's order, and the batches it made early would pile up in the
    training process until their turn. With a placeholder in each turn where a worker has no
    batch due, turn ``t`` belongs to worker ``t % workers`` and brings the next batch of the
    epoch: the streams (and the batches) stay what they are for any ``num_workers``.

    Example:
        >>> worker_slots(8, 8, 0, 3)
        [[0, 3, 6], [1, 4, 7], [2, 5, -1]]
    """
    out: list[list[int]] = [[] for _ in range(workers)]
    t = 0
    for i in range(start, batches):
        while t % workers != (i % streams) % workers:
            out[t % workers].append(-1)
            t += 1
        out[t % workers].append(i)
        t += 1
    while t % workers:  # every worker takes as many turns: none stops while the others go on
        out[t % workers].append(-1)
        t += 1
    return out


def _in_slots(batches: Iterator[Batch], slots: list[int]) -> Iterator[Batch | None]:
    """The worker's batches at their turns (see :func:`worker_slots`), None at the empty ones."""
    for i in slots:
        if i < 0:
            yield None
            continue
        yield _checked(next(batches), i)
    for _ in batches:  # pragma: no cover - the slots hold every batch
        raise AssertionError("a batch outside the worker's slots")


_AHEAD: dict[int, tuple[tuple[int, ...], OpenStreams]] = {}  # pid -> (what epoch start, its opened streams)


def _take_ahead(key: tuple[int, ...]) -> OpenStreams | None:
    """The streams opened ahead for ``key`` (dataset, epoch, start, worker, workers), if they were."""
    got = _AHEAD.pop(os.getpid(), None)
    if got is None:
        return None
    if got[0] == key:
        return got[1]
    got[1].close()  # another epoch or start was asked for (set_epoch, load_state_dict)
    return None


def _checked(b: Batch, index: int) -> Batch:
    assert b.index == index, (b.index, index)  # run_streams hands out a worker's batches in the epoch's order
    return b


def _then(batches: Iterator[Batch], done: Callable[[], None]) -> Iterator[Batch]:
    yield from batches
    done()


def _worker_init(worker_id: int) -> None:
    # Sample randomness never comes from here (see rng.py); this only keeps library state
    # reproducible and stops each worker from starting a thread per core.
    info = get_worker_info()
    s = seed_of("worker", info.seed if info else 0, worker_id) % (2**32)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
    torch.set_num_threads(1)
    keep_freed_memory()  # this process is ours: batches reuse heap pages instead of faulting new ones
    # Everything inherited from the parent (torch, the catalog, ...) lives as long as the worker:
    # frozen, it is no longer traversed by every collection the per-sample dicts set off.
    gc.freeze()


def _receive(it: Iterator[Batch | None], pending: dict[int, Batch], index: int) -> None:
    """Take batches from the DataLoader into ``pending`` until batch ``index`` is there."""
    while index not in pending:
        b = next(it)
        if b is not None:  # None: a worker's empty turn (see worker_slots)
            pending[b.index] = b


class AudioLoader:
    """An iterable of :class:`Batch` with ``len()``, ``set_epoch``, ``state_dict``, ``metrics``."""

    def __init__(self, cfg: LoaderConfig) -> None:
        self.cfg = cfg
        self.catalog = Catalog.open(cfg.source, cfg.split, cfg.folds, cfg.classes, cfg.source_options)
        self.rank, self.world_size = dist_info(cfg)
        if cfg.features == "cached":  # here, in the main process: no dataset or frontend mismatch reaches a worker
            from .cached import cached_info

            cached_info(cfg, self.catalog.manifest)
        self.audio_rate = cfg.audio_rate(self.catalog.sample_rate)  # of batch.audio; fails here if unknown
        fe_rate = getattr(cfg.frontend, "input_sample_rate", self.audio_rate)
        if fe_rate != self.audio_rate:
            raise ValueError(f"the frontend takes audio at {fe_rate} Hz, batches carry it at {self.audio_rate} Hz "
                             f"(build it with sample_rate={self.audio_rate}, or input_sample_rate={self.audio_rate} "
                             "to resample)")
        self.rebalance = self._rebalance_stage()
        self.dataset = _EpochDataset(cfg, self.catalog, self.rank, self.world_size, self.rebalance)
        self.epoch, self.start = 0, 0  # start: batches of this epoch delivered so far (state_dict)
        self._resume_at = 0  # where the next iteration begins: only load_state_dict sets it
        self._loader: DataLoader | None = None
        self._metrics = LoaderMetrics(cfg.max_reported_keys)

    def _rebalance_stage(self) -> Any:
        """A factory of rebalancing stages (one per stream: a stage holds its stream's reservoir)."""
        if self.cfg.rebalance is None:
            return None
        from .reservoir import RebalanceStage

        make = partial(RebalanceStage, self.cfg.rebalance, self.catalog.classes, self.catalog.class_counts(),
                       self.cfg.seed)
        make()  # a bad configuration fails here, in the main process, not in a worker
        return make

    @property
    def classes(self) -> list[str]:
        return self.catalog.classes

    def plan(self, epoch: int | None = None) -> EpochPlan:
        return self.dataset.plan(self.epoch if epoch is None else epoch)

    def __len__(self) -> int:
        """Batches per epoch on this rank: the same on every rank, known before iterating."""
        return self.plan(0).batches

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning (this drops a position load_state_dict gave)."""
        self.epoch, self.start, self._resume_at = epoch, 0, 0
        self._resume_on(None)

    def _resume_on(self, resumed: tuple[int, tuple[Segment, ...]] | None) -> None:
        if resumed != self.dataset.resumed:
            self.dataset.resumed = resumed
            self._loader = None  # persistent workers hold the plans of the other layout

    def state_dict(self) -> dict[str, Any]:
        """Where this rank is: epoch and batches handed out, with what is needed to go on from
        there, also with another world size or stream count (``segments``: see elastic.py)."""
        return {"epoch": self.epoch, "batches": self.start, "seed": self.cfg.seed, "rank": self.rank,
                "world_size": self.world_size, "streams": self.cfg.streams, "segments": self._segments(self.epoch)}

    def _segments(self, epoch: int) -> list[list[int]]:
        r = self.dataset.resumed
        return [list(s) for s in r[1]] if r is not None and r[0] == epoch else []

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go on from ``state``. With the same world size and streams, the batches are those the
        checkpointed run would have made; with others, the rest of the epoch is planned anew over
        the samples no rank had handed out (see wds_audio.pipeline.elastic)."""
        if state["seed"] != self.cfg.seed:
            raise ValueError(f"checkpoint was taken with seed={state['seed']}, this loader has seed={self.cfg.seed}: "
                             "batches would differ")
        epoch, done = int(state["epoch"]), int(state["batches"])
        segments = [tuple(s) for s in state.get("segments", [])]
        if (state["world_size"], state["streams"]) != (self.world_size, self.cfg.streams) and done > 0:
            if self.cfg.rebalance is not None:
                raise ValueError(f"checkpoint was taken with world_size={state['world_size']} and streams="
                                 f"{state['streams']}, this loader has {self.world_size} and {self.cfg.streams}: "
                                 "a rebalanced epoch cannot be resumed on another layout (the reservoirs' contents "
                                 "are not in the checkpoint); resume with the same world size and streams")
            segments.append((int(state["world_size"]), int(state["streams"]), done))
            done = 0
        self._resume_on((epoch, tuple(segments)) if segments else None)
        self.epoch, self.start = epoch, done
        self._resume_at = self.start

    def _dataloader(self) -> DataLoader:
        if self._loader is None:
            cfg = self.cfg
            pin = torch.cuda.is_available() if cfg.pin_memory is None else cfg.pin_memory
            extra = {"prefetch_factor": cfg.prefetch_factor, "persistent_workers": cfg.persistent_workers,
                     "worker_init_fn": _worker_init} if cfg.num_workers > 0 else {}
            self._loader = DataLoader(self.dataset, batch_size=None, num_workers=cfg.num_workers, pin_memory=pin,
                                      collate_fn=lambda b: b, **extra)
        return self._loader

    def __iter__(self) -> Iterator[Batch]:
        """One epoch from its start, or from the position a load_state_dict gave. An iteration
        abandoned half way (a peek with next(iter(loader))) does not shorten the next one."""
        epoch, start = self.epoch, self._resume_at
        self.start, self._resume_at = start, 0
        self.dataset.state[0], self.dataset.state[1], self.dataset.state[2] = epoch, start, 0
        self.dataset.finished.zero_()
        total = self.plan(epoch).batches
        self._metrics.start()
        pending: dict[int, Batch] = {}
        loader = self._dataloader()
        hold = self._freeze(loader)
        try:
            it = iter(loader)
            nxt = start
            while nxt < total:
                t_wait = time.perf_counter()
                _receive(it, pending, nxt)
                self._metrics.batch(pending[nxt], time.perf_counter() - t_wait)
                nxt += 1
                self.start = nxt
                yield pending.pop(nxt - 1)  # not held here while the trainer works on it
            self.epoch, self.start = epoch + 1, 0
        finally:
            release(hold)

    def _freeze(self, loader: DataLoader) -> bool:
        """Freeze this process's objects when workers are about to be forked (core/forking.py):
        for the epoch, or, with persistent workers, for as long as ``loader`` lives. True when the
        epoch's end gives the freeze up."""
        if self.cfg.num_workers == 0 or getattr(loader, "_iterator", None) is not None:
            return False  # no workers, or persistent ones already running: nothing is forked now
        hold = freeze_for_workers()
        if hold and self.cfg.persistent_workers:
            weakref.finalize(loader, release, hold)
            return False
        return hold

    def metrics(self) -> dict[str, Any]:
        """clips/s, the time the consumer waited for data (and its fraction of the wall time), time to
        the first batch, skipped counts by reason and key, source retries and bytes."""
        return self._metrics.as_dict()
