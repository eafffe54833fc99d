"""``wds_audio.loader(..., features="cached")`` on real shards made by ``shardgen features``.

Parity with the audio path is within fp16 rounding: |cached - on the fly| <= 2^-11 |x| + 1e-4 dB (x the
float32 log-mel; see tests/shardgen/test_features.py for the bound), on every frame whose STFT window
lies inside the audio both paths saw: on the fly, a clip padded in a batch sees zeros past its end and a
crop reflects its edges, where the cached whole-clip log-mel saw the clip's real neighbouring samples.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import wds_audio
from shardgen.features import FeatureOptions, make_features
from tests.conftest import read_shards, write_tone
from wds_audio.core.rng import sample_uniform
from wds_audio.pipeline.cached import PAD_DB, FeatureBatch
from wds_audio.signal.shaping import crop_start

SR, N_MELS, HOP, N_FFT = 16000, 64, 160, 1024
W = SR  # clip_seconds=1.0
WF = W // HOP + 1
EDGE = math.ceil(N_FFT / 2 / HOP)  # frames at a crop's ends whose window reaches past it
REL, ABS = 2.0 ** -11, 1e-4

pytestmark = pytest.mark.numeric  # float tolerances: also run by `make test-isa`


def close(cached: torch.Tensor, x: torch.Tensor) -> bool:
    x, cached = x.double(), cached.double()
    return bool(((cached - x).abs() <= REL * x.abs() + ABS).all())


def frontend(**kw) -> wds_audio.Frontend:
    return wds_audio.Frontend(sample_rate=SR, n_mels=N_MELS, hop_length=HOP, n_fft=N_FFT, **kw)


def load(src: Path, **kw):
    args = dict(split="train", batch_size=8, sample_rate=SR, clip_seconds=1.0, seed=3)
    args.update(kw)
    return wds_audio.loader(str(src), **args)


@pytest.fixture(scope="module")
def mel(demo_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cached") / "mel"
    make_features(str(demo_shards), str(out), FeatureOptions(n_mels=N_MELS, hop_length=HOP, n_fft=N_FFT,
                                                             splits=["train", "valid"], progress=False))
    return out


@pytest.fixture(scope="module")
def aligned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Clips whose centre crop of 1 s starts on a frame (n - W a multiple of 2 hops), some that do not
    (+77 samples) and one shorter than the window: (audio dataset, features dataset)."""
    from shardgen.recipes import get
    from shardgen.writer import PackOptions, pack

    root = tmp_path_factory.mktemp("aligned")
    lengths = [W + 2 * HOP * k for k in (1, 3, 7, 12)] + [W + 2 * HOP * k + 77 for k in (2, 5)] + [int(0.6 * SR)]
    for i, n in enumerate(lengths):
        write_tone(root / "src" / ("a" if i % 2 else "b") / f"clip{i}.wav", seconds=n / SR, sr=SR,
                   freq=300.0 + 170 * i, seed=i)
    pack(get("folder").load(root / "src"), root / "audio", PackOptions(sample_rate=SR, progress=False))
    make_features(str(root / "audio"), str(root / "mel"), FeatureOptions(n_mels=N_MELS, hop_length=HOP, n_fft=N_FFT,
                                                                         progress=False))
    return root / "audio", root / "mel"


def _full_features(mel: Path) -> dict[str, np.ndarray]:
    return {k: np.load(io.BytesIO(m["logmel.npy"])) for k, m in read_shards(mel).items()}


def _full_audio(src: Path) -> dict[str, np.ndarray]:
    out = {}
    for k, m in read_shards(src).items():
        ext = "flac" if "flac" in m else "wav"
        out[k] = sf.read(io.BytesIO(m[ext]), dtype="float32")[0]
    return out


def test_evaluation_batches_equal_on_the_fly_features(demo_shards: Path, mel: Path) -> None:
    """eval_crop="full": the same clips, frame counts and (within fp16) values as the Frontend computes
    from the audio batch; padding frames are -100 dB in the batch and zero once standardized."""
    kw = dict(split="valid", clip_seconds=None, training=False)
    fe, fe_std = frontend().eval(), frontend(standardize="utterance").eval()
    compared = 0
    for a, c in zip(load(demo_shards, **kw), load(mel, features="cached", **kw), strict=True):
        assert isinstance(c, FeatureBatch) and c.features.dtype == torch.float16 and c.audio.shape == (len(c), 0)
        assert a.keys == c.keys and torch.equal(a.targets, c.targets) and torch.equal(a.valid, c.valid)
        x, _ = fe(a)
        y, _ = fe(c)
        assert y.shape == x.shape and y.dtype == torch.float32
        flen = fe.frame_lengths(a.lengths, x.shape[-1])
        assert torch.equal(c.lengths, flen)
        for i in range(len(a)):
            n, f = int(a.lengths[i]), int(flen[i])
            last = f if n == a.audio.shape[1] else (n - N_FFT // 2) // HOP + 1  # past it, zeros on the fly
            assert close(y[i, :, :last], x[i, :, :last]), a.keys[i]
            assert bool((c.features[i, :, f:] == PAD_DB).all())
            compared += last
        z, _ = fe_std(c)
        mask = torch.arange(z.shape[-1])[None, :] < c.lengths[:, None]
        assert bool((z.permute(1, 0, 2)[:, ~mask] == 0).all())
    assert compared > 1000


def test_evaluation_centre_crops_take_the_audio_window(aligned: tuple[Path, Path]) -> None:
    """eval_crop="center": the window starts at the audio crop's first sample, to the nearest frame; where
    that is a frame, the frames inside the crop equal the on-the-fly ones; a short clip is padded."""
    src, mel = aligned
    kw = dict(clip_seconds=1.0, training=False, eval_crop="center", batch_size=4)
    full, audio = _full_features(mel), _full_audio(src)
    fe = frontend().eval()
    seen = {"aligned": 0, "shifted": 0, "short": 0}
    for a, c in zip(load(src, **kw), load(mel, features="cached", **kw), strict=True):
        assert a.keys == c.keys
        x, _ = fe(a)
        y, _ = fe(c)
        assert y.shape == x.shape == (len(a), N_MELS, WF)
        for i, key in enumerate(c.keys):
            if not bool(c.valid[i]):
                continue
            n = len(audio[key])
            if n <= W:
                seen["short"] += 1
                assert int(c.lengths[i]) == n // HOP + 1 == int(fe.frame_lengths(a.lengths, WF)[i])
                assert np.array_equal(c.features[i, :, :n // HOP + 1].numpy(), full[key])
                continue
            s = (n - W) // 2
            assert np.array_equal(a.audio[i].numpy(), audio[key][s:s + W])  # the audio path's crop
            f0 = int(s / HOP + 0.5)
            assert abs(f0 * HOP - s) <= HOP / 2 and int(c.lengths[i]) == WF
            assert np.array_equal(c.features[i].numpy(), full[key][:, f0:f0 + WF])
            if s % HOP == 0:
                seen["aligned"] += 1
                inner = slice(EDGE, (W - N_FFT // 2) // HOP + 1)
                assert close(y[i, :, inner], x[i, :, inner]), key
            else:
                seen["shifted"] += 1
    assert seen == {"aligned": 4, "shifted": 2, "short": 1}


def test_training_crops_map_the_audio_crop_and_follow_the_seed(demo_shards: Path, mel: Path) -> None:
    full, audio = _full_features(mel), _full_audio(demo_shards)
    epoch = [(b.keys, b.features.clone(), b.lengths.clone()) for b in load(mel, features="cached")]
    checked = 0
    for a, c in zip(load(demo_shards), load(mel, features="cached"), strict=True):
        assert a.keys == c.keys  # the same shuffle: crops are drawn per clip from (seed, epoch, key)
        for i, key in enumerate(c.keys):
            n, frames = len(audio[key]), full[key].shape[1]
            if n <= W:
                assert np.array_equal(c.features[i, :, :frames].numpy(), full[key])
                continue
            u = sample_uniform(3, 0, key, f"crop{c.repeats[i]}")
            s = crop_start(n, W, "random", u)
            assert np.array_equal(a.audio[i].numpy(), audio[key][s:s + W])  # that is the audio path's crop
            f0 = min(int(s / HOP + 0.5), frames - WF)
            assert abs(f0 * HOP - s) <= HOP / 2 or f0 == frames - WF
            assert np.array_equal(c.features[i].numpy(), full[key][:, f0:f0 + WF])
            checked += 1
    assert checked > 30
    again = [(b.keys, b.features, b.lengths) for b in load(mel, features="cached")]
    assert all(k == k2 and torch.equal(f, f2) and torch.equal(n, n2) for (k, f, n), (k2, f2, n2) in zip(epoch, again))
    other = load(mel, features="cached", seed=4)
    crops = {k: f for b in other for k, f in zip(b.keys, b.features)}
    first = {k: f for keys, feats, _ in epoch for k, f in zip(keys, feats)}
    assert any(not torch.equal(crops[k], first[k]) for k in first)
    nxt = load(mel, features="cached")
    nxt.set_epoch(1)
    assert any(not torch.equal(b.features, f) for b, (_, f, _) in zip(nxt, epoch))


def test_workers_resume_and_the_frontend_in_workers(mel: Path) -> None:
    """The same batches for 0 and 2 workers; a resume continues with them; a training Frontend in the
    workers (SpecAugment + Mixup) gives what it gives in this process."""
    ref = [(b.keys, b.features, b.lengths) for b in load(mel, features="cached")]
    two = [(b.keys, b.features, b.lengths) for b in load(mel, features="cached", num_workers=2)]
    assert len(ref) == len(two) and all(a[0] == b[0] and torch.equal(a[1], b[1]) for a, b in zip(ref, two))
    loader = load(mel, features="cached")
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    rest = load(mel, features="cached")
    rest.load_state_dict(state)
    assert [b.keys for b in rest] == [k for k, _, _ in ref[2:]]

    def train_fe() -> wds_audio.Frontend:
        return frontend(specaugment=True, mixup=wds_audio.Mixup(alpha=0.4, p=1.0), standardize="utterance").train()

    main_fe = train_fe()
    mine = [main_fe(b) for b in load(mel, features="cached")]
    inside = list(load(mel, features="cached", frontend=train_fe(), num_workers=2))
    for (x, y), b in zip(mine, inside, strict=True):
        assert b.feature_settings == {} and b.features.dtype == torch.float32
        assert torch.equal(b.features, x) and torch.equal(b.targets, y)
    raw = next(iter(load(mel, features="cached")))
    x, y = main_fe(raw)
    assert not torch.equal(y, raw.targets)  # mixed up
    plain, _ = frontend(standardize="utterance").eval()(raw)
    assert not torch.equal(x, plain) and bool((x == 0).sum() > (plain == 0).sum())  # masked
    evaluation = next(iter(load(mel, features="cached", training=False, split="valid")))
    x_eval, y_eval = main_fe(evaluation)  # a train-mode Frontend does not augment an evaluation batch
    assert torch.equal(y_eval, evaluation.targets)
    assert torch.equal(x_eval, frontend(standardize="utterance").eval()(evaluation)[0])


def test_settings_mismatches_are_refused_naming_both(demo_shards: Path, mel: Path) -> None:
    cases = [(frontend_kw, words) for frontend_kw, words in [
        ({"n_mels": 128}, ["n_mels=64", "n_mels=128"]),
        ({"hop_length": 320}, ["hop_length=160", "hop_length=320"]),
        ({"n_fft": 512}, ["n_fft=1024", "n_fft=512", "win_length=1024", "win_length=512"]),
        ({"features": "mfcc"}, ["kind='logmel'", "kind='mfcc'"]),
        ({"f_max": 7000.0}, ["f_max=8000.0", "f_max=7000.0"]),
    ]]
    for kw, words in cases:
        args = dict(sample_rate=SR, n_mels=N_MELS, hop_length=HOP, n_fft=N_FFT)
        args.update(kw)
        fe = wds_audio.Frontend(**args)
        with pytest.raises(ValueError, match="cached features were computed with") as e:
            load(mel, features="cached", frontend=fe)
        assert all(w in str(e.value) for w in words), str(e.value)
        batch = next(iter(load(mel, features="cached")))
        with pytest.raises(ValueError, match="cached features"):  # also in the training loop
            fe(batch)
    with pytest.raises(ValueError, match="sample_rate=16000.*sample_rate=32000"):
        load(mel, features="cached", sample_rate=32000)
    with pytest.raises(ValueError, match="Gain, Bandpass"):
        load(mel, features="cached", frontend=frontend(augment=[wds_audio.Gain(), wds_audio.Bandpass(SR)]))
    with pytest.raises(ValueError, match="waveform augmentations cannot run on cached features: Gain"):
        frontend(augment=[wds_audio.Gain()])(next(iter(load(mel, features="cached"))))
    with pytest.raises(ValueError, match="no cached features"):
        load(demo_shards, features="cached")
    for bad in ({"pcm_on_device": True}, {"resample_on_device": True}, {"trim_db": 40.0}, {"return_audio": True},
                {"backend": "dali"}):
        with pytest.raises(ValueError, match="features='cached' decodes no audio: " + list(bad)[0]):
            load(mel, features="cached", **bad)
    with pytest.raises(ValueError, match="features must be one of"):
        load(mel, features="logmel")


def test_a_dataset_json_of_features_is_what_the_frontend_is_checked_against(mel: Path) -> None:
    m = json.loads((mel / "dataset.json").read_text())
    fe = frontend()
    fe.check_cached(m["features"])  # the settings it was made with pass
    assert {k: m["features"][k] for k in fe.feature_settings()} == fe.feature_settings()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cached_batch_on_cuda_matches_cpu(mel: Path) -> None:
    """A cached batch copied to the GPU (fp16, half the bytes of float32) gives the CPU's features."""
    batch = next(iter(load(mel, features="cached", training=False, split="valid", clip_seconds=None)))
    fe = frontend(standardize="utterance").eval()
    ref, _ = fe(batch)
    got, _ = fe.to("cuda")(batch.to("cuda"))
    assert got.device.type == "cuda" and got.dtype == torch.float32
    torch.testing.assert_close(got.cpu(), ref, atol=1e-4, rtol=1e-5)
