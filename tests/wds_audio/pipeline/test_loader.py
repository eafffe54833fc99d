"""The torch back end end to end on real shards: determinism, ranks, resume, bad data, shaping."""
from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

import wds_audio
from wds_audio.pipeline.samples import SampleError

pytestmark = pytest.mark.numeric  # float tolerances: also run by `make test-isa`


def _load(src: Path, **kw):
    args = dict(split="train", batch_size=8, sample_rate=16000, clip_seconds=1.0, seed=3)
    args.update(kw)
    return wds_audio.loader(str(src), **args)


def _epoch(loader) -> list:
    return [(b.keys, b.audio.clone(), b.targets.clone(), b.lengths.clone(), b.valid.clone()) for b in loader]


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x[0] == y[0] and all(torch.equal(p, q) for p, q in zip(x[1:], y[1:]))
                                    for x, y in zip(a, b))


def _decoded(src: Path) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Every clip of the dataset decoded straight from the tars: the reference."""
    m = json.loads((src / "dataset.json").read_text())
    out = {}
    for sp in m["splits"].values():
        for s in sp["shards"]:
            tf = tarfile.open(src / s["path"])
            for mem in tf.getmembers():
                key, ext = mem.name.split(".", 1)
                if ext in ("flac", "wav"):
                    x, _ = sf.read(io.BytesIO(tf.extractfile(mem).read()), dtype="float32")
                    out.setdefault(key, [None, None])[0] = x
                if ext == "json":
                    out.setdefault(key, [None, None])[1] = json.loads(tf.extractfile(mem).read())["labels"]
    return {k: (v[0], v[1]) for k, v in out.items()}


def test_batches_identical_for_0_1_2_4_workers(demo_shards: Path) -> None:
    ref = _epoch(_load(demo_shards, num_workers=0))
    for nw in (1, 2, 4):
        assert _same(_epoch(_load(demo_shards, num_workers=nw)), ref), f"num_workers={nw} differs"


@pytest.mark.parametrize("training", [True, False])
def test_batches_identical_when_workers_do_not_divide_streams(demo_shards: Path, training: bool) -> None:
    """8 streams over 3 workers: the streams stay 8 (they used to become 9, with other batches),
    also when resuming mid-epoch and with persistent workers over two epochs."""
    kw = dict(batch_size=4, training=training)
    ref = _load(demo_shards, num_workers=0, **kw)
    want = [_epoch(ref), _epoch(ref)]
    three = _load(demo_shards, num_workers=3, persistent_workers=True, **kw)
    assert three.cfg.streams == 8
    assert _same(_epoch(three), want[0]) and _same(_epoch(three), want[1])
    resumed = _load(demo_shards, num_workers=3, **kw)
    resumed.load_state_dict({**resumed.state_dict(), "batches": 5})
    assert _same(_epoch(resumed), want[0][5:])


@pytest.mark.parametrize("streams,workers", [(8, 3), (8, 5), (8, 7), (3, 2), (5, 4), (8, 4), (1, 3)])
def test_worker_turns_bring_the_epoch_in_order(streams: int, workers: int) -> None:
    from wds_audio.pipeline.loader import worker_slots

    for batches in (0, 1, 7, 29):
        for start in sorted({0, 1, batches // 2, max(batches - 1, 0)}):
            slots = worker_slots(batches, streams, start, workers)
            assert len({len(x) for x in slots}) == 1  # the same number of turns for every worker
            turns = [slots[t % workers][t // workers] for t in range(workers * len(slots[0]))]
            assert [i for i in turns if i >= 0] == list(range(start, batches))
            assert all((i % streams) % workers == t % workers for t, i in enumerate(turns) if i >= 0)
            assert turns.count(-1) < workers * (-(-streams // workers)) * (1 + batches // streams) + workers


def test_batch_contents_are_real_crops_with_right_targets(demo_shards: Path) -> None:
    ref = _decoded(demo_shards)
    loader = _load(demo_shards)
    classes = loader.classes
    n = 0
    for b in loader:
        assert b.audio.dtype == torch.float32 and b.audio.shape == (8, 16000) and b.targets.shape == (8, len(classes))
        for key, x, t, length in zip(b.keys, b.audio, b.targets, b.lengths):
            full, labels = ref[key]
            assert sorted(torch.nonzero(t).flatten().tolist()) == labels
            w = x[:length].numpy()
            starts = [i for i in range(len(full) - len(w) + 1) if full[i] == w[0] and np.array_equal(full[i:i + len(w)], w)]
            assert starts, f"{key}: batch audio is not a window of the clip"
            n += 1
    assert n == len(loader) * 8


def test_epochs_differ_and_len_known_before_iterating(demo_shards: Path) -> None:
    loader = _load(demo_shards)
    n = len(loader)
    e0 = [k for b in loader for k in b.keys]
    e1 = [k for b in loader for k in b.keys]  # the loader moves to the next epoch by itself
    loader.set_epoch(0)
    again = [k for b in loader for k in b.keys]
    assert len(e0) == n * 8 and e0 != e1 and e0 == again


def test_two_ranks_evaluation_sees_every_sample_once(demo_shards: Path) -> None:
    ref = _decoded(demo_shards)
    m = json.loads((demo_shards / "dataset.json").read_text())
    want = m["splits"]["train"]["samples"]
    seen, counts = Counter(), []
    for rank in (0, 1):
        loader = _load(demo_shards, training=False, rank=rank, world_size=2, clip_seconds=None, batch_size=7)
        batches = list(loader)
        counts.append(len(batches))
        assert len(batches) == len(loader)
        for b in batches:
            for key, x, length, valid in zip(b.keys, b.audio, b.lengths, b.valid):
                if valid:
                    seen[key] += 1
                    np.testing.assert_array_equal(x[:length].numpy(), ref[key][0])  # full clip, untouched
                    assert not x[length:].any()
    assert counts[0] == counts[1]
    assert sum(seen.values()) == want and set(seen.values()) == {1}


def test_training_ranks_get_equal_full_batches(demo_shards: Path) -> None:
    lens = [len(list(_load(demo_shards, rank=r, world_size=3, batch_size=5))) for r in range(3)]
    assert len(set(lens)) == 1


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_gives_identical_batches(demo_shards: Path, workers: int) -> None:
    full = _epoch(_load(demo_shards, num_workers=workers))
    first = _load(demo_shards, num_workers=workers)
    it = iter(first)
    head = [next(it) for _ in range(5)]
    state = first.state_dict()
    assert state["batches"] == 5
    resumed = _load(demo_shards, num_workers=workers)
    resumed.load_state_dict(state)
    rest = _epoch(resumed)
    assert [b.keys for b in head] == [x[0] for x in full[:5]]
    assert _same(rest, full[5:])


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("streams", [1, 8])
def test_resume_reads_only_what_was_not_consumed(demo_shards: Path, monkeypatch: pytest.MonkeyPatch,
                                                 training: bool, streams: int) -> None:
    """A resume at 90 % of an epoch reads each sample the epoch has not handed out yet and, in
    training, those still in the shuffle buffer: at most the unconsumed samples plus one buffer
    per stream. It used to read (without decoding) the whole consumed part again."""
    from wds_audio.pipeline.shards import ShardReader

    read = [0]
    samples = ShardReader.samples

    def counting(self, f, skip, sl):
        for s in samples(self, f, skip, sl):
            read[0] += 1
            yield s

    kw = dict(batch_size=4, training=training, streams=streams, shuffle_buffer=16, eval_crop="full")
    full = _epoch(_load(demo_shards, **kw))
    monkeypatch.setattr(ShardReader, "samples", counting)
    at = len(full) * 9 // 10
    resumed = _load(demo_shards, **kw)
    resumed.load_state_dict({**resumed.state_dict(), "batches": at})
    rest = _epoch(resumed)
    assert _same(rest, full[at:])
    left = (len(full) - at) * 4
    assert left <= read[0] <= left + (16 * streams if training else 0), read[0]


def test_resume_refuses_other_settings(demo_shards: Path) -> None:
    state = _load(demo_shards).state_dict()
    with pytest.raises(ValueError, match="seed"):
        _load(demo_shards, seed=4).load_state_dict(state)


def _rewrite_shard(path: Path, change) -> str:
    """Rewrite a tar member by member; ``change(name, data)`` returns new bytes or None to drop."""
    src = tarfile.open(path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as dst:
        for m in src.getmembers():
            data = change(m.name, src.extractfile(m).read())
            if data is not None:
                m.size = len(data)
                dst.addfile(m, io.BytesIO(data))
    path.write_bytes(buf.getvalue())


@pytest.fixture
def damaged(demo_shards: Path, tmp_path: Path) -> tuple[Path, str, str]:
    """A copy with one undecodable clip and one member without audio (indexes rewritten)."""
    from shardgen.tarfmt import index_of

    out = tmp_path / "ds"
    shutil.copytree(demo_shards, out)
    m = json.loads((out / "dataset.json").read_text())
    shard = out / m["splits"]["train"]["shards"][0]["path"]
    names = tarfile.open(shard).getnames()
    bad, noaudio = names[0].split(".")[0], names[4].split(".")[0]
    _rewrite_shard(shard, lambda n, d: (b"fLaC" + bytes(len(d))) if n.startswith(bad + ".flac") else
                   (None if n.startswith(noaudio + ".flac") else d))
    shard.with_suffix(".idx").write_text(index_of(shard.read_bytes()))
    # bad clips inside a shard whose checksum is right (as another tool might write it)
    import hashlib

    entry = m["splits"]["train"]["shards"][0]
    entry["bytes"], entry["sha256"] = shard.stat().st_size, hashlib.sha256(shard.read_bytes()).hexdigest()
    (out / "dataset.json").write_text(json.dumps(m))
    return out, bad, noaudio


def test_bad_clips_are_skipped_counted_and_reported(damaged) -> None:
    src, bad, noaudio = damaged
    loader = _load(src, training=False, clip_seconds=None)
    keys = [k for b in loader for k, v in zip(b.keys, b.valid) if v]
    m = loader.metrics()
    assert m["skipped"] == {"decode_error": 1, "no_audio": 1} and m["skipped_total"] == 2
    assert any(bad in k for k in m["skipped_keys"]) and any(noaudio in k for k in m["skipped_keys"])
    assert bad not in keys and noaudio not in keys
    total = json.loads((src / "dataset.json").read_text())["splits"]["train"]["samples"]
    assert len(keys) == total - 2  # nothing else lost


def test_on_error_raise_is_fatal(damaged) -> None:
    src, bad, _ = damaged
    with pytest.raises(SampleError, match=bad):
        list(_load(src, training=False, on_error="raise"))


def test_truncated_shard_never_hangs_and_is_counted(demo_shards: Path, tmp_path: Path) -> None:
    src = tmp_path / "ds"
    shutil.copytree(demo_shards, src)
    m = json.loads((src / "dataset.json").read_text())
    s = m["splits"]["train"]["shards"][1]
    p = src / s["path"]
    p.write_bytes(p.read_bytes()[: s["bytes"] // 2 + 100])  # ends mid-member
    loader = _load(src, training=False, clip_seconds=None)
    valid = sum(int(b.valid.sum()) for b in loader)
    met = loader.metrics()
    assert met["skipped"].get("shard_error") and s["path"] in " ".join(met["skipped_keys"])
    assert 0 < valid < m["splits"]["train"]["samples"]


def test_resampling_matches_soxr(demo_shards: Path) -> None:
    ref = _decoded(demo_shards)
    for b in _load(demo_shards, training=False, clip_seconds=None, sample_rate=8000):
        for key, x, length in zip(b.keys, b.audio, b.lengths):
            want = soxr.resample(ref[key][0], 16000, 8000, quality="HQ")
            assert int(length) == len(want)
            np.testing.assert_allclose(x[:length].numpy(), want, atol=1e-6)
        break


def test_centre_crop_and_padding(demo_shards: Path) -> None:
    ref = _decoded(demo_shards)
    b = next(iter(_load(demo_shards, training=False, clip_seconds=1.5, eval_crop="center")))
    for key, x, length in zip(b.keys, b.audio, b.lengths):
        full = ref[key][0]
        w = 24000
        if len(full) >= w:
            s = (len(full) - w) // 2
            np.testing.assert_array_equal(x.numpy(), full[s:s + w])
        else:
            assert int(length) == len(full) and not x[length:].any()


@pytest.mark.parametrize("mode,target", [("peak", -3.0), ("rms", -20.0), ("lufs", -23.0)])
def test_loudness_normalization(demo_shards: Path, mode: str, target: float) -> None:
    import pyloudnorm

    b = next(iter(_load(demo_shards, training=False, clip_seconds=None, loudness=mode, loudness_db=target)))
    for x, length in zip(b.audio, b.lengths):
        y = x[:length].double().numpy()
        if mode == "peak":
            assert abs(20 * np.log10(np.abs(y).max()) - target) < 1e-4
        elif mode == "rms":
            assert abs(20 * np.log10(np.sqrt(np.mean(y ** 2))) - target) < 1e-4
        else:
            assert abs(pyloudnorm.Meter(16000).integrated_loudness(y) - target) < 0.1


def test_trim_removes_leading_and_trailing_silence(tmp_path: Path) -> None:
    from shardgen.recipes import get
    from shardgen.writer import PackOptions, pack
    from tests.conftest import write_tone

    src = tmp_path / "src"
    tone = write_tone(tmp_path / "t.wav", 0.5, freq=500)
    x, sr = sf.read(tone, dtype="float32")
    (src / "a").mkdir(parents=True)
    sf.write(src / "a" / "padded.wav", np.concatenate([np.zeros(8000), x, np.zeros(4000)]).astype(np.float32), sr)
    pack(get("folder").load(src), tmp_path / "ds", PackOptions(progress=False))
    b = next(iter(wds_audio.loader(str(tmp_path / "ds"), batch_size=1, sample_rate=16000, clip_seconds=None,
                                   training=False, trim_db=40)))
    assert abs(int(b.lengths[0]) - len(x)) <= 160  # within one 10-ms frame


def test_pcm_on_device_carries_int16(tmp_path: Path) -> None:
    from shardgen.recipes import get
    from shardgen.writer import PackOptions, pack
    from tests.conftest import write_tone

    src = tmp_path / "src"
    for i in range(6):
        write_tone(src / f"c{i % 2}" / f"x{i}.wav", 0.3 + 0.1 * i, freq=300 + 50 * i, seed=i)
    pack(get("folder").load(src), tmp_path / "ds", PackOptions(codec="wav", progress=False))
    kw = dict(batch_size=3, sample_rate=16000, clip_seconds=0.25, seed=1)
    ints = list(wds_audio.loader(str(tmp_path / "ds"), pcm_on_device=True, **kw))
    floats = list(wds_audio.loader(str(tmp_path / "ds"), **kw))
    for a, b in zip(ints, floats):
        assert a.audio.dtype == torch.int16 and a.keys == b.keys
        torch.testing.assert_close(a.audio.float() / 32768.0, b.audio, rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="pcm_on_device"):
        wds_audio.loader(str(tmp_path / "ds"), pcm_on_device=True, loudness="peak", **kw)


def test_shard_pattern_source_with_classes(demo_shards: Path) -> None:
    m = json.loads((demo_shards / "dataset.json").read_text())
    paths = sorted(s["path"] for s in m["splits"]["valid"]["shards"])
    n = len(paths)
    pattern = str(demo_shards / "valid" / ("fold5-{000000..%06d}.tar" % (n - 1)))
    loader = wds_audio.loader(pattern, classes=m["classes"], batch_size=4, sample_rate=16000, clip_seconds=None,
                              training=False)
    keys = [k for b in loader for k, v in zip(b.keys, b.valid) if v]
    assert len(keys) == m["splits"]["valid"]["samples"] == len(set(keys))
    with pytest.raises(Exception, match="classes"):
        wds_audio.loader(pattern, batch_size=4, sample_rate=16000, clip_seconds=None)


def test_fold_selection_reads_only_those_shards(demo_shards: Path) -> None:
    loader = _load(demo_shards, folds=[2], training=False, clip_seconds=None)
    assert {s.fold for s in loader.catalog.shards} == {2}
    m = json.loads((demo_shards / "dataset.json").read_text())
    want = sum(s["samples"] for s in m["splits"]["train"]["shards"] if s["fold"] == 2)
    assert sum(int(b.valid.sum()) for b in loader) == want
    with pytest.raises(Exception, match=r"no fold\(s\) \[9\]"):
        _load(demo_shards, folds=[9])


def test_metrics_report_throughput_and_waiting(demo_shards: Path) -> None:
    loader = _load(demo_shards)
    list(loader)
    m = loader.metrics()
    assert m["batches"] == len(loader) and m["samples"] == 8 * len(loader)
    assert m["wait_s"] > 0 and m["first_batch_s"] > 0 and m["time_s"] >= m["wait_s"]
    assert abs(m["clips_per_s"] - m["samples"] / m["time_s"]) < 1e-9 and 0 < m["wait_fraction"] <= 1


def test_window_decoding_with_resampling(demo_shards: Path) -> None:
    """A centre crop decodes only the centred window of stored samples, then resamples it."""
    ref = _decoded(demo_shards)
    b = next(iter(_load(demo_shards, training=False, clip_seconds=0.5, eval_crop="center", sample_rate=8000)))
    checked = 0
    for key, x, length in zip(b.keys, b.audio, b.lengths):
        full = ref[key][0]
        need = 8000  # stored samples behind 4000 output samples
        if len(full) > need:
            s = (len(full) - need) // 2
            want = soxr.resample(full[s:s + need], 16000, 8000, quality="HQ")[:4000]
            checked += 1
        else:
            want = soxr.resample(full, 16000, 8000, quality="HQ")
        assert int(length) == len(want)
        np.testing.assert_allclose(x[:length].numpy(), want, atol=1e-6)
    assert checked


def test_persistent_workers_follow_epochs(demo_shards: Path) -> None:
    """Persistent workers see set_epoch (shared state), giving the same batches as fresh workers."""
    fresh = _load(demo_shards, num_workers=2)
    kept = _load(demo_shards, num_workers=2, persistent_workers=True)
    for epoch in (0, 1, 0):
        fresh.set_epoch(epoch)
        kept.set_epoch(epoch)
        assert _same(_epoch(kept), _epoch(fresh))


def test_workers_flag_the_end_of_their_epoch(demo_shards: Path) -> None:
    """The flags TailWidth reads: raised by real worker processes after their last batch (else a
    worker ending early never hands its cores over), in every epoch of persistent workers."""
    import time

    loader = _load(demo_shards, num_workers=2, persistent_workers=True)
    ref = _load(demo_shards, num_workers=0)
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        ref.set_epoch(epoch)
        assert _same(_epoch(loader), _epoch(ref))
        end = time.monotonic() + 10
        while loader.dataset.finished.tolist() != [1, 1] and time.monotonic() < end:
            time.sleep(0.01)
        assert loader.dataset.finished.tolist() == [1, 1]


def test_prefetch_factor_and_pin_memory_do_not_change_batches(demo_shards: Path) -> None:
    ref = _epoch(_load(demo_shards, num_workers=2))
    got = _epoch(_load(demo_shards, num_workers=2, prefetch_factor=4, pin_memory=torch.cuda.is_available()))
    assert _same(got, ref)


def test_a_peek_does_not_shorten_the_epoch(demo_shards: Path) -> None:
    """next(iter(loader)) then a full loop: the loop still gets the whole epoch (no silent loss)."""
    loader = _load(demo_shards)
    full = [b.keys for b in _load(demo_shards)]
    peek = next(iter(loader))
    assert peek.keys == full[0] and loader.state_dict()["batches"] == 1
    assert [b.keys for b in loader] == full


@pytest.mark.parametrize("clip_seconds", [1.0, None])
def test_no_stage_holds_a_batch_once_handed_on(demo_shards: Path, clip_seconds: float | None) -> None:
    """A batch dropped by the trainer is freed at once: no stream generator, waiting for its next
    turn, keeps its last batch (or that batch's audio) alive (8 streams kept 8 batches before)."""
    import weakref

    loader = _load(demo_shards, clip_seconds=clip_seconds, training=clip_seconds is not None)
    it, seen = iter(loader), 0
    for b in it:
        refs = [weakref.ref(b), weakref.ref(b.audio)]
        del b
        assert [r() for r in refs] == [None, None]
        seen += 1
    assert seen == len(loader)


@pytest.mark.parametrize("workers,threads", [(0, 3), (1, 3), (2, 2)])
def test_decode_threads_do_not_change_batches_even_with_bad_clips(damaged, workers: int, threads: int) -> None:
    """Samples shaped on threads come back in order: same batches, same fill-ins, same counts."""
    src, _, _ = damaged
    ref_loader = _load(src, num_workers=0, decode_threads=1)
    ref = _epoch(ref_loader)
    got_loader = _load(src, num_workers=workers, decode_threads=threads)
    assert _same(_epoch(got_loader), ref)
    assert got_loader.metrics()["skipped"] == ref_loader.metrics()["skipped"] == {"decode_error": 1, "no_audio": 1}


def test_first_batch_lead_and_gated_workers_give_the_same_epoch_after_resume(demo_shards: Path) -> None:
    """Worker 0 makes the first batch alone only when it holds it; a resume starting at a batch of
    worker 1 must not wait for a lead that never comes (the test would take 5 s per epoch)."""
    import time

    full = _epoch(_load(demo_shards, num_workers=2))
    for at in (3, 4):  # batch 3 is stream 3 (worker 1), batch 4 is stream 4 (worker 0)
        loader = _load(demo_shards, num_workers=2)
        loader.load_state_dict({**loader.state_dict(), "batches": at})
        t0 = time.perf_counter()
        rest = _epoch(loader)
        assert _same(rest, full[at:])
        assert time.perf_counter() - t0 < 4.5


def test_decode_threads_must_be_positive(demo_shards: Path) -> None:
    with pytest.raises(ValueError, match="decode_threads"):
        _load(demo_shards, decode_threads=0)


def test_pcm_on_device_decodes_flac_to_int16(demo_shards: Path) -> None:
    """FLAC shards (16-bit): int16 batches hold exactly the float path's samples x 32768."""
    kw = dict(batch_size=8, sample_rate=16000, clip_seconds=1.0, seed=4)
    for a, b in zip(wds_audio.loader(str(demo_shards), pcm_on_device=True, **kw), wds_audio.loader(str(demo_shards), **kw)):
        assert a.audio.dtype == torch.int16 and a.keys == b.keys and torch.equal(a.lengths, b.lengths)
        torch.testing.assert_close(a.audio.float() / 32768.0, b.audio, rtol=0, atol=0)


@pytest.mark.parametrize("pcm", [False, True])
def test_resample_on_device_gives_the_cpu_paths_audio(demo_shards: Path, pcm: bool) -> None:
    """Batches at the stored rate (16 kHz), cropped to the window that resamples to the clip; the
    Frontend then gives the CPU path's (soxr's) log-mel below 0.85 x Nyquist, where both filters pass
    everything: within 0.05 dB where the mel power is above -60 dB of the batch's maximum (the
    band between, where the two filters roll off differently, is left out)."""
    from wds_audio.device.frontend import Frontend

    kw = dict(batch_size=8, clip_seconds=1.0, seed=4, num_workers=2)
    dev = wds_audio.loader(str(demo_shards), sample_rate=8000, resample_on_device=True, pcm_on_device=pcm, **kw)
    cpu = wds_audio.loader(str(demo_shards), sample_rate=8000, **kw)
    assert dev.audio_rate == 16000 and cpu.audio_rate == 8000
    fe_dev = Frontend(sample_rate=8000, input_sample_rate=dev.audio_rate, n_fft=256, hop_length=80, n_mels=32,
                      f_max=3400).eval()
    fe_cpu = Frontend(sample_rate=8000, n_fft=256, hop_length=80, n_mels=32, f_max=3400).eval()
    n = 0
    for a, b in zip(dev, cpu):
        assert a.keys == b.keys and a.audio.shape == (8, 16000) and b.audio.shape == (8, 8000)
        assert a.audio.dtype == (torch.int16 if pcm else torch.float32)
        assert torch.equal(fe_dev.resample.lengths(a.lengths), b.lengths)
        fa, fb = fe_dev(a.audio, a.lengths), fe_cpu(b.audio, b.lengths)
        loud = fb > fb.amax() - 60
        assert (fa - fb)[:, :, 2:-2][loud[:, :, 2:-2]].abs().max() < 0.05
        n += 1
    assert n == len(cpu)


def test_resample_on_device_is_refused_where_it_cannot_work(demo_shards: Path) -> None:
    from wds_audio.device.frontend import Frontend

    m = json.loads((demo_shards / "dataset.json").read_text())
    pattern = str(demo_shards / sorted(s["path"] for s in m["splits"]["train"]["shards"])[0])
    with pytest.raises(ValueError, match="resample_on_device needs the stored sample rate"):
        wds_audio.loader(pattern, classes=m["classes"], batch_size=4, sample_rate=8000, clip_seconds=1.0,
                         resample_on_device=True)
    with pytest.raises(ValueError, match="input_sample_rate=16000"):
        wds_audio.loader(str(demo_shards), batch_size=4, sample_rate=8000, clip_seconds=1.0, resample_on_device=True,
                         frontend=Frontend(sample_rate=8000))
    with pytest.raises(ValueError, match="takes audio at 16000 Hz, batches carry it at 8000 Hz"):
        wds_audio.loader(str(demo_shards), batch_size=4, sample_rate=8000, clip_seconds=1.0,
                         frontend=Frontend(sample_rate=16000))  # features at the wrong rate, refused too


@pytest.mark.parametrize("pcm", [False, True])
def test_a_clip_stored_at_another_rate_is_brought_to_the_datasets(tmp_path: Path, pcm: bool) -> None:
    """With resample_on_device, a clip whose file is at 22.05 kHz in a 16-kHz dataset is resampled
    to 16 kHz on the CPU (soxr), so a batch holds one rate."""
    from tests.conftest import write_tone
    from wds_audio.pipeline.config import LoaderConfig
    from wds_audio.pipeline.samples import Shaper

    path = write_tone(tmp_path / "odd.flac", 1.0, sr=22050, freq=700)
    cfg = LoaderConfig(str(tmp_path), batch_size=1, sample_rate=8000, clip_seconds=None, training=False,
                       resample_on_device=True, pcm_on_device=pcm)
    out = Shaper(cfg, 1, 0, rate=16000)({"__key__": "odd", "flac": path.read_bytes(), "labels": bytes([1])})
    x, _ = sf.read(path, dtype="float32")
    ref = soxr.resample(x, 22050, 16000, quality="HQ")
    assert out["audio"].dtype == (np.int16 if pcm else np.float32) and len(out["audio"]) == len(ref)
    got = out["audio"] / 32768.0 if pcm else out["audio"]
    assert np.abs(got - ref).max() <= (1 / 32768 if pcm else 1e-6)
