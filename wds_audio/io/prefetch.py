"""Opening shards ahead of their consumer on a few threads, in order, with bounded memory."""
from __future__ import annotations

import time
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from .options import SourceMetrics


class Prefetcher:
    """``(item, stream or exception)`` in the order of ``items``, with up to ``depth`` opens in flight
    at once (a thread each), started when the Prefetcher is made, not when it is first iterated.

    Several requests in flight hide a per-request latency that a single opener thread would pay
    once per item; starting at construction lets every stream of a worker overlap its first
    requests with the others'. The consumer holds one item, at most ``depth`` more are open.
    """

    def __init__(self, items: Iterable[Any], open_fn: Callable[[Any], BinaryIO], depth: int,
                 metrics: SourceMetrics | None = None) -> None:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self._items, self._open, self._metrics = iter(items), open_fn, metrics
        self._pool = ThreadPoolExecutor(depth, thread_name_prefix="wds-audio-prefetch")
        self._pending: Any = deque()
        self._closed = False
        for _ in range(depth):
            self._submit()

    def _submit(self) -> None:
        try:
            item = next(self._items)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 - the item iterable failed: raised in order, in the consumer
            self._pending.append((None, e))
            return
        self._pending.append((item, self._pool.submit(self._open, item)))

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self) -> tuple[Any, BinaryIO | Exception]:
        if not self._pending:
            self.close()
            raise StopIteration
        item, fut = self._pending.popleft()
        if isinstance(fut, Exception):
            self.close()
            raise fut
        t0 = time.perf_counter()
        try:
            got: Any = fut.result()
        except Exception as e:  # noqa: BLE001 - delivered in its place; the caller's policy decides
            got = e
        if self._metrics is not None:
            self._metrics.add("prefetch_wait_s", time.perf_counter() - t0)
        self._submit()
        return item, got

    def close(self) -> None:
        """Stop opening; what was opened and not handed out is closed (now or when it arrives)."""
        if self._closed:
            return
        self._closed = True
        for _, fut in self._pending:
            if not isinstance(fut, Exception) and not fut.cancel():
                fut.add_done_callback(_close_result)
        self._pending.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _close_result(fut: Any) -> None:
    if not fut.cancelled() and fut.exception() is None and hasattr(fut.result(), "close"):
        fut.result().close()


def prefetch(urls: Iterable[str], open_fn: Callable[[str], BinaryIO], depth: int = 1, *,
             metrics: SourceMetrics | None = None) -> Iterator[tuple[str, BinaryIO | Exception]]:
    """``(url, stream or exception)`` in the order of ``urls``, up to ``depth`` opened ahead at once.

    ``open_fn`` (use ``fetch_shard`` to download remote shards whole) runs on a pool of ``depth``
    threads for at most ``depth`` shards the consumer has not taken yet, so memory stays bounded.
    An exception from ``open_fn`` is delivered in its place, not raised: the caller's error policy
    decides. Leaving the loop early stops and closes what was opened. ``depth=0`` opens in the
    caller's thread. Time the consumer waits is added to ``metrics["prefetch_wait_s"]``.

    Example:
        >>> for url, f in prefetch(urls, lambda u: fetch_shard(u, options=opts), depth=2):  # doctest: +SKIP
        ...     if isinstance(f, Exception):
        ...         log.warning("skipping %s: %s", url, f); continue
        ...     with f:
        ...         consume(f)
    """
    if depth <= 0:
        yield from _open_each(urls, open_fn)
        return
    p = Prefetcher(urls, open_fn, depth, metrics)
    try:
        yield from p
    finally:
        p.close()


def _open_each(urls: Iterable[str], open_fn: Callable[[str], BinaryIO]) -> Iterator[tuple[str, BinaryIO | Exception]]:
    for url in urls:
        try:
            got: BinaryIO | Exception = open_fn(url)
        except Exception as e:  # noqa: BLE001 - delivered to the caller in order
            got = e
        yield url, got
