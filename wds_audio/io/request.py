"""What is asked for (URL, range, expected size and sha256), and the object versions already
checked, so that a strong ETag seen before is not hashed again.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Any, Iterator

from .options import REMOTE, SourceMetrics, SourceOptions, scheme_of

# ---- what is asked for ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Want:
    """One read: the object, the byte range wanted, what dataset.json says about the object."""

    url: str
    options: SourceOptions
    metrics: SourceMetrics
    expected_bytes: int | None = None
    expected_sha256: str | None = None
    start: int = 0
    length: int | None = None
    small: bool = False  # metadata read whole into memory: one GET, no HEAD for the size first

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.length is None

    @property
    def end(self) -> int | None:
        return None if self.length is None else self.start + self.length

    @property
    def sha256(self) -> str | None:
        """The checksum to verify: only a read of the whole object can be checked, and a remote
        one only unless ``verify_remote`` is "never" (a cache checks what it keeps regardless)."""
        if not self.whole or (self.options.verify_remote == "never" and scheme_of(self.url) in REMOTE):
            return None
        return self.expected_sha256


class CheckedVersions:
    """The object versions (URL, strong ETag, sha256) found right by a whole read's hash: under
    ``verify_remote="once"`` a whole read of one of them is not hashed again.

    Process-local by default. Given ``slots`` (a writable int64 array, e.g. a NumPy view of shared
    memory) it is one set for every process that holds them: the loader gives its DataLoader workers
    one table, so a shard checked by one worker is not hashed again by the others, nor by the
    workers of the next epoch when they are not persistent. The table keeps 64-bit fingerprints,
    open-addressed; a fingerprint lost to a full table or to two processes writing one slot at
    once only costs one more hash.
    """

    PROBES = 8

    def __init__(self, slots: Any = None) -> None:
        self._slots = slots
        self._local: set[int] = set()
        self._lock = threading.Lock()

    @staticmethod
    def fingerprint(url: str, etag: str, sha256: str) -> int:
        fp = int.from_bytes(hashlib.blake2b(f"{url}\0{etag}\0{sha256}".encode(), digest_size=8).digest(),
                            "little", signed=True)
        return fp or 1  # 0 marks an empty slot

    def _probe(self, fp: int) -> Iterator[int]:
        n = len(self._slots)
        return ((fp + i) % n for i in range(min(self.PROBES, n)))

    def __contains__(self, fp: int) -> bool:
        with self._lock:
            if self._slots is None:
                return fp in self._local
            for i in self._probe(fp):
                if self._slots[i] == fp:
                    return True
                if self._slots[i] == 0:
                    return False
            return False

    def add(self, fp: int) -> None:
        with self._lock:
            if self._slots is None:
                self._local.add(fp)
                return
            for i in self._probe(fp):
                if self._slots[i] in (0, fp):
                    self._slots[i] = fp
                    return
            self._slots[fp % len(self._slots)] = fp  # full here: one older entry is forgotten


_CHECKED = CheckedVersions()


def share_checked_versions(slots: Any) -> None:
    """Keep this process's checked versions in ``slots`` (a NumPy int64 array, see CheckedVersions)
    from now on; a no-op when they are kept there already."""
    global _CHECKED
    old = _CHECKED._slots
    if old is None or old.ctypes.data != slots.ctypes.data:
        _CHECKED = CheckedVersions(slots)


def _strong(etag: str | None) -> bool:
    return bool(etag) and not etag.startswith("W/")  # type: ignore[union-attr]


def _checked_before(want: _Want, etag: str | None) -> bool:
    """This version (``etag``) of the whole object was already hashed right (verify_remote="once")."""
    if want.options.verify_remote != "once" or not want.sha256 or not _strong(etag):
        return False
    return CheckedVersions.fingerprint(want.url, etag, want.sha256) in _CHECKED  # type: ignore[arg-type]


def _checked(want: _Want, etag: str | None) -> None:
    """The whole object hashed right: remembered by its strong ETag, counted."""
    want.metrics.add("sha256_checked")
    if _strong(etag):
        _CHECKED.add(CheckedVersions.fingerprint(want.url, etag, want.sha256))  # type: ignore[arg-type]
