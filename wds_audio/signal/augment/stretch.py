"""Tempo-only time stretch (duration changes, pitch kept): a batched phase vocoder on the STFT."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .base import BatchAugmentation, Params, _check_range, _wave, valid_mask

# ----------------------------------------------------------------------------------- time stretch


class TimeStretch(BatchAugmentation):
    """Change each clip's tempo by a rate drawn in [min_rate, max_rate], keeping its pitch.

    A rate r > 1 plays faster (shorter clip), r < 1 slower (longer), the convention of
    torchaudio.transforms.TimeStretch and of SpeedPerturb. Rates are drawn uniformly in
    [min_rate, max_rate]; both must be > 0.

    Per sample this is torchaudio's recipe: Hann STFT of ``n_fft`` (hop ``hop_length``, default
    ``n_fft // 4``; centred, reflect padding) of the zero-padded batch row, then
    torchaudio.functional.phase_vocoder at the sample's rate (phase advance
    ``linspace(0, pi * hop, n_fft // 2 + 1)``, as torchaudio.transforms.TimeStretch builds it), then
    torch.istft. Here the whole batch goes through one vocoder pass although each row has its own rate:
    the vocoder's time steps are ``torch.arange(0, frames, rate)`` per row (the very call torchaudio
    makes, on the CPU), the frames are gathered per row, and the overlap-add divides each row by the
    window envelope of its own frames only, so a row equals torch.istft of torchaudio's stretched
    spectrogram (whose frame count is ceil(frames / rate)) rather than being darkened where its frames
    end. Only the frames that reach the first T output samples are computed.

    Lengths: a stretched clip of ``n`` valid samples lasts ``floor(n / r + 0.5)`` samples (round half
    up), capped at T; the batch keeps its width T (longer clips are cropped, shorter ones zero-padded,
    as in SpeedPerturb) and everything past the new length is zero. Rows with r == 1 exactly are left
    untouched (torchaudio's phase_vocoder returns its input at rate 1 too). ``n_fft`` is in samples: 512
    suits 16 kHz, scale it with the sample rate.

    Example:
        >>> import torch
        >>> ts = TimeStretch(min_rate=1.25, max_rate=1.25, p=1.0)
        >>> ts(torch.randn(2, 8000), torch.tensor([8000, 6000]), ["a", "b"], epoch=0)[1].tolist()
        [6400, 4800]
    """

    name = "stretch"

    def __init__(self, min_rate: float = 0.8, max_rate: float = 1.25, n_fft: int = 512,
                 hop_length: int | None = None, p: float = 0.5, seed: int = 0) -> None:
        super().__init__(p, seed, min_rate=min_rate, max_rate=max_rate, n_fft=n_fft, hop_length=hop_length)
        _check_range("TimeStretch", "min_rate", min_rate, "max_rate", max_rate)
        if not min_rate > 0:
            raise ValueError(f"TimeStretch: min_rate must be > 0 (a stretch rate of 0 or below has no "
                             f"meaning), got min_rate={min_rate}")
        if int(n_fft) != n_fft or n_fft < 16:
            raise ValueError(f"TimeStretch: n_fft must be an integer >= 16, got {n_fft}")
        hop = int(n_fft) // 4 if hop_length is None else hop_length
        if int(hop) != hop or not 1 <= hop <= int(n_fft) // 2:
            raise ValueError(f"TimeStretch: hop_length must be an integer in [1, n_fft // 2], got {hop_length}")
        self.min_rate, self.max_rate = float(min_rate), float(max_rate)
        self.n_fft, self.hop_length = int(n_fft), int(hop)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.register_buffer("phase_advance", torch.linspace(0, math.pi * self.hop_length, self.n_fft // 2 + 1)[:, None],
                             persistent=False)

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"rate": rng.uniform(self.min_rate, self.max_rate)}

    def stretch(self, clip: torch.Tensor, rates: list[float]) -> torch.Tensor:
        """Tempo-stretch (R, T) float32 rows by their rates; (R, T): cropped, or zero past the stretched end."""
        dev, size = clip.device, clip.shape[1]
        n_fft, hop = self.n_fft, self.hop_length
        window = self.window.to(dev)
        spec = torch.stft(clip, n_fft, hop, window=window, center=True, pad_mode="reflect", return_complex=True)
        frames = spec.shape[-1]
        # Vocoder time steps per row, computed exactly as phase_vocoder does (float32 arange on the CPU).
        steps = [torch.arange(0, frames, rate, dtype=torch.float32) for rate in rates]
        counts = torch.tensor([s.numel() for s in steps])
        # Output frame k spans samples [k hop - n_fft/2, k hop + n_fft/2): later ones miss the first T samples.
        needed = -(-(size + n_fft // 2) // hop)
        m = min(needed, int(counts.max()))
        time_steps = torch.full((len(rates), m), float(frames + 1))  # past the end: the zero frames below
        for row, s in enumerate(steps):
            time_steps[row, : min(m, s.numel())] = s[:m]
        frame_valid = (torch.arange(m)[None, :] < counts[:, None]).to(dev)
        time_steps = time_steps.to(dev)

        alphas = (time_steps % 1.0)[:, None, :]
        index_0 = time_steps.long().clamp(max=frames + 1)[:, None, :].expand(-1, spec.shape[1], -1)
        index_1 = (index_0 + 1).clamp(max=frames + 1)
        padded = torch.nn.functional.pad(spec, [0, 2])
        angle, norm = padded.angle(), padded.abs()
        angle_0, angle_1 = angle.gather(-1, index_0), angle.gather(-1, index_1)
        norm_0, norm_1 = norm.gather(-1, index_0), norm.gather(-1, index_1)
        advance = self.phase_advance.to(dev)
        phase = angle_1 - angle_0 - advance
        phase = phase - 2 * math.pi * torch.round(phase / (2 * math.pi))
        phase = phase + advance
        phase = torch.cat([angle[..., :1], phase[..., :-1]], dim=-1)
        magnitude = alphas * norm_1 + (1 - alphas) * norm_0
        stretched = torch.polar(magnitude, torch.cumsum(phase, -1)) * frame_valid[:, None, :]

        # Inverse STFT (torch.istft's arithmetic), with each row's window envelope over its own frames.
        pieces = torch.fft.irfft(stretched, n=n_fft, dim=-2) * window[None, :, None]
        total = n_fft + (m - 1) * hop
        fold = dict(output_size=(1, total), kernel_size=(1, n_fft), stride=(1, hop))
        ola = torch.nn.functional.fold(pieces, **fold).reshape(len(rates), total)
        envelope = torch.nn.functional.fold(window.square()[None, :, None] * frame_valid[:, None, :].float(),
                                            **fold).reshape(len(rates), total)
        start = n_fft // 2
        ola, envelope = ola[:, start: start + size], envelope[:, start: start + size]
        y = torch.where(envelope > 1e-11, ola / envelope.clamp_min(1e-11), torch.zeros_like(ola))
        return torch.nn.functional.pad(y, (0, size - y.shape[1]))

    def apply_transform(self, x: torch.Tensor, params: Params,
                        lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = _wave("TimeStretch", x, lengths)
        size = x.shape[1]
        if size <= self.n_fft // 2:
            raise ValueError(f"TimeStretch: clips of {size} samples are too short for n_fft={self.n_fft}")
        selected = (params["apply"] & (params["rate"] != 1.0)).nonzero().flatten()
        if selected.numel() == 0:
            return x, lengths
        rows = selected.to(x.device)
        rates = params["rate"].double()[selected]
        clip = x[rows].float() * valid_mask(lengths[rows], size)
        y = self.stretch(clip, rates.tolist())
        rows_lengths = torch.floor(lengths[rows].double() / rates.to(x.device) + 0.5).long().clamp(max=size)
        out, new_lengths = x.clone(), lengths.clone()
        out[rows] = (y * valid_mask(rows_lengths, size)).to(x.dtype)
        new_lengths[rows] = rows_lengths
        return out, new_lengths
