"""Shard bytes -> samples: a streaming tar reader (no tarfile), and ShardReader, which opens a
shard (or a slice of it at .idx offsets) through wds_audio.io and groups its members by key.
"""
from __future__ import annotations

import logging
import os
import stat
import tarfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, Callable, Iterable, Iterator

import numpy as np

from ..io.fetchqueue import FetchQueue
from ..io.file import _local_path
from ..io.open import MemoryReader, fetch_shard, open_shard
from ..io.options import REMOTE, SourceMetrics, SourceOptions, scheme_of
from .catalog import Catalog, read_index
from .plan import Slice
from .spans import HEAD_BYTES, Span, identity

log = logging.getLogger(__name__)
Sample = dict[str, Any]


# ---------------------------------------------------------------- reading tars

def iter_members(f: BinaryIO, url: str, keep: Callable[[str, int, int, bytes], Any] | None = None
                 ) -> Iterator[tuple[str, Any]]:
    """(name, payload) of each regular tar member, reading the stream once; ReadError on a cut member.

    With ``keep``, a member's payload is ``keep(name, offset, size, data)`` instead of its bytes
    when that is not None (``offset``: of the payload, from the stream's start; ``data``: the
    payload, padded). Its bytes are still read past, so that a hash of the whole stream sees them."""
    long_name = None
    pos = 0
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
        at, pos = pos + 512, pos + 512 + padded
        if kind == tarfile.GNUTYPE_LONGNAME:
            long_name = data[:size].rstrip(b"\0").decode("utf-8", "surrogateescape")
            continue
        if kind == tarfile.XHDTYPE:  # pax: a long or non-ASCII name comes as a "path" record
            long_name = _pax_path(data[:size]) or long_name
            continue
        if kind == tarfile.XGLTYPE:
            continue
        name, long_name = long_name or name, None
        if kind in tarfile.REGULAR_TYPES:
            ref = keep(name, at, size, data) if keep is not None else None
            yield name, (data[:size] if ref is None else ref)


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

    def __init__(self, catalog: Catalog, options: Any = None, by_reference: Iterable[str] = ()) -> None:
        self.catalog = catalog
        self.options = options or SourceOptions()
        self.metrics = SourceMetrics()
        # member extensions that samples of local shards carry as Spans, not bytes (pipeline/spans.py)
        self.by_reference = frozenset(by_reference) if self.options.local_spans and hasattr(os, "pread") else frozenset()

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

    def warm_offsets(self, shards: Iterable[int], threads: int = 16) -> None:
        """Read the .idx of ``shards`` now, on up to ``threads`` threads: a resumed stream needs the
        index of every shard its shuffle buffer held samples of before its first batch, and one
        request after the other would cost a round trip each."""
        todo = sorted({sh for sh in shards if (self.catalog.shards[sh].index_url or self.catalog.shards[sh].url)
                       not in _OFFSETS})
        if len(todo) > 1:
            with ThreadPoolExecutor(min(threads, len(todo))) as pool:
                list(pool.map(self.offsets, todo))

    def open(self, sl: Slice, fetch: bool = False) -> tuple[BinaryIO, int]:
        """A stream of the slice's bytes and how many leading samples still have to be skipped."""
        shard = self.catalog.shards[sl.shard]
        whole = sl.start == 0 and sl.stop == shard.samples
        offs = None if whole else self.offsets(sl.shard)  # a whole shard needs no index: one request less
        start, length, skip = (offs[sl.start], offs[sl.stop] - offs[sl.start], 0) if offs else (0, None, sl.start)
        remote = scheme_of(shard.url) in REMOTE
        # the size is always passed for a remote shard: s3/gs then need no HEAD before a ranged GET;
        # the sha256 always: sources checks what SourceOptions asks of a whole read (or a cache fill)
        kw = dict(options=self.options, metrics=self.metrics, start=start, length=length,
                  expected_bytes=shard.bytes if remote or (whole and self.options.verify_local) else None,
                  expected_sha256=shard.sha256)
        size = length if length is not None else (shard.bytes - start if shard.bytes is not None else None)
        if fetch and not self._fits(size):
            fetch = False  # too big to hold in memory: opened ahead, then streamed
        f = (fetch_shard if fetch else open_shard)(shard.url, **kw)
        return f, skip

    def _keeper(self, f: BinaryIO, sl: Slice) -> Callable[[str, int, int, bytes], Span | None] | None:
        """For iter_members, before ``f`` is read: a Span for each ``by_reference`` member of ``f``,
        a stream of a local file; None for anything else (remote, a pipe, bytes in memory)."""
        url = self.catalog.shards[sl.shard].url
        if not self.by_reference or scheme_of(url) not in ("", "file"):
            return None
        try:
            fd = f.fileno()
            st = os.fstat(fd)
            base = os.lseek(fd, 0, os.SEEK_CUR)  # where the stream starts in the file: nothing is read yet
        except (OSError, ValueError, AttributeError):  # no descriptor: not a plain file
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        path, ident, exts = os.path.abspath(_local_path(url)), identity(st), self.by_reference

        def keep(name: str, offset: int, size: int, data: bytes) -> Span | None:
            if split_name(name)[1] not in exts:
                return None
            return Span(path, ident, base + offset, size, data[:HEAD_BYTES])
        return keep

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
        if not isinstance(f, MemoryReader):  # pragma: no cover - whole_fits() said it would be
            f.close()
            return [self.open(sl, fetch=True) for sl in group]
        if offs:
            return [(f.part(offs[sl.start], offs[sl.stop]), 0) for sl in group]
        return [(f.part(0), sl.start) for sl in group]

    def samples(self, f: BinaryIO, skip: int, sl: Slice) -> Iterator[Sample]:
        url = self.catalog.shards[sl.shard].url
        try:
            n = 0
            for sample in _group(iter_members(f, url, self._keeper(f, sl)), url):
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
    return any(scheme_of(catalog.shards[sl.shard].url) in REMOTE for sl in slices)
