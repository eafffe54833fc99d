"""Microphone / recording-device response: random smooth EQ curves, or impulse responses from a bank."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .base import (
    BatchAugmentation,
    Params,
    _applied_rows,
    _check_range,
    _energy_ratio_scale,
    _fft_size,
    _fit_length,
    _wave,
    valid_mask,
)

# ------------------------------------------------------------------------------------ device response


class DeviceResponse(BatchAugmentation):
    """Colour each clip with a random device frequency response (DCASE-style device shift).

    Random EQ (``irs`` None, the default): per sample, ``n_bands`` gains in dB are drawn uniformly in
    [min_gain_db, max_gain_db], one per knot; the knots sit log-spaced from ``min_freq_hz`` to
    ``max_freq_hz`` (default: sample_rate / 2). The curve G(f) in dB interpolates the knots with a raised
    cosine in log-frequency: between knots f_k and f_k+1, with t = log(f / f_k) / log(f_k+1 / f_k),
    ``G = g_k + (g_k+1 - g_k) (1 - cos(pi t)) / 2``; it is flat below the first knot and above the last.
    So the curve is smooth (continuous, with a continuous slope that is zero at every knot), never
    leaves the range of its own knot gains (no spline overshoot), and its slope is at most
    ``pi / 2 * |g_k+1 - g_k| / log(f_k+1 / f_k)`` per unit of log-frequency. ``response()`` evaluates it.
    The clip's spectrum (rfft of the zero-padded clip, size >= 2T so the zero-phase response does not
    wrap) is multiplied by ``10 ** (G / 20)``: magnitude only, no phase change, nothing is delayed.

    Impulse responses (``irs`` given, an (N, L) tensor of measured device or microphone IRs): each
    sample draws one row and is convolved with it exactly as Reverb does it (linear FFT convolution,
    cut at the clip's end; with ``align_peak`` each IR is first shifted so its largest sample is at t=0).

    Level: with ``keep_energy`` (default) the result is scaled so its energy over the valid samples
    equals the input's, so the transform changes the colour only (add a Gain for level changes); without
    it the EQ gains apply as drawn (0 dB everywhere leaves the clip as it is). Padding stays zero;
    lengths are unchanged.

    Example:
        >>> import torch
        >>> dr = DeviceResponse(16000, min_gain_db=-6.0, max_gain_db=6.0, p=1.0)
        >>> dr(torch.randn(2, 8000), None, ["a", "b"], epoch=0)[0].shape
        torch.Size([2, 8000])
    """

    name = "device_response"

    def __init__(self, sample_rate: int, min_gain_db: float = -6.0, max_gain_db: float = 6.0, n_bands: int = 8,
                 min_freq_hz: float = 100.0, max_freq_hz: float | None = None, irs: torch.Tensor | None = None,
                 align_peak: bool = True, keep_energy: bool = True, p: float = 0.5, seed: int = 0) -> None:
        super().__init__(p, seed, sample_rate=sample_rate, min_gain_db=min_gain_db, max_gain_db=max_gain_db,
                         n_bands=n_bands, min_freq_hz=min_freq_hz, max_freq_hz=max_freq_hz, align_peak=align_peak,
                         keep_energy=keep_energy)
        _check_range("DeviceResponse", "min_gain_db", min_gain_db, "max_gain_db", max_gain_db)
        if int(sample_rate) != sample_rate or sample_rate <= 0:
            raise ValueError(f"DeviceResponse: sample_rate must be a positive integer, got {sample_rate}")
        top = sample_rate / 2 if max_freq_hz is None else max_freq_hz
        _check_range("DeviceResponse", "min_freq_hz", min_freq_hz, "max_freq_hz", top)
        if not 0 < min_freq_hz < top <= sample_rate / 2:
            raise ValueError(f"DeviceResponse: need 0 < min_freq_hz < max_freq_hz <= sample_rate / 2, got "
                             f"{min_freq_hz}..{top} Hz at sample_rate={sample_rate}")
        if int(n_bands) != n_bands or n_bands < 2:
            raise ValueError(f"DeviceResponse: n_bands must be an integer >= 2, got {n_bands}")
        self.sample_rate, self.n_bands = int(sample_rate), int(n_bands)
        self.min_gain_db, self.max_gain_db = float(min_gain_db), float(max_gain_db)
        self.min_freq_hz, self.max_freq_hz = float(min_freq_hz), float(top)
        self.align_peak, self.keep_energy = bool(align_peak), bool(keep_energy)
        self.knots_hz = tuple(float(f) for f in np.geomspace(self.min_freq_hz, self.max_freq_hz, self.n_bands))
        bank = None
        if irs is not None:
            bank = torch.as_tensor(irs).detach().to("cpu", torch.float32)
            if bank.dim() == 1:
                bank = bank[None]
            if bank.dim() != 2 or bank.shape[0] == 0 or bank.shape[1] == 0:
                raise ValueError(f"DeviceResponse: impulse-response bank must be a non-empty (N, L) tensor, got "
                                 f"{tuple(bank.shape)}")
            for row in range(bank.shape[0]):
                if not bool(torch.isfinite(bank[row]).all()):
                    raise ValueError(f"DeviceResponse: impulse response {row} holds NaN or inf")
                if float(bank[row].square().sum()) == 0.0:
                    raise ValueError(f"DeviceResponse: impulse response {row} is all zeros")
            if align_peak:
                bank = torch.stack([_fit_length(h[int(h.abs().argmax()):], bank.shape[1]) for h in bank])
        self.register_buffer("irs", bank, persistent=False)

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        if self.irs is not None:
            return {"ir_index": int(rng.integers(self.irs.shape[0]))}
        return {"gain_db": rng.uniform(self.min_gain_db, self.max_gain_db, size=self.n_bands)}

    def response(self, freqs_hz: torch.Tensor, gain_db: torch.Tensor) -> torch.Tensor:
        """The EQ curve G(f) in dB for each row of knot gains: (F,) x (B, n_bands) -> (B, F)."""
        step = math.log(self.max_freq_hz / self.min_freq_hz) / (self.n_bands - 1)
        # Position in knot units; f = 0 gives -inf, clamped to the first knot (flat below it).
        position = ((freqs_hz.log() - math.log(self.min_freq_hz)) / step).clamp(0, self.n_bands - 1)
        k = position.floor().long().clamp(max=self.n_bands - 2)
        ease = (1 - torch.cos(math.pi * (position - k))) / 2
        k = k[None, :].expand(gain_db.shape[0], -1)
        low, high = gain_db.gather(1, k), gain_db.gather(1, k + 1)
        return low + (high - low) * ease[None, :]

    def apply_transform(self, x: torch.Tensor, params: Params,
                        lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = _wave("DeviceResponse", x, lengths)
        rows = _applied_rows(params, x.device)
        if rows.numel() == 0:
            return x, lengths
        dev, size = x.device, x.shape[1]
        mask = valid_mask(lengths[rows], size)
        dry = x[rows].float() * mask
        if self.irs is None:
            n = _fft_size(2 * size)
            freqs = torch.fft.rfftfreq(n, 1.0 / self.sample_rate, device=dev, dtype=torch.float64)
            gain_db = params["gain_db"].to(dev, torch.float64)[rows]
            magnitude = torch.pow(10.0, self.response(freqs, gain_db) / 20.0).float()
            wet = torch.fft.irfft(torch.fft.rfft(dry, n) * magnitude, n)[:, :size]
        else:
            h = self.irs.to(dev)[params["ir_index"].to(dev)[rows]]
            n = _fft_size(size + h.shape[1] - 1)
            wet = torch.fft.irfft(torch.fft.rfft(dry, n) * torch.fft.rfft(h, n), n)[:, :size]
        wet = wet * mask
        if self.keep_energy:
            wet = wet * _energy_ratio_scale(dry, wet)[:, None]
        out = x.clone()
        out[rows] = wet.to(x.dtype)
        return out, lengths
