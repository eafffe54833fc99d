"""The device resampler against torchaudio's (same filter) and soxr's (quality), on CPU and CUDA."""
from __future__ import annotations

import numpy as np
import pytest
import soxr
import torch
import torchaudio.functional as AF

from wds_audio.signal.resample import BETA, FILTER_WIDTH, ROLLOFF, Resample, output_length

pytestmark = pytest.mark.numeric  # float tolerances: also run by `make test-isa`

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                                   reason="needs CUDA")])]
PAIRS = [(44100, 32000), (48000, 16000), (22050, 16000), (16000, 44100), (8000, 48000), (44100, 16000)]


def _tones(sr: int, seconds: float, freqs: list[float]) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return sum(np.sin(2 * np.pi * f * t + i) / (i + 1) for i, f in enumerate(freqs)).astype(np.float32)


@pytest.mark.parametrize("orig,new", PAIRS)
@pytest.mark.parametrize("device", DEVICES)
def test_same_numbers_as_torchaudio_with_the_same_filter(orig: int, new: int, device: str) -> None:
    """torchaudio.functional.resample (sinc_interp_kaiser, "kaiser_best" settings) in float64 is
    the reference; ours in float32 within 1e-5 on unit-variance noise. Lengths that are not whole
    blocks of the reduced rates included."""
    x = torch.randn(3, orig + 377, generator=torch.Generator().manual_seed(orig + new))
    ref = AF.resample(x.double(), orig, new, lowpass_filter_width=FILTER_WIDTH, rolloff=ROLLOFF,
                      resampling_method="sinc_interp_kaiser", beta=BETA)
    got = Resample(orig, new).to(device)(x.to(device)).cpu()
    assert got.shape[-1] == output_length(x.shape[-1], orig, new)
    torch.testing.assert_close(got.double(), ref[..., : got.shape[-1]], atol=1e-5, rtol=0)


@pytest.mark.parametrize("orig,new", [(44100, 32000), (48000, 16000), (22050, 16000)])
def test_close_to_soxr_hq_in_the_passband(orig: int, new: int) -> None:
    """Tones below 0.9 x the new Nyquist: the difference to soxr's HQ resampler stays below -70 dB
    of the signal (edges excluded: each resampler pads the clip's ends its own way)."""
    x = _tones(orig, 1.0, [440.0, 1234.5, 0.4 * new])
    ours = Resample(orig, new)(torch.from_numpy(x)[None])[0].numpy()
    ref = soxr.resample(x, orig, new, quality="HQ")[: len(ours)]
    inner = slice(new // 50, -new // 50)
    err = np.sqrt(np.mean((ours[inner] - ref[inner]) ** 2)) / np.sqrt(np.mean(ref[inner] ** 2))
    assert 20 * np.log10(err) < -70


@pytest.mark.parametrize("orig,new", [(44100, 32000), (48000, 16000)])
def test_removes_what_the_new_rate_cannot_hold(orig: int, new: int) -> None:
    """A tone between the new Nyquist and the old one would alias: it comes out > 80 dB down."""
    tone = _tones(orig, 1.0, [0.56 * new])
    out = Resample(orig, new)(torch.from_numpy(tone)[None])[0].numpy()[new // 10: -new // 10]
    assert 20 * np.log10(np.sqrt(np.mean(out ** 2)) / np.sqrt(np.mean(tone ** 2))) < -80


def test_lengths_identity_and_bad_rates() -> None:
    r = Resample(44100, 32000)
    assert r.lengths(torch.tensor([220500, 44100, 1])).tolist() == [160000, 32000, 0]
    x = torch.randn(2, 100)
    assert Resample(16000, 16000)(x) is x
    with pytest.raises(ValueError, match="sample rates"):
        Resample(0, 16000)
