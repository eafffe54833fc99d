"""Rebalancing stage: target reached on long-tail streams, budget, reuse, determinism, resume, bad input."""
from __future__ import annotations

import io
import math
import pickle
from collections import Counter
from itertools import count, islice
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wds_audio.pipeline.rebalance import Rebalance
from wds_audio.pipeline.reservoir import RebalanceStage, sample_nbytes

# --------------------------------------------------------------------------- helpers


def hot(labels: list[int], num_classes: int) -> bytes:
    v = np.zeros(num_classes, dtype=np.uint8)
    v[labels] = 1
    return v.tobytes()


def long_tail(n: int, num_classes: int, seed: int, exponent: float = 1.3, max_labels: int = 1,
              payload: int = 1000) -> tuple[list[dict], np.ndarray]:
    """A shuffled stream whose class popularity falls as rank**-exponent (1..max_labels labels each)."""
    rng = np.random.default_rng(seed)
    p = np.arange(1, num_classes + 1, dtype=float) ** -exponent
    p /= p.sum()
    samples, counts = [], np.zeros(num_classes)
    for i in range(n):
        k = int(rng.integers(1, max_labels + 1))
        labels = sorted(rng.choice(num_classes, size=k, replace=False, p=p).tolist())
        counts[labels] += 1
        size = payload + int(rng.integers(0, payload))
        samples.append({"__key__": f"clip{i:06d}", "__url__": "mem://train-000000.tar",
                        "flac": bytes(size), "json": b"{}", "labels": hot(labels, num_classes)})
    return samples, counts


def emitted_shares(out: list[dict], num_classes: int) -> np.ndarray:
    """Per-class label frequency of a stream, recounted from its label bytes (not from stats)."""
    e = np.zeros(num_classes)
    for s in out:
        e += np.frombuffer(s["labels"], dtype=np.uint8)
    return e / e.sum()


def tv(a: np.ndarray, b: np.ndarray) -> float:
    return 0.5 * float(np.abs(a - b).sum())


def power_target(counts: np.ndarray, alpha: float) -> np.ndarray:
    w = np.where(counts > 0, counts.astype(float) ** alpha, 0.0)
    return w / w.sum()


def trace(out: list[dict]) -> list[tuple[str, int]]:
    return [(s["__key__"], s["__repeat__"]) for s in out]


def names(c: int) -> list[str]:
    return [f"class{i}" for i in range(c)]


# --------------------------------------------------------------------------- configuration


def test_resolve_matches_the_power_law_by_hand():
    counts = [100, 25, 4, 1, 0]
    cls = names(5)
    assert Rebalance("natural").resolve(cls, counts) == pytest.approx([100 / 130, 25 / 130, 4 / 130, 1 / 130, 0])
    assert Rebalance("sqrt").resolve(cls, counts) == pytest.approx([10 / 18, 5 / 18, 2 / 18, 1 / 18, 0])
    # a class without clips gets no target mass, even at alpha 0
    assert Rebalance("uniform").resolve(cls, counts) == pytest.approx([0.25, 0.25, 0.25, 0.25, 0])
    assert Rebalance(0.25).resolve(cls, counts) == pytest.approx(power_target(np.array(counts), 0.25))
    assert Rebalance({"class0": 3, "class3": 1}).resolve(cls, None) == pytest.approx([0.75, 0, 0, 0.25, 0])
    assert Rebalance("sqrt").resolve(cls, None) is None  # counted online by the stage


@pytest.mark.parametrize("config, match", [
    (Rebalance({"class0": 1, "Speech": 2}), r"unknown classes \['Speech'\]"),
    (Rebalance({"class0": -1}), r"target\['class0'\] must be a finite weight >= 0"),
    (Rebalance({"class0": 0}), "at least one class weight must be > 0"),
    (Rebalance(1.5), r"alpha must be in \[0, 1\]"),
    (Rebalance(-0.1), r"alpha must be in \[0, 1\]"),
    (Rebalance(float("nan")), r"alpha must be in \[0, 1\]"),
    (Rebalance("sqroot"), "unknown name 'sqroot'"),
    (Rebalance(True), "expected a name, a float alpha or a dict"),
    (Rebalance(ratio=0), "ratio must be a positive finite number"),
    (Rebalance(ratio=-1.0), "ratio must be a positive finite number"),
    (Rebalance(ratio=5.0, max_reuse=4), r"ratio=5.0 > max_reuse=4"),
    (Rebalance(max_reuse=0), "max_reuse must be an int >= 1"),
    (Rebalance(buffer_bytes=0), "buffer_bytes must be a positive int"),
    (Rebalance(buffer_bytes=1.5e6), "buffer_bytes must be a positive int"),
    (Rebalance(floor=2.0), r"floor must be in \[0, 1\]"),
    (Rebalance(prefer_fresh=-1.0), "prefer_fresh must be a finite number >= 0"),
])
def test_bad_configuration_is_a_clear_error(config, match):
    with pytest.raises(ValueError, match=match):
        RebalanceStage(config, names(4), [10, 5, 2, 1], seed=0)


@pytest.mark.parametrize("counts, match", [
    ([1, 2, 3], r"shape \(3,\), expected \(4,\)"),
    ([1, -2, 3, 4], "finite and >= 0"),
    ([0, 0, 0, 0], "all zero"),
])
def test_bad_class_counts_are_a_clear_error(counts, match):
    with pytest.raises(ValueError, match=match):
        RebalanceStage(Rebalance(), names(4), counts, seed=0)


def test_a_sample_larger_than_the_whole_budget_names_the_file():
    stage = RebalanceStage(Rebalance(buffer_bytes=10_000), names(3), None, seed=0)
    small = {"__key__": "ok", "__url__": "s3://b/train-000001.tar", "flac": bytes(100), "labels": hot([0], 3)}
    big = {"__key__": "huge", "__url__": "s3://b/train-000001.tar", "flac": bytes(20_000), "labels": hot([1], 3)}
    with pytest.raises(ValueError, match=r"s3://b/train-000001.tar key 'huge': sample is 20\d\d\d bytes, larger "
                                         r"than Rebalance.buffer_bytes=10000"):
        list(stage(iter([small, big])))


def test_sample_size_counts_only_bytes_values():
    s = {"__key__": "k", "__url__": "u", "flac": b"abc", "json": bytearray(b"{}"), "labels": memoryview(b"\x01\x00")}
    assert sample_nbytes(s) == 3 + 2 + 2


# --------------------------------------------------------------------------- reaching the target


@pytest.mark.parametrize("target, alpha", [("uniform", 0.0), ("sqrt", 0.5)])
def test_single_label_long_tail_reaches_the_target(target, alpha):
    c = 12
    stream, counts = long_tail(4000, c, seed=1)
    q = power_target(counts, alpha)
    stage = RebalanceStage(Rebalance(target, max_reuse=8, buffer_bytes=400_000), names(c), counts.tolist(), seed=3)
    out = list(stage(iter(stream)))
    shares = emitted_shares(out, c)
    natural = counts / counts.sum()
    assert len(out) == len(stream)
    assert tv(shares, q) < 0.25 * tv(natural, q)
    ratio = shares / q
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio.round(2)
    # the stage's own counters agree with a recount of what came out
    assert np.allclose(np.array(stage.stats()["emitted_counts"]) / sum(stage.stats()["emitted_counts"]), shares)


def test_multi_label_long_tail_beats_natural_order_and_offline_weighting():
    c = 20
    stream, counts = long_tail(5000, c, seed=2, max_labels=3)
    q = power_target(counts, 0.5)
    stage = RebalanceStage(Rebalance("sqrt"), names(c), counts.tolist(), seed=0)
    shares = emitted_shares(list(stage(iter(stream))), c)
    natural = counts / counts.sum()
    # AST-style offline reference: clip weight = sum over its labels of n_c**(alpha-1), expectation exactly
    hots = np.stack([np.frombuffer(s["labels"], dtype=np.uint8) for s in stream]).astype(float)
    w = hots @ np.where(counts > 0, counts ** -0.5, 0.0)
    weighted = w @ hots
    weighted /= weighted.sum()
    assert tv(shares, q) < 0.5 * tv(natural, q)
    assert tv(shares, q) < tv(weighted, q)


def test_class_counts_estimated_online_work_about_as_well():
    c = 12
    stream, counts = long_tail(4000, c, seed=4, max_labels=2)
    q = power_target(counts, 0.5)
    known = emitted_shares(list(RebalanceStage(Rebalance(), names(c), counts.tolist(), 0)(iter(stream))), c)
    online_stage = RebalanceStage(Rebalance(), names(c), None, 0)
    online = emitted_shares(list(online_stage(iter(stream))), c)
    assert tv(online, q) < 0.5 * tv(counts / counts.sum(), q)
    assert tv(online, q) < tv(known, q) + 0.03
    assert online_stage.stats()["target"] == pytest.approx(q.tolist(), rel=0.02)  # the estimate converged


def test_dict_target_steers_towards_the_named_classes():
    c = 6
    stream, counts = long_tail(3000, c, seed=5)
    stage = RebalanceStage(Rebalance({"class4": 1.0, "class5": 1.0, "class0": 2.0}, max_reuse=8),
                           names(c), counts.tolist(), seed=0)
    shares = emitted_shares(list(stage(iter(stream))), c)
    q = np.array([0.5, 0, 0, 0, 0.25, 0.25])
    assert tv(shares, q) < 0.5 * tv(counts / counts.sum(), q)
    assert shares[4] > 2 * counts[4] / counts.sum() and shares[5] > 2 * counts[5] / counts.sum()


def parent_child_stream(n: int = 3000) -> tuple[list[dict], np.ndarray]:
    """30 classes: 'class0' (parent) alone in 75 % of clips; five children that only ever appear
    with the parent (10 %); 24 other classes alone (15 %)."""
    c = 30
    rng = np.random.default_rng(7)
    stream, counts = [], np.zeros(c)
    for i in range(n):
        u = rng.random()
        if u < 0.10:
            labels = [0, int(rng.integers(1, 6))]
        elif u < 0.85:
            labels = [0]
        else:
            labels = [int(rng.integers(6, c))]
        counts[labels] += 1
        stream.append({"__key__": f"k{i}", "flac": bytes(500), "labels": hot(labels, c)})
    return stream, counts


@pytest.mark.parametrize("floor", [0.0, 0.75, 1.0])
def test_a_class_that_only_rides_with_a_frequent_one_is_not_starved(floor):
    """Under a uniform target every child clip also serves the far over-represented parent, so
    a pure distance-greedy rule pushes the children below even their natural rate although their
    target is ~1.8x natural. The guard keeps each child above floor * min(target, natural)."""
    stream, counts = parent_child_stream()
    q, natural = power_target(counts, 0.0), counts / counts.sum()
    stage = RebalanceStage(Rebalance("uniform", floor=floor), names(30), counts.tolist(), seed=0)
    shares = emitted_shares(list(stage(iter(stream))), 30)
    children = slice(1, 6)
    assert np.all(q[children] > 1.5 * natural[children])  # the children should be boosted
    assert shares[0] < 0.6 * natural[0]  # the parent is thinned in every case
    if floor == 0:  # what the guard is for: without it the children sink below natural
        assert np.min(shares[children] / natural[children]) < 0.7
    else:
        guaranteed = floor * np.minimum(q[children], natural[children])
        assert np.all(shares[children] >= 0.97 * guaranteed), (shares[children] / guaranteed).round(3)


def test_a_rare_class_met_early_keeps_its_clips_for_later():
    """A short stream (96 inputs, 7 classes) whose only two clips of the rarest class come 7th and
    8th. Right then one emission each puts that class on target (q E is about 1), so a rule that
    holds clips only while they help *now* let both go after one use (it did: 1 and 1, TV 0.122 of
    natural 0.140). The class needs ~7x its natural rate all stream long, so both are kept until
    max_reuse: exactly 4 uses each."""
    c = 7
    rng = np.random.default_rng(0)
    p = np.array([150, 147, 135, 115, 97, 67], dtype=float)  # issue 21's set without its rarest class
    labels = rng.choice(6, size=96, p=p / p.sum()).tolist()
    labels[6] = labels[7] = 6
    stream = [{"__key__": f"k{i}", "flac": bytes(1000), "labels": hot([l], c)} for i, l in enumerate(labels)]
    counts = np.bincount(labels, minlength=c).astype(float)
    stage = RebalanceStage(Rebalance("uniform"), names(c), counts.tolist(), seed=0)
    out = list(stage(iter(stream)))
    uses = Counter(s["__key__"] for s in out)
    assert (uses["k6"], uses["k7"]) == (4, 4)


@pytest.mark.parametrize("max_labels, alpha", [(1, 0.0), (3, 0.5)])
def test_short_streams_add_up_to_the_target(max_labels, alpha):
    """The loader runs one stage per stream (8 per rank by default) and the epoch is their sum. A
    stream aiming at q itself falls short where it drew few clips of a rare class and stops at q
    where it drew many, so the shortfalls add up: 8 streams were 0.085-0.093 TV worse than one
    stream over the same input (10 seeds of these two long tails). Each stream now aims at its own
    share of the target; measured over the same 10 seeds the 8 streams are at most 0.018 worse than
    one, and at most 0.22 of the natural distance. The bounds (0.03, 1/4) sit between the two."""
    c, n = (12, 1000) if max_labels == 1 else (20, 1200)
    stream, counts = long_tail(n, c, seed=21, max_labels=max_labels)
    q = power_target(counts, alpha)
    parts = []
    for worker, idx in enumerate(np.array_split(np.arange(n), 8)):  # contiguous runs, as the plan cuts them
        stage = RebalanceStage(Rebalance(alpha), names(c), counts.tolist(), seed=0)
        parts += list(stage(iter([stream[i] for i in idx]), worker=worker))
    one = list(RebalanceStage(Rebalance(alpha), names(c), counts.tolist(), seed=0)(iter(stream)))
    assert len(parts) == len(one) == n
    eight_tv, one_tv = tv(emitted_shares(parts, c), q), tv(emitted_shares(one, c), q)
    assert eight_tv <= one_tv + 0.03, (eight_tv, one_tv)
    assert eight_tv <= 0.25 * tv(counts / counts.sum(), q)


# --------------------------------------------------------------------------- bounds


def test_buffer_never_exceeds_the_budget_and_is_used():
    c = 10
    stream, counts = long_tail(3000, c, seed=8, max_labels=2, payload=2000)
    budget = 25_000  # a handful of samples
    stage = RebalanceStage(Rebalance("uniform", buffer_bytes=budget), names(c), counts.tolist(), seed=0)
    held = []
    for _ in stage(iter(stream)):
        s = stage.stats()
        held.append(s["bytes_held"])
        assert s["bytes_held"] <= budget
    s = stage.stats()
    assert max(held) <= s["peak_bytes"] <= budget
    assert max(held) > budget // 2 and s["repeats"] > 100


@pytest.mark.parametrize("max_reuse", [1, 2, 3])
def test_max_reuse_bounds_every_clip(max_reuse):
    c = 10
    stream, counts = long_tail(2000, c, seed=9, max_labels=2)
    stage = RebalanceStage(Rebalance("uniform", max_reuse=max_reuse), names(c), counts.tolist(), seed=0)
    out = list(stage(iter(stream)))
    uses = Counter(s["__key__"] for s in out)
    assert max(uses.values()) == max_reuse  # reached (the tail needs it) but never exceeded
    seen: Counter[str] = Counter()
    for s in out:  # __repeat__ numbers each clip's emissions 0, 1, 2, ...
        assert s["__repeat__"] == seen[s["__key__"]]
        seen[s["__key__"]] += 1
    hist = stage.stats()["reuse_histogram"]
    assert len(hist) == max_reuse + 1 and sum(k * n for k, n in enumerate(hist)) == len(out)


@pytest.mark.parametrize("ratio", [1.0, 0.5, 0.3, 1.5, 2.0])
def test_exactly_floor_ratio_times_valid_inputs_come_out(ratio):
    c = 6
    stream, counts = long_tail(999, c, seed=10, max_labels=2)
    bad = [{"__key__": f"bad{i}", "labels": b"\x01"} for i in range(7)]
    mixed = stream[:500] + bad + stream[500:]
    stage = RebalanceStage(Rebalance("uniform", ratio=ratio), names(c), counts.tolist(), seed=0)
    out = list(stage(iter(mixed)))
    assert len(out) == math.floor(ratio * len(stream) + 1e-9)
    s = stage.stats()
    assert (s["samples_in"], s["samples_valid"], s["samples_out"]) == (len(mixed), len(stream), len(out))
    assert sum(s["reuse_histogram"]) == len(stream)
    # never emitted = dropped for good + still held unused
    assert s["dropped"] <= s["reuse_histogram"][0] <= s["dropped"] + s["held"]


# --------------------------------------------------------------------------- bad and empty input


def test_bad_label_bytes_are_skipped_by_reason_never_emitted():
    c = 4
    good = [{"__key__": f"g{i}", "flac": b"x", "labels": hot([i % c], c)} for i in range(40)]
    bad = [
        {"__key__": "short", "__url__": "gs://b/train-000003.tar", "flac": b"x", "labels": b"\x01\x00"},
        {"__key__": "long", "flac": b"x", "labels": bytes(5)},
        {"__key__": "two", "flac": b"x", "labels": bytes([0, 2, 0, 0])},
        {"__key__": "missing", "flac": b"x"},
        {"__key__": "text", "flac": b"x", "labels": "0100"},
        None,
        ("tuple", b"x"),
    ]
    stage = RebalanceStage(Rebalance("uniform"), names(c), None, seed=0)
    out = list(stage(iter(good[:20] + bad + good[20:])))
    assert {s["__key__"] for s in out} <= {s["__key__"] for s in good}
    assert len(out) == len(good)
    assert stage.stats()["skipped"] == {"labels_length": 2, "labels_values": 1, "missing_labels": 1,
                                        "labels_not_bytes": 1, "not_a_dict": 2}
    examples = stage.stats()["skipped_examples"]
    assert examples["labels_length"] == ["gs://b/train-000003.tar key 'short'", "? key 'long'"]
    assert examples["labels_values"] == ["? key 'two'"]


@pytest.mark.parametrize("ratio", [1.0, 2.0])
def test_empty_label_vectors_pass_through_at_the_natural_rate(ratio):
    c = 5
    stream, counts = long_tail(1000, c, seed=11)
    rng = np.random.default_rng(0)
    empties = [{"__key__": f"empty{i}", "flac": bytes(300), "labels": bytes(c)} for i in range(100)]
    mixed = list(stream)
    for i, e in enumerate(empties):
        mixed.insert(int(rng.integers(len(mixed))), e)
    stage = RebalanceStage(Rebalance("uniform", ratio=ratio, max_reuse=4), names(c), counts.tolist(), seed=0)
    out = list(stage(iter(mixed)))
    empty_out = Counter(s["__key__"] for s in out if s["__key__"].startswith("empty"))
    assert empty_out == {e["__key__"]: int(ratio) for e in empties}
    assert stage.stats()["samples_empty"] == 100 and stage.stats()["skipped"] == {}


# --------------------------------------------------------------------------- determinism, resume, laziness


def test_same_seed_epoch_worker_gives_the_same_stream_and_others_differ():
    c = 10
    stream, counts = long_tail(1500, c, seed=12, max_labels=3)

    def run(seed: int, epoch: int, worker: int) -> list[tuple[str, int]]:
        stage = RebalanceStage(Rebalance("uniform", buffer_bytes=30_000), names(c), counts.tolist(), seed)
        return trace(list(stage(iter(stream), epoch=epoch, worker=worker)))

    a = run(0, 1, 2)
    assert a == run(0, 1, 2)
    assert a != run(0, 2, 2) and a != run(0, 1, 3) and a != run(1, 1, 2)


@pytest.mark.parametrize("ratio, cuts", [(1.0, [1, 333, 1000]), (1.5, [7, 500, 1001])])
def test_state_dict_resumes_exactly(ratio, cuts):
    c = 10
    stream, counts = long_tail(1200, c, seed=13, max_labels=3)
    config = Rebalance("uniform", ratio=ratio, buffer_bytes=40_000)
    full = trace(list(RebalanceStage(config, names(c), counts.tolist(), 5)(iter(stream), epoch=3, worker=1)))
    for cut in cuts:
        first = RebalanceStage(config, names(c), counts.tolist(), 5)
        gen = first(iter(stream), epoch=3, worker=1)
        head = trace(list(islice(gen, cut)))
        buf = io.BytesIO()
        torch.save(first.state_dict(), buf)  # as a loader checkpoint would store it
        state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)  # plain values only
        second = RebalanceStage(config, names(c), counts.tolist(), 5)
        second.load_state_dict(state)
        rest = second(iter(stream[state["stream"]["samples_in"]:]), epoch=3, worker=1)
        assert head + trace(list(rest)) == full, f"cut at {cut}"
        assert second.stats()["samples_out"] == len(full)


def test_replaying_the_input_reproduces_the_output_for_resume_by_replay():
    c = 8
    stream, counts = long_tail(800, c, seed=14, max_labels=2)
    config = Rebalance("sqrt", buffer_bytes=20_000)
    stage = RebalanceStage(config, names(c), None, 9)
    full = trace(list(stage(iter(stream), epoch=1)))
    stage2 = RebalanceStage(config, names(c), None, 9)
    replay = stage2(iter(stream), epoch=1)
    skipped = list(islice(replay, 300))  # a loader would drop these without decoding
    assert trace(skipped) + trace(list(replay)) == full


def test_loading_a_state_for_another_epoch_or_config_is_refused():
    c = 4
    stream, counts = long_tail(50, c, seed=15)
    stage = RebalanceStage(Rebalance("uniform"), names(c), counts.tolist(), 0)
    list(islice(stage(iter(stream), epoch=2), 10))
    state = pickle.loads(pickle.dumps(stage.state_dict()))
    other = RebalanceStage(Rebalance("uniform"), names(c), counts.tolist(), 0)
    other.load_state_dict(state)
    with pytest.raises(ValueError, match="loaded state is for epoch 2 worker 0, not epoch 3 worker 0"):
        other(iter(stream), epoch=3)
    with pytest.raises(ValueError, match="another configuration"):
        RebalanceStage(Rebalance("sqrt"), names(c), counts.tolist(), 0).load_state_dict(state)


def test_the_stage_reads_its_input_lazily():
    c = 5
    pulled = []

    def endless():
        rng = np.random.default_rng(0)
        for i in count():
            pulled.append(i)
            yield {"__key__": f"k{i}", "flac": bytes(100), "labels": hot([min(int(rng.zipf(1.5)) - 1, c - 1)], c)}

    stage = RebalanceStage(Rebalance("uniform"), names(c), None, seed=0)
    gen = stage(endless())
    next(gen)
    assert len(pulled) == 1
    out = list(islice(gen, 199))
    assert len(out) == 199 and len(pulled) == 200  # one in per one out: nothing read ahead


def test_emitted_samples_are_copies_so_later_stages_may_change_them():
    c = 3
    stream = [{"__key__": f"k{i}", "flac": bytes(10), "labels": hot([0 if i % 10 else 2], c)} for i in range(300)]
    stage = RebalanceStage(Rebalance("uniform"), names(c), None, seed=0)
    out = []
    for s in stage(iter(stream)):
        out.append((s["__key__"], s["__repeat__"], s["flac"]))
        s.pop("flac")  # e.g. a decode stage replacing the bytes by an array
    assert any(r > 0 for _, r, _ in out)  # repeats happened ...
    assert all(f == bytes(10) for _, _, f in out)  # ... and still carried their bytes
    assert all("flac" in s for s in stream)


# --------------------------------------------------------------------------- real shards, real audio


@pytest.mark.numeric
def test_as_a_webdataset_stage_on_real_flac_shards(tmp_path: Path):
    import webdataset as wds

    c, sr = 4, 16000
    rng = np.random.default_rng(0)
    audio, classes_of = {}, {}
    with wds.TarWriter(str(tmp_path / "train-000000.tar")) as sink:
        for i in range(120):
            label = 0 if i % 4 else int(rng.integers(1, c))  # class 0 in 3 of 4 clips
            x = (0.2 * np.sin(2 * np.pi * (200 + 50 * i) * np.arange(sr // 10) / sr)).astype(np.float32)
            buf = io.BytesIO()
            sf.write(buf, x, sr, format="FLAC")
            key = f"clip{i:04d}"
            audio[key], classes_of[key] = x, label
            sink.write({"__key__": key, "flac": buf.getvalue(), "json": b'{"labels": []}', "labels": hot([label], c)})
    stage = RebalanceStage(Rebalance("uniform", max_reuse=4), names(c), None, seed=0)
    pipeline = wds.DataPipeline(wds.SimpleShardList(str(tmp_path / "train-000000.tar")), wds.tarfile_to_samples(),
                                stage)
    out = list(pipeline)
    assert len(out) == 120
    assert Counter(classes_of[s["__key__"]] == 0 for s in out)[True] < 60  # class 0 thinned from 90
    for s in out:  # every sample, repeats included, still decodes to its own audio
        y, rate = sf.read(io.BytesIO(s["flac"]), dtype="float32")
        assert rate == sr and np.allclose(y, audio[s["__key__"]], atol=1e-4)
        assert s["__url__"].endswith("train-000000.tar")


# --------------------------------------------------------------------------- invariants on random streams

labels_strategy = st.lists(st.lists(st.integers(0, 5), max_size=3, unique=True), min_size=1, max_size=80)


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(labels=labels_strategy, ratio=st.sampled_from([0.5, 1.0, 1.7]), max_reuse=st.integers(2, 4),
       budget=st.integers(120, 3000), target=st.sampled_from(["uniform", "sqrt", "natural", 0.2]),
       sizes=st.integers(10, 100), seed=st.integers(0, 3))
def test_invariants_hold_on_any_stream(labels, ratio, max_reuse, budget, target, sizes, seed):
    c = 6
    stream = [{"__key__": f"k{i}", "flac": bytes(sizes + i % 7), "labels": hot(l, c)} for i, l in enumerate(labels)]
    stage = RebalanceStage(Rebalance(target, ratio=ratio, max_reuse=max_reuse, buffer_bytes=budget),
                           names(c), None, seed)
    out = []
    for s in stage(iter(stream)):
        out.append(s)
        assert stage.stats()["bytes_held"] <= budget
    assert len(out) == math.floor(ratio * len(stream) + 1e-9)
    assert max(Counter(s["__key__"] for s in out).values(), default=0) <= max_reuse
    s = stage.stats()
    assert s["peak_bytes"] <= budget
    assert sum(s["reuse_histogram"]) == len(stream)
    assert sum(k * n for k, n in enumerate(s["reuse_histogram"])) == len(out)
    e = np.zeros(c)
    for o in out:
        e += np.frombuffer(o["labels"], dtype=np.uint8)
    assert e.astype(int).tolist() == s["emitted_counts"]
