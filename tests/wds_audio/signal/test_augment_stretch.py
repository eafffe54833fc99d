"""TimeStretch (tempo only, pitch kept): against torchaudio's phase vocoder on the same STFT, lengths, pitch."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.stats
import torch
import torchaudio

from tests.float64 import peak_hz
from wds_audio.signal.augment.stretch import TimeStretch

pytestmark = pytest.mark.numeric  # float tolerances: also run by `make test-isa`

SR = 16000
N_FFT, HOP = 512, 128
CUDA = pytest.param("cuda", marks=[pytest.mark.gpu,
                                   pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")])
DEVICES = ["cpu", CUDA]


def tone(freq: float, seconds: float = 1.0, amplitude: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    return (amplitude * torch.sin(2 * math.pi * freq * t)).float()


def stretched_length(n: int, rate: float, size: int) -> int:
    """The documented rule: round half up of n / rate, capped at the batch width."""
    return min(size, math.floor(n / rate + 0.5))


def torchaudio_reference(row: torch.Tensor, rate: float, new_length: int) -> torch.Tensor:
    """torch.stft -> torchaudio.transforms.TimeStretch -> torch.istft of one (T,) row, zero past new_length."""
    window = torch.hann_window(N_FFT, device=row.device)
    spec = torch.stft(row[None], N_FFT, HOP, window=window, center=True, pad_mode="reflect", return_complex=True)
    stretched = torchaudio.transforms.TimeStretch(hop_length=HOP, n_freq=N_FFT // 2 + 1).to(row.device)(spec, rate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "signal is shorter than the length parameter": padded with zeros
        y = torch.istft(stretched, N_FFT, HOP, window=window, length=row.shape[0])[0]
    y[new_length:] = 0
    return y


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Four rows, two of them zero-padded: tones, a tone in noise, noise."""
    g = torch.Generator().manual_seed(0)
    x = torch.stack([tone(440.0), tone(1000.0) + 0.1 * torch.randn(SR, generator=g),
                     0.3 * torch.randn(SR, generator=g), tone(300.0)])
    lengths = torch.tensor([16000, 16000, 11000, 7001])
    return x * (torch.arange(SR)[None, :] < lengths[:, None]), lengths


# ------------------------------------------------------------------------------------------ validation

@pytest.mark.parametrize("build, message", [
    (lambda: TimeStretch(min_rate=0.0, max_rate=1.2), "min_rate must be > 0"),
    (lambda: TimeStretch(min_rate=-0.5, max_rate=1.2), "min_rate must be > 0"),
    (lambda: TimeStretch(min_rate=0.0, max_rate=0.0), "min_rate must be > 0"),
    (lambda: TimeStretch(min_rate=-2.0, max_rate=-1.0), "min_rate must be > 0"),
    (lambda: TimeStretch(min_rate=1.3, max_rate=1.1), "min_rate <= max_rate"),
    (lambda: TimeStretch(min_rate=float("nan"), max_rate=1.1), "need finite min_rate <= max_rate"),
    (lambda: TimeStretch(max_rate=float("inf")), "need finite min_rate <= max_rate"),
    (lambda: TimeStretch(n_fft=8), "n_fft must be an integer >= 16"),
    (lambda: TimeStretch(hop_length=0), "hop_length must be an integer in [1, n_fft // 2]"),
    (lambda: TimeStretch(n_fft=512, hop_length=300), "hop_length must be an integer in [1, n_fft // 2]"),
    (lambda: TimeStretch(p=1.5), "p must be in [0, 1]"),
])
def test_bad_configuration_is_rejected(build, message: str) -> None:
    with pytest.raises(ValueError) as err:
        build()
    assert message in str(err.value)
    assert str(err.value).startswith("TimeStretch:")


def test_bad_batches_are_rejected() -> None:
    ts = TimeStretch(p=1.0)
    with pytest.raises(ValueError, match="too short for n_fft=512"):
        ts(torch.zeros(2, 256), None, ["a", "b"], 0)
    with pytest.raises(ValueError, match="3 keys for a batch of 2"):
        ts(torch.zeros(2, 1000), None, ["a", "b", "c"], 0)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 1000\]"):
        ts(torch.zeros(2, 1000), torch.tensor([1000, 1001]), ["a", "b"], 0)


# --------------------------------------------------------------------------------------- reference

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rates", [(0.8, 1.25, 0.9137, 1.1), (0.5, 2.0, 1.3333, 0.7071), (1.05, 0.95, 1.5, 0.6)])
def test_matches_torchaudio_time_stretch_on_the_same_stft(device: str, rates: tuple[float, ...]) -> None:
    """Each row equals torchaudio.transforms.TimeStretch (functional.phase_vocoder) applied to torch.stft of
    that row alone at the row's rate, then torch.istft, although the batch is stretched in one pass with
    four different rates (two rows zero-padded).

    Tolerance, CPU: measured largest |ours - torchaudio| over these 12 rows (peaks 0.5 to 0.6) under
    ATEN_CPU_CAPABILITY / MKL_ENABLE_INSTRUCTIONS = default / SSE4_2: 1.8e-7, avx2 / AVX2: 1.8e-7,
    avx512 / AVX512: 1.8e-7 (relative to the row's peak: 3.0e-7, 3.0e-7, 3.6e-7), a few float32 ulps:
    the vocoder time steps are the same torch.arange call, only angle / polar / FFT rounding differs with
    the tensor shapes. Bound: 1e-6. CUDA: cuFFT's rounding accumulates in the vocoder's running phase
    (see PitchShift's CUDA test, same arithmetic), so there the error energy is bounded, at -50 dB.
    """
    x, lengths = batch()
    ts = TimeStretch(min_rate=0.5, max_rate=2.0, n_fft=N_FFT, hop_length=HOP, p=1.0).to(device)
    params = ts.randomize_parameters(x, list("abcd"), epoch=0)
    params["rate"] = torch.tensor(rates, dtype=torch.float64)  # pin the rates (params are plain tensors)
    y, out_lengths = ts.apply_transform(x.to(device), params, lengths.to(device))
    expected_lengths = [stretched_length(int(n), r, SR) for n, r in zip(lengths.tolist(), rates)]
    assert out_lengths.cpu().tolist() == expected_lengths
    for i, rate in enumerate(rates):
        reference = torchaudio_reference(x[i].to(device), rate, expected_lengths[i])
        assert not y[i, expected_lengths[i]:].any()  # padding stays zero
        if device == "cpu":
            torch.testing.assert_close(y[i], reference, atol=1e-6, rtol=0)
        else:
            err = (y[i] - reference).norm() / reference.norm()
            assert 20 * torch.log10(err) < -50


def test_lengths_follow_the_rate_rounded_half_up() -> None:
    size = 16000
    lengths = torch.tensor([16000, 4001, 12345, 0, 999, 15000])
    rates = (2.0, 2.0, 0.8, 1.7, 1.2345, 0.9)
    ts = TimeStretch(min_rate=0.5, max_rate=2.0, p=1.0)
    x = torch.randn(6, size) * (torch.arange(size)[None, :] < lengths[:, None])
    params = ts.randomize_parameters(x, [f"k{i}" for i in range(6)], epoch=0)
    params["rate"] = torch.tensor(rates, dtype=torch.float64)
    y, out_lengths = ts.apply_transform(x, params, lengths)
    assert out_lengths.tolist() == [8000, 2001, 15431, 0, 809, size]  # 2000.5 -> 2001; 15431.25 -> 15431; 16667 capped
    assert out_lengths.tolist() == [stretched_length(int(n), r, size) for n, r in zip(lengths.tolist(), rates)]
    for i, n in enumerate(out_lengths.tolist()):
        assert not y[i, n:].any()
    assert not y[3].any()  # an empty clip stays empty


@pytest.mark.parametrize("device", DEVICES)
def test_pitch_is_kept_and_the_tone_fills_the_new_duration(device: str) -> None:
    """A tone's dominant frequency stays within one STFT bin (SR / n_fft = 31.25 Hz) of the original, while
    its duration follows the rate. Measured here: at most 0.05 Hz off (0.2 cents) on every CPU path above.

    Level: sped up (rate > 1) the tone keeps its amplitude 0.5. Slowed down, torchaudio's vocoder (which
    this equals to 1e-6, see above) loses level on a steady tone: its running phases start from the
    reflect-padded first frame, whose bins are not phase-locked like a sinusoid's, and rate < 1 repeats
    that incoherence in the overlap-add. Measured mean square 0.0445 at rate 0.8 and 0.0555 at 0.6 (-4.5 and
    -3.5 dB), the same for torchaudio.transforms.TimeStretch; asserted against torchaudio's level here."""
    rates = (0.8, 1.25, 0.6, 1.6)
    freqs = (440.0, 440.0, 1000.0, 250.0)
    x = torch.stack([tone(f, seconds=0.5) for f in freqs])
    x = torch.nn.functional.pad(x, (0, SR - x.shape[1]))  # room to slow down
    lengths = torch.full((4,), SR // 2)
    ts = TimeStretch(min_rate=0.5, max_rate=2.0, p=1.0).to(device)
    params = ts.randomize_parameters(x, list("abcd"), epoch=0)
    params["rate"] = torch.tensor(rates, dtype=torch.float64)
    y, out_lengths = ts.apply_transform(x.to(device), params, lengths.to(device))
    y = y.cpu()
    for i, (rate, freq) in enumerate(zip(rates, freqs)):
        n = int(out_lengths[i])
        assert n == round(SR / 2 / rate)
        measured = peak_hz(y[i, 500: n - 500].numpy(), SR)
        assert abs(measured - freq) < SR / N_FFT
        assert abs(measured - freq) < 0.5  # in fact far tighter than one bin
        quarters = y[i, :n - n % 4].reshape(4, -1).square().mean(1)
        assert float(quarters.min() / quarters.max()) > 0.8  # the tone lasts the whole new duration
        if rate > 1:
            assert float(quarters.mean()) == pytest.approx(0.125, rel=0.05)  # amplitude 0.5 kept
        reference = torchaudio_reference(x[i].to(device), rate, n).cpu()
        expected = reference[:n - n % 4].square().mean()
        assert float(quarters.mean()) == pytest.approx(float(expected), rel=1e-3)
        assert not y[i, n:].any()


# ------------------------------------------------------------------------- p, determinism, config

def test_p_zero_and_rate_one_are_identity() -> None:
    x, lengths = batch()
    y, out_lengths = TimeStretch(p=0.0)(x, lengths, list("abcd"), epoch=0)
    assert torch.equal(y, x) and torch.equal(out_lengths, lengths)
    y, out_lengths = TimeStretch(min_rate=1.0, max_rate=1.0, p=1.0)(x, lengths, list("abcd"), epoch=0)
    assert torch.equal(y, x) and torch.equal(out_lengths, lengths)
    ts = TimeStretch(p=1.0)
    params = ts.randomize_parameters(x, list("abcd"), epoch=0)
    assert bool(params["apply"].all())
    params["apply"][1] = False
    y, out_lengths = ts.apply_transform(x, params, lengths)
    assert torch.equal(y[1], x[1]) and int(out_lengths[1]) == int(lengths[1])
    for i in (0, 2, 3):
        assert not torch.allclose(y[i], x[i], atol=1e-3)


def test_a_sample_is_stretched_the_same_whatever_its_batch() -> None:
    x, lengths = batch()
    keys = ["clip-a", "clip-b", "clip-c", "clip-d"]
    ts = TimeStretch(min_rate=0.7, max_rate=1.4, p=0.8, seed=5)
    y, out_lengths = ts(x, lengths, keys, epoch=3)
    order = [2, 0, 3, 1]
    y2, out_lengths2 = ts(x[order], lengths[order], [keys[i] for i in order], epoch=3)
    torch.testing.assert_close(y2, y[order], atol=1e-6, rtol=0)
    assert torch.equal(out_lengths2, out_lengths[order])
    alone, alone_lengths = ts(x[1:2], lengths[1:2], keys[1:2], epoch=3)
    torch.testing.assert_close(alone[0], y[1], atol=1e-6, rtol=0)
    assert int(alone_lengths[0]) == int(out_lengths[1])
    # Resume: a transform rebuilt from its config draws the same; another epoch draws anew; no state.
    rebuilt = TimeStretch(**ts.get_config())
    assert ts.get_config() == {"min_rate": 0.7, "max_rate": 1.4, "n_fft": 512, "hop_length": None, "p": 0.8,
                               "seed": 5}
    a, b = rebuilt.randomize_parameters(x, keys, 3), ts.randomize_parameters(x, keys, 3)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(rebuilt(x, lengths, keys, epoch=3)[0], y)
    assert not torch.equal(ts.randomize_parameters(x, keys, 4)["rate"], b["rate"])
    assert ts.state_dict() == {}


def test_rates_are_uniform_in_the_range() -> None:
    keys = [f"clip{i}" for i in range(2000)]
    rates = TimeStretch(min_rate=0.8, max_rate=1.25, p=1.0).randomize_parameters(torch.zeros(2000, 1), keys, 0)["rate"]
    assert float(rates.min()) >= 0.8 and float(rates.max()) <= 1.25
    assert scipy.stats.kstest(rates.numpy(), scipy.stats.uniform(0.8, 0.45).cdf).pvalue > 0.01


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_give_the_same_result() -> None:
    x, lengths = batch()
    ts = TimeStretch(min_rate=0.6, max_rate=1.6, p=1.0, seed=2)
    params = ts.randomize_parameters(x, list("abcd"), 0)
    cpu = ts.apply_transform(x, params, lengths)
    gpu = ts.to("cuda").apply_transform(x.cuda(), params, lengths.cuda())
    assert torch.equal(gpu[1].cpu(), cpu[1])
    err = (gpu[0].cpu() - cpu[0]).norm(dim=1) / cpu[0].norm(dim=1)
    assert float(20 * torch.log10(err.max())) < -50
