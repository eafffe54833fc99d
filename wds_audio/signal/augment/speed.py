"""Speed perturbation (tempo and pitch together) and pitch shift (duration kept)."""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
import torch
import torchaudio.functional as AF

from .base import BatchAugmentation, Params, _check_range, _fit_length, _rational, _wave, valid_mask

# ------------------------------------------------------------------------------- speed and pitch

class SpeedPerturb(BatchAugmentation):
    """Kaldi-style speed perturbation: resample by a factor drawn from ``rates`` (duration and pitch change).

    A factor s > 1 plays faster (shorter, higher); the clip is resampled with
    torchaudio.functional.resample from p to q where p/q ~ s (the smallest fraction within 1 cent),
    then cropped or zero-padded back to T; lengths become ceil(length * q / p), capped at T. One
    resampling pass per distinct factor in the batch. ``p`` defaults to 1 because ``rates`` usually
    holds 1.0.

    Example:
        >>> import torch
        >>> sp = SpeedPerturb(rates=(0.9,), p=1.0)
        >>> sp(torch.randn(1, 9000), torch.tensor([9000]), ["a"], epoch=0)[1].tolist()
        [9000]
    """

    name = "speed"

    def __init__(self, rates: Sequence[float] = (0.9, 1.0, 1.1), p: float = 1.0, seed: int = 0) -> None:
        super().__init__(p, seed, rates=tuple(float(r) for r in rates))
        self.rates = tuple(float(r) for r in rates)
        if not self.rates or not all(math.isfinite(r) and r > 0 for r in self.rates):
            raise ValueError(f"SpeedPerturb: rates must be a non-empty list of positive factors, got {rates}")
        self.fractions = tuple(_rational(r, "SpeedPerturb") for r in self.rates)

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"rate_index": int(rng.integers(len(self.rates)))}

    def apply_transform(self, x: torch.Tensor, params: Params,
                        lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = _wave("SpeedPerturb", x, lengths)
        size = x.shape[1]
        out, new_lengths = x, lengths
        for i, fraction in enumerate(self.fractions):
            selected = params["apply"] & (params["rate_index"] == i)
            if fraction == 1 or not bool(selected.any()):
                continue
            rows = selected.nonzero().flatten().to(x.device)
            num, den = fraction.numerator, fraction.denominator
            y = _fit_length(AF.resample(x[rows].float(), orig_freq=num, new_freq=den), size)
            # ceil(length * den / num) in exact integer arithmetic
            rows_lengths = ((lengths[rows] * den + num - 1) // num).clamp(max=size)
            if out is x:
                out, new_lengths = x.clone(), lengths.clone()
            out[rows] = (y * valid_mask(rows_lengths, size)).to(x.dtype)
            new_lengths[rows] = rows_lengths
        return out, new_lengths


class PitchShift(BatchAugmentation):
    """Shift pitch by a number of semitones, keeping the duration.

    Semitones are drawn uniformly from the grid min_semitones, min_semitones + semitone_step, ...,
    max_semitones; each distinct shift in the batch costs one pass over its samples (so a coarse grid keeps
    the cost bounded). For a pitch factor r = 2 ** (semitones / 12) ~ p/q (smallest fraction within
    1 cent), the clip is time-stretched by r with a phase vocoder (torchaudio.functional.phase_vocoder;
    Hann STFT of ``n_fft``, hop ``n_fft // 4``) and resampled from p to q samples, which is
    torchaudio.functional.pitch_shift with a small resampling kernel. Lengths are unchanged; padding
    stays zero. ``n_fft`` is in samples: 512 suits 16 kHz, scale it with the sample rate.

    Example:
        >>> import torch
        >>> ps = PitchShift(min_semitones=2.0, max_semitones=2.0, p=1.0)
        >>> ps(torch.randn(2, 8000), None, ["a", "b"], epoch=0)[0].shape
        torch.Size([2, 8000])
    """

    name = "pitch"

    def __init__(self, min_semitones: float = -2.0, max_semitones: float = 2.0, semitone_step: float = 0.5,
                 n_fft: int = 512, p: float = 0.5, seed: int = 0) -> None:
        super().__init__(p, seed, min_semitones=min_semitones, max_semitones=max_semitones,
                         semitone_step=semitone_step, n_fft=n_fft)
        _check_range("PitchShift", "min_semitones", min_semitones, "max_semitones", max_semitones)
        if not semitone_step > 0:
            raise ValueError(f"PitchShift: semitone_step must be > 0, got {semitone_step}")
        if n_fft < 16:
            raise ValueError(f"PitchShift: n_fft must be >= 16, got {n_fft}")
        if max(abs(min_semitones), abs(max_semitones)) > 24:
            raise ValueError(f"PitchShift: shifts beyond two octaves are not supported, got "
                             f"{min_semitones}..{max_semitones}")
        steps = int(math.floor((max_semitones - min_semitones) / semitone_step + 1e-9))
        self.semitones = tuple(float(min_semitones + k * semitone_step) for k in range(steps + 1))
        self.fractions = tuple(_rational(2.0 ** (s / 12.0), "PitchShift") for s in self.semitones)
        self.n_fft, self.hop_length = int(n_fft), int(n_fft) // 4
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        index = int(rng.integers(len(self.semitones)))
        return {"shift_index": index, "semitones": self.semitones[index]}

    def _shift(self, x: torch.Tensor, fraction: Fraction) -> torch.Tensor:
        """Pitch-shift (B, T) float32 by the factor ``fraction`` = p/q."""
        num, den = fraction.numerator, fraction.denominator
        window = self.window.to(x.device)
        spec = torch.stft(x, self.n_fft, self.hop_length, window=window, center=True, pad_mode="reflect",
                          return_complex=True)
        advance = torch.linspace(0, math.pi * self.hop_length, spec.shape[-2], device=x.device)[:, None]
        stretched = AF.phase_vocoder(spec, rate=den / num, phase_advance=advance)
        long = torch.istft(stretched, self.n_fft, self.hop_length, window=window,
                           length=int(round(x.shape[1] * num / den)))
        return _fit_length(AF.resample(long, orig_freq=num, new_freq=den), x.shape[1])

    def apply_transform(self, x: torch.Tensor, params: Params,
                        lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = _wave("PitchShift", x, lengths)
        size = x.shape[1]
        if size <= self.n_fft // 2:
            raise ValueError(f"PitchShift: clips of {size} samples are too short for n_fft={self.n_fft}")
        out = x
        for i, fraction in enumerate(self.fractions):
            selected = params["apply"] & (params["shift_index"] == i)
            if fraction == 1 or not bool(selected.any()):
                continue
            rows = selected.nonzero().flatten().to(x.device)
            clip = x[rows].float() * valid_mask(lengths[rows], size)
            if out is x:
                out = x.clone()
            out[rows] = (self._shift(clip, fraction) * valid_mask(lengths[rows], size)).to(x.dtype)
        return out, lengths
