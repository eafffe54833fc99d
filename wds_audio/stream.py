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

import io
import json
import logging
import tarfile
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from functools import partial
from typing import Any, BinaryIO, Callable, Iterator

import numpy as np
import soundfile as sf
import torch

from . import sources
from .catalog import Catalog, read_index
from .config import LoaderConfig
from .fetchqueue import FetchQueue
from .loudness import normalize
from .plan import Slice, StreamPlan
from .rng import sample_rng, sample_uniform
from .threads import cpu_width, ordered_map

log = logging.getLogger(__name__)
AUDIO_EXTS = ("flac", "wav", "ogg", "mp3")
Sample = dict[str, Any]
Width = int | Callable[[], int]  # threads: a number, or a function asked per sample


class SampleError(Exception):
    """One sample cannot be used; ``reason`` is a short counter name."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotPcm16(SampleError):
    """A WAV in another encoding than 16-bit PCM (libsndfile still decodes it)."""


@dataclass
class StreamStats:
    """Counters a stream keeps; shipped with each batch (as deltas) to the main process."""

    samples: int = 0
    skipped: Counter = field(default_factory=Counter)
    skipped_keys: list[str] = field(default_factory=list)
    max_keys: int = 100

    def skip(self, reason: str, key: str, message: str, on_error: str, repeat: bool = False, clips: int = 1) -> None:
        """Count (or raise for) ``clips`` lost clips; a planned repeat of a clip is not counted again."""
        if on_error == "raise":
            raise SampleError(reason, message)
        if repeat:
            return
        self.skipped[reason] += clips
        if len(self.skipped_keys) < self.max_keys:
            self.skipped_keys.append(f"{key}: {message}")
        log.warning("skipped %s", message)

    def take(self) -> dict[str, Any]:
        out = {"samples": self.samples, "skipped": dict(self.skipped), "skipped_keys": list(self.skipped_keys)}
        self.samples, self.skipped, self.skipped_keys = 0, Counter(), []
        return out


# Measured (2 DataLoader workers, one tensor per item): passing a tensor through shared memory
# costs ~0.6 ms in the training process plus the worker's share, whatever its size, while copying
# a 16 KB tensor's bytes inside the pickle costs 0.25 ms. The inlined bytes stay far below a pipe's
# 64 KB buffer: a worker whose training process was killed must still be able to exit, and a
# multiprocessing queue's feeder thread blocks at exit on a pickle the pipe cannot take (seen: a
# killed DDP rank's orphaned worker hung on 192 KB of inlined audio).
INLINE_BYTES = 32 << 10


@dataclass
class Batch:
    """A batch: audio (B, T) float32 (int16 with pcm_on_device), lengths, multi-hot targets, keys, valid."""

    audio: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    keys: list[str]
    valid: torch.Tensor
    index: int = -1
    stats: dict[str, Any] = field(default_factory=dict)
    repeats: list[str] = field(default_factory=list)
    features: torch.Tensor | None = None  # set when the loader runs a Frontend in its workers

    @property
    def draw_keys(self) -> list[str]:
        """Keys for per-sample random draws: a repeated clip (``key#occurrence``) gets its own."""
        reps = self.repeats or ["0"] * len(self.keys)
        return [k if r == "0" else f"{k}#{r}" for k, r in zip(self.keys, reps)]

    def __len__(self) -> int:
        return len(self.keys)

    def map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Batch":
        """A batch of the same type with ``fn`` applied to every tensor field (other fields shared)."""
        return replace(self, **{f.name: fn(v) for f in fields(self) if isinstance(v := getattr(self, f.name), torch.Tensor)})

    def pin_memory(self) -> "Batch":
        return self.map_tensors(lambda t: t.pin_memory())

    def to(self, device: str | torch.device, non_blocking: bool = False) -> "Batch":
        return self.map_tensors(lambda t: t.to(device, non_blocking=non_blocking))

    def __reduce__(self) -> tuple[Any, ...]:
        # From a DataLoader worker every tensor would travel as its own shared-memory segment and
        # file descriptor: the small ones (lengths, valid, most targets, an emptied audio) go inside
        # the pickle instead, smallest first, up to INLINE_BYTES in all.
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        budget = INLINE_BYTES
        for name, t in sorted(((k, v) for k, v in values.items() if _inlinable(v)), key=lambda kv: _nbytes(kv[1])):
            if _nbytes(t) > budget:
                break
            budget -= _nbytes(t)
            values[name] = _Bytes(t.numpy())
        return _unpickle_batch, (type(self), values)


class _Bytes:
    """A small CPU tensor's values, pickled inline (numpy pickles its buffer by value)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _inlinable(v: Any) -> bool:
    return (isinstance(v, torch.Tensor) and v.device.type == "cpu" and v.layout == torch.strided
            and not v.requires_grad and v.dtype != torch.bfloat16)


def _unpickle_batch(cls: type, values: dict[str, Any]) -> Batch:
    return cls(**{k: torch.from_numpy(v.array) if isinstance(v, _Bytes) else v for k, v in values.items()})


# ---------------------------------------------------------------- reading tars

def iter_members(f: BinaryIO, url: str) -> Iterator[tuple[str, bytes]]:
    """(name, payload) of each regular tar member, reading the stream once; ReadError on a cut member."""
    long_name = None
    while True:
        header = f.read(512)
        if len(header) == 0 or header == b"\0" * 512:
            return
        if len(header) < 512:
            raise tarfile.ReadError(f"{url}: shard ends inside a member header")
        name, size, kind = _header(header)
        padded = (size + 511) // 512 * 512
        data = f.read(padded)
        if len(data) < size:
            raise tarfile.ReadError(f"{url}: shard ends inside member {long_name or name}")
        data = data[:size]
        if kind == tarfile.GNUTYPE_LONGNAME:
            long_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            continue
        if kind == tarfile.XHDTYPE:  # pax: a long or non-ASCII name comes as a "path" record
            long_name = _pax_path(data) or long_name
            continue
        if kind == tarfile.XGLTYPE:
            continue
        name, long_name = long_name or name, None
        if kind in tarfile.REGULAR_TYPES:
            yield name, data


def _pax_path(data: bytes) -> str | None:
    """The ``path`` record of a pax extended header ("<len> path=<name>\\n" records)."""
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            return None
        try:
            length = int(data[pos:space])
        except ValueError:
            return None
        key, _, value = data[space + 1:pos + length - 1].partition(b"=")
        if key == b"path":
            return value.decode("utf-8", "surrogateescape")
        pos += max(length, 1)
    return None


def _header(block: bytes) -> tuple[str, int, bytes]:
    """(name, size, type) of a 512-byte tar header. The common case (octal size, checksum right)
    is parsed here, ~10x faster than tarfile.TarInfo.frombuf, which handles everything else and
    raises the same errors for a damaged header."""
    size_field = block[124:136]
    chksum = block[148:156]
    try:
        if size_field[0] & 0x80 or int(chksum.strip(b" \0") or b"-1", 8) != sum(block) - sum(chksum) + 256:
            raise ValueError
        size = int(size_field.strip(b" \0") or b"0", 8)
    except ValueError:
        info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        return info.name, info.size, info.type
    name = block[:100].split(b"\0", 1)[0]
    if block[257:265] == b"ustar\x0000" and block[345] != 0:  # POSIX ustar: a long name's prefix
        name = block[345:500].split(b"\0", 1)[0] + b"/" + name
    kind = block[156:157]
    return name.decode("utf-8", "surrogateescape"), size, kind if kind != b"" else tarfile.REGTYPE


def split_name(name: str) -> tuple[str, str]:
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1:])


_OFFSETS: dict[str, list[int] | None] = {}  # .idx url -> sample offsets, per process


class ShardReader:
    """Reads planned slices of a catalog's shards, seeking with the DALI .idx when there is one.

    A slice is one byte range (one ranged request for a remote shard); a whole shard is checked
    against its sha256 from dataset.json as it is read.
    """

    def __init__(self, catalog: Catalog, options: Any = None) -> None:
        self.catalog = catalog
        self.options = options or sources.SourceOptions()
        self.metrics = sources.SourceMetrics()

    def offsets(self, shard: int) -> list[int] | None:
        """Header offset of each sample's first member, plus the end of the last sample's data.

        Kept per process (``_OFFSETS``): every stream and every epoch would otherwise fetch the
        same .idx again, one more request per slice for a remote dataset."""
        s = self.catalog.shards[shard]
        key = s.index_url or s.url
        if key not in _OFFSETS:
            try:
                idx = read_index(s.index_url, self.options) if s.index_url else None
            except Exception as e:  # noqa: BLE001 - an unreadable index only costs a sequential read
                log.warning("%s: index unusable (%s); reading sequentially", s.index_url, e)
                return None  # not kept: the next slice tries again
            if idx is None or len(idx) != s.samples:
                _OFFSETS[key] = None
            else:
                last = idx[-1][-1]
                _OFFSETS[key] = [m[0][1] - 512 for m in idx] + [last[1] + (last[2] + 511) // 512 * 512]
        return _OFFSETS[key]

    def open(self, sl: Slice, fetch: bool = False) -> tuple[BinaryIO, int]:
        """A stream of the slice's bytes and how many leading samples still have to be skipped."""
        shard = self.catalog.shards[sl.shard]
        offs = self.offsets(sl.shard)
        whole = sl.start == 0 and sl.stop == shard.samples
        start, length, skip = (offs[sl.start], offs[sl.stop] - offs[sl.start], 0) if offs else (0, None, sl.start)
        if whole and offs:
            start, length = 0, None
        remote = sources.scheme_of(shard.url) in sources.REMOTE
        # the size is always passed for a remote shard: s3/gs then need no HEAD before a ranged GET;
        # the sha256 always: sources checks what SourceOptions asks of a whole read (or a cache fill)
        kw = dict(options=self.options, metrics=self.metrics, start=start, length=length,
                  expected_bytes=shard.bytes if remote or (whole and self.options.verify_local) else None,
                  expected_sha256=shard.sha256)
        size = length if length is not None else (shard.bytes - start if shard.bytes is not None else None)
        if fetch and not self._fits(size):
            fetch = False  # too big to hold in memory: opened ahead, then streamed
        f = (sources.fetch_shard if fetch else sources.open_shard)(shard.url, **kw)
        return f, skip

    def _fits(self, size: int | None) -> bool:
        """``size`` bytes may be held in memory by the prefetcher (its share of ``prefetch_bytes``)."""
        return size is not None and size <= self.options.prefetch_bytes // max(1, self.options.prefetch)

    def whole_fits(self, shard: int) -> bool:
        """A whole remote shard can be fetched into memory (known size within the prefetch budget, no cache)."""
        return not self.options.cache_dir and self._fits(self.catalog.shards[shard].bytes)

    def open_group(self, group: tuple[Slice, ...]) -> list[tuple[BinaryIO, int]]:
        """Open the slices of a fetch group (see ``fetch_groups``): one request for all of them."""
        if len(group) == 1:
            return [self.open(group[0], fetch=True)]
        shard = group[0].shard
        f, _ = self.open(Slice(shard, 0, self.catalog.shards[shard].samples), fetch=True)  # sha256-checked
        offs = self.offsets(shard)
        if not isinstance(f, sources.MemoryReader):  # pragma: no cover - whole_fits() said it would be
            f.close()
            return [self.open(sl, fetch=True) for sl in group]
        if offs:
            return [(f.part(offs[sl.start], offs[sl.stop]), 0) for sl in group]
        return [(f.part(0), sl.start) for sl in group]

    def samples(self, f: BinaryIO, skip: int, sl: Slice) -> Iterator[Sample]:
        url = self.catalog.shards[sl.shard].url
        try:
            n = 0
            for sample in _group(iter_members(f, url), url):
                if skip:
                    skip -= 1
                    continue
                sample.update(__index__=sl.start + n, __valid__=sl.valid, __rep__=sl.rep)
                yield sample
                n += 1
                if n == len(sl):
                    return
            if n < len(sl):
                raise tarfile.ReadError(f"{url}: {len(sl) - n} planned sample(s) missing at the end of the shard")
        finally:
            f.close()

    def read(self, sl: Slice) -> Iterator[Sample]:
        f, skip = self.open(sl)
        yield from self.samples(f, skip, sl)


def _group(members: Iterator[tuple[str, bytes]], url: str) -> Iterator[Sample]:
    current: Sample | None = None
    for name, data in members:
        key, ext = split_name(name)
        if not key or key.endswith("/"):
            continue
        if current is None or current["__key__"] != key:
            if current is not None:
                yield current
            current = {"__key__": key, "__url__": url}
        current[ext] = data
    if current is not None:
        yield current


def _opened(reader: ShardReader, slices: tuple[Slice, ...]) -> Iterator[tuple[Slice, Any]]:
    """(slice, (stream, skip) or the exception opening it), each opened when it is reached."""
    for sl in slices:
        try:
            yield sl, reader.open(sl)
        except Exception as e:  # noqa: BLE001 - handled by the caller's policy
            yield sl, e


def fetch_groups(reader: ShardReader, slices: tuple[Slice, ...]) -> list[tuple[Slice, ...]]:
    """The stream's slices, with each pair that is one shard cut at its rotation point ([r, n)
    then [0, r), as the training plan reads a shard) grouped: one whole-shard request, checked
    against its sha256, instead of two ranged ones (each request costs latency and, on S3, CPU)."""
    out: list[tuple[Slice, ...]] = []
    i = 0
    while i < len(slices):
        a = slices[i]
        b = slices[i + 1] if i + 1 < len(slices) else None
        n = reader.catalog.shards[a.shard].samples
        if (b is not None and b.shard == a.shard and a.stop == n and b.start == 0 and b.stop == a.start
                and reader.whole_fits(a.shard)):
            out.append((a, b))
            i += 2
        else:
            out.append((a,))
            i += 1
    return out


def queued(queue: FetchQueue, reader: ShardReader, slices: tuple[Slice, ...],
           need: Callable[[int], float]) -> Iterator[tuple[Slice, Any]]:
    """(slice, (stream, skip) or the exception opening it), fetched ahead through ``queue`` (see
    ``fetch_groups``); ``need(offset)`` ranks the fetch of the group starting at the stream's sample
    ``offset`` (see ``read_batch``)."""
    groups = fetch_groups(reader, slices)
    starts = np.cumsum([0] + [sum(len(sl) for sl in g) for g in groups[:-1]]).tolist()
    return _ungrouped(queue.lane(groups, [need(o) for o in starts], reader.open_group, reader.metrics))


def _ungrouped(fetched: Iterator[tuple[tuple[Slice, ...], Any]]) -> Iterator[tuple[Slice, Any]]:
    try:
        for group, got in fetched:
            if isinstance(got, Exception):
                yield from ((sl, got) for sl in group)
            else:
                yield from zip(group, got)
    finally:
        getattr(fetched, "close", lambda: None)()


def is_remote(catalog: Catalog, slices: tuple[Slice, ...]) -> bool:
    return any(sources.scheme_of(catalog.shards[sl.shard].url) in sources.REMOTE for sl in slices)


def open_stream(cfg: LoaderConfig, catalog: Catalog, plan: StreamPlan, skip_batches: int = 0,
                queue: FetchQueue | None = None, streams: int = 1) -> tuple[ShardReader, Iterator[tuple[Slice, Any]]]:
    """A stream's reader and its slices. Remote ones (with ``prefetch`` > 0) are fetched ahead from
    now on, ranked by the epoch's batch index (``streams`` streams interleaved) that first reads
    them: through the worker's shared ``queue`` (started by its owner), else through one of the
    stream's own. Local ones are opened as they are reached."""
    reader = ShardReader(catalog, cfg.source_options)
    depth = reader.options.prefetch
    if not (is_remote(catalog, plan.slices) and depth > 0):
        return reader, _opened(reader, plan.slices)
    own = queue is None
    queue = queue or FetchQueue(depth, depth)
    need = lambda o: (read_batch(o, cfg, skip_batches) + skip_batches) * streams + plan.stream  # noqa: E731
    slices = queued(queue, reader, plan.slices, need)
    if own:
        queue.start()
    return reader, slices


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


# ---------------------------------------------------------------- shuffling

def shuffle(samples: Iterator[Sample], size: int, rng: np.random.Generator, initial: int | None = None) -> Iterator[Sample]:
    """Shuffle buffer: starts emitting at ``initial`` samples (fast first batch), then grows to ``size``."""
    buf: list[Sample] = []
    target = min(size, initial or size)
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


# ---------------------------------------------------------------- decoding and shaping

def labels_of(sample: Sample, num_classes: int) -> np.ndarray:
    if "labels" in sample:
        hot = np.frombuffer(sample["labels"], dtype=np.uint8)
        if hot.shape != (num_classes,) or hot.max(initial=0) > 1:
            raise SampleError("bad_labels", f"labels member of {sample['__key__']} is not a {num_classes}-byte multi-hot vector")
        return hot
    if "json" in sample:
        idx = json.loads(sample["json"]).get("labels", [])
        if any(not (0 <= i < num_classes) for i in idx):
            raise SampleError("bad_labels", f"json labels of {sample['__key__']} outside [0, {num_classes})")
        hot = np.zeros(num_classes, np.uint8)
        hot[idx] = 1
        return hot
    raise SampleError("no_labels", f"{sample['__key__']} has neither a labels nor a json member")


def wav_pcm16(data: bytes, key: str) -> tuple[np.ndarray, int, int]:
    """(int16 frames view, sample rate, channels) of a 16-bit PCM WAV, parsing only the header."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise SampleError("decode_error", f"{key}: not a RIFF/WAVE file")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        body = pos + 8
        if cid == b"fmt ":
            tag, ch, sr = (int.from_bytes(data[body:body + 2], "little"), int.from_bytes(data[body + 2:body + 4], "little"),
                           int.from_bytes(data[body + 4:body + 8], "little"))
            bits = int.from_bytes(data[body + 14:body + 16], "little")
            fmt = (tag, ch, sr, bits)
        elif cid == b"data":
            if fmt is None or fmt[0] not in (1, 0xFFFE) or fmt[3] != 16:
                raise NotPcm16("decode_error", f"{key}: not 16-bit PCM WAV: (format tag, channels, rate, bits) = {fmt}")
            n = min(size, len(data) - body) // (2 * fmt[1]) * 2 * fmt[1]
            return np.frombuffer(data, dtype="<i2", count=n // 2, offset=body).reshape(-1, fmt[1]), fmt[2], fmt[1]
        pos = body + size + (size & 1)
    raise SampleError("decode_error", f"{key}: WAV has no data chunk")


def _audio_member(sample: Sample) -> str:
    ext = next((e for e in AUDIO_EXTS if e in sample), None)
    if ext is None:
        raise SampleError("no_audio", f"{sample['__key__']} has no audio member")
    return ext


def occurrence(sample: Sample) -> str:
    """Which occurrence of a clip this is in the epoch: "0" the first time; wrap-around fills
    (``__rep__``) and rebalancing repeats (``__repeat__``) get their own crops and augmentation."""
    rep, again = sample.get("__rep__", 0), sample.get("__repeat__", 0)
    return "0" if not (rep or again) else f"{rep}.{again}"


def decode_audio(sample: Sample, pcm: bool, window: Callable[[int, int], tuple[int, int]] | None = None) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 (int16 for ``pcm``) and the stored sample rate.

    ``window(frames, sample_rate) -> (start, count)`` decodes only part of the clip (a crop),
    seeking in the compressed stream instead of decoding what would be thrown away. With ``pcm``,
    16-bit PCM WAV is sliced from the bytes without decoding; anything else goes through libsndfile.
    """
    ext = _audio_member(sample)
    x, sr = _wav_slice(sample, window) if pcm and ext == "wav" else (None, 0)
    if x is None:
        try:
            with sf.SoundFile(io.BytesIO(sample[ext])) as f:
                start, count = window(f.frames, f.samplerate) if window else (0, -1)
                if start:
                    f.seek(start)
                x, sr = f.read(count, dtype="int16" if pcm else "float32", always_2d=True), f.samplerate
        except Exception as e:  # noqa: BLE001 - every decoder failure is the same kind of skip
            raise SampleError("decode_error", f"{sample['__key__']} ({sample.get('__url__')}): .{ext} does not decode ({e})") from e
    if len(x) == 0:
        raise SampleError("decode_error", f"{sample['__key__']}: zero-length audio")
    return x, sr


def _wav_slice(sample: Sample, window: Callable[[int, int], tuple[int, int]] | None) -> tuple[np.ndarray | None, int]:
    """The int16 frames of a 16-bit PCM WAV (``window`` of them), or (None, 0) for another WAV encoding."""
    try:
        x, sr, _ = wav_pcm16(sample["wav"], sample["__key__"])
    except NotPcm16:
        return None, 0  # float or 24-bit WAV: libsndfile converts it
    start, count = window(len(x), sr) if window else (0, -1)
    return (x[start:start + count] if count >= 0 else x[start:]), sr


def downmix(x: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,) mean of the channels, in the input's dtype."""
    if x.shape[1] == 1:
        return x[:, 0]
    if x.dtype == np.int16:
        return x.astype(np.int32).mean(axis=1).astype(np.int16)
    return x.mean(axis=1, dtype=np.float32)


def crop_start(length: int, window: int, mode: str, u: float | None) -> int:
    """First sample of a ``window`` crop of a ``length``-sample clip: random (``u`` uniform in [0, 1)) or centred."""
    if length <= window:
        return 0
    return int(u * (length - window + 1)) if mode == "random" else (length - window) // 2  # type: ignore[operator]


def trim(x: np.ndarray, sr: int, top_db: float) -> np.ndarray:
    """Drop leading/trailing 10-ms frames whose RMS is more than ``top_db`` below the loudest."""
    hop = max(1, sr // 100)
    n = len(x) // hop
    if n < 2:
        return x
    rms = np.sqrt(np.mean(x[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1)) + 1e-12
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > -top_db)
    return x[loud[0] * hop: min(len(x), (loud[-1] + 1) * hop)] if loud.size else x


def crop(x: np.ndarray, window: int | None, mode: str, u: float | None) -> np.ndarray:
    """Random ("random", at ``u`` in [0, 1)) or centre ("center") crop to ``window``; shorter clips are returned whole."""
    if window is None or len(x) <= window:
        return x
    start = crop_start(len(x), window, mode, u)
    return x[start:start + window]


@dataclass
class Shaper:
    """decode -> downmix -> resample -> trim -> crop -> loudness, per sample, with its own RNG.

    ``rate``: the rate of the shaped audio (``cfg.audio_rate``: the stored rate with
    ``resample_on_device``), and ``window`` the crop at that rate."""

    cfg: LoaderConfig
    num_classes: int
    epoch: int
    rate: int | None = None  # default: cfg.sample_rate

    def __post_init__(self) -> None:
        self.rate = self.rate or self.cfg.sample_rate
        self.window = self.cfg.audio_window(self.rate)

    def __call__(self, sample: Sample) -> Sample:
        key = sample["__key__"]
        labels = labels_of(sample, self.num_classes)
        mode = "random" if self.cfg.training else ("center" if self.cfg.eval_crop == "center" else "full")
        u = sample_uniform(self.cfg.seed, self.epoch, key, f"crop{occurrence(sample)}") if mode == "random" else None
        target = self.window if mode != "full" else None
        early = target is not None and self.cfg.trim_db is None

        def window(frames: int, sr: int) -> tuple[int, int]:
            # crop before decoding: only the window (in stored samples) is decoded and resampled
            need = -(-target * sr // self.rate)  # type: ignore[operator]
            return (crop_start(frames, need, mode, u), need) if frames > need else (0, -1)
        x, sr = decode_audio(sample, self.cfg.pcm_on_device, window if early else None)
        x = self._at_rate(downmix(x), sr)
        if early:
            x = x[:target]
        else:
            if self.cfg.trim_db is not None:
                x = trim(x, self.rate, self.cfg.trim_db)
            x = crop(x, target, mode, u)
        return self._finish(key, x, labels, sample)

    def _at_rate(self, x: np.ndarray, sr: int) -> np.ndarray:
        from shardgen.encode import resample

        if sr == self.rate:
            return x
        if x.dtype == np.int16:  # pcm_on_device: a clip stored at another rate than its dataset's
            return np.clip(np.rint(resample(x / np.float32(32768), sr, self.rate) * 32768), -32768, 32767).astype(np.int16)
        return resample(x, sr, self.rate)

    def _finish(self, key: str, x: np.ndarray, labels: np.ndarray, sample: Sample) -> Sample:
        if self.cfg.loudness is not None:
            x = normalize(x, self.rate, self.cfg.loudness, self.cfg.loudness_db)
        return {"key": key, "audio": np.ascontiguousarray(x), "labels": labels, "valid": bool(sample.get("__valid__", True)),
                "repeat": occurrence(sample)}


def decode(samples: Iterator[Sample], shaper: Shaper, stats: StreamStats, on_error: str,
           width: Callable[[int], int] = lambda i: 1) -> Iterator[Sample]:
    """Shape every sample, ``width(i)`` at a time on threads (results in order); a failure becomes
    a fill-in in the same position (see module docstring)."""
    last: Sample | None = None
    for sample, out in ordered_map(samples, partial(_shape, shaper), width):
        if isinstance(out, SampleError):
            if str(out):
                stats.skip(out.reason, sample["__key__"], str(out), on_error, repeat=sample.get("__rep__", 0) > 0)
            out = _fill_in(last, shaper, sample["__key__"])
        else:
            last = out
        stats.samples += 1
        yield out


def _shape(shaper: Shaper, sample: Sample) -> tuple[Sample, Sample | SampleError]:
    if "__failed__" in sample:
        return sample, SampleError(sample["__failed__"], "")  # already counted by the reader
    try:
        return sample, shaper(sample)
    except SampleError as e:
        return sample, e


def _fill_in(last: Sample | None, shaper: Shaper, key: str) -> Sample:
    if last is not None:
        return {**last, "valid": last["valid"] and shaper.cfg.training, "key": last["key"]}
    n = shaper.window or 1
    dtype = np.int16 if shaper.cfg.pcm_on_device else np.float32
    return {"key": key, "audio": np.zeros(n, dtype), "labels": np.zeros(shaper.num_classes, np.uint8), "valid": False}


def collate(samples: list[Sample], window: int | None) -> Batch:
    lengths = [min(len(s["audio"]), window) if window else len(s["audio"]) for s in samples]
    t = window or max(lengths)
    audio = np.zeros((len(samples), t), dtype=samples[0]["audio"].dtype)
    for i, s in enumerate(samples):
        audio[i, : lengths[i]] = s["audio"][: lengths[i]]
    return Batch(audio=torch.from_numpy(audio), lengths=torch.tensor(lengths, dtype=torch.int64),
                 targets=torch.from_numpy(np.stack([s["labels"] for s in samples]).astype(np.float32)),
                 keys=[s["key"] for s in samples], valid=torch.tensor([s["valid"] for s in samples], dtype=torch.bool),
                 repeats=[s.get("repeat", "0") for s in samples])


def batches(samples: Iterator[Sample], batch_size: int, count: int, window: int | None) -> Iterator[Batch]:
    for _ in range(count):
        chunk = [s for _, s in zip(range(batch_size), samples)]
        if len(chunk) < batch_size:
            raise RuntimeError(f"stream ended after {len(chunk)} of {batch_size} samples of a planned batch")
        yield collate(chunk, window)


class _Delta:
    """Source counters since the last batch. The prefetch thread keeps counting into the same
    SourceMetrics object, so the difference is shipped rather than the object swapped."""

    def __init__(self) -> None:
        self.last: dict[str, Any] = {}

    def take(self, metrics: "sources.SourceMetrics") -> dict[str, Any]:
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


def stream_batches(cfg: LoaderConfig, catalog: Catalog, plan: StreamPlan, *, epoch: int, rank: int,
                   skip_batches: int = 0, rebalance: Callable | None = None,
                   threads: Width = 1, first_threads: Width = 1,
                   on_first: Callable[[], None] | None = None,
                   source: tuple[ShardReader, Iterator[tuple[Slice, Any]]] | None = None) -> Iterator[Batch]:
    """The batches of one planned stream: the whole CPU pipeline for it. Reading starts now.

    ``threads`` samples are shaped at once (``first_threads`` for the first batch), each a number
    or a function asked before every sample (see :class:`~wds_audio.threads.TailWidth`). Torch's own
    thread count is left alone: raising it in a forked worker can deadlock OpenMP. ``on_first`` is
    called when the first batch is made (a frontend's features included, computed on
    ``first_threads`` threads). ``source``: the stream opened by :func:`open_stream` (by default
    now, on its own)."""
    reader, slices = source or open_stream(cfg, catalog, plan, skip_batches)
    return _stream_batches(cfg, catalog, plan, epoch, rank, skip_batches, rebalance, reader,
                           slices, (threads, first_threads), on_first)


def _stream_batches(cfg: LoaderConfig, catalog: Catalog, plan: StreamPlan, epoch: int, rank: int, skip_batches: int,
                    rebalance: Callable | None, reader: ShardReader, slices: Iterator[tuple[Slice, Any]],
                    threads: tuple[Width, Width] = (1, 1), on_first: Callable[[], None] | None = None) -> Iterator[Batch]:
    stats = StreamStats(max_keys=cfg.max_reported_keys)
    source_delta = _Delta()
    samples: Iterator[Sample] = read_stream(reader, stats, cfg.on_error, slices)
    stage = rebalance() if rebalance is not None else None
    if stage is not None:
        samples = exactly(stage(samples, epoch=epoch, worker=rank * 1_000_003 + plan.stream), plan.samples)
    if cfg.training:
        rng = sample_rng(cfg.seed, epoch, f"rank{rank}-stream{plan.stream}", "shuffle")
        samples = shuffle(samples, cfg.shuffle_buffer, rng, initial=min(cfg.shuffle_buffer, cfg.batch_size))
    samples = skip_samples(samples, skip_batches * cfg.batch_size)
    steady, first = (t if callable(t) else (lambda n=t: n) for t in threads)
    shaper = Shaper(cfg, catalog.num_classes, epoch, rate=cfg.audio_rate(catalog.sample_rate))
    samples = decode(samples, shaper, stats, cfg.on_error, lambda i: first() if i < cfg.batch_size else steady())
    window = shaper.window if (cfg.training or cfg.eval_crop == "center") else None
    if cfg.frontend is not None:
        cfg.frontend.set_epoch(epoch)
    for n, b in enumerate(batches(samples, cfg.batch_size, plan.batches - skip_batches, window)):
        if cfg.frontend is not None:
            with torch.no_grad(), cpu_width(first() if n == 0 else 1):
                b.features, b.targets = cfg.frontend(b)
            if not cfg.keep_audio:
                b.audio = b.audio.new_empty((len(b), 0))  # a new tensor: a view would still ship the storage
        if on_first is not None:
            on_first()
            on_first = None
        b.stats = stats.take()
        b.stats["source"] = source_delta.take(reader.metrics)
        if stage is not None:
            b.stats["rebalance"] = (plan.stream, stage.stats())
        yield b
