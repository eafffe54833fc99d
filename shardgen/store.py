"""Where a pack goes: a local folder or a bucket prefix, holding only complete objects.

``Store(out)`` takes a path, ``file://…``, ``s3://bucket/prefix`` or ``gs://bucket/prefix``
(through fsspec: s3fs, gcsfs; credentials come from the usual environment and are never printed).

Every file is either complete or absent:
- local: written as ``<name>.tmp-<pid>`` next to its final name, fsynced, then renamed;
- bucket: written to a local spool file, then uploaded with the store's own atomic upload (a
  single PUT, or a multipart upload that the store completes only once every part arrived; a
  failed one is aborted) and checked by size. A failed upload is retried as a whole, with backoff;
  an upload cut short never becomes an object. No temporary key is ever created, so there is
  nothing to rename and nothing for a reader to mistake for a shard.

Example:
    >>> s = Store("s3://bucket/esc50")                        # doctest: +SKIP
    >>> s.write_bytes("dataset.json", b"{}")                   # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

TMP_MARK = ".tmp-"
T = TypeVar("T")

# failures that another try cannot fix (s3fs/gcsfs map AccessDenied and NoSuchBucket to these)
_PERMANENT = (PermissionError, FileNotFoundError, NotADirectoryError, IsADirectoryError)
_PERMANENT_NAMES = {"NoCredentialsError", "PartialCredentialsError", "NoRegionError", "InvalidAccessKeyId",
                    "SignatureDoesNotMatch", "AccessDenied", "DefaultCredentialsError", "RefreshError"}


class StoreError(Exception):
    """OUT cannot be written or read; the message names the object and the cause (never credentials)."""


def _permanent(e: BaseException) -> bool:
    return isinstance(e, _PERMANENT) or any(type(x).__name__ in _PERMANENT_NAMES for x in _chain(e))


def _chain(e: BaseException | None) -> list[BaseException]:
    out = []
    while e is not None and len(out) < 8:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _describe(e: BaseException) -> str:
    names = [type(x).__name__ for x in _chain(e)]
    return f"{type(e).__name__}: {e}" + (f" (caused by {', '.join(names[1:])})" if len(names) > 1 else "")


class Store:
    """A pack's output location (see the module docstring)."""

    def __init__(self, out: str | os.PathLike, storage_options: dict[str, Any] | None = None,
                 retries: int = 5, backoff_s: float = 0.2, spool_dir: str | None = None) -> None:
        url = os.fspath(out)
        self.retries, self.backoff_s = retries, backoff_s
        if "://" not in url or url.startswith("file://"):
            self.local: Path | None = Path(url[len("file://"):] if url.startswith("file://") else url)
            self.url = str(self.local)
            self.fs, self.root = None, str(self.local)
        else:
            import fsspec

            self.local = None
            self.url = url.rstrip("/")
            protocol, self.root = url.split("://", 1)
            self.root = self.root.rstrip("/")
            self.fs = fsspec.filesystem(protocol, skip_instance_cache=True, **(storage_options or {}))
        self._spool_root = spool_dir
        self._spool: Path | None = None
        self._lines: dict[str, list[str]] = {}

    @property
    def remote(self) -> bool:
        return self.local is None

    def name(self, rel: str) -> str:
        """How an object is named in messages: its full URL or path."""
        return f"{self.url}/{rel}"

    def _key(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    # --- retries -------------------------------------------------------------------------------
    def _retry(self, rel: str, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as e:  # noqa: BLE001 - classified below, re-raised with the object's name
                if _permanent(e) or attempt == self.retries:
                    hint = " (no write permission, missing bucket or missing credentials)" if _permanent(e) else \
                        f" (gave up after {attempt + 1} tries)"
                    raise StoreError(f"{self.name(rel)}: cannot {what}: {_describe(e)}{hint}") from None
                time.sleep(min(self.backoff_s * 2 ** attempt, 5.0))
        raise AssertionError("unreachable")

    # --- shards: spool, then commit -----------------------------------------------------------
    def spool_path(self, rel: str) -> Path:
        """Where a file is written before :meth:`commit` makes it ``rel``."""
        if self.local is not None:
            p = self.local / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            return p.with_name(f"{p.name}{TMP_MARK}{os.getpid()}")
        if self._spool is None:
            self._spool = Path(tempfile.mkdtemp(prefix="shardgen-spool-", dir=self._spool_root))
        return self._spool / rel.replace("/", "__")

    def commit(self, spool: Path, rel: str) -> None:
        """Make the complete file ``spool`` appear as ``rel`` (atomically), then drop the spool."""
        if self.local is not None:
            os.replace(spool, self.local / rel)
            return
        size = spool.stat().st_size
        key = self._key(rel)

        def put() -> None:
            self.fs.put_file(str(spool), key)
            self.fs.invalidate_cache(key)
            got = self.fs.info(key)["size"]
            if got != size:
                raise OSError(f"uploaded {got} of {size} bytes")

        self._retry(rel, "upload", put)
        spool.unlink(missing_ok=True)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """A small object, written whole and atomically."""
        if self.local is not None:
            p = self.local / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f"{p.name}{TMP_MARK}{os.getpid()}")
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, p)
            except OSError as e:
                tmp.unlink(missing_ok=True)
                raise StoreError(f"{p}: cannot write: {_describe(e)}") from None
            return
        spool = self.spool_path(rel)
        spool.write_bytes(data)
        self.commit(spool, rel)

    def append_line(self, rel: str, line: str, *, new: bool = False) -> None:
        """A journal line: appended and fsynced locally; on a bucket the journal object is rewritten."""
        if self.local is not None:
            p = self.local / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            with open(p, "w" if new else "a") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
            return
        lines = self._lines.setdefault(rel, [])
        if new:
            lines.clear()
        elif not lines and self.exists(rel):
            lines.extend(x for x in self.read_text(rel).splitlines() if x.strip())
        lines.append(line)
        self.write_bytes(rel, ("\n".join(lines) + "\n").encode())

    # --- reading and housekeeping -------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        if self.local is not None:
            return (self.local / rel).is_file()
        return self._retry(rel, "look up", lambda: self.fs.exists(self._key(rel)))

    def size(self, rel: str) -> int | None:
        if self.local is not None:
            p = self.local / rel
            return p.stat().st_size if p.is_file() else None
        key = self._key(rel)

        def info() -> int | None:
            self.fs.invalidate_cache(key)
            try:
                return int(self.fs.info(key)["size"])
            except FileNotFoundError:
                return None

        return self._retry(rel, "look up", info)

    def read_bytes(self, rel: str) -> bytes:
        if self.local is not None:
            return (self.local / rel).read_bytes()
        return self._retry(rel, "read", lambda: self.fs.cat_file(self._key(rel)))

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode()

    def sha256(self, rel: str) -> str:
        h = hashlib.sha256()
        if self.local is not None:
            with open(self.local / rel, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            return h.hexdigest()

        def read() -> str:
            g = hashlib.sha256()
            with self.fs.open(self._key(rel), "rb", block_size=8 << 20) as f:
                for block in iter(lambda: f.read(8 << 20), b""):
                    g.update(block)
            return g.hexdigest()

        return self._retry(rel, "read", read)

    def delete(self, rel: str) -> None:
        if self.local is not None:
            (self.local / rel).unlink(missing_ok=True)
            return
        key = self._key(rel)

        def rm() -> None:
            try:
                self.fs.rm_file(key)
            except FileNotFoundError:
                pass

        self._retry(rel, "delete", rm)

    def list(self, sub: str = "") -> list[str]:
        """Relative names of every object below ``sub`` (recursively), sorted."""
        if self.local is not None:
            base = self.local / sub
            if not base.is_dir():
                return []
            return sorted(p.relative_to(self.local).as_posix() for p in base.rglob("*") if p.is_file())
        prefix = self._key(sub).rstrip("/")

        def find() -> list[str]:
            self.fs.invalidate_cache(prefix)
            try:
                return list(self.fs.find(prefix))
            except FileNotFoundError:
                return []

        keys = self._retry(sub or ".", "list", find)
        return sorted(k[len(self.root) + 1:] for k in keys if k.startswith(self.root + "/"))

    def mkdir(self) -> None:
        if self.local is not None:
            try:
                self.local.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"{self.local}: cannot create: {_describe(e)}") from None

    def close(self) -> None:
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)
            self._spool = None
