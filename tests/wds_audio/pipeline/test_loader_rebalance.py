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


# --------------------------------------------------------------------------- a real long-tail set, 8 short streams

LONG_TAIL_COUNTS = [150, 147, 135, 115, 97, 67, 24]  # 735 clips in 7 classes: TV to uniform 127 / 735 = 0.173


@pytest.fixture(scope="module")
def long_tail_735(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Issue 21's set, from real recordings (../shared/audio-samples, 16 kHz FLAC): the rarest
    class is the 24 distinct clips of one sound-effect folder; each other class cycles through
    the recordings of three folders (60-72 distinct recordings, repeated under their own keys
    up to the class count). Packed by shardgen with its default shard size (one shard)."""
    from shardgen.records import Collection, Record
    from shardgen.writer import PackOptions, pack

    from tests.conftest import SHARED

    samples = SHARED / "audio-samples"
    if not (samples / "events").is_dir() or not (samples / "digits").is_dir():
        pytest.skip("../shared/audio-samples is not present")
    folders = [p for kind in ("events", "digits") for p in sorted((samples / kind).iterdir()) if p.is_dir()]
    pools = [folders[1 + 3 * k: 4 + 3 * k] for k in range(6)] + [[folders[0]]]
    classes = ["+".join(f"{d.parent.name}/{d.name}" for d in pool) for pool in pools]
    records = []
    for k, (n, pool) in enumerate(zip(LONG_TAIL_COUNTS, pools)):
        files = sorted(f for d in pool for f in d.glob("*.flac"))
        for i in range(n):
            f = files[i % len(files)]
            records.append(Record(key=f"c{k}_{i:03d}", source=f.relative_to(samples).as_posix(), path=f,
                                  labels=[k], split="train"))
    out = tmp_path_factory.mktemp("long-tail-735")
    pack(Collection("long-tail-735", classes, records), out, PackOptions(progress=False))
    return out


def test_uniform_target_on_short_streams_of_a_real_long_tail_set(long_tail_735: Path) -> None:
    """Issue 21 item 7: default Rebalance("uniform") and the loader's default 8 streams (23 batches of
    32: 96 clips a stream, 1-5 clips of the rarest class each) must reach TV <= 0.05 to uniform,
    <= 1/3 of the natural distance, and be as close as the offline WeightedRandomSampler.

    Before the fix: TV 0.053-0.074 over these six (seed, epoch) runs, mean 0.066. After: 0.016-0.026,
    mean 0.020. Where the bounds come from: 0.05 and 1/3 of natural (0.058) are the issue's targets,
    asserted for every run, not on average. The offline comparison is the mean of the six runs
    against the mean of 200 sampler draws of the same length (0.036; one draw's standard deviation
    is 0.011, so that mean is known to +-0.001), with no slack added. The reuse cap alone (24 clips
    x max_reuse 4 = 96 of the 105 a uniform epoch needs) already costs TV 0.012."""
    m = json.loads((long_tail_735 / "dataset.json").read_text())
    counts = np.array(m["splits"]["train"]["class_counts"], dtype=float)
    assert counts.tolist() == LONG_TAIL_COUNTS
    uniform = np.full(counts.size, 1 / counts.size)
    tv = lambda f: 0.5 * float(np.abs(f / f.sum() - uniform).sum())  # noqa: E731
    natural = tv(counts)
    assert natural == pytest.approx(0.173, abs=5e-4)
    got = []
    for seed in (0, 1, 2):
        loader = _load(long_tail_735, Rebalance("uniform"), seed=seed, batch_size=32, clip_seconds=0.25)
        assert loader.cfg.streams == 8 and len(loader) == 23
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            emitted = sum(b.targets.sum(0).numpy() for b in loader)
            assert emitted.sum() == 23 * 32
            got.append(tv(emitted))
    assert max(got) <= 0.05 and max(got) <= natural / 3, np.round(got, 4)
    # offline: AST-style clip weights 1 / n_c in torch's WeightedRandomSampler, the same 736 draws
    labels = np.repeat(np.arange(counts.size), counts.astype(int))
    weights = torch.tensor(1.0 / counts[labels], dtype=torch.double)
    offline = []
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        drawn = np.fromiter(torch.utils.data.WeightedRandomSampler(weights, 23 * 32, generator=g), dtype=np.int64)
        offline.append(tv(np.bincount(labels[drawn], minlength=counts.size).astype(float)))
    assert np.mean(got) <= np.mean(offline), (np.mean(got), np.mean(offline))
