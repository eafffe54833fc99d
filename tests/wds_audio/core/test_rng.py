"""Per-sample randomness: reproducible from (seed, epoch, key, purpose), and uniform."""
from __future__ import annotations

from collections import Counter

import numpy as np

from wds_audio.core.rng import sample_rng, sample_uniform
from wds_audio.signal.shaping import crop_start


def test_sample_uniform_is_reproducible_and_differs_by_every_part() -> None:
    u = sample_uniform(0, 1, "clip", "crop0")
    assert 0.0 <= u < 1.0 and u == sample_uniform(0, 1, "clip", "crop0")
    others = {sample_uniform(1, 1, "clip", "crop0"), sample_uniform(0, 2, "clip", "crop0"),
              sample_uniform(0, 1, "clip2", "crop0"), sample_uniform(0, 1, "clip", "crop1")}
    assert u not in others and len(others) == 4


def test_sample_uniform_is_uniform() -> None:
    u = np.array([sample_uniform(0, 0, f"k{i}", "crop0") for i in range(20_000)])
    # Kolmogorov-Smirnov distance against U(0, 1): 1.63 / sqrt(n) is the 1 % critical value
    d = np.max(np.abs(np.sort(u) - (np.arange(1, len(u) + 1) - 0.5) / len(u)))
    assert d < 1.63 / np.sqrt(len(u))


def test_random_crops_reach_every_start_equally_often() -> None:
    # 5 possible starts (length 104, window 100), 10,000 clips: each start 2,000 +- 5 sigma (~200)
    starts = Counter(crop_start(104, 100, "random", sample_uniform(3, 0, f"clip{i}", "crop0")) for i in range(10_000))
    assert sorted(starts) == [0, 1, 2, 3, 4]
    assert all(abs(n - 2000) < 200 for n in starts.values()), starts
    assert crop_start(104, 100, "center", None) == 2 and crop_start(90, 100, "random", 0.99) == 0


def test_sample_rng_streams_are_reproducible() -> None:
    a = sample_rng(0, 1, "clip", "specaugment").random(4)
    assert np.array_equal(a, sample_rng(0, 1, "clip", "specaugment").random(4))
    assert not np.array_equal(a, sample_rng(0, 2, "clip", "specaugment").random(4))
