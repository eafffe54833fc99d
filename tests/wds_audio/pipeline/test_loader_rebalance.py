"""Rebalancing wired into the torch loader: target steering, same length, determinism, resume, budget."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import wds_audio
from wds_audio.pipeline.rebalance import Rebalance

BUDGET = 4 << 20


def _load(src: Path, rebalance, **kw):
    args = dict(split="train", batch_size=8, sample_rate=16000, clip_seconds=0.5, seed=5, rebalance=rebalance)
    args.update(kw)
    return wds_audio.loader(str(src), **args)


def _label_freq(loader) -> np.ndarray:
    counts = None
    for b in loader:
        c = b.targets.sum(0).numpy()
        counts = c if counts is None else counts + c
    return counts / counts.sum()


def test_uniform_target_moves_toward_uniform_with_the_same_length(demo_shards: Path) -> None:
    # one stream: the ~100 training clips of the fixture are too few to steer in 8 short streams
    natural = _load(demo_shards, None, streams=1)
    balanced = _load(demo_shards, Rebalance("uniform", buffer_bytes=BUDGET, max_reuse=8), streams=1)
    assert len(balanced) == len(natural)
    m = json.loads((demo_shards / "dataset.json").read_text())
    present = np.array(m["splits"]["train"]["class_counts"]) > 0
    uniform = present / present.sum()
    tv = lambda f: 0.5 * np.abs(f - uniform).sum()  # noqa: E731
    f_nat, f_bal = _label_freq(natural), _label_freq(balanced)
    assert tv(f_bal) < 0.8 * tv(f_nat)
    stats = balanced.metrics()["rebalance"]
    assert stats["samples_out"] == len(balanced) * 8
    assert stats["streams"] >= 1 and stats["peak_bytes"] <= stats["streams"] * BUDGET
    assert max(i for i, n in enumerate(stats["reuse_histogram"]) if n) <= 8


def test_rebalanced_batches_identical_across_workers_and_resume(demo_shards: Path) -> None:
    reb = Rebalance("sqrt", buffer_bytes=BUDGET, max_reuse=4)
    ref = [(b.keys, b.audio) for b in _load(demo_shards, reb, num_workers=0)]
    got = [(b.keys, b.audio) for b in _load(demo_shards, reb, num_workers=2)]
    assert [k for k, _ in got] == [k for k, _ in ref] and all(torch.equal(a, b) for (_, a), (_, b) in zip(got, ref))
    first = _load(demo_shards, reb)
    it = iter(first)
    for _ in range(4):
        next(it)
    resumed = _load(demo_shards, reb)
    resumed.load_state_dict(first.state_dict())
    assert [b.keys for b in resumed] == [k for k, _ in ref[4:]]


def test_bad_rebalance_config_fails_at_construction(demo_shards: Path) -> None:
    with pytest.raises(ValueError, match="no_such_class"):
        _load(demo_shards, Rebalance({"no_such_class": 1.0}))


def test_repeated_clips_get_their_own_crops(demo_shards: Path) -> None:
    """A clip emitted twice in an epoch (rebalancing repeat) is cropped independently each time."""
    loader = _load(demo_shards, Rebalance("uniform", buffer_bytes=BUDGET, max_reuse=8), streams=1, clip_seconds=0.25)
    seen: dict[str, list[torch.Tensor]] = {}
    draw_keys = set()
    for b in loader:
        draw_keys.update(b.draw_keys)
        for k, x, r in zip(b.keys, b.audio, b.repeats):
            seen.setdefault(k, []).append(x)
    repeated = {k: xs for k, xs in seen.items() if len(xs) > 1}
    assert repeated and len(draw_keys) == sum(len(xs) for xs in seen.values())  # every occurrence its own draws
    differ = sum(any(not torch.equal(xs[0], x) for x in xs[1:]) for xs in repeated.values())
    assert differ >= 0.8 * len(repeated)  # clips shorter than the window are the same whole clip
