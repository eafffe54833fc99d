"""FetchQueue: one worker's fetches across its streams, most needed first, bounded in flight and ahead."""
from __future__ import annotations

import threading
import time

import pytest

from wds_audio.io.fetchqueue import FetchQueue
from wds_audio.io.options import SourceMetrics

from .test_open import wait_for


class Opener:
    """Records the order of opens and how many run at once; optionally blocks until released."""

    def __init__(self, delay: float = 0.0, fail: set[str] | None = None, gate: threading.Event | None = None) -> None:
        self.delay, self.fail, self.gate = delay, fail or set(), gate
        self.calls: list[str] = []
        self.running = self.most = 0
        self.opened: list[Handle] = []
        self._lock = threading.Lock()

    def __call__(self, item: str) -> "Handle":
        with self._lock:
            self.calls.append(item)
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            if self.gate is not None:
                self.gate.wait(5)
            time.sleep(self.delay)
            if item in self.fail:
                raise OSError(f"{item}: connection reset")
            h = Handle(item)
            with self._lock:
                self.opened.append(h)
            return h
        finally:
            with self._lock:
                self.running -= 1


class Handle:
    def __init__(self, name: str) -> None:
        self.name, self.closed = name, False

    def close(self) -> None:
        self.closed = True


def test_each_lane_keeps_its_order_and_gets_errors_in_place() -> None:
    q = FetchQueue(depth=3, ahead=2)
    opener = Opener(fail={"a2", "b0"})
    a = q.lane([f"a{i}" for i in range(5)], [0, 2, 4, 6, 8], opener)
    b = q.lane([f"b{i}" for i in range(3)], [1, 3, 5], opener)
    q.start()
    got_a, got_b = list(a), list(b)
    assert [i for i, _ in got_a] == [f"a{i}" for i in range(5)]
    assert [i for i, _ in got_b] == ["b0", "b1", "b2"]
    for item, got in got_a + got_b:
        if item in ("a2", "b0"):
            assert isinstance(got, OSError) and item in str(got)
        else:
            assert got.name == item


def test_fetches_follow_the_needs_across_lanes() -> None:
    q = FetchQueue(depth=1, ahead=10)
    opener = Opener()
    lanes = [q.lane(["a0", "a1", "a2"], [0, 8, 16], opener),
             q.lane(["b0", "b1", "b2"], [2, 10, 18], opener),
             q.lane(["c0", "c1"], [4, 12], opener)]
    q.start()
    wait_for(lambda: len(opener.calls) == 8)
    assert opener.calls == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2"]
    for lane in lanes:
        assert len(list(lane)) in (2, 3)


def test_nothing_is_fetched_before_start() -> None:
    q = FetchQueue(depth=2, ahead=2)
    opener = Opener()
    lane = q.lane(["a0", "a1"], [0, 1], opener)
    time.sleep(0.05)
    assert opener.calls == []
    q.start()
    assert [i for i, _ in lane] == ["a0", "a1"]


def test_at_most_depth_fetches_run_at_once() -> None:
    q = FetchQueue(depth=3, ahead=8)
    opener = Opener(delay=0.02)
    lanes = [q.lane([f"{x}{i}" for i in range(6)], [i * 4 + k for i in range(6)], opener) for k, x in enumerate("abcd")]
    q.start()
    for lane in lanes:
        list(lane)
    assert len(opener.calls) == 24 and opener.most == 3


def test_a_lane_fetches_at_most_ahead_items_beyond_those_taken() -> None:
    q = FetchQueue(depth=4, ahead=2)
    opener = Opener()
    lane = q.lane([f"a{i}" for i in range(8)], list(range(8)), opener)
    q.start()
    wait_for(lambda: len(opener.calls) >= 2)
    time.sleep(0.05)
    assert opener.calls == ["a0", "a1"]  # nothing taken yet: two ahead
    next(lane)  # a0 taken: a1, a2 may be fetched
    wait_for(lambda: len(opener.calls) >= 3)
    time.sleep(0.05)
    assert opener.calls == ["a0", "a1", "a2"]
    lane.close()


def test_the_items_of_the_next_batch_are_fetched_beyond_ahead() -> None:
    """A batch that reads more items than ``ahead`` gets them all fetched before it is read (the
    first batch of a stream reads several while its shuffle buffer fills); later ones wait."""
    q = FetchQueue(depth=8, ahead=2)
    opener = Opener()
    lane = q.lane([f"a{i}" for i in range(8)], [0, 0, 0, 0, 0, 4, 4, 8], opener)
    q.start()
    wait_for(lambda: len(opener.calls) >= 5)
    time.sleep(0.05)
    assert opener.calls == [f"a{i}" for i in range(5)]  # all of batch 0, none of batch 4
    for _ in range(3):
        next(lane)  # a0-a2 taken: a3, a4 are two ahead, a5 (batch 4) is beyond
    time.sleep(0.05)
    assert opener.calls == [f"a{i}" for i in range(5)]
    next(lane)  # a3 taken: a5 is within two ahead, a6 (batch 4, not the next batch) is not
    wait_for(lambda: len(opener.calls) >= 6)
    time.sleep(0.05)
    assert opener.calls == [f"a{i}" for i in range(6)]
    next(lane)  # a4 taken: a6 is within two ahead; a7 (batch 8) is not
    wait_for(lambda: len(opener.calls) >= 7)
    time.sleep(0.05)
    assert opener.calls == [f"a{i}" for i in range(7)]
    lane.close()


def test_all_started_once_every_item_of_every_lane_was_started() -> None:
    q = FetchQueue(depth=4, ahead=1)
    opener = Opener()
    a = q.lane(["a0", "a1"], [0, 1], opener)
    b = q.lane(["b0"], [2], opener)
    q.start()
    wait_for(lambda: len(opener.calls) == 2)
    assert not q.all_started()  # a1 waits for a0 to be taken (ahead=1)
    next(a)
    wait_for(lambda: len(opener.calls) == 3)
    assert q.all_started()
    a.close()
    b.close()


def test_the_horizon_holds_back_later_needs_until_released() -> None:
    q = FetchQueue(depth=4, ahead=4)
    opener = Opener()
    a = q.lane(["a0", "a1", "a2"], [0, 0, 8], opener)
    b = q.lane(["b0", "b1"], [2, 10], opener)
    q.start(horizon=0)
    wait_for(lambda: len(opener.calls) >= 2)
    time.sleep(0.05)
    assert sorted(opener.calls) == ["a0", "a1"]
    q.release()
    wait_for(lambda: len(opener.calls) == 5)
    assert opener.calls[2:] == ["b0", "a2", "b1"]
    list(a), list(b)


def test_a_consumer_waiting_beyond_the_horizon_is_served() -> None:
    q = FetchQueue(depth=2, ahead=4)
    opener = Opener()
    b = q.lane(["b0", "b1"], [2, 10], opener)
    q.start(horizon=0)  # nothing is needed by 0: only a waiting consumer starts a fetch
    time.sleep(0.05)
    assert opener.calls == []
    assert [i for i, _ in b] == ["b0", "b1"]


def test_a_waiting_consumer_jumps_the_queue() -> None:
    gate = threading.Event()
    q = FetchQueue(depth=1, ahead=4)
    opener = Opener(gate=gate)
    a = q.lane(["a0", "a1", "a2"], [0, 1, 2], opener)
    b = q.lane(["b0"], [5], opener)
    q.start()
    wait_for(lambda: opener.calls == ["a0"])
    got: list = []
    t = threading.Thread(target=lambda: got.append(next(b)))
    t.start()  # b0 is needed now, before a1 and a2
    time.sleep(0.05)
    gate.set()
    t.join(5)
    assert got and got[0][0] == "b0"
    assert opener.calls[:2] == ["a0", "b0"]
    list(a)


def test_waits_are_counted() -> None:
    q = FetchQueue(depth=1, ahead=1)
    m = SourceMetrics()
    lane = q.lane(["a0", "a1"], [0, 1], Opener(delay=0.05), m)
    q.start()
    list(lane)
    assert m["prefetch_wait_s"] >= 0.05


def test_closing_early_closes_what_was_fetched_and_stops_the_threads() -> None:
    before = set(threading.enumerate())
    q = FetchQueue(depth=2, ahead=3)
    opener = Opener(delay=0.01)
    a = q.lane([f"a{i}" for i in range(10)], list(range(10)), opener)
    b = q.lane([f"b{i}" for i in range(10)], list(range(10)), opener)
    q.start()
    first = next(a)[1]
    q.close()
    wait_for(lambda: not any(t.name.startswith("wds-audio-fetch") for t in set(threading.enumerate()) - before))
    assert len(opener.opened) <= 2 + 3 + 3
    assert not first.closed  # the consumer owns what it was handed
    assert all(h.closed for h in opener.opened if h is not first)
    assert list(b) == []  # a closed lane ends


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="depth and ahead"):
        FetchQueue(depth=0, ahead=1)
    with pytest.raises(ValueError, match="needs"):
        FetchQueue(1, 1).lane(["a"], [], Opener())
