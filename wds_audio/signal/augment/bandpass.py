"""Random band-pass filtering."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .base import BatchAugmentation, Params, _applied_rows, _check_range, _fft_size, _wave, valid_mask

# --------------------------------------------------------------------------------------- bandpass

class Bandpass(BatchAugmentation):
    """Band-pass each clip around its own centre frequency (zero-phase, FFT domain).

    Per sample: a centre f0 drawn log-uniformly in [min_center_hz, max_center_hz] and a bandwidth
    B = f0 x fraction, fraction uniform in [min_bandwidth_fraction, max_bandwidth_fraction]. The
    spectrum (rfft of the zero-padded clip, size >= 2T so the zero-phase response does not wrap) is
    multiplied by the magnitude of an analog Butterworth band-pass of ``order``:
    ``|H(f)| = 1 / sqrt(1 + ((f^2 - f0^2) / (f B)) ** (2 order))``, whose -3 dB edges f1 < f2 satisfy
    f2 - f1 = B and f1 f2 = f0^2. No phase change, so nothing is delayed; padding stays zero.

    Example:
        >>> import torch
        >>> bp = Bandpass(16000, min_center_hz=1000.0, max_center_hz=1000.0, p=1.0)
        >>> bp(torch.randn(2, 8000), None, ["a", "b"], epoch=0)[0].shape
        torch.Size([2, 8000])
    """

    name = "bandpass"

    def __init__(self, sample_rate: int, min_center_hz: float = 200.0, max_center_hz: float = 4000.0,
                 min_bandwidth_fraction: float = 0.5, max_bandwidth_fraction: float = 1.99, order: int = 4,
                 p: float = 0.5, seed: int = 0) -> None:
        super().__init__(p, seed, sample_rate=sample_rate, min_center_hz=min_center_hz,
                         max_center_hz=max_center_hz, min_bandwidth_fraction=min_bandwidth_fraction,
                         max_bandwidth_fraction=max_bandwidth_fraction, order=order)
        _check_range("Bandpass", "min_center_hz", min_center_hz, "max_center_hz", max_center_hz)
        _check_range("Bandpass", "min_bandwidth_fraction", min_bandwidth_fraction,
                     "max_bandwidth_fraction", max_bandwidth_fraction)
        if sample_rate <= 0 or min_center_hz <= 0 or max_center_hz >= sample_rate / 2:
            raise ValueError(f"Bandpass: need 0 < min_center_hz <= max_center_hz < sample_rate / 2, got "
                             f"{min_center_hz}..{max_center_hz} Hz at sample_rate={sample_rate}")
        if min_bandwidth_fraction <= 0:
            raise ValueError(f"Bandpass: min_bandwidth_fraction must be > 0, got {min_bandwidth_fraction}")
        if int(order) != order or order < 1:
            raise ValueError(f"Bandpass: order must be a positive integer, got {order}")
        self.sample_rate, self.order = int(sample_rate), int(order)
        self.min_center_hz, self.max_center_hz = float(min_center_hz), float(max_center_hz)
        self.min_bandwidth_fraction = float(min_bandwidth_fraction)
        self.max_bandwidth_fraction = float(max_bandwidth_fraction)

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        log_center = rng.uniform(math.log(self.min_center_hz), math.log(self.max_center_hz))
        return {"center_hz": math.exp(log_center),
                "bandwidth_fraction": rng.uniform(self.min_bandwidth_fraction, self.max_bandwidth_fraction)}

    def response(self, freqs_hz: torch.Tensor, center_hz: torch.Tensor, bandwidth_hz: torch.Tensor) -> torch.Tensor:
        """|H(f)| for each (centre, bandwidth) row: (B,) x (F,) -> (B, F)."""
        f = freqs_hz[None, :]
        ratio = (f.square() - center_hz[:, None].square()) / (f * bandwidth_hz[:, None])
        # At f = 0 the ratio is -inf and |H| = 1 / sqrt(inf) = 0, as it should be (no NaN: f0 > 0).
        return torch.rsqrt(1.0 + ratio.abs().pow(2 * self.order))

    def apply_transform(self, x: torch.Tensor, params: Params,
                        lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = _wave("Bandpass", x, lengths)
        rows = _applied_rows(params, x.device)
        if rows.numel() == 0:
            return x, lengths
        dev, size = x.device, x.shape[1]
        center = params["center_hz"].to(dev, torch.float32)[rows]
        bandwidth = center * params["bandwidth_fraction"].to(dev, torch.float32)[rows]
        n = _fft_size(2 * size)
        freqs = torch.fft.rfftfreq(n, 1.0 / self.sample_rate, device=dev)
        clip = x[rows].float() * valid_mask(lengths[rows], size)
        y = torch.fft.irfft(torch.fft.rfft(clip, n) * self.response(freqs, center, bandwidth), n)[:, :size]
        out = x.clone()
        out[rows] = (y * valid_mask(lengths[rows], size)).to(x.dtype)
        return out, lengths
