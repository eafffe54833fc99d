"""Batched spectral features on any device: log-mel and MFCC (+ deltas).

Definitions follow torchaudio (``MelSpectrogram``: periodic Hann window, centred frames with
reflect padding, power 2, HTK mel scale by default) and librosa's ``power_to_db``
(``10 * log10(max(S, amin))``, amin 1e-10, no top_db), so values can be compared with both.

Example:
    >>> import torch
    >>> mel = LogMel(sample_rate=16000, n_fft=512, hop_length=160, n_mels=64)
    >>> mel(torch.zeros(2, 16000)).shape
    torch.Size([2, 64, 101])
"""
from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import nn

from ..core.threads import cpu_width_now, ordered_map

AMIN = 1e-10
# clips per CPU chunk: 1, 2, 4 and 8 give the same numbers; 2 and 4 ran at the same speed (1.14 vs
# 1.15 ms/clip, 64 x 5 s at 32 kHz, 1 thread), 1 at 1.35, 8 at 3.0; 2 holds half the STFT's
# working set of 4 (measured +29 MB for 4 clips of 5 s at 32 kHz, in each loader worker)
CPU_CHUNK = 2
# clips per step of `into` (the loader's workers, between decodes): 1 ran as fast there as 2 (345
# vs 343 clips/s, 4 at 332; benchmarks/throughput.py (c), 4 runs each) and took 22 MB less peak
# PSS over the process tree (502-508 vs 525-531 MB), the STFT's working set of one clip, not two
INTO_CHUNK = 1
MEL_BAND = 8  # mel filters per block of the CPU product (measured best of 4, 8, 16, 32)


def frames_for(num_samples: torch.Tensor | int, hop_length: int) -> torch.Tensor | int:
    """Number of centred STFT frames covering ``num_samples`` (per clip)."""
    return num_samples // hop_length + 1


def centre_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect-pad the last axis by ``pad`` on both sides (torch.stft's ``center=True`` padding)."""
    if x.shape[-1] <= pad:
        raise ValueError(f"a clip of {x.shape[-1]} samples is too short for centred frames of {2 * pad} samples")
    return torch.cat([x[..., 1:pad + 1].flip(-1), x, x[..., -pad - 1:-1].flip(-1)], dim=-1)


def mel_bands(fbanks: torch.Tensor, per_block: int) -> list[tuple[int, int, torch.Tensor]]:
    """(first bin, end bin, (filters, bins) weights) for each block of ``per_block`` consecutive mel
    filters, cut to the bins where any of them is non-zero."""
    out = []
    for m in range(0, fbanks.shape[1], per_block):
        cols = fbanks[:, m:m + per_block]
        used = torch.nonzero(cols.abs().sum(1) > 0)[:, 0]
        lo, hi = (int(used.min()), int(used.max()) + 1) if used.numel() else (0, 1)
        out.append((lo, hi, cols[lo:hi].T.contiguous()))
    return out


class LogMel(nn.Module):
    """(B, T) waveform -> (B, n_mels, frames) log-mel power in dB."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 1024, win_length: int | None = None,
                 hop_length: int | None = None, n_mels: int = 128, f_min: float = 0.0,
                 f_max: float | None = None, mel_scale: str = "htk", norm: str | None = None,
                 log: bool = True, top_db: float | None = None) -> None:
        super().__init__()
        win_length = win_length or n_fft
        hop_length = hop_length or sample_rate // 100
        f_max = f_max or sample_rate / 2
        if not (0 < win_length <= n_fft and hop_length > 0 and 0 <= f_min < f_max <= sample_rate / 2):
            raise ValueError(f"bad STFT/mel settings: n_fft={n_fft} win={win_length} hop={hop_length} "
                             f"f_min={f_min} f_max={f_max} sample_rate={sample_rate}")
        self.sample_rate, self.n_fft, self.win_length, self.hop_length = sample_rate, n_fft, win_length, hop_length
        self.n_mels, self.f_min, self.f_max, self.log, self.top_db = n_mels, f_min, f_max, log, top_db
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        fb = AF.melscale_fbanks(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate, norm=norm, mel_scale=mel_scale)
        self.register_buffer("fbanks", fb, persistent=False)  # (freq, mels)

    def power_spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        # torch.stft(center=True) pads inside the call and was measured ~4x slower on a CPU than
        # padding here (one cat) and framing without centring; the frames are the same.
        spec = torch.stft(centre_pad(x.float(), self.n_fft // 2), self.n_fft, self.hop_length, self.win_length,
                          self.window.to(x.device), center=False, return_complex=True)
        return spec.real.square().addcmul_(spec.imag, spec.imag)

    def mel(self, power: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(..., freq, frames) power -> (..., n_mels, frames), into ``out`` when given."""
        if power.device.type != "cpu":
            return torch.matmul(self.fbanks.to(power.device).T, power, out=out)
        # A mel filter is zero outside its band: a few filters at a time over only their bins
        # is ~14x fewer multiply-adds than the dense (freq x mels) product (128 mels, n_fft 1024:
        # measured ~4x faster), and the same sums.
        return torch.cat([torch.matmul(w, power[..., lo:hi, :]) for lo, hi, w in self._bands()], dim=-2, out=out)

    def _bands(self) -> list[tuple[int, int, torch.Tensor]]:
        if getattr(self, "_band_cache", None) is None:  # two threads may both build it: the same list
            self._band_cache = mel_bands(self.fbanks.cpu(), MEL_BAND)
        return self._band_cache

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dim() == 2 and x.shape[0] > CPU_CHUNK:
            # On a CPU a (B, freq, frames) spectrogram of a whole batch falls out of cache; a few
            # clips at a time is about 2x faster (measured: 64 x 5 s at 32 kHz). Same numbers.
            # Each chunk is written straight into its rows of the output (no concatenation).
            # The chunks go to threads when a loader worker has CPUs to spare (torch ops release the GIL).
            out = x.new_empty((x.shape[0], self.n_mels, frames_for(x.shape[-1], self.hop_length)), dtype=torch.float32)
            width = cpu_width_now()
            for _ in ordered_map(range(0, x.shape[0], CPU_CHUNK),
                                 lambda i: self._forward(x[i:i + CPU_CHUNK], out[i:i + CPU_CHUNK]), lambda i: width):
                pass
            return out
        return self._forward(x)

    def into(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` of ``x`` (k, T) written into ``out`` (k, n_mels, frames), on one thread, so
        that a batch's log-mels can be made a clip at a time as the clips come: the same numbers as
        the rows of forward's result (the chunk size does not change them, see CPU_CHUNK)."""
        for i in range(0, x.shape[0], INTO_CHUNK):
            self._forward(x[i:i + INTO_CHUNK], out[i:i + INTO_CHUNK])
        return out

    def _forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        mel = self.mel(self.power_spectrogram(x), out)
        if not self.log:
            return mel
        db = torch.log10(mel.clamp_min_(AMIN), out=mel).mul_(10.0)  # mel is ours: computed in place
        if self.top_db is not None:  # per clip, unlike torchaudio's AmplitudeToDB which clamps per batch
            floor = db.amax(dim=(-2, -1), keepdim=True) - self.top_db
            torch.maximum(db, floor, out=db)
        return db


class MFCC(nn.Module):
    """(B, T) -> (B, n_mfcc * (1 + deltas), frames): DCT-II (ortho) of the dB log-mel (top_db 80 per
    clip by default), as torchaudio's MFCC; ``deltas`` appends deltas (1) and delta-deltas (2)."""

    def __init__(self, n_mfcc: int = 40, deltas: int = 0, top_db: float | None = 80.0, **mel_kwargs: object) -> None:
        super().__init__()
        if deltas not in (0, 1, 2):
            raise ValueError(f"deltas must be 0, 1 or 2, got {deltas}")
        self.mel = LogMel(top_db=top_db, **mel_kwargs)  # type: ignore[arg-type]
        if n_mfcc > self.mel.n_mels:
            raise ValueError(f"n_mfcc={n_mfcc} > n_mels={self.mel.n_mels}")
        self.deltas = deltas
        self.register_buffer("dct", AF.create_dct(n_mfcc, self.mel.n_mels, "ortho"), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = torch.matmul(self.mel(x).transpose(-1, -2), self.dct.to(x.device)).transpose(-1, -2)
        feats = [c]
        for _ in range(self.deltas):
            feats.append(AF.compute_deltas(feats[-1]))
        return torch.cat(feats, dim=-2)


def frame_mask(lengths: torch.Tensor, hop_length: int, num_frames: int) -> torch.Tensor:
    """(B, frames) bool: frames that hold real audio (not padding)."""
    n = frames_for(lengths, hop_length).clamp(max=num_frames)
    return torch.arange(num_frames, device=lengths.device)[None, :] < n[:, None]
