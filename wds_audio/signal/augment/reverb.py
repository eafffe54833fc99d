"""Reverberation: convolution with impulse responses (given, or synthetic ones from ``synthetic_rirs``)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ...core.rng import seed_of
from .base import (
    BatchAugmentation,
    Params,
    _applied_rows,
    _energy_ratio_scale,
    _fft_size,
    _fit_length,
    _wave,
    valid_mask,
)

# ----------------------------------------------------------------------------------------- reverb

def synthetic_rirs(n: int, sample_rate: int, rt60_range: tuple[float, float] = (0.2, 1.0), seed: int = 0,
                   drr_db: float = 0.0, length_seconds: float | None = None) -> torch.Tensor:
    """``n`` synthetic room impulse responses, (n, L) float32, for users without recorded ones.

    Each is a direct-path impulse at t=0 followed by Gaussian noise under an exponential envelope that
    decays by 60 dB in ``rt60`` seconds (drawn uniformly in ``rt60_range`` per IR), with the direct path
    ``drr_db`` dB above the tail's energy (direct-to-reverberant ratio); normalised to unit energy.
    L = ``length_seconds`` (default: the largest RT60) x sample_rate.

    Example:
        >>> synthetic_rirs(4, 16000, rt60_range=(0.3, 0.6)).shape
        torch.Size([4, 9600])
    """
    if n < 1 or sample_rate <= 0:
        raise ValueError(f"synthetic_rirs: need n >= 1 and sample_rate > 0, got n={n}, sample_rate={sample_rate}")
    lo, hi = rt60_range
    if not 0 < lo <= hi:
        raise ValueError(f"synthetic_rirs: need 0 < rt60_range[0] <= rt60_range[1], got {rt60_range}")
    seconds = hi if length_seconds is None else length_seconds
    size = max(2, int(math.ceil(seconds * sample_rate)))
    rng = np.random.default_rng(seed_of(seed, "synthetic_rirs"))
    rt60 = rng.uniform(lo, hi, size=n)
    t = np.arange(size) / sample_rate
    # Amplitude envelope 10 ** (-3 t / rt60): energy falls 60 dB after rt60 seconds.
    tail = rng.standard_normal((n, size)) * np.power(10.0, -3.0 * t[None, :] / rt60[:, None])
    tail[:, 0] = 0.0
    tail[:, 0] = np.sqrt(np.square(tail).sum(1) * 10.0 ** (drr_db / 10.0))
    tail /= np.sqrt(np.square(tail).sum(1, keepdims=True))
    return torch.from_numpy(tail.astype(np.float32))


class Reverb(BatchAugmentation):
    """Convolve each clip with an impulse response from a bank (batched FFT convolution).

    y = (x * h)[:T], computed with torch.fft.rfft on a power-of-two size >= T + L - 1 (linear, not
    circular, convolution), zeroed past the clip's length (the tail is cut where the clip ends) and then
    scaled so its energy over the valid samples equals the dry clip's: the level is kept, only the
    colour and the tail change. With ``align_peak`` (default) each IR is shifted at construction so
    its largest-magnitude sample (the direct path) is at t=0, so the reverberant clip is not delayed.

    Example:
        >>> import torch
        >>> reverb = Reverb(synthetic_rirs(2, 16000, (0.2, 0.4)), p=1.0)
        >>> y, _ = reverb(torch.randn(2, 16000), None, ["a", "b"], epoch=0)
        >>> y.shape
        torch.Size([2, 16000])
    """

    name = "reverb"

    def __init__(self, irs: torch.Tensor, p: float = 0.5, align_peak: bool = True, seed: int = 0) -> None:
        super().__init__(p, seed, align_peak=align_peak)
        bank = torch.as_tensor(irs).detach().to("cpu", torch.float32)
        if bank.dim() == 1:
            bank = bank[None]
        if bank.dim() != 2 or bank.shape[0] == 0 or bank.shape[1] == 0:
            raise ValueError(f"Reverb: impulse-response bank must be a non-empty (N, L) tensor, got {tuple(bank.shape)}")
        for row in range(bank.shape[0]):
            if not bool(torch.isfinite(bank[row]).all()):
                raise ValueError(f"Reverb: impulse response {row} holds NaN or inf")
            if float(bank[row].square().sum()) == 0.0:
                raise ValueError(f"Reverb: impulse response {row} is all zeros")
        if align_peak:
            bank = torch.stack([_fit_length(h[int(h.abs().argmax()):], bank.shape[1]) for h in bank])
        self.align_peak = align_peak
        self.register_buffer("irs", bank, persistent=False)

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"ir_index": int(rng.integers(self.irs.shape[0]))}

    def apply_transform(self, x: torch.Tensor, params: Params,
                        lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = _wave("Reverb", x, lengths)
        rows = _applied_rows(params, x.device)
        if rows.numel() == 0:
            return x, lengths
        size = x.shape[1]
        dry = x[rows].float() * valid_mask(lengths[rows], size)
        h = self.irs.to(x.device)[params["ir_index"].to(x.device)[rows]]
        n = _fft_size(size + h.shape[1] - 1)
        wet = torch.fft.irfft(torch.fft.rfft(dry, n) * torch.fft.rfft(h, n), n)[:, :size]
        wet = wet * valid_mask(lengths[rows], size)
        wet = wet * _energy_ratio_scale(dry, wet)[:, None]
        out = x.clone()
        out[rows] = wet.to(x.dtype)
        return out, lengths
