"""DeviceResponse (random smooth EQ, or an impulse-response bank): against float64 numpy references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wds_audio.signal.augment.device_response import DeviceResponse

pytestmark = pytest.mark.numeric  # float tolerances: also run by `make test-isa`

SR = 16000
CUDA = pytest.param("cuda", marks=[pytest.mark.gpu,
                                   pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")])
DEVICES = ["cpu", CUDA]
# float32 FFT round trip of a 2T-point transform against float64: the largest |ours - numpy| measured over
# these batches (peak 1.23) under ATEN_CPU_CAPABILITY/MKL_ENABLE_INSTRUCTIONS default/SSE4_2, avx2/AVX2 and
# avx512/AVX512: EQ 3.3e-7 / 4.0e-7 / 3.7e-7, IR bank 2.9e-7 / 1.8e-7 / 2.3e-7, 0 dB EQ 7.2e-7 / 4.8e-7 /
# 7.2e-7 (a few float32 ulps). The bound allows about 7x the worst.
ATOL = 5e-6


def curve_db(freqs: np.ndarray, gains: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The documented curve, written out in float64: raised cosine between log-spaced knots, flat outside."""
    knots = np.geomspace(lo, hi, len(gains))
    out = np.empty_like(freqs)
    for i, f in enumerate(freqs):
        if f <= knots[0]:
            out[i] = gains[0]
        elif f >= knots[-1]:
            out[i] = gains[-1]
        else:
            k = int(np.searchsorted(knots, f, side="right")) - 1
            t = math.log(f / knots[k]) / math.log(knots[k + 1] / knots[k])
            out[i] = gains[k] + (gains[k + 1] - gains[k]) * (1 - math.cos(math.pi * t)) / 2
    return out


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = 0.3 * torch.randn(3, 4000, generator=g)
    lengths = torch.tensor([4000, 2500, 1001])
    return x * (torch.arange(4000)[None, :] < lengths[:, None]), lengths


# ------------------------------------------------------------------------------------------ validation

@pytest.mark.parametrize("build, message", [
    (lambda: DeviceResponse(SR, min_gain_db=6.0, max_gain_db=-6.0), "need finite min_gain_db <= max_gain_db"),
    (lambda: DeviceResponse(SR, max_gain_db=float("inf")), "need finite min_gain_db <= max_gain_db"),
    (lambda: DeviceResponse(SR, n_bands=1), "n_bands must be an integer >= 2"),
    (lambda: DeviceResponse(SR, min_freq_hz=0.0), "need 0 < min_freq_hz < max_freq_hz"),
    (lambda: DeviceResponse(SR, min_freq_hz=5000.0, max_freq_hz=1000.0), "need finite min_freq_hz <= max_freq_hz"),
    (lambda: DeviceResponse(SR, max_freq_hz=9000.0), "max_freq_hz <= sample_rate / 2"),
    (lambda: DeviceResponse(0), "sample_rate must be a positive integer"),
    (lambda: DeviceResponse(SR, irs=torch.zeros(2, 64)), "impulse response 0 is all zeros"),
    (lambda: DeviceResponse(SR, irs=torch.tensor([[1.0, float("nan")]])), "impulse response 0 holds NaN"),
    (lambda: DeviceResponse(SR, irs=torch.zeros(0, 8)), "non-empty (N, L) tensor"),
    (lambda: DeviceResponse(SR, p=-0.1), "p must be in [0, 1]"),
])
def test_bad_configuration_is_rejected(build, message: str) -> None:
    with pytest.raises(ValueError) as err:
        build()
    assert message in str(err.value)
    assert str(err.value).startswith("DeviceResponse:")


# --------------------------------------------------------------------------------------- random EQ

def test_the_curve_is_the_documented_raised_cosine_and_stays_within_its_knots() -> None:
    dr = DeviceResponse(SR, min_gain_db=-9.0, max_gain_db=9.0, n_bands=6, min_freq_hz=125.0, p=1.0)
    freqs = np.concatenate([[0.0, 50.0], np.geomspace(100.0, SR / 2, 400)])
    rng = np.random.default_rng(0)
    gains = rng.uniform(-9, 9, size=(5, 6))
    ours = dr.response(torch.tensor(freqs), torch.tensor(gains)).numpy()
    for row, g in zip(ours, gains):
        np.testing.assert_allclose(row, curve_db(freqs, g, 125.0, SR / 2), atol=1e-9)
        assert row.min() >= g.min() - 1e-9 and row.max() <= g.max() + 1e-9  # no overshoot
    knots = torch.tensor(np.geomspace(125.0, SR / 2, 6))
    np.testing.assert_allclose(dr.response(knots, torch.tensor(gains)).numpy(), gains, atol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
def test_random_eq_is_the_curve_applied_to_the_zero_padded_spectrum(device: str) -> None:
    """Without keep_energy: rfft of the clip zero-padded to n >= 2T, times 10^(G/20), irfft, cut at T (numpy
    float64). With keep_energy: the same, rescaled to the input's energy over its valid samples."""
    x, lengths = batch()
    for keep in (False, True):
        dr = DeviceResponse(SR, min_gain_db=-12.0, max_gain_db=12.0, keep_energy=keep, p=1.0, seed=3).to(device)
        params = dr.randomize_parameters(x, ["a", "b", "c"], epoch=1)
        y, out_lengths = dr.apply_transform(x.to(device), params, lengths.to(device))
        y = y.cpu().double().numpy()
        assert torch.equal(out_lengths.cpu(), lengths)
        n = 8192  # the power of two >= 2 * 4000
        freqs = np.fft.rfftfreq(n, 1.0 / SR)
        for i, length in enumerate(lengths.tolist()):
            clip = x[i].double().numpy()
            gain = 10 ** (curve_db(freqs, params["gain_db"][i].numpy(), 100.0, SR / 2) / 20)
            ref = np.fft.irfft(np.fft.rfft(clip, n) * gain, n)[:4000]
            ref[length:] = 0
            if keep:
                ref *= math.sqrt(np.sum(clip ** 2) / np.sum(ref ** 2))
                assert np.sum(y[i] ** 2) == pytest.approx(np.sum(clip ** 2), rel=1e-5)
            assert not y[i, length:].any()  # padding stays zero
            np.testing.assert_allclose(y[i], ref, atol=ATOL if device == "cpu" else 1e-4, rtol=0)


def test_a_tone_is_scaled_by_the_curve_at_its_frequency() -> None:
    """The physical meaning: a steady 1 kHz tone comes out louder or softer by G(1 kHz) dB, its phase kept."""
    t = np.arange(SR) / SR
    x = torch.tensor(0.5 * np.sin(2 * np.pi * 1000.0 * t), dtype=torch.float32)[None]
    dr = DeviceResponse(SR, min_gain_db=-10.0, max_gain_db=10.0, keep_energy=False, p=1.0)
    params = dr.randomize_parameters(x, ["tone"], epoch=0)
    y, _ = dr.apply_transform(x, params)
    expected_db = float(dr.response(torch.tensor([1000.0], dtype=torch.float64),
                                    params["gain_db"].double())[0, 0])
    middle = slice(2000, SR - 2000)  # away from the clip's edges (a zero-phase filter smears them)
    measured_db = 20 * math.log10(float(y[0, middle].abs().max()) / 0.5)
    assert measured_db == pytest.approx(expected_db, abs=0.05)
    ratio = float(torch.dot(y[0, middle], x[0, middle]) / (y[0, middle].norm() * x[0, middle].norm()))
    assert ratio > 0.999  # in phase: magnitude only


def test_zero_gain_is_the_identity() -> None:
    x, lengths = batch()
    dr = DeviceResponse(SR, min_gain_db=0.0, max_gain_db=0.0, keep_energy=False, p=1.0)
    y, _ = dr(x, lengths, ["a", "b", "c"], epoch=0)
    torch.testing.assert_close(y, x, atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------- impulse responses

def test_impulse_responses_are_convolved_peak_aligned_and_cut_at_the_clip() -> None:
    x, lengths = batch()
    g = torch.Generator().manual_seed(1)
    bank = torch.randn(4, 256, generator=g) * torch.exp(-torch.arange(256) / 40.0)
    bank[:, :10] = 0  # a delay before the peak: align_peak removes it
    bank[:, 10] = 3.0
    dr = DeviceResponse(SR, irs=bank, keep_energy=True, p=1.0, seed=7)
    params = dr.randomize_parameters(x, ["a", "b", "c"], epoch=0)
    y, _ = dr.apply_transform(x, params, lengths)
    for i, length in enumerate(lengths.tolist()):
        clip = x[i].double().numpy()
        h = bank[int(params["ir_index"][i])].double().numpy()[10:]
        ref = np.convolve(clip, h)[:4000]
        ref[length:] = 0
        ref *= math.sqrt(np.sum(clip ** 2) / np.sum(ref ** 2))
        np.testing.assert_allclose(y[i].double().numpy(), ref, atol=ATOL, rtol=0)
    draws = dr.randomize_parameters(torch.zeros(400, 1), [f"k{i}" for i in range(400)], 0)["ir_index"]
    assert set(draws.tolist()) == {0, 1, 2, 3}


# ------------------------------------------------------------------------- p, determinism, config

def test_a_sample_is_coloured_the_same_whatever_its_batch_and_after_a_rebuild() -> None:
    x, lengths = batch()
    keys = ["k0", "k1", "k2"]
    dr = DeviceResponse(SR, p=0.7, seed=11)
    y, _ = dr(x, lengths, keys, epoch=2)
    order = [2, 0, 1]
    y2, _ = dr(x[order], lengths[order], [keys[i] for i in order], epoch=2)
    torch.testing.assert_close(y2, y[order], atol=ATOL, rtol=0)
    rebuilt = DeviceResponse(**dr.get_config())
    assert torch.equal(rebuilt(x, lengths, keys, epoch=2)[0], y)
    a, b = dr.randomize_parameters(x, keys, 2), dr.randomize_parameters(x, keys, 3)
    assert not torch.equal(a["gain_db"], b["gain_db"])
    assert dr.state_dict() == {}
    off, _ = DeviceResponse(SR, p=0.0)(x, lengths, keys, epoch=2)
    assert torch.equal(off, x)


def test_exported_from_the_package_top() -> None:
    import wds_audio
    from wds_audio.signal.augment import TimeStretch

    assert wds_audio.DeviceResponse is DeviceResponse
    assert wds_audio.TimeStretch is TimeStretch


def test_both_run_in_the_frontend_in_training_only() -> None:
    """In a Frontend's augment list: training stretches (lengths, hence valid frames, follow the rate) and
    colours; evaluation gives exactly the features of a Frontend without them."""
    from wds_audio import Frontend, TimeStretch

    x, lengths = batch()
    keys = ["a", "b", "c"]
    stretch = TimeStretch(min_rate=1.5, max_rate=1.5, p=1.0)
    fe = Frontend(sample_rate=SR, n_mels=32, n_fft=256, standardize="utterance",
                  augment=[stretch, DeviceResponse(SR, p=1.0)])
    plain = Frontend(sample_rate=SR, n_mels=32, n_fft=256, standardize="utterance").eval()
    trained = fe.train()(x, lengths, keys=keys)
    expected_frames = fe.frame_lengths(torch.floor(lengths / 1.5 + 0.5).long(), trained.shape[-1])
    for i, n in enumerate(expected_frames.tolist()):
        assert not trained[i, :, n:].any() and trained[i, :, n - 1].any()  # padding frames zero after the end
    evaluated = fe.eval()(x, lengths, keys=keys)
    assert torch.equal(evaluated, plain(x, lengths, keys=keys))
    assert not torch.allclose(trained, evaluated)
