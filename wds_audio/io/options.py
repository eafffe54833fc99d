"""The settings of remote reads (SourceOptions), their errors and counters, and URL helpers."""
from __future__ import annotations

import random
import threading
from collections import Counter as _Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse, urlsplit, urlunsplit

REMOTE = frozenset({"http", "https", "s3", "gs", "gcs"})
READ_STEP = 1 << 20  # most bytes one read of a response body asks for
VERIFY_MODES = ("always", "once", "never")  # SourceOptions.verify_remote


@dataclass
class SourceOptions:
    """How shards are read. Times are in seconds, sizes in bytes.

    timeout_s: connect timeout and the longest a read may wait for data (a stall).
    retries: retries per shard (so ``retries + 1`` tries) before SourceError.
    backoff_s, max_backoff_s: the n-th retry waits about ``backoff_s * 2**(n-1)`` (capped),
        jittered to between half and all of it so workers do not retry in lockstep.
    chunk_bytes: size of each ranged GET for s3/gs, and the read buffer.
    cache_dir, cache_bytes: a local ShardCache for remote shards that have a sha256
        (None: no cache; cache_bytes None: no size limit).
    prefetch: remote reads (a whole shard or a ranged slice) fetched ahead of the one being read,
        to hide the latency of remote stores (0: none). In the loader, a worker's streams share one
        queue (wds_audio.io.fetchqueue): at most ``prefetch`` reads run at once per worker, the one
        the next batches need first, and each stream holds at most ``prefetch`` fetched ahead.
    prefetch_bytes: memory one stream may hold in prefetched slices: a slice larger than
        ``prefetch_bytes / prefetch`` is opened ahead (its latency hidden) and then streamed,
        not downloaded whole.
    verify_local: also check whole local shards against their sha256.
    local_spans: a training stream's shuffle buffer (and a rebalancing reservoir) holds the clips of
        local shards as their place in the file, read again (from the page cache) when a clip is
        drawn, instead of their bytes (up to 8 streams x 256 clips: with 5-s FLAC clips the peak
        memory of a 2-worker loader went from 750 to 628 MB, see wds_audio.pipeline.spans). False: hold the bytes, for a file system where reading a clip
        twice is slow (a network or FUSE mount without a page cache).
    verify_remote: how whole remote shards are checked against their sha256 from dataset.json.
        "once" (default): the first time this process reads an object, and again whenever the
        server's strong ETag for it is not the one it had when it was checked (a rewritten object
        gets a new ETag from S3, GCS, nginx and our test server); a server that sends no strong
        ETag gets every read hashed. Damage that leaves the ETag alone (bit rot on the server's
        disk, a broken proxy) is caught on a later read only with "always". "always": every
        whole read is hashed. "never" (or False): none. sha256 costs ~0.7-0.9 ms of CPU per MB
        (SHA-NI): ~0.11 of the ~3 CPU-seconds of a benchmarks/remote.py epoch when every read is
        hashed; without it a transfer is still checked
        for its length, tar headers for their checksums, FLAC frames for their CRCs. True means
        "always". A cache always checks what it keeps.
    s3_presign: read s3:// objects with presigned GETs (signed by s3fs, credentials as usual) over
        kept-alive HTTP connections: a ranged GET of ~0.7 MB through s3fs/aiobotocore cost ~7 ms
        of client CPU, a presigned one ~0.8 ms (measured one request at a time). False: every read
        goes through s3fs. A store that refuses presigned URLs (403) is read through s3fs from then on.
    stale_tmp_s: cache temporaries untouched this long are left over from a killed run.
    """

    timeout_s: float = 30.0
    retries: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    chunk_bytes: int = 4 << 20
    cache_dir: str | None = None
    cache_bytes: int | None = None
    prefetch: int = 4
    prefetch_bytes: int = 64 << 20
    verify_local: bool = False
    local_spans: bool = True
    verify_remote: str | bool = "once"
    s3_presign: bool = True
    stale_tmp_s: float = 1800.0

    def __post_init__(self) -> None:
        if isinstance(self.verify_remote, bool):
            self.verify_remote = "always" if self.verify_remote else "never"
        if self.verify_remote not in VERIFY_MODES:
            raise ValueError(f"verify_remote must be one of {VERIFY_MODES} or a bool, got {self.verify_remote!r}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.retries < 0 or self.prefetch < 0:
            raise ValueError(f"retries and prefetch must be >= 0, got {self.retries}, {self.prefetch}")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("backoff_s and max_backoff_s must be >= 0")
        if self.chunk_bytes < 4096:
            raise ValueError(f"chunk_bytes must be >= 4096, got {self.chunk_bytes}")
        if self.cache_bytes is not None and self.cache_bytes <= 0:
            raise ValueError(f"cache_bytes must be positive or None, got {self.cache_bytes}")

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        full = min(self.max_backoff_s, self.backoff_s * 2 ** (retry - 1))
        return full * (0.5 + 0.5 * rng.random())


class SourceError(Exception):
    """A shard could not be read: ``url``, a short ``reason`` ("timeout", "http 503", ...),
    the ``retries`` spent on it and the byte ``offset`` reached."""

    def __init__(self, url: str, reason: str, retries: int = 0, offset: int | None = None) -> None:
        super().__init__(url, reason, retries, offset)
        self.url, self.reason, self.retries, self.offset = url, reason, retries, offset

    def __str__(self) -> str:
        msg = f"{redact(self.url)}: {self.reason}"
        if self.retries:
            msg += f" (after {self.retries} retries)"
        if self.offset:
            msg += f" at byte {self.offset}"
        return msg


class SourceMetrics:
    """Thread-safe counters of the source layer; ``as_dict()`` gives a plain, picklable dict.

    Counters: bytes_read, opens, resumes, failed_shards, cache_hits, cache_misses,
    cache_evictions, cache_evicted_bytes, cache_corrupt, cache_too_big, prefetch_wait_s,
    sha256_checked (whole remote reads hashed and found right), sha256_skipped (whole remote reads
    of an object version this process had already checked, see ``SourceOptions.verify_remote``),
    and retries by reason (``retries`` in as_dict, with their sum in ``retries_total``).
    """

    NAMES = ("bytes_read", "opens", "resumes", "failed_shards", "cache_hits", "cache_misses",
             "cache_evictions", "cache_evicted_bytes", "cache_corrupt", "cache_too_big", "prefetch_wait_s",
             "sha256_checked", "sha256_skipped")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, float] = dict.fromkeys(self.NAMES, 0)
        self._retries: _Counter[str] = _Counter()

    def add(self, name: str, n: int | float = 1) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + n

    def add_retry(self, reason: str) -> None:
        with self._lock:
            self._retries[reason] += 1

    def __getitem__(self, name: str) -> float:
        with self._lock:
            return self._counts.get(name, 0)

    def retries(self) -> dict[str, int]:
        with self._lock:
            return dict(self._retries)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
            out["retries"] = dict(self._retries)
            out["retries_total"] = sum(self._retries.values())
            return out

    def merge(self, other: dict[str, Any]) -> None:
        """Add an ``as_dict()`` from elsewhere (e.g. a DataLoader worker) into these counters."""
        with self._lock:
            for k, v in other.items():
                if k == "retries":
                    self._retries.update(v)
                elif k != "retries_total":
                    self._counts[k] = self._counts.get(k, 0) + v

    def __getstate__(self) -> dict[str, Any]:
        return self.as_dict()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
        self.merge(state)


def redact(url: str) -> str:
    """``url`` without user:password and query string (pre-signed URLs carry signatures there)."""
    if url.startswith("pipe:"):
        return url
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))


def scheme_of(url: str) -> str:
    """The table key of ``url``: "" for a plain path (including ``C:`` drive letters)."""
    if url.startswith("pipe:"):
        return "pipe"
    s = urlparse(url).scheme
    return "" if len(s) <= 1 else s
