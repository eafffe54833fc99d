"""Features against torchaudio on real recordings; tolerances stated per test."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from wds_audio.signal.features import MFCC, LogMel, frame_mask, frames_for

pytestmark = pytest.mark.numeric  # float tolerances: also run by `make test-isa`

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _real_clips(shared_dir: Path | None, n: int = 4) -> torch.Tensor:
    if shared_dir is not None:
        files = sorted((shared_dir / "audio-samples" / "digits").rglob("*.flac"))[:n]
        clips = [sf.read(f, dtype="float32")[0] for f in files]
    else:
        rng = np.random.default_rng(0)
        clips = [0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000) + 0.05 * rng.standard_normal(16000)
                 for _ in range(n)]
    t = min(len(c) for c in clips)
    return torch.tensor(np.stack([c[:t] for c in clips]), dtype=torch.float32)


@pytest.fixture
def clips(request) -> torch.Tensor:
    from tests.conftest import SHARED

    return _real_clips(SHARED if (SHARED / "audio-samples").is_dir() else None)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kw", [dict(n_fft=512, hop_length=160, n_mels=64),
                                dict(n_fft=1024, win_length=800, hop_length=320, n_mels=128, f_min=50.0, f_max=7000.0),
                                dict(n_fft=400, hop_length=160, n_mels=40, mel_scale="slaney", norm="slaney")])
def test_logmel_matches_torchaudio(clips: torch.Tensor, device: str, kw: dict) -> None:
    """max |ours - 10*log10(max(torchaudio MelSpectrogram, 1e-10))| <= 1e-4 dB, torchaudio on the
    same device (torchaudio's own CUDA and CPU results differ by up to 7.6e-4 dB on an H200)."""
    ours = LogMel(sample_rate=16000, **kw).to(device)(clips.to(device)).cpu()
    ta = torchaudio.transforms.MelSpectrogram(sample_rate=16000, **kw).to(device)(clips.to(device)).cpu()
    ref = 10 * torch.log10(ta.clamp_min(1e-10))
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("deltas", [0, 2])
def test_mfcc_matches_torchaudio(clips: torch.Tensor, deltas: int) -> None:
    """Per clip (torchaudio's top_db clamps per batch): max abs diff <= 1e-3."""
    mk = dict(n_fft=512, hop_length=160, n_mels=64)
    ours = MFCC(n_mfcc=20, deltas=deltas, sample_rate=16000, **mk)(clips)
    ta = torchaudio.transforms.MFCC(sample_rate=16000, n_mfcc=20, melkwargs=mk)
    for i in range(clips.shape[0]):
        ref = ta(clips[i:i + 1])
        feats = [ref]
        for _ in range(deltas):
            feats.append(torchaudio.functional.compute_deltas(feats[-1]))
        ref = torch.cat(feats, dim=-2)
        assert ours[i:i + 1].shape == ref.shape
        assert (ours[i:i + 1] - ref).abs().max().item() <= 1e-3


def test_frames_and_mask() -> None:
    x = torch.zeros(2, 16000)
    feats = LogMel(sample_rate=16000, n_fft=512, hop_length=160, n_mels=8)(x)
    assert feats.shape[-1] == frames_for(16000, 160) == 101
    m = frame_mask(torch.tensor([16000, 8000]), 160, feats.shape[-1])
    assert m[0].all() and m[1].sum() == 51


def test_bad_settings_rejected() -> None:
    with pytest.raises(ValueError):
        LogMel(sample_rate=16000, f_min=9000.0)
    with pytest.raises(ValueError):
        MFCC(n_mfcc=80, n_mels=40)
    with pytest.raises(ValueError):
        MFCC(deltas=3)


def test_logmel_on_threads_gives_the_same_numbers(clips: torch.Tensor) -> None:
    """A batch larger than a CPU chunk computed on 3 threads (as a loader worker making an epoch's
    first batch does): bit-identical to one thread, and within 1e-4 dB of torchaudio."""
    from wds_audio.core.threads import cpu_width

    batch = clips.repeat(5, 1)[:, :8000] * torch.linspace(0.2, 1.0, 5 * len(clips))[:, None]  # 20 distinct clips
    mel = LogMel(sample_rate=16000, n_fft=512, hop_length=160, n_mels=64)
    one = mel(batch)
    with cpu_width(3):
        three = mel(batch)
    assert torch.equal(one, three)
    ta = torchaudio.transforms.MelSpectrogram(16000, n_fft=512, hop_length=160, n_mels=64)(batch)
    assert (three - 10 * torch.log10(ta.clamp_min(1e-10))).abs().max().item() <= 1e-4
