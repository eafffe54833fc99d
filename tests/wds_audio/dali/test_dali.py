"""The DALI back end on real shards (CPU operators, device_id=None): parity with the torch back end,
ranks, shuffling, resume, missing indexes, bad samples, features and augmentation."""
from __future__ import annotations

import io
import json
import shutil
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import wds_audio
from wds_audio.pipeline.config import LoaderConfig
from tests.float64 import assert_logmel_close, logmel64, logmel_errors, mfcc64
from wds_audio.signal.features import MFCC, LogMel

pytest.importorskip("nvidia.dali")

from wds_audio.dali.features import DaliFeatures, DaliGain, DaliNoise, DaliSpecAugment  # noqa: E402
from wds_audio.dali.inputs import batch_order  # noqa: E402
from wds_audio.dali.loader import DaliLoader  # noqa: E402

pytestmark = pytest.mark.numeric  # float tolerances: also run by `make test-isa`

MFCC_TOL = 2e-3  # max |MFCC error| against float64; measured <= 6.1e-4 on every CPU code path (x3.3)


def _cfg(src: Path, **kw) -> LoaderConfig:
    args = dict(split="valid", batch_size=4, sample_rate=16000, clip_seconds=None, training=False, streams=2,
                seed=3, extra={"dali_num_threads": 1})
    args.update(kw)
    return LoaderConfig(str(src), **args)


def _epoch(loader) -> list:
    return [(b.keys, b.audio.clone(), b.lengths.clone(), b.targets.clone(), b.valid.clone()) for b in loader]


def _assert_same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x[0] == y[0]
        for p, q in zip(x[1:], y[1:]):
            assert torch.equal(p, q)


def _decoded(src: Path, split: str) -> dict[str, np.ndarray]:
    """Every clip of a split decoded straight from the tars with soundfile (mono)."""
    m = json.loads((src / "dataset.json").read_text())
    out = {}
    for s in m["splits"][split]["shards"]:
        tf = tarfile.open(src / s["path"])
        for mem in tf.getmembers():
            key, ext = mem.name.split(".", 1)
            if ext in ("flac", "wav"):
                x, _ = sf.read(io.BytesIO(tf.extractfile(mem).read()), dtype="float32", always_2d=True)
                out[key] = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    return out


@pytest.fixture(scope="module")
def tones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stereo 16-bit WAV shards stored at 22.05 kHz (band-limited tones), one clip with silence around it."""
    from shardgen.recipes import get
    from shardgen.writer import PackOptions, pack
    from tests.conftest import write_tone

    root = tmp_path_factory.mktemp("dali-tones")
    for i in range(6):
        write_tone(root / "src" / f"c{i % 2}" / f"t{i}.wav", 0.4 + 0.15 * i, sr=22050, freq=300 + 400 * i,
                   channels=2, seed=i)
    x, sr = sf.read(write_tone(root / "tone.wav", 0.5, sr=22050, freq=700, channels=2), dtype="float32")
    silence = np.zeros((11025, 2), np.float32)
    sf.write(root / "src" / "c0" / "padded.wav", np.concatenate([silence, x, silence[:5000]]), sr)
    pack(get("folder").load(root / "src"), root / "ds",
         PackOptions(sample_rate=22050, channels=2, codec="wav", max_shard_samples=3, progress=False))
    return root / "ds"


# ------------------------------------------------------------------------------ install and options

def test_missing_dali_says_how_to_install(demo_shards: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "nvidia.dali" or m.startswith("nvidia.dali.")]:
        monkeypatch.setitem(sys.modules, name, None)  # `import nvidia.dali...` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install wds-audio\[dali\]"):
        wds_audio.loader(str(demo_shards), batch_size=4, sample_rate=16000, clip_seconds=1.0, backend="dali")


@pytest.mark.parametrize("kw,match", [
    ({"rebalance": {"mode": "uniform"}}, "rebalance"),
    ({"pcm_on_device": True}, "pcm_on_device"),
    ({"resample_on_device": True}, "resample_on_device"),
    ({"loudness": "lufs"}, "lufs"),
])
def test_options_dali_cannot_honour_are_refused(demo_shards: Path, kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DaliLoader(_cfg(demo_shards, **kw))


def test_remote_shards_are_refused_clearly(demo_shards: Path, tmp_path: Path) -> None:
    from wds_audio.dali.inputs import _local_path

    assert _local_path("file:///data/x.tar") == "/data/x.tar"
    with pytest.raises(ValueError, match="local shards only"):
        _local_path("s3://bucket/train/fold1-000000.tar")


# ------------------------------------------------------------------------------ parity with torch

@pytest.mark.parametrize("rank", [0, 1])
def test_evaluation_batches_equal_the_torch_back_end(demo_shards: Path, rank: int) -> None:
    cfg = _cfg(demo_shards, rank=rank, world_size=2)
    dali = DaliLoader(cfg)
    assert dali.mode == "plan" and len(dali) == len(wds_audio.AudioLoader(cfg))
    _assert_same(_epoch(dali), _epoch(wds_audio.AudioLoader(cfg)))


def test_centre_crop_equals_the_torch_back_end(demo_shards: Path) -> None:
    cfg = _cfg(demo_shards, clip_seconds=1.5, eval_crop="center")
    got = _epoch(DaliLoader(cfg))
    assert all(b[1].shape == (4, 24000) for b in got)
    _assert_same(got, _epoch(wds_audio.AudioLoader(cfg)))


def test_shard_pattern_source_equals_the_torch_back_end(demo_shards: Path) -> None:
    classes = json.loads((demo_shards / "dataset.json").read_text())["classes"]
    cfg = _cfg(f"{demo_shards}/valid/fold5-{{000000..000001}}.tar", classes=classes)
    loader = DaliLoader(cfg)
    assert loader.stored_rate == 16000  # no dataset.json: read from the first sample's json
    _assert_same(_epoch(loader), _epoch(wds_audio.AudioLoader(cfg)))


def test_downmix_and_resampling_match_the_torch_back_end(tones: Path) -> None:
    # 22.05 kHz stereo WAV -> 16 kHz mono: anti-aliasing FIR + DALI's windowed-sinc resampler vs soxr HQ.
    # Without the FIR, the tones' 0.01-rms broadband noise above 8 kHz aliases (mean diff 4e-3).
    cfg = _cfg(tones, split="train", batch_size=3, streams=1)
    a, b = _epoch(DaliLoader(cfg)), _epoch(wds_audio.AudioLoader(cfg))
    assert [x[0] for x in a] == [x[0] for x in b]
    for x, y in zip(a, b):
        assert torch.equal(x[2], y[2])  # same resampled lengths (round(n * 16000 / 22050))
        for i, n in enumerate(x[2].tolist()):
            diff = (x[1][i, :n] - y[1][i, :n]).abs()
            # what remains: the two filters' transition bands (7.2-8 kHz) and soxr's edge handling
            assert float(diff.mean()) < 5e-4 and float(diff[64:-64].max()) < 3e-3 and float(diff.max()) < 2e-2


def test_antialias_filter_stops_what_would_alias() -> None:
    from scipy.signal import freqz

    from wds_audio.dali.loader import antialias_taps

    h = antialias_taps(44100, 16000)
    f, resp = freqz(h, worN=8192, fs=44100)
    gain = 20 * np.log10(np.abs(resp) + 1e-12)
    assert np.abs(gain[f <= 0.9 * 8000]).max() < 0.01  # flat passband
    assert gain[f >= 8000].max() < -75  # stopband from the new Nyquist


def test_loudness_and_trim_match_the_torch_back_end(tones: Path) -> None:
    cfg = _cfg(tones, split="train", batch_size=7, streams=1, loudness="peak", loudness_db=-3.0, trim_db=40.0)
    (keys, audio, lengths, *_), = _epoch(DaliLoader(cfg))
    (tkeys, taudio, tlengths, *_), = _epoch(wds_audio.AudioLoader(cfg))
    assert keys == tkeys
    for i, key in enumerate(keys):
        n = int(lengths[i])
        assert abs(20 * np.log10(float(audio[i, :n].abs().max())) + 3.0) < 1e-4
        # DALI's moving 10-ms power window vs the torch back end's 10-ms frames: a frame or two apart
        assert abs(n - int(tlengths[i])) <= 2 * 160, key
    padded = keys.index("c0_padded")
    assert abs(int(lengths[padded]) - 8000) <= 2 * 160  # 0.5 s of tone at 16 kHz, silence trimmed


@pytest.mark.parametrize("spec", [
    dict(n_fft=512, hop_length=160, n_mels=64),
    dict(n_fft=1024, win_length=400, hop_length=160, n_mels=80, f_min=50.0, f_max=7600.0, mel_scale="slaney"),
    dict(kind="mfcc", n_fft=512, hop_length=160, n_mels=64, n_mfcc=20),
], ids=["logmel-htk", "logmel-slaney-win400", "mfcc"])
def test_features_match_the_torch_definitions(demo_shards: Path, spec: dict) -> None:
    """DALI's and the torch back end's features, each against the float64 reference of the same
    definition (tests/float64.py: why and how a float32 log-mel is compared on any CPU, and the
    figures measured under every MKL / ATen code path).

    MFCC: max |coefficient error| against float64, worst of the same settings: DALI 6.1e-4, torch
    5.5e-4 (the DCT sums 64 bands' dB errors; the per-clip 80-dB floor clamps the quietest cells).
    """
    feats = DaliFeatures(**spec)
    mel = {k: v for k, v in spec.items() if k not in ("kind", "n_mfcc")}
    torch_side = (MFCC(n_mfcc=feats.n_mfcc, sample_rate=16000, **mel) if feats.kind == "mfcc"
                  else LogMel(16000, **mel))
    errors: dict[str, list] = {"dali": [], "torch": []}
    for b in DaliLoader(_cfg(demo_shards), features=feats):
        assert b.features.shape[:2] == (4, feats.num_features())
        for i in range(len(b)):
            n, f = int(b.lengths[i]), int(b.frames[i])
            x = b.audio[i, :n]
            ref = mfcc64(x, feats.n_mfcc, sample_rate=16000, **mel) if feats.kind == "mfcc" else logmel64(x, 16000, **mel)
            assert ref.shape[-1] == f
            pad = -100.0 if feats.kind == "logmel" else 0.0
            assert bool((b.features[i, :, f:] == pad).all())
            for side, got in (("dali", b.features[i, :, :f]), ("torch", torch_side(x[None])[0])):
                if feats.kind == "mfcc":
                    errors[side].append(float((got.double() - ref).abs().max()))
                else:
                    errors[side].append(logmel_errors(got, ref))
    for side, errs in errors.items():
        if feats.kind == "mfcc":
            assert max(errs) < MFCC_TOL, f"{side}: MFCC error {max(errs):.2e}"
        else:
            assert_logmel_close(errs, side)


def test_standardization_with_dataset_stats_and_per_utterance(demo_shards: Path) -> None:
    """Against the float64 log-mel (tests/float64.py). Dataset statistics: the features mapped back
    to dB meet the log-mel bounds. Per utterance: max |CMVN error| against float64 CMVN, worst of
    every CPU code path (as in tests/float64.py): 2.2e-4 (DALI's CPU operators gave the same
    figures on all of them); tolerance 1e-3."""
    rng = np.random.default_rng(0)
    stats = {"n_mels": 32, "sample_rate": 16000, "mean": rng.uniform(-80, -20, 32).tolist(),
             "std": rng.uniform(5, 20, 32).tolist()}
    mean, std = torch.tensor(stats["mean"])[:, None].double(), torch.tensor(stats["std"])[:, None].double()
    base = dict(n_fft=512, hop_length=160, n_mels=32)
    ds = next(iter(DaliLoader(_cfg(demo_shards), features=DaliFeatures(standardize="dataset", stats=stats, **base))))
    ut = next(iter(DaliLoader(_cfg(demo_shards), features=DaliFeatures(standardize="utterance", **base))))
    errors, ut_err = [], 0.0
    for i in range(4):
        n, f = int(ds.lengths[i]), int(ds.frames[i])
        assert torch.equal(ds.audio[i], ut.audio[i])
        lm = logmel64(ds.audio[i, :n], 16000, **base)
        errors.append(logmel_errors(ds.features[i, :, :f].double() * std + mean, lm))
        cmvn = (lm - lm.mean(-1, keepdim=True)) / lm.std(-1, unbiased=False, keepdim=True).clamp_min(1e-5)
        ut_err = max(ut_err, float((ut.features[i, :, :f] - cmvn).abs().max()))
        assert bool((ds.features[i, :, f:] == 0).all()) and bool((ut.features[i, :, f:] == 0).all())
    assert_logmel_close(errors, "DALI, dataset statistics")
    assert ut_err < 1e-3, f"per-utterance CMVN error {ut_err:.2e}"
    with pytest.raises(ValueError, match="n_mels"):
        DaliLoader(_cfg(demo_shards), features=DaliFeatures(standardize="dataset", stats=stats, n_mels=64))


def test_dataset_stats_are_checked_as_for_the_torch_frontend(demo_shards: Path, tmp_path: Path) -> None:
    """The same checks as wds_audio.Frontend (wds_audio.device.stats): every recorded feature setting, and
    in evaluation the folds: an entry over the evaluated fold is replaced by one without it, or refused."""
    from shardgen.cli import main

    ds = tmp_path / "ds"
    shutil.copytree(demo_shards, ds)
    assert main(["stats", str(ds), "--n-mels", "16", "--n-fft", "512", "--max-clips", "12"]) == 0
    everything = json.loads((ds / "dataset.json").read_text())["feature_stats"]
    base = dict(n_fft=512, n_mels=16, standardize="dataset")
    evaluate = dict(split="train", folds=[4], training=False)
    with pytest.raises(ValueError, match=r"computed with n_fft=512, win_length=512, hop_length=160; this DALI "
                                         r"feature stage has n_fft=1024, win_length=1024, hop_length=256"):
        DaliLoader(_cfg(ds), features=DaliFeatures(**{**base, "n_fft": 1024, "hop_length": 256}))
    with pytest.raises(ValueError, match="computed with f_max=8000.0; this DALI feature stage has f_max=6000.0"):
        DaliLoader(_cfg(ds), features=DaliFeatures(**base, stats=everything, f_max=6000.0))
    for stats in (None, everything):  # dataset.json's entry, or the same entry given
        with pytest.raises(ValueError, match=r"includes evaluation fold\(s\) \[4\] of split 'train'"):
            DaliLoader(_cfg(ds, **evaluate), features=DaliFeatures(**base, stats=stats))
    explicit = {k: everything[k] for k in ("mean", "std")}
    assert DaliLoader(_cfg(ds, **evaluate), features=DaliFeatures(**base, stats=explicit)).features.stats is explicit
    assert main(["stats", str(ds), "--n-mels", "16", "--n-fft", "512", "--max-clips", "12", "--exclude-folds", "4"]) == 0
    for stats in (None, everything):
        loader = DaliLoader(_cfg(ds, **evaluate), features=DaliFeatures(**base, stats=stats))
        assert loader.features.stats["folds"] == [1, 2, 3]
    b = next(iter(loader))
    assert b.features.shape[1] == 16 and torch.isfinite(b.features).all()


# ------------------------------------------------------------------------------ ranks, epochs, resume

def test_two_ranks_get_equal_batch_counts(demo_shards: Path) -> None:
    for training in (True, False):
        kw = dict(split="train", training=training, clip_seconds=1.0, batch_size=8, eval_crop="center")
        loaders = [DaliLoader(_cfg(demo_shards, rank=r, world_size=2, **kw)) for r in (0, 1)]
        epochs = [_epoch(x) for x in loaders]
        assert len(loaders[0]) == len(loaders[1]) == len(epochs[0]) == len(epochs[1]) > 0
        assert all(b[1].shape == (8, 16000) for e in epochs for b in e)
        if not training:  # every sample exactly once across ranks, fill-ins marked invalid
            keys = [k for e in epochs for b in e for k, v in zip(b[0], b[4].tolist()) if v]
            total = json.loads((demo_shards / "dataset.json").read_text())["splits"]["train"]["samples"]
            assert len(keys) == len(set(keys)) == total


def test_training_epoch_holds_the_planned_samples_shuffled_per_epoch(demo_shards: Path) -> None:
    cfg = _cfg(demo_shards, split="train", training=True, clip_seconds=1.0, batch_size=8, shuffle_buffer=32)
    loader = DaliLoader(cfg)
    reference = _decoded(demo_shards, "train")
    epochs = []
    for epoch in range(2):
        plan = loader.plan(epoch)
        want = Counter(loader.indexes[s.shard].keys[i] for s in batch_order(plan) for i in range(s.start, s.stop))
        batches = _epoch(loader)
        assert Counter(k for b in batches for k in b[0]) == want
        epochs.append([k for b in batches for k in b[0]])
        for keys, audio, lengths, targets, _ in batches[:2]:  # random crops are real windows of the clip
            for i, key in enumerate(keys):
                full, n = reference[key], int(lengths[i])
                if len(full) <= 16000:
                    assert n == len(full) and np.array_equal(audio[i, :n].numpy(), full)
                else:
                    starts = np.flatnonzero(full[: len(full) - 16000 + 1] == float(audio[i, 0]))
                    assert any(np.array_equal(full[s:s + 16000], audio[i].numpy()) for s in starts), key
    assert epochs[0] != epochs[1]  # a new order every epoch
    again = DaliLoader(cfg)
    assert [k for b in _epoch(again) for k in b[0]] == epochs[0]  # and the same order for the same seed


def test_resume_from_a_dali_checkpoint_gives_the_same_remaining_batches(demo_shards: Path) -> None:
    spec = DaliFeatures(n_fft=512, hop_length=160, n_mels=32, gain=DaliGain(-6.0, 6.0, p=0.5),
                        noise=DaliNoise(min_snr_db=5.0, max_snr_db=20.0, p=0.5),
                        specaugment=DaliSpecAugment(time_masks=2, time_width=10, freq_masks=1, freq_width=4))
    cfg = _cfg(demo_shards, split="train", training=True, clip_seconds=1.0, batch_size=8)
    first = DaliLoader(cfg, features=spec)
    first.set_epoch(2)
    it = iter(first)
    for _ in range(4):
        next(it)
    state = first.state_dict()
    assert state["batches"] == 4 and state["dali_checkpoint"]
    rest = [(b.keys, b.audio.clone(), b.features.clone()) for b in it]
    second = DaliLoader(cfg, features=spec)
    second.load_state_dict(torch.load(_roundtrip(state), weights_only=False))
    again = [(b.keys, b.audio.clone(), b.features.clone()) for b in second]
    assert len(rest) == len(again) == len(first) - 4
    for x, y in zip(rest, again):
        assert x[0] == y[0] and torch.equal(x[1], y[1]) and torch.equal(x[2], y[2])
    assert second.epoch == 3 and second.start == 0
    with pytest.raises(ValueError, match="seed"):
        DaliLoader(_cfg(demo_shards, split="train", seed=4)).load_state_dict(state)


def _roundtrip(state: dict) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf


# ------------------------------------------------------------------------------ indexes and bad data

def test_a_shard_without_idx_still_works(demo_shards: Path, tmp_path: Path) -> None:
    src = tmp_path / "ds"
    src.mkdir()
    shutil.copy(demo_shards / "dataset.json", src)
    shutil.copytree(demo_shards / "valid", src / "valid")
    next((src / "valid").glob("*.idx")).unlink()
    reference = _decoded(demo_shards, "valid")
    seen = []
    for rank in (0, 1):
        loader = DaliLoader(_cfg(src, rank=rank, world_size=2))
        assert loader.mode == "reader"  # DALI infers the indexes and shards by itself
        batches = _epoch(loader)
        assert len(batches) == len(loader) == len(DaliLoader(_cfg(demo_shards, rank=rank, world_size=2)))
        for keys, audio, lengths, _, valid in batches:
            for i, key in enumerate(keys):
                assert np.array_equal(audio[i, : int(lengths[i])].numpy(), reference[key])
                if valid[i]:
                    seen.append(key)
    assert sorted(seen) == sorted(reference)


def _drop_audio_member(src: Path) -> str:
    """Remove one clip's audio member from the first valid shard (index rewritten); returns its key."""
    from shardgen.tarfmt import index_of

    m = json.loads((src / "dataset.json").read_text())
    shard = src / m["splits"]["valid"]["shards"][0]["path"]
    old = tarfile.open(shard)
    victim = old.getnames()[3].split(".")[0]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as new:
        for mem in old.getmembers():
            if mem.name != f"{victim}.flac":
                new.addfile(mem, io.BytesIO(old.extractfile(mem).read()))
    shard.write_bytes(buf.getvalue())
    shard.with_suffix(".idx").write_text(index_of(shard.read_bytes()))
    return victim


def test_a_sample_without_audio_is_filled_in_and_counted(demo_shards: Path, tmp_path: Path) -> None:
    src = tmp_path / "ds"
    src.mkdir()
    shutil.copy(demo_shards / "dataset.json", src)
    shutil.copytree(demo_shards / "valid", src / "valid")
    victim = _drop_audio_member(src)
    loader = DaliLoader(_cfg(src))
    keys = [k for b in _epoch(loader) for k, v in zip(b[0], b[4].tolist()) if v]
    assert victim not in keys and len(keys) == len(set(keys)) == len(_decoded(demo_shards, "valid")) - 1
    m = loader.metrics()
    assert m["skipped"] == {"no_audio": 1} and victim in m["skipped_keys"][0]
    with pytest.raises(ValueError, match=victim):
        list(DaliLoader(_cfg(src, on_error="raise")))


# ------------------------------------------------------------------------------ augmentation

def _train(src: Path, spec: DaliFeatures) -> list:
    cfg = _cfg(src, split="train", training=True, clip_seconds=1.0, batch_size=8)
    return [b for _, b in zip(range(3), DaliLoader(cfg, features=spec))]


def test_gain_and_noise_mixing_at_the_requested_snr(demo_shards: Path) -> None:
    # the crop and shuffle draws have their own seeds, so the three runs see the same windows
    base = dict(n_fft=512, hop_length=160, n_mels=32)
    clean = _train(demo_shards, DaliFeatures(**base))
    louder = _train(demo_shards, DaliFeatures(gain=DaliGain(6.0, 6.0, p=1.0), **base))
    noisy = _train(demo_shards, DaliFeatures(noise=DaliNoise(min_snr_db=10.0, max_snr_db=10.0, p=1.0), **base))
    for c, g, nz in zip(clean, louder, noisy):
        assert c.keys == g.keys == nz.keys
        torch.testing.assert_close(g.audio, c.audio * 10 ** (6 / 20), rtol=1e-5, atol=1e-6)
        for i, n in enumerate(c.lengths.tolist()):
            signal, added = c.audio[i, :n].double(), (nz.audio[i, :n] - c.audio[i, :n]).double()
            snr = 10 * torch.log10(signal.square().sum() / added.square().sum())
            assert abs(float(snr) - 10.0) < 0.1
            assert not nz.audio[i, n:].any()  # padding stays silent


def test_specaugment_masks_have_the_requested_counts_and_widths(demo_shards: Path) -> None:
    base = dict(n_fft=512, hop_length=160, n_mels=32)
    sa = DaliSpecAugment(time_masks=2, time_width=12, freq_masks=2, freq_width=5, mask_value=-7.5)
    plain = _train(demo_shards, DaliFeatures(**base))
    masked = _train(demo_shards, DaliFeatures(specaugment=sa, **base))
    masked_any = 0
    for p, m in zip(plain, masked):
        assert torch.equal(p.audio, m.audio)
        changed = p.features != m.features
        assert bool((m.features[changed] == -7.5).all())
        for i in range(len(p)):
            f = int(p.frames[i])
            assert not changed[i, :, f:].any()  # padding frames untouched
            cols = changed[i].all(0).nonzero().flatten().tolist()  # time masks span every bin
            rows = changed[i, :, :f].all(1).nonzero().flatten().tolist()
            for picked, count, width in ((cols, 2, 12), (rows, 2, 5)):
                runs = np.split(np.array(picked), np.flatnonzero(np.diff(picked) > 1) + 1) if picked else []
                # two masks may touch or overlap: at most `count` runs, none wider than count * width
                assert len(runs) <= count and all(len(r) <= count * width for r in runs)
            masked_any += bool(cols or rows)
            union = torch.zeros_like(changed[i])
            union[:, cols] = True
            union[rows, :f] = True
            assert torch.equal(changed[i], union)  # nothing but whole bands
    assert masked_any > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dataset", ["demo", "tones"])
def test_gpu_stage_equals_the_cpu_stage(demo_shards: Path, tones: Path, dataset: str) -> None:
    # tones: 22.05 -> 16 kHz, so the anti-aliasing filter and the resampler run on the GPU too
    src = demo_shards if dataset == "demo" else tones
    kw = dict(split="valid") if dataset == "demo" else dict(split="train", batch_size=3, streams=1)
    base = dict(n_fft=512, hop_length=160, n_mels=64)
    cpu = _epoch_with_features(DaliLoader(_cfg(src, **kw), features=DaliFeatures(device="cpu", **base)))
    gpu = _epoch_with_features(DaliLoader(_cfg(src, **kw), features=DaliFeatures(device="gpu", **base)))
    assert len(cpu) == len(gpu) > 0
    for c, g in zip(cpu, gpu):
        assert c.keys == g.keys and torch.equal(c.lengths, g.lengths) and torch.equal(c.frames, g.frames)
        assert g.audio.is_cuda and g.features.is_cuda
        assert float((g.audio.cpu() - c.audio).abs().max()) < 1e-4
        # cuFFT against DALI's CPU FFT (the same on every CPU code path: tests/float64.py)
        assert float((g.features.cpu() - c.features).abs().max()) < 1e-2


def _epoch_with_features(loader) -> list:
    return [b for b in loader]


def test_dali_a_peek_does_not_shorten_the_epoch(demo_shards: Path) -> None:
    """As the torch back end: an abandoned iteration does not shorten the next one."""
    import wds_audio

    kw = dict(split="valid", batch_size=4, sample_rate=16000, clip_seconds=None, training=False, backend="dali")
    full = [b.keys for b in wds_audio.loader(str(demo_shards), **kw)]
    loader = wds_audio.loader(str(demo_shards), **kw)
    assert next(iter(loader)).keys == full[0]
    assert [b.keys for b in loader] == full
