"""One queue of remote fetches for all the streams of a loader worker, in the order they are needed.

A worker reads several streams (see plan.py) and hands out their batches in turn. Each stream
used to fetch its shards ``prefetch`` deep on its own: at an epoch's start a worker with 4 streams
started 16 downloads at once, and the 2-4 its first batch read shared the CPU with the others
(traced, HTTP with 20 ms latency on 2 cores: they arrived 70-270 ms into the epoch where one alone
takes ~25 ms). Here the streams' fetches wait in one queue ordered by the batch that will first need
them, at most ``depth`` run at once, and each stream still holds at most ``ahead`` fetched items it
has not begun to read (the memory bound of a per-stream prefetcher), beyond those the batch it
reads next needs: a stream's first batch reads 5-6 groups while its shuffle buffer fills, and
with the bound alone the 5th was only fetched once the stream had begun to read (traced, HTTP
20 ms: the workers' waits for fetches fell mostly on those groups).

Example:
    >>> q = FetchQueue(depth=2, ahead=2)
    >>> a = q.lane(["a0", "a1"], needs=[0, 2], open_fn=str.upper)
    >>> b = q.lane(["b0"], needs=[1], open_fn=str.upper)
    >>> q.start()
    >>> list(a), list(b)
    ([('a0', 'A0'), ('a1', 'A1')], [('b0', 'B0')])
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence


@dataclass(eq=False)
class _Lane:
    items: Sequence[Any]
    needs: list[float]  # the batch that first reads each item: ranks the fetches
    open_fn: Callable[[Any], Any]
    metrics: Any = None
    futures: list[Future] = field(default_factory=list)
    next_fetch: int = 0  # items before it have been started
    taken: int = 0  # items handed to the consumer
    urgent: int = -1  # the item its consumer waits for, not started yet: fetched first
    closed: bool = False

    def rank(self, i: int) -> float:
        return float("-inf") if i == self.urgent else self.needs[i]


class FetchQueue:
    """Runs ``open_fn(item)`` for the items of every lane, ``depth`` at a time, the unstarted item
    with the smallest need first; lane ``i`` may have fetched at most ``ahead`` items beyond those
    its consumer has taken, and beyond those with the same need as the next one it takes (read by
    the same batch, so needed together). A consumer waiting for an item not yet started moves it to the front.
    ``open_fn``'s exceptions are handed out in the item's place. Results never handed out (a lane
    closed early) are closed when they arrive."""

    def __init__(self, depth: int, ahead: int) -> None:
        if depth < 1 or ahead < 1:
            raise ValueError(f"depth and ahead must be >= 1, got {depth}, {ahead}")
        self._depth, self._ahead = depth, ahead
        self._lock = threading.Lock()
        self._lanes: list[_Lane] = []
        self._running = 0
        self._started = self._closed = False
        self._horizon = float("inf")
        self._pool = ThreadPoolExecutor(depth, thread_name_prefix="wds-audio-fetch")

    def lane(self, items: Sequence[Any], needs: Sequence[float], open_fn: Callable[[Any], Any],
             metrics: Any = None) -> Iterator[tuple[Any, Any]]:
        """``(item, open_fn(item) or its exception)`` in the order of ``items``; ``needs`` (one per
        item, not decreasing) orders the fetches across lanes. The time the consumer waits is added
        to ``metrics["prefetch_wait_s"]``. Fetching begins at :meth:`start`."""
        if len(needs) != len(items):
            raise ValueError(f"{len(items)} items but {len(needs)} needs")
        lane = _Lane(items, list(needs), open_fn, metrics, [Future() for _ in items])
        with self._lock:
            self._lanes.append(lane)
        return self._consume(lane)

    def start(self, horizon: float = float("inf")) -> None:
        """Begin fetching (once every lane is known, so the first fetches are the most needed),
        only items needed no later than ``horizon`` until :meth:`release` (or a consumer waits).
        Called again, it sets a new horizon (fetches already running go on)."""
        with self._lock:
            self._started, self._horizon = True, horizon
            self._dispatch()

    def release(self) -> None:
        """Lift the horizon given to :meth:`start`."""
        with self._lock:
            self._horizon = float("inf")
            self._dispatch()

    def all_started(self) -> bool:
        """Every item of every lane has been started (or its lane closed): nothing more will be fetched."""
        with self._lock:
            return all(lane.closed or lane.next_fetch >= len(lane.items) for lane in self._lanes)

    def close(self) -> None:
        """Stop fetching for every lane; results not handed out are closed."""
        for lane in list(self._lanes):
            self._close_lane(lane)

    def _dispatch(self) -> None:
        """Start the most needed allowed items while fewer than ``depth`` run (the lock is held)."""
        while self._started and not self._closed and self._running < self._depth:
            best = None
            for lane in self._lanes:
                i = lane.next_fetch
                if (lane.closed or i >= len(lane.items) or lane.rank(i) > self._horizon
                        or (i >= lane.taken + self._ahead and lane.needs[i] > lane.needs[lane.taken])):
                    continue
                if best is None or lane.rank(i) < best.rank(best.next_fetch):
                    best = lane
            if best is None:
                return
            i, best.next_fetch = best.next_fetch, best.next_fetch + 1
            self._running += 1
            self._pool.submit(self._run, best, i)

    def _run(self, lane: _Lane, i: int) -> None:
        fut = lane.futures[i]
        try:
            got: Any = lane.open_fn(lane.items[i])
        except BaseException as e:  # noqa: BLE001 - handed to the consumer in the item's place
            got = e
        with self._lock:  # under the lock, so a lane closing now either sees the result or leaves it to us
            self._running -= 1
            unwanted = lane.closed
            if not unwanted:
                fut.set_result(got)
            self._dispatch()
        if unwanted:
            _close(got)

    def _consume(self, lane: _Lane) -> Iterator[tuple[Any, Any]]:
        try:
            for i, item in enumerate(lane.items):
                fut = lane.futures[i]
                if lane.closed:
                    return
                if not fut.done():
                    with self._lock:
                        if lane.next_fetch == i:  # not started: the consumer needs it now
                            lane.urgent = i
                            self._dispatch()
                    t0 = time.perf_counter()
                    fut.result()
                    if lane.metrics is not None:
                        lane.metrics.add("prefetch_wait_s", time.perf_counter() - t0)
                got = fut.result()
                if got is _CLOSED:
                    return
                lane.futures[i] = _DONE  # the consumer owns it now
                with self._lock:
                    lane.taken = i + 1
                    self._dispatch()
                yield item, got
        finally:
            self._close_lane(lane)

    def _close_lane(self, lane: _Lane) -> None:
        with self._lock:
            if lane.closed:
                return
            lane.closed = True
            done = [f.result() for f in lane.futures if f is not _DONE and f.done()]
            for f in lane.futures:
                if not f.done():
                    f.set_result(_CLOSED)  # wakes a consumer waiting on it; a fetch still running closes its result
            if all(x.closed for x in self._lanes) and not self._closed:
                self._closed = True
                self._pool.shutdown(wait=False, cancel_futures=True)
        for got in done:
            _close(got)


_DONE: Future = Future()
_CLOSED = object()


def _close(got: Any) -> None:
    if not isinstance(got, BaseException) and hasattr(got, "close"):
        got.close()
