"""Loudness measures and normalization: peak, RMS, and integrated loudness per ITU-R BS.1770-4.

BS.1770: K-weighting (a high shelf, +4 dB above ~1.5 kHz, then a ~38 Hz high pass; the
standard gives 48 kHz coefficients, other rates use the same analogue prototypes through the
bilinear transform), mean square over 400 ms blocks with 75 % overlap, an absolute gate at
-70 LKFS and a relative gate 10 LU below the ungated mean. Clips shorter than one block are
measured over their whole length (ungated).

Example:
    >>> import numpy as np
    >>> x = 0.1 * np.sin(2 * np.pi * 997 * np.arange(48000) / 48000)
    >>> round(integrated_loudness(x, 48000), 2)   # a -20 dBFS 997 Hz sine: about -23 LUFS
    -23.05
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

MODES = ("peak", "rms", "lufs")


@lru_cache(maxsize=16)
def k_weighting(sample_rate: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(b, a) of the two K-weighting biquads at ``sample_rate``."""
    def shelf(gain_db: float, q: float, fc: float) -> tuple[np.ndarray, np.ndarray]:
        a_ = 10 ** (gain_db / 40)
        w0 = 2 * math.pi * fc / sample_rate
        alpha, cw = math.sin(w0) / (2 * q), math.cos(w0)
        b = [a_ * ((a_ + 1) + (a_ - 1) * cw + 2 * math.sqrt(a_) * alpha), -2 * a_ * ((a_ - 1) + (a_ + 1) * cw),
             a_ * ((a_ + 1) + (a_ - 1) * cw - 2 * math.sqrt(a_) * alpha)]
        a = [(a_ + 1) - (a_ - 1) * cw + 2 * math.sqrt(a_) * alpha, 2 * ((a_ - 1) - (a_ + 1) * cw),
             (a_ + 1) - (a_ - 1) * cw - 2 * math.sqrt(a_) * alpha]
        return np.array(b) / a[0], np.array(a) / a[0]

    def highpass(q: float, fc: float) -> tuple[np.ndarray, np.ndarray]:
        w0 = 2 * math.pi * fc / sample_rate
        alpha, cw = math.sin(w0) / (2 * q), math.cos(w0)
        b = [(1 + cw) / 2, -(1 + cw), (1 + cw) / 2]
        a = [1 + alpha, -2 * cw, 1 - alpha]
        return np.array(b) / a[0], np.array(a) / a[0]

    return shelf(4.0, 1 / math.sqrt(2), 1500.0), highpass(0.5, 38.0)


def integrated_loudness(x: np.ndarray, sample_rate: int) -> float:
    """BS.1770-4 integrated loudness in LUFS of a mono (T,) or multichannel (T, C) signal."""
    x = np.asarray(x, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    # imported here: scipy.signal is 66 MB and 0.5 s of imports, which every loader (its config
    # imports MODES) and each of its workers would otherwise carry without ever measuring LUFS
    from scipy.signal import lfilter

    (b1, a1), (b2, a2) = k_weighting(sample_rate)
    y = lfilter(b2, a2, lfilter(b1, a1, x, axis=0), axis=0)
    block, hop = int(round(0.4 * sample_rate)), int(round(0.1 * sample_rate))
    if len(y) < block:
        z = np.mean(y ** 2, axis=0)[None]
    else:
        starts = np.arange(0, len(y) - block + 1, hop)
        c = np.concatenate([np.zeros((1, y.shape[1])), np.cumsum(y ** 2, axis=0)])
        z = (c[starts + block] - c[starts]) / block  # (blocks, channels) mean squares
    power = z.sum(axis=1)  # channel weights 1.0 (mono/stereo front channels)
    with np.errstate(divide="ignore"):
        loud = -0.691 + 10 * np.log10(power)
    gated = power[loud > -70.0]
    if gated.size == 0:
        return -math.inf
    rel = -0.691 + 10 * math.log10(gated.mean()) - 10.0
    final = power[(loud > -70.0) & (loud > rel)]
    return -0.691 + 10 * math.log10(final.mean())


def measure(x: np.ndarray, sample_rate: int, mode: str) -> float:
    """Level of ``x`` in dB: dBFS peak, dBFS RMS, or LUFS."""
    if mode == "peak":
        p = float(np.max(np.abs(x))) if x.size else 0.0
        return 20 * math.log10(p) if p > 0 else -math.inf
    if mode == "rms":
        r = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
        return 20 * math.log10(r) if r > 0 else -math.inf
    if mode == "lufs":
        return integrated_loudness(x, sample_rate)
    raise ValueError(f"loudness mode must be one of {MODES}, got {mode!r}")


def normalize(x: np.ndarray, sample_rate: int, mode: str, target_db: float, max_gain_db: float = 40.0) -> np.ndarray:
    """Scale ``x`` so that its level is ``target_db``; silence (or -inf) is returned unchanged."""
    level = measure(x, sample_rate, mode)
    if not math.isfinite(level):
        return x
    gain_db = min(target_db - level, max_gain_db)  # never blow up near-silent clips into noise
    return (x * 10 ** (gain_db / 20)).astype(x.dtype, copy=False)
