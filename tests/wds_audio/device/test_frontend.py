"""The Frontend module: features, standardization, augmentation switches, batches from the loader."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import wds_audio
from wds_audio.signal.augment.gain import Gain
from wds_audio.signal.augment.mixup import Mixup
from wds_audio.signal.augment.specaugment import SpecAugment
from wds_audio.signal.features import LogMel
from wds_audio.device.frontend import Frontend, noise_bank

pytestmark = pytest.mark.numeric  # float tolerances: also run by `make test-isa`

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_eval_mode_is_plain_features() -> None:
    x = torch.randn(3, 8000)
    fe = Frontend(sample_rate=16000, n_fft=512, hop_length=160, n_mels=40, specaugment=True,
                  augment=[Gain(p=1.0)]).eval()
    torch.testing.assert_close(fe(x), LogMel(sample_rate=16000, n_fft=512, hop_length=160, n_mels=40)(x))


def test_training_mode_augments_deterministically_per_key() -> None:
    x = torch.randn(2, 8000)
    fe = Frontend(sample_rate=16000, n_fft=512, hop_length=160, n_mels=40,
                  augment=[Gain(min_gain_db=-6, max_gain_db=6, p=1.0)],
                  specaugment=SpecAugment(time_masks=2, time_width=10, freq_masks=1, freq_width=5, p=1.0)).train()
    a = fe(x, keys=["a", "b"])
    b = fe(x.flip(0), keys=["b", "a"]).flip(0)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, fe.eval()(x))


def test_int16_input_is_scaled() -> None:
    x = (torch.randn(2, 4000) * 3000).to(torch.int16)
    fe = Frontend(sample_rate=16000, n_fft=256, hop_length=80, n_mels=16).eval()
    torch.testing.assert_close(fe(x), fe(x.float() / 32768.0))


def test_utterance_cmvn_over_valid_frames_only() -> None:
    x = torch.randn(2, 16000)
    lengths = torch.tensor([16000, 8000])
    fe = Frontend(sample_rate=16000, n_fft=512, hop_length=160, n_mels=20, standardize="utterance").eval()
    y = fe(x, lengths)
    valid = 8000 // 160 + 1
    seg = y[1, :, :valid]
    torch.testing.assert_close(seg.mean(-1), torch.zeros(20), atol=1e-4, rtol=0)
    torch.testing.assert_close(seg.std(-1, unbiased=False), torch.ones(20), atol=1e-3, rtol=0)
    assert (y[1, :, valid:] == 0).all()


def test_dataset_standardization_uses_manifest_stats(demo_shards: Path, tmp_path: Path) -> None:
    import shutil

    from shardgen.cli import main

    ds = tmp_path / "ds"
    shutil.copytree(demo_shards, ds)
    assert main(["stats", str(ds), "--n-mels", "32", "--n-fft", "512"]) == 0
    stats = json.loads((ds / "dataset.json").read_text())["feature_stats"]
    fe = Frontend(sample_rate=16000, n_fft=512, n_mels=32, standardize="dataset", stats=stats).eval()
    loader = wds_audio.loader(str(ds), batch_size=16, sample_rate=16000, clip_seconds=None, training=False)
    total, sq, n = torch.zeros(32, dtype=torch.float64), torch.zeros(32, dtype=torch.float64), 0
    for b in loader:
        y = fe(b.audio, b.lengths)
        for i in range(len(b)):
            if b.valid[i]:
                f = y[i, :, : int(b.lengths[i]) // 160 + 1].double()
                total += f.sum(-1)
                sq += (f ** 2).sum(-1)
                n += f.shape[-1]
    mean = total / n
    std = (sq / n - mean ** 2).sqrt()
    # the train split standardized with its own statistics: mean 0, std 1 per bin. Tolerance 2e-3:
    # in a padded batch the last frame of a shorter clip sees zeros where `shardgen stats` (one clip
    # at a time) sees reflect padding.
    torch.testing.assert_close(mean, torch.zeros(32, dtype=torch.float64), atol=2e-3, rtol=0)
    torch.testing.assert_close(std, torch.ones(32, dtype=torch.float64), atol=2e-3, rtol=0)
    with pytest.raises(ValueError, match="n_mels=32"):
        Frontend(sample_rate=16000, n_mels=64, standardize="dataset", stats=stats)


def test_batch_in_mixup_targets_union(demo_shards: Path) -> None:
    fe = Frontend(sample_rate=16000, n_fft=512, hop_length=160, n_mels=32, mixup=Mixup(alpha=0.4, p=1.0)).train()
    b = next(iter(wds_audio.loader(str(demo_shards), batch_size=8, sample_rate=16000, clip_seconds=1.0)))
    x, t = fe(b)
    assert x.shape[:2] == (8, 32) and t.shape == b.targets.shape
    assert ((t == 0) | (t == 1)).all() and (t >= b.targets).all()  # union keeps every own label


def test_noise_bank_from_noise_split(demo_shards: Path) -> None:
    bank, lengths = noise_bank(str(demo_shards), max_clips=3)
    assert lengths.shape == (3,) and (lengths == 160000).all() and bank.shape == (480000,) and bank.abs().max() > 0


def _padded_mix(bank: torch.Tensor, sizes: torch.Tensor, x: torch.Tensor, params: dict, lengths: torch.Tensor) -> torch.Tensor:
    """NoiseMix.apply_transform as it was with an (N, longest) zero-padded bank (the reference)."""
    from wds_audio.signal.augment.base import valid_mask

    index, offset, snr_db = params["noise_index"], params["offset"], params["snr_db"].to(torch.float32)
    position = (offset[:, None] + torch.arange(x.shape[1])[None, :]) % sizes[index][:, None]
    mask = valid_mask(lengths, x.shape[1])
    noise = bank[index[:, None], position] * mask
    p_signal, p_noise = (x.float() * mask).square().sum(1), noise.square().sum(1)
    target = p_signal / torch.pow(10.0, snr_db / 10.0)
    scale = torch.where(p_noise > 0, torch.sqrt(target / p_noise.clamp_min(1e-30)), torch.zeros_like(p_noise))
    mixed = (x.float() + scale[:, None] * noise).to(x.dtype)
    return torch.where(params["apply"][:, None], mixed, x)


def test_noise_bank_back_to_back_mixes_as_the_padded_bank(demo_shards: Path) -> None:
    """The demo's noise clips, decoded, cut to unequal lengths: the bank holds the sum of their lengths,
    and the mixes are those of the zero-padded bank, value for value, for the same seed."""
    from wds_audio.signal.augment.noise import NoiseMix

    bank, lengths = noise_bank(str(demo_shards), max_clips=4)
    clips = [c[: n] for c, n in zip(torch.split(bank, lengths.tolist()), (160000, 3001, 70000, 12345))]
    sizes = torch.tensor([len(c) for c in clips])
    padded = torch.stack([torch.nn.functional.pad(c, (0, int(sizes.max()) - len(c))) for c in clips])
    speech = wds_audio.loader(str(demo_shards), batch_size=12, sample_rate=16000, clip_seconds=1.0, seed=5)
    b = next(iter(speech))
    b.lengths[::3] = 9000  # some clips shorter than the window
    for given in (torch.cat(clips), padded):
        mix = NoiseMix(given, sizes, min_snr_db=0.0, max_snr_db=20.0, p=0.8, seed=7)
        assert mix.noise.shape == (int(sizes.sum()),)
        params = mix.randomize_parameters(b.audio, b.draw_keys, epoch=2)
        assert len(set(params["noise_index"].tolist())) > 1 and not bool(params["apply"].all())
        got, _ = mix(b.audio, b.lengths, b.draw_keys, 2)
        assert torch.equal(got, _padded_mix(padded, sizes, b.audio, params, b.lengths))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_frontend_on_cuda_matches_cpu() -> None:
    x = torch.randn(4, 16000)
    fe = Frontend(sample_rate=16000, n_fft=512, hop_length=160, n_mels=64).eval()
    torch.testing.assert_close(fe.to("cuda")(x.cuda()).cpu(), fe.cpu()(x), atol=1e-3, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_frontend_resampling_int16_on_cuda_matches_cpu() -> None:
    """resample_on_device's path: int16 at 44.1 kHz in, log-mel at 32 kHz out, CPU and CUDA alike."""
    x = (torch.randn(4, 44100 * 2) * 3000).to(torch.int16)
    lengths = torch.tensor([88200, 60000, 44100, 1000])
    fe = Frontend(sample_rate=32000, input_sample_rate=44100, n_fft=1024, hop_length=320, n_mels=128).eval()
    ref = fe(x, lengths)
    torch.testing.assert_close(fe.to("cuda")(x.cuda(), lengths.cuda()).cpu(), ref, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("workers", [0, 2])
def test_frontend_in_workers_equals_frontend_in_main(demo_shards: Path, workers: int) -> None:
    """frontend= (CPU machines) computes in the workers exactly what the main process would."""
    def fe() -> Frontend:
        return Frontend(sample_rate=16000, n_fft=512, hop_length=160, n_mels=32, augment=[Gain(-6, 6, p=1.0)],
                        specaugment=SpecAugment(time_masks=1, time_width=10, freq_masks=1, freq_width=4, p=1.0),
                        mixup=Mixup(alpha=0.4, p=1.0)).train()
    kw = dict(batch_size=8, sample_rate=16000, clip_seconds=1.0, seed=2)
    inside = wds_audio.loader(str(demo_shards), num_workers=workers, frontend=fe(), **kw)
    main, ref_fe = wds_audio.loader(str(demo_shards), **kw), fe()
    for a, b in zip(inside, main):
        x, t = ref_fe(b)
        assert a.keys == b.keys and a.features is not None
        assert a.audio.shape == (len(b), 0)  # not shipped back unless asked for
        torch.testing.assert_close(a.features, x)
        torch.testing.assert_close(a.targets, t)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("training", [True, False])
def test_features_made_by_chunks_are_those_of_the_batch(demo_shards: Path, workers: int, training: bool) -> None:
    """Without waveform augmentation the workers make the log-mels a few clips at a time as the clips
    are decoded (no (B, T) waveforms): exactly the features the Frontend makes from the batch."""
    def fe() -> Frontend:
        return Frontend(sample_rate=16000, n_fft=512, hop_length=160, n_mels=32, standardize="utterance",
                        specaugment=SpecAugment(time_masks=2, time_width=10, freq_masks=1, freq_width=4, p=1.0),
                        mixup=Mixup(alpha=0.4, p=1.0)).train()
    assert fe().by_chunks(True) and not Frontend(sample_rate=16000, augment=[Gain(p=1.0)]).by_chunks(True)
    kw = dict(batch_size=7, sample_rate=16000, clip_seconds=1.0, seed=2, training=training, eval_crop="center")
    inside = wds_audio.loader(str(demo_shards), num_workers=workers, frontend=fe(), **kw)
    main, ref_fe, n = wds_audio.loader(str(demo_shards), **kw), fe(), 0
    for a, b in zip(inside, main):
        x, t = ref_fe(b)
        assert a.keys == b.keys and a.audio.shape == (len(b), 0)
        assert torch.equal(a.features, x) and torch.equal(a.targets, t)
        n += 1
    assert n == len(main) > 1


def test_frontend_in_workers_returns_audio_when_asked(demo_shards: Path) -> None:
    kw = dict(batch_size=8, sample_rate=16000, clip_seconds=1.0, seed=2)
    fe = Frontend(sample_rate=16000, n_fft=512, hop_length=160, n_mels=32).eval()
    both = wds_audio.loader(str(demo_shards), frontend=fe, return_audio=True, **kw)
    for a, b in zip(both, wds_audio.loader(str(demo_shards), **kw)):
        torch.testing.assert_close(a.audio, b.audio, rtol=0, atol=0)
        torch.testing.assert_close(a.features, fe(b.audio, b.lengths))


# ------------------------------------------------------- stored statistics must match every feature setting

@pytest.fixture(scope="module")
def stats_512(demo_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Statistics written by `shardgen stats` (n_mels 16, n_fft 512) and read back from dataset.json."""
    import shutil

    from shardgen.cli import main

    ds = tmp_path_factory.mktemp("fe-stats") / "ds"
    shutil.copytree(demo_shards, ds)
    assert main(["stats", str(ds), "--n-mels", "16", "--n-fft", "512", "--max-clips", "8"]) == 0
    return json.loads((ds / "dataset.json").read_text())["feature_stats"]


MATCHING = dict(sample_rate=16000, n_fft=512, n_mels=16)


@pytest.mark.parametrize("change, stored, mine", [
    (dict(n_fft=1024), "n_fft=512", "n_fft=1024"),
    (dict(hop_length=256), "hop_length=160", "hop_length=256"),
    (dict(win_length=400), "win_length=512", "win_length=400"),
    (dict(f_min=50.0), "f_min=0.0", "f_min=50.0"),
    (dict(f_max=7000.0), "f_max=8000.0", "f_max=7000.0"),
    (dict(mel_scale="slaney"), "mel_scale='htk'", "mel_scale='slaney'"),
    (dict(sample_rate=22050, f_max=8000.0), "sample_rate=16000", "sample_rate=22050"),
    (dict(features="mfcc", n_mfcc=16), "kind='logmel'", "kind='mfcc'"),
])
def test_stored_stats_with_other_settings_are_refused(stats_512: dict, change: dict, stored: str, mine: str) -> None:
    with pytest.raises(ValueError) as e:
        Frontend(standardize="dataset", stats=stats_512, **{**MATCHING, **change})
    msg = str(e.value)
    assert f"computed with {stored}" in msg and f"this frontend has {mine}" in msg
    # explicit statistics (mean and std only) are the user's choice: no check
    explicit = {k: stats_512[k] for k in ("mean", "std")}
    if change.get("features") != "mfcc":
        fe = Frontend(standardize="dataset", stats=explicit, **{**MATCHING, **change})
        assert fe.stats_info is None and fe(torch.randn(1, 8000)).shape[1] == 16


def test_stored_stats_with_the_same_settings_are_accepted(stats_512: dict) -> None:
    # the defaults resolve to the stored values: win_length n_fft, hop 10 ms, f_max half the rate
    fe = Frontend(standardize="dataset", stats=stats_512, **MATCHING)
    fe2 = Frontend(standardize="dataset", stats=stats_512, win_length=512, hop_length=160, f_min=0, f_max=8000.0,
                   mel_scale="htk", **MATCHING)
    assert fe.stats_info["folds"] == [1, 2, 3, 4] and fe.stats_info["split"] == "train"
    x = torch.randn(2, 8000)
    torch.testing.assert_close(fe.eval()(x), fe2.eval()(x))
    with pytest.raises(ValueError, match="16 mean and 16 std values; this frontend makes 20"):
        Frontend(standardize="dataset", stats={k: stats_512[k] for k in ("mean", "std")}, sample_rate=16000,
                 n_mels=20)
