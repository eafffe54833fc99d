"""CPU stages as small generators, composed per stream: read -> rebalance -> shuffle -> decode -> shape -> batch.

Every stage is ``f(samples, ...) -> samples``. A sample is a dict; after reading it is
webdataset-shaped (``__key__``, ``__url__``, one entry per tar member extension) plus the
plan's ``__valid__``/``__rep__``; after decoding it holds ``audio`` (np.ndarray), ``labels``
(uint8 multi-hot), ``key``, ``valid``.

Positions are stable: a clip that fails to decode, or the rest of a slice of a shard that
could not be read, is replaced in place by a fill-in (the stream's last good clip; in
evaluation marked ``valid=False``) and counted by reason, so every stream yields exactly the
number of samples its plan says and a resumed run can skip samples without decoding them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from ..core.rng import sample_rng
from ..core.threads import cpu_width
from ..io.fetchqueue import FetchQueue
from ..io.options import SourceMetrics
from .batch import Batch, batches, batches_by_chunks
from .cached import FeatureShaper, feature_batches
from .catalog import Catalog
from .config import LoaderConfig
from .plan import Slice, StreamPlan, take_range
from .samples import AUDIO_EXTS, Shaper, StreamStats, decode
from .shards import Sample, ShardReader, _opened, is_remote, queued
from .shuffle import read_batch, shuffle, shuffle_state

log = logging.getLogger(__name__)
Width = int | Callable[[], int]  # threads: a number, or a function asked per sample


@dataclass(frozen=True)
class Resume:
    """Where a stream picks up after ``skip_batches`` batches, found without reading a sample.

    ``slices``: what is still to be read: one range per planned slice that holds samples of the
    shuffle buffer at that point (from the first to the last of them: one request each, not one
    per sample; ``spanned`` gives the stream offset of each sample they hold), then everything the
    stream had not read yet, from offset ``next_read``. ``held``: the buffer's samples, in stream
    order; ``order`` puts them back in buffer order; ``target`` and ``rng_state`` are the
    shuffle's at that point.
    """

    slices: tuple[Slice, ...]
    spanned: tuple[int, ...]
    held: frozenset[int]
    next_read: int
    order: tuple[int, ...] = ()
    target: int = 0
    rng_state: dict[str, Any] | None = None

    def offset(self, o: int) -> int:
        """The stream offset of sample ``o`` of ``slices``."""
        return self.spanned[o] if o < len(self.spanned) else self.next_read + o - len(self.spanned)

    def partial_shards(self, catalog: Catalog) -> set[int]:
        """The shards of which ``slices`` read a part: their .idx is needed first."""
        return {sl.shard for sl in self.slices if sl.start > 0 or sl.stop < catalog.shards[sl.shard].samples}

    def keep(self, samples: Iterator[Sample]) -> Iterator[Sample]:
        """``samples`` read from ``slices`` without those of the spanned ranges that the buffer
        no longer held (handed out before the resume)."""
        for o, sample in enumerate(samples):
            if o >= len(self.spanned) or self.spanned[o] in self.held:
                yield sample


def shuffle_rng(cfg: Any, epoch: int, rank: int, plan: StreamPlan) -> Any:
    """The RNG of a stream's shuffle (``cfg``: anything with the loader's ``seed``); the rest of an
    epoch resumed elsewhere (``plan.segment``) shuffles with its own."""
    where = f"rank{rank}-stream{plan.stream}" + (f"-segment{plan.segment}" if plan.segment else "")
    return sample_rng(cfg.seed, epoch, where, "shuffle")


def resume_of(cfg: LoaderConfig, plan: StreamPlan, epoch: int, rank: int, skip_batches: int) -> Resume | None:
    """How a stream goes on after ``skip_batches`` of its batches: the consumed samples are neither
    read nor decoded again (a resume reads at most the shuffle buffer's samples, at their .idx
    offsets). None when there is nothing to skip, or with a rebalancing stage, whose reservoir
    depends on the labels it has seen: those streams read their consumed samples again (without
    decoding them)."""
    if skip_batches == 0 or cfg.rebalance is not None:
        return None
    n, consumed = plan.samples, skip_batches * cfg.batch_size
    if not cfg.training:
        held, read, order, target, state = [], min(consumed, n), [], 0, None
    else:
        rng = shuffle_rng(cfg, epoch, rank, plan)
        buf, read, target = shuffle_state(n, cfg.shuffle_buffer, rng, min(cfg.shuffle_buffer, cfg.batch_size),
                                          consumed)
        held = sorted(buf)
        where = {p: i for i, p in enumerate(held)}
        order, state = [where[p] for p in buf], rng.bit_generator.state
    slices: list[Slice] = []
    spanned: list[int] = []
    first = 0  # stream offset of the planned slice's first sample
    for sl in plan.slices:
        inside = [p for p in held if first <= p < first + len(sl)]
        if inside:
            lo, hi = inside[0], inside[-1] + 1
            slices += take_range([sl], lo - first, hi - lo)
            spanned += range(lo, hi)
        first += len(sl)
    slices += take_range(plan.slices, read, n - read)
    return Resume(tuple(slices), tuple(spanned), frozenset(held), read, tuple(order), target, state)


def open_stream(cfg: LoaderConfig, catalog: Catalog, plan: StreamPlan, skip_batches: int = 0,
                queue: FetchQueue | None = None, streams: int = 1, *, epoch: int = 0,
                rank: int = 0) -> tuple[ShardReader, Iterator[tuple[Slice, Any]], Resume | None]:
    """A stream's reader, its slices from where it resumes (see :func:`resume_of`) and that resume
    point. Remote slices (with ``prefetch`` > 0) are fetched ahead from now on, ranked by the
    epoch's batch index (``streams`` streams interleaved) that first reads them: through the
    worker's shared ``queue`` (started by its owner), else through one of the stream's own. Local
    ones are opened as they are reached."""
    # a training stream's buffers hold local clips as Spans: the members the Shaper reads (the
    # loader checked the features entry, see cached.cached_info; FeatureShaper reads it the same way)
    cached = (catalog.manifest["features"]["member"],) if cfg.features == "cached" else ()
    held = AUDIO_EXTS + cached if cfg.training else ()
    reader = ShardReader(catalog, cfg.source_options, by_reference=held)
    resume = resume_of(cfg, plan, epoch, rank, skip_batches)
    todo = plan.slices if resume is None else resume.slices
    depth = reader.options.prefetch
    if not (is_remote(catalog, todo) and depth > 0):
        return reader, _opened(reader, todo), resume
    own = queue is None
    if own and resume is not None:  # else the queue's owner does it for all its streams at once
        reader.warm_offsets(resume.partial_shards(catalog))
    queue = queue or FetchQueue(depth, depth)
    at = (lambda o: o) if resume is None else resume.offset  # noqa: E731
    need = lambda o: (read_batch(at(o), cfg, skip_batches) + skip_batches) * streams + plan.stream  # noqa: E731
    slices = queued(queue, reader, todo, need)
    if own:
        queue.start()
    return reader, slices, resume


def read_stream(reader: ShardReader, stats: StreamStats, on_error: str,
                slices: Iterator[tuple[Slice, Any]]) -> Iterator[Sample]:
    """All samples of a stream's ``slices`` (as :func:`open_stream` gives them), with placeholders
    for what could not be read."""
    for sl, got in slices:
        done = 0
        try:
            if isinstance(got, Exception):
                raise got
            for sample in reader.samples(got[0], got[1], sl):
                done += 1
                yield sample
        except Exception as e:  # noqa: BLE001 - network, truncation, damaged tar: all counted the same way
            url = reader.catalog.shards[sl.shard].url
            reason = "shard_error"
            stats.skip(reason, url, f"{url}: {e} ({len(sl) - done} sample(s) of samples {sl.start}:{sl.stop} lost)",
                       on_error, repeat=sl.rep > 0, clips=len(sl) - done)
            for i in range(sl.start + done, sl.stop):
                yield {"__key__": f"{url}#{i}", "__url__": url, "__failed__": reason, "__index__": i,
                       "__valid__": sl.valid, "__rep__": sl.rep}


class _Delta:
    """Source counters since the last batch. The prefetch thread keeps counting into the same
    SourceMetrics object, so the difference is shipped rather than the object swapped."""

    def __init__(self) -> None:
        self.last: dict[str, Any] = {}

    def take(self, metrics: SourceMetrics) -> dict[str, Any]:
        now = metrics.as_dict()
        out = _minus(now, self.last)
        self.last = now
        return out


def _minus(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in a.items():
        if isinstance(v, dict):
            out[k] = {kk: vv for kk, vv in _minus(v, b.get(k, {})).items() if vv}
        elif isinstance(v, (int, float)):
            out[k] = v - b.get(k, 0)
    return out


def exactly(samples: Iterator[Sample], n: int) -> Iterator[Sample]:
    """``n`` samples: cut what is beyond, repeat the last ones if the stage came up short."""
    tail: list[Sample] = []
    count = 0
    for s in samples:
        if count == n:
            return
        yield s
        count += 1
        tail = (tail + [s])[-64:]
    for i in range(n - count):
        if not tail:
            return
        yield {**tail[i % len(tail)], "__rep__": tail[i % len(tail)].get("__rep__", 0) + 1}


def skip_samples(samples: Iterator[Sample], n: int) -> Iterator[Sample]:
    """Drop the first ``n`` samples (already consumed before a resume) without decoding them."""
    for i, s in enumerate(samples):
        if i >= n:
            yield s


def _no_grad(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        with torch.no_grad():
            return fn(*args)
    return call


def stream_batches(cfg: LoaderConfig, catalog: Catalog, plan: StreamPlan, *, epoch: int, rank: int,
                   skip_batches: int = 0, rebalance: Callable | None = None,
                   threads: Width = 1, first_threads: Width = 1,
                   on_first: Callable[[], None] | None = None,
                   source: tuple[ShardReader, Iterator[tuple[Slice, Any]], Resume | None] | None = None
                   ) -> Iterator[Batch]:
    """The batches of one planned stream: the whole CPU pipeline for it. Reading starts now.

    ``threads`` samples are shaped at once (``first_threads`` for the first batch), each a number
    or a function asked before every sample (see :class:`~wds_audio.core.threads.TailWidth`). Torch's own
    thread count is left alone: raising it in a forked worker can deadlock OpenMP. ``on_first`` is
    called when the first batch is made (a frontend's features included, computed on
    ``first_threads`` threads). ``source``: the stream opened by :func:`open_stream` (by default
    now, on its own)."""
    reader, slices, resume = source or open_stream(cfg, catalog, plan, skip_batches, epoch=epoch, rank=rank)
    return _stream_batches(cfg, catalog, plan, epoch, rank, skip_batches, rebalance, reader,
                           slices, (threads, first_threads), on_first, resume)


def _stream_batches(cfg: LoaderConfig, catalog: Catalog, plan: StreamPlan, epoch: int, rank: int, skip_batches: int,
                    rebalance: Callable | None, reader: ShardReader, slices: Iterator[tuple[Slice, Any]],
                    threads: tuple[Width, Width] = (1, 1), on_first: Callable[[], None] | None = None,
                    resume: Resume | None = None) -> Iterator[Batch]:
    stats = StreamStats(max_keys=cfg.max_reported_keys)
    source_delta = _Delta()
    samples: Iterator[Sample] = read_stream(reader, stats, cfg.on_error, slices)
    if resume is not None:
        samples = resume.keep(samples)
    stage = rebalance() if rebalance is not None else None
    if stage is not None:
        samples = exactly(stage(samples, epoch=epoch, worker=rank * 1_000_003 + plan.stream), plan.samples)
    if cfg.training:
        rng = shuffle_rng(cfg, epoch, rank, plan)
        at = None
        if resume is not None:
            rng.bit_generator.state = resume.rng_state
            at = (list(resume.order), resume.target)
        samples = shuffle(samples, cfg.shuffle_buffer, rng, initial=min(cfg.shuffle_buffer, cfg.batch_size), resume=at)
    if resume is None:
        samples = skip_samples(samples, skip_batches * cfg.batch_size)
    steady, first = (t if callable(t) else (lambda n=t: n) for t in threads)
    cached = cfg.features == "cached"  # fp16 log-mels from the shards instead of audio (pipeline/cached.py)
    shaper = (FeatureShaper(cfg, catalog.num_classes, epoch, catalog.manifest["features"]) if cached else
              Shaper(cfg, catalog.num_classes, epoch, rate=cfg.audio_rate(catalog.sample_rate)))
    samples = decode(samples, shaper, stats, cfg.on_error, lambda i: first() if i < cfg.batch_size else steady())
    window = shaper.window if (cfg.training or cfg.eval_crop == "center") else None
    fe = cfg.frontend
    if fe is not None:
        fe.set_epoch(epoch)
    # log-mels made a few clips at a time as they are decoded, no (B, T) waveforms (Frontend.by_chunks)
    chunked = (not cached and fe is not None and window is not None and not cfg.keep_audio
               and callable(getattr(fe, "by_chunks", None)) and fe.by_chunks(fe.training and cfg.training))

    def finish(b: Batch, n: int) -> Batch:
        nonlocal on_first
        b.training = cfg.training  # an evaluation batch is never augmented, by the Frontend here or later
        if cfg.frontend is not None:
            with torch.no_grad(), cpu_width(first() if n == 0 else 1):
                b.features, b.targets = (fe.finish_chunks(b.features, b.lengths, b.targets, b.draw_keys,
                                                          fe.training and b.training) if chunked else fe(b))
            if cached:
                b.feature_settings = {}  # the Frontend's output now, no longer raw cached features
            if not cfg.keep_audio:
                b.audio = b.audio.new_empty((len(b), 0))  # a new tensor: a view would still ship the storage
        if on_first is not None:
            on_first()
            on_first = None
        b.stats = stats.take()
        b.stats["source"] = source_delta.take(reader.metrics)
        if stage is not None:
            b.stats["rebalance"] = (plan.stream, stage.stats())
        return b

    made = (feature_batches(samples, cfg.batch_size, plan.batches - skip_batches, window, shaper.n_mels, shaper.info)
            if cached else
            batches_by_chunks(samples, cfg.batch_size, plan.batches - skip_batches, window, _no_grad(fe.chunk_features),
                              fe.chunk_shape(window)) if chunked else
            batches(samples, cfg.batch_size, plan.batches - skip_batches, window))
    for n in range(plan.batches - skip_batches):
        # no name here holds the batch while this generator waits for the stream's next turn (see batches)
        yield finish(next(made), n)
