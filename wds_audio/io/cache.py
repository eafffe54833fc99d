"""A local cache of whole shards, shared by worker processes and ranks on one machine.

Every cached shard is checked against the sha256 from ``dataset.json``: on fill (before it is
published) and, by default, again on every hit, so a file damaged on disk (garbage bytes,
truncation) is detected and fetched again. A shard is written to a temporary file in the cache
directory and renamed into place when complete, so a reader never sees a partial file. The
cache stays under ``max_bytes`` by evicting the least recently used shards (by access time,
which the cache sets itself, so ``noatime`` mounts do not matter).

Concurrency: ``fcntl.flock`` locks (per open file, so they also separate threads) guard
filling an entry (one lock file per stripe of entries, so two processes do not download the
same shard twice) and eviction + publication (one lock for the directory). Deleting a shard
that another process is reading is safe on POSIX: the reader keeps its open file.

Names: a cached file is named ``<sha1(url)[:16]>-<safe basename of the url>``; nothing from
inside a tar ever becomes a path. Temporary files are ``.tmp.<host>.<pid>.<token>.<name>``;
those whose owner process is dead (same host) or that have not been written to for
``stale_s`` seconds are removed when a cache is opened and before each eviction.

Example:
    >>> cache = ShardCache("/tmp/wds-cache", max_bytes=20 * 2**30)            # doctest: +SKIP
    >>> f = cache.open(url, sha256_hex, fill=lambda out: out.write(fetch(url)))  # doctest: +SKIP
    >>> data = f.read()                                                          # doctest: +SKIP
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import secrets
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Protocol

LOCK_DIR = ".locks"
TMP_PREFIX = ".tmp."
LOCK_STRIPES = 256
_READ_BLOCK = 1 << 20


class Counter(Protocol):
    """Anything with ``add(name, n)``; wds_audio.io.SourceMetrics is one."""

    def add(self, name: str, n: int | float = 1) -> None: ...


class ChecksumMismatch(Exception):
    """The bytes written by a fill do not have the expected sha256."""

    def __init__(self, url: str, expected: str, actual: str, size: int) -> None:
        super().__init__(url, expected, actual, size)
        self.url, self.expected, self.actual, self.size = url, expected, actual, size

    def __str__(self) -> str:
        return f"{self.url}: sha256 {self.actual} ({self.size} bytes) != expected {self.expected}"


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    size: int
    atime_ns: int


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def safe_name(url: str) -> str:
    """The cache file name of ``url``: a hash (unique) plus a readable, path-free basename."""
    base = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")[:80] or "shard"
    return f"{hashlib.sha1(url.encode()).hexdigest()[:16]}-{base}"


def _sha256_of(f: BinaryIO) -> tuple[str, int]:
    h = hashlib.sha256()
    buf = bytearray(_READ_BLOCK)
    view = memoryview(buf)
    size = 0
    while n := f.readinto(buf):  # type: ignore[attr-defined]
        h.update(view[:n])
        size += n
    return h.hexdigest(), size


class _HashingWriter:
    """Passes writes to a file and hashes them, so a fill is verified without reading it back."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()


class ShardCache:
    """Whole shards on local disk, verified by sha256, LRU-evicted under ``max_bytes``.

    Example:
        >>> cache = ShardCache(tmp_dir, max_bytes=1 << 30)                    # doctest: +SKIP
        >>> with cache.open("http://host/train/a.tar", sha, fill=download) as f:  # doctest: +SKIP
        ...     tar_bytes = f.read()
    """

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int | None = None, *,
                 stale_s: float = 1800.0, verify_hits: bool = True) -> None:
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive or None, got {max_bytes}")
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.stale_s = stale_s
        self.verify_hits = verify_hits
        (self.dir / LOCK_DIR).mkdir(parents=True, exist_ok=True)
        self._host = _host_tag()
        self.clean_stale()

    # ---- public API -------------------------------------------------------------------

    def path_for(self, url: str) -> Path:
        return self.dir / safe_name(url)

    def open(self, url: str, sha256: str, fill: Callable[[BinaryIO], object], *,
             expected_bytes: int | None = None, metrics: Counter | None = None) -> BinaryIO:
        """A verified cached copy of ``url`` opened for reading; ``fill(out)`` writes it on a miss.

        Raises ChecksumMismatch when the filled bytes do not hash to ``sha256`` (nothing is
        published then); whatever ``fill`` raises propagates the same way.
        """
        if not sha256:
            raise ValueError(f"{url}: the cache needs the shard's sha256 (from dataset.json)")
        final = self.path_for(url)
        f = self._open_verified(final, sha256, expected_bytes)
        if f is not None:
            _count(metrics, "cache_hits")
            return f
        with self._flock(self._stripe_lock(final)):
            # Another process may have filled it while this one waited for the lock.
            f = self._open_verified(final, sha256, expected_bytes, remove_bad=True, metrics=metrics)
            if f is not None:
                _count(metrics, "cache_hits")
                return f
            _count(metrics, "cache_misses")
            return self._fill(url, final, sha256, fill, metrics)

    def entries(self) -> list[CacheEntry]:
        """Published shards (no temporaries, no locks), in no particular order."""
        out = []
        with os.scandir(self.dir) as it:
            for e in it:
                if e.name.startswith(".") or not e.is_file(follow_symlinks=False):
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:  # evicted by another process meanwhile
                    continue
                out.append(CacheEntry(Path(e.path), st.st_size, st.st_atime_ns))
        return out

    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries())

    def evict(self, incoming_bytes: int = 0, *, metrics: Counter | None = None) -> int:
        """Remove least recently used shards until ``incoming_bytes`` more fit; returns the count."""
        with self._flock(self.dir / LOCK_DIR / "evict"):
            return self._evict_locked(incoming_bytes, keep=None, metrics=metrics)

    def clean_stale(self) -> list[Path]:
        """Remove temporary files left by killed runs; returns what was removed."""
        removed = []
        now = time.time()
        with os.scandir(self.dir) as it:
            for e in it:
                if not e.name.startswith(TMP_PREFIX):
                    continue
                try:
                    age = now - e.stat(follow_symlinks=False).st_mtime
                except FileNotFoundError:
                    continue
                if age > self.stale_s or self._owner_dead(e.name):
                    try:
                        os.unlink(e.path)
                        removed.append(Path(e.path))
                    except FileNotFoundError:
                        pass
        return removed

    # ---- internals --------------------------------------------------------------------

    def _owner_dead(self, name: str) -> bool:
        parts = name[len(TMP_PREFIX):].split(".", 3)
        if len(parts) < 3 or parts[0] != self._host or not parts[1].isdigit():
            return False  # another machine's file (shared filesystem): only age can tell
        return not _pid_alive(int(parts[1]))

    def _tmp_path(self, final: Path) -> Path:
        return self.dir / f"{TMP_PREFIX}{self._host}.{os.getpid()}.{secrets.token_hex(4)}.{final.name}"

    def _stripe_lock(self, final: Path) -> Path:
        # Stripes keep the number of lock files bounded; lock files are never deleted, since
        # deleting a lock file another process holds would let a third one lock a new inode.
        stripe = int(hashlib.sha1(final.name.encode()).hexdigest()[:4], 16) % LOCK_STRIPES
        return self.dir / LOCK_DIR / f"fill-{stripe:03d}"

    @contextmanager
    def _flock(self, path: Path) -> Iterator[None]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _open_verified(self, final: Path, sha256: str, expected_bytes: int | None, *,
                       remove_bad: bool = False, metrics: Counter | None = None) -> BinaryIO | None:
        try:
            f = open(final, "rb")
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(f.fileno())
            ok = expected_bytes is None or st.st_size == expected_bytes
            if ok and self.verify_hits:
                ok = _sha256_of(f)[0] == sha256
                f.seek(0)
            if ok:
                os.utime(f.fileno(), ns=(time.time_ns(), st.st_mtime_ns))  # the LRU clock
                return f
        except BaseException:
            f.close()
            raise
        f.close()
        if remove_bad:  # only under the fill lock, so a fresh good copy is not removed by a race
            _count(metrics, "cache_corrupt")
            try:
                final.unlink()
            except FileNotFoundError:
                pass
        return None

    def _fill(self, url: str, final: Path, sha256: str, fill: Callable[[BinaryIO], object],
              metrics: Counter | None) -> BinaryIO:
        tmp = self._tmp_path(final)
        try:
            with open(tmp, "wb") as out:
                w = _HashingWriter(out)
                fill(w)  # type: ignore[arg-type]
            actual = w.sha.hexdigest()
            if actual != sha256:
                raise ChecksumMismatch(url, sha256, actual, w.size)
            if self.max_bytes is not None and w.size > self.max_bytes:
                # Larger than the whole budget: hand out the verified bytes without keeping them.
                f = open(tmp, "rb")
                _count(metrics, "cache_too_big")
                return f
            with self._flock(self.dir / LOCK_DIR / "evict"):
                self._evict_locked(w.size, keep=final, metrics=metrics)
                os.replace(tmp, final)
                f = open(final, "rb")  # before the lock is released, so no eviction can race it
            return f
        finally:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass

    def _evict_locked(self, incoming: int, keep: Path | None, metrics: Counter | None) -> int:
        if self.max_bytes is None:
            return 0
        self.clean_stale()
        entries = sorted((e for e in self.entries() if e.path != keep), key=lambda e: e.atime_ns)
        total = sum(e.size for e in entries)
        removed = 0
        for e in entries:
            if total + incoming <= self.max_bytes:
                break
            try:
                e.path.unlink()
                removed += 1
                _count(metrics, "cache_evictions")
                _count(metrics, "cache_evicted_bytes", e.size)
            except FileNotFoundError:
                pass
            total -= e.size
        return removed


def _count(metrics: Counter | None, name: str, n: int = 1) -> None:
    if metrics is not None:
        metrics.add(name, n)
