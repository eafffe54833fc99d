"""wds_audio.core.threads: ordered results whatever the width, errors at their item, the start gate."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from wds_audio.core.threads import EpochStart, TailWidth, ordered_map


@pytest.mark.parametrize("width", [1, 2, 5])
def test_ordered_map_keeps_order_when_calls_finish_out_of_order(width: int) -> None:
    def slow_first(i: int) -> int:
        time.sleep(0.02 if i % 3 == 0 else 0.0)
        return i * 10
    assert list(ordered_map(range(12), slow_first, lambda i: width)) == [i * 10 for i in range(12)]


def test_ordered_map_runs_calls_at_once_up_to_the_width() -> None:
    active, peak, lock = [0], [0], threading.Lock()

    def f(i: int) -> int:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return i
    assert list(ordered_map(range(8), f, lambda i: 4 if i < 4 else 1)) == list(range(8))
    assert 2 <= peak[0] <= 4


def test_ordered_map_width_one_calls_inline_lazily() -> None:
    seen = []
    it = ordered_map(range(5), lambda i: seen.append(i) or i, lambda i: 1)
    assert next(it) == 0 and seen == [0]  # nothing read ahead


def test_ordered_map_raises_at_the_failing_item() -> None:
    def f(i: int) -> int:
        if i == 3:
            raise KeyError(i)
        return i
    it = ordered_map(range(6), f, lambda i: 3)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(KeyError):
        next(it)


def test_epoch_start_gate_opens_when_the_lead_is_done() -> None:
    flag = torch.zeros(1, dtype=torch.int64)
    lead = EpochStart(flag, lead=True, threads=4)
    gated = EpochStart(flag, gated=True, max_wait_s=5.0)
    assert lead.first_threads() == 4 and gated.first_threads() == 1
    threading.Timer(0.1, lead.done).start()
    t0 = time.perf_counter()
    gated.wait()
    assert 0.05 < time.perf_counter() - t0 < 2.0 and int(flag[0]) == 1


def test_epoch_start_gate_gives_up_after_its_cap() -> None:
    t0 = time.perf_counter()
    EpochStart(torch.zeros(1, dtype=torch.int64), gated=True, max_wait_s=0.2).wait()
    assert 0.15 < time.perf_counter() - t0 < 1.5


def test_tail_width_shares_the_cpus_among_the_workers_still_working() -> None:
    flags = torch.zeros(3, dtype=torch.uint8)
    width = TailWidth(flags, cpus=6)
    assert width() == 2
    width.mark(1)
    assert width() == 3
    width.mark(0)
    assert width() == 6
    width.mark(2)
    assert width() == 6  # nobody left: never 0 or a division by zero
    assert TailWidth(torch.zeros(4, dtype=torch.uint8), cpus=2)() == 1  # more workers than CPUs


def test_cpu_width_is_scoped_to_its_block() -> None:
    from wds_audio.core.threads import cpu_width, cpu_width_now

    assert cpu_width_now() == 1
    with cpu_width(4):
        assert cpu_width_now() == 4
        with cpu_width(0):
            assert cpu_width_now() == 1  # never fewer than one thread
        assert cpu_width_now() == 4
    assert cpu_width_now() == 1
