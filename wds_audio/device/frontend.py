"""The device stage: one nn.Module from waveform batch to training features.

Order: int16 PCM -> float (``pcm_on_device``), resampling from ``input_sample_rate``
(``resample_on_device``), waveform augmentations (gain, noise, reverb,
bandpass, speed, pitch; training only), log-mel or MFCC (+ deltas), standardization
(dataset.json statistics or per-utterance CMVN over the valid frames), SpecAugment and mixup
(training only). Padding frames are zero after standardization. Runs on whatever device its
input is on; ``frontend.train()`` / ``.eval()`` switch augmentation on and off.

Example:
    >>> import torch
    >>> fe = Frontend(sample_rate=16000, features="logmel", n_mels=64, specaugment=True).eval()
    >>> fe(torch.zeros(2, 16000), torch.tensor([16000, 8000])).shape
    torch.Size([2, 64, 101])
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..pipeline.batch import Batch
from ..signal.augment.mixup import Mixup
from ..signal.augment.specaugment import SpecAugment
from ..signal.features import MFCC, LogMel, frame_mask, frames_for
from ..signal.resample import Resample

FEATURES = ("logmel", "mfcc", None)
STANDARDIZE = (None, "dataset", "utterance")


class Frontend(nn.Module):
    """Waveform batch (B, T) + lengths -> features (B, F, frames), augmented in training mode."""

    def __init__(self, sample_rate: int = 16000, features: str | None = "logmel", n_fft: int = 1024,
                 win_length: int | None = None, hop_length: int | None = None, n_mels: int = 128,
                 f_min: float = 0.0, f_max: float | None = None, mel_scale: str = "htk", n_mfcc: int = 40,
                 deltas: int = 0, standardize: str | None = None, stats: dict[str, Any] | None = None,
                 augment: Sequence[nn.Module] = (), specaugment: bool | SpecAugment = False,
                 mixup: Mixup | None = None, seed: int = 0, input_sample_rate: int | None = None) -> None:
        """``input_sample_rate``: the rate of the audio given to it, when not ``sample_rate``
        (a loader with ``resample_on_device=True``: ``loader.audio_rate``); it is resampled first."""
        super().__init__()
        if features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
        if standardize not in STANDARDIZE:
            raise ValueError(f"standardize must be one of {STANDARDIZE}, got {standardize!r}")
        if standardize and features is None:
            raise ValueError("standardize needs features")
        mel_kw = dict(sample_rate=sample_rate, n_fft=n_fft, win_length=win_length, hop_length=hop_length,
                      n_mels=n_mels, f_min=f_min, f_max=f_max, mel_scale=mel_scale)
        self.sample_rate, self.features_kind, self.standardize = sample_rate, features, standardize
        self.input_sample_rate = input_sample_rate or sample_rate
        self.resample = Resample(self.input_sample_rate, sample_rate) if self.input_sample_rate != sample_rate else None
        self.features = (LogMel(**mel_kw) if features == "logmel" else
                         MFCC(n_mfcc=n_mfcc, deltas=deltas, **mel_kw) if features == "mfcc" else None)
        self.hop_length = (self.features.hop_length if features == "logmel" else
                           self.features.mel.hop_length if features == "mfcc" else 1)
        self.waveform_augment = nn.ModuleList(augment)
        self.specaugment = (SpecAugment(seed=seed) if specaugment is True else specaugment) or None
        self.mixup = mixup
        self.epoch = 0
        self._calls = 0
        if standardize == "dataset":
            self._load_stats(stats, features, n_mels, sample_rate, self.hop_length)

    def _load_stats(self, stats: dict[str, Any] | None, features: str | None, n_mels: int, sr: int, hop: int) -> None:
        if stats is None:
            raise ValueError("standardize='dataset' needs stats (dataset.json 'feature_stats'; run `shardgen stats`)")
        if features != "logmel" or stats.get("n_mels") != n_mels or stats.get("sample_rate") != sr:
            raise ValueError(f"feature_stats were computed for logmel n_mels={stats.get('n_mels')} at "
                             f"{stats.get('sample_rate')} Hz; this frontend has {features} n_mels={n_mels} at {sr} Hz")
        self.register_buffer("mean", torch.tensor(stats["mean"], dtype=torch.float32)[:, None])
        self.register_buffer("std", torch.tensor(stats["std"], dtype=torch.float32).clamp_min(1e-5)[:, None])

    def set_epoch(self, epoch: int) -> None:
        """Augmentation draws depend on (seed, epoch, key): call once per epoch, as for the loader."""
        self.epoch = epoch

    def frame_lengths(self, lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
        return frames_for(lengths, self.hop_length).clamp(max=num_frames)

    def forward(self, audio: torch.Tensor | Batch, lengths: torch.Tensor | None = None,
                targets: torch.Tensor | None = None, keys: Sequence[str] | None = None) -> Any:
        """Features (B, F, frames); with ``targets`` (or a Batch) returns (features, targets).

        Augmentations (waveform ones, SpecAugment, Mixup) run in train mode only, and never on a
        Batch of an evaluation loader (``batch.training`` False), whatever mode the Frontend is in.
        """
        if isinstance(audio, Batch):
            b = audio
            return self._forward(b.audio, b.lengths, b.targets, b.draw_keys, self.training and b.training)
        return self._forward(audio, lengths, targets, keys, self.training)

    def _forward(self, audio: torch.Tensor, lengths: torch.Tensor | None, targets: torch.Tensor | None,
                 keys: Sequence[str] | None, augment: bool) -> Any:
        x = audio.float() / 32768.0 if audio.dtype == torch.int16 else audio.float()
        lengths = (torch.full((x.shape[0],), x.shape[-1], dtype=torch.int64, device=x.device) if lengths is None
                   else lengths.to(x.device))
        if self.resample is not None:
            x, lengths = self.resample(x), self.resample.lengths(lengths)
        if keys is None:  # positional keys: deterministic per call sequence, not per clip
            keys = [f"call{self._calls}:{i}" for i in range(x.shape[0])]
            self._calls += 1
        if augment:
            for t in self.waveform_augment:
                x, lengths = t(x, lengths, keys, self.epoch)
        if self.features is None:
            return x if targets is None else (x, targets)
        feats = self.features(x)
        flen = self.frame_lengths(lengths, feats.shape[-1])
        mask = frame_mask(lengths, self.hop_length, feats.shape[-1])
        feats = self._standardize(feats, mask)
        if augment and self.specaugment is not None:
            feats, _ = self.specaugment(feats, flen, keys, self.epoch)
        if augment and self.mixup is not None and targets is not None:
            feats, targets, _ = self.mixup(feats, targets.to(feats.device), flen, keys, self.epoch)
        return feats if targets is None else (feats, targets)

    def _standardize(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask[:, None, :].to(feats.dtype)
        if self.standardize == "dataset":
            feats = (feats - self.mean) / self.std
        elif self.standardize == "utterance":
            n = m.sum(-1, keepdim=True).clamp_min(1)
            mu = (feats * m).sum(-1, keepdim=True) / n
            sd = (((feats - mu) ** 2) * m).sum(-1, keepdim=True).div(n).sqrt().clamp_min(1e-5)
            feats = (feats - mu) / sd
        return feats * m if self.standardize else feats


def noise_bank(source: str, split: str = "noise", sample_rate: int = 16000, max_clips: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The clips of a dataset's noise split as a zero-padded (N, L) bank and their lengths (for NoiseMix)."""
    from ..pipeline.config import LoaderConfig
    from ..pipeline.loader import AudioLoader

    clips = []
    cfg = LoaderConfig(str(source), split=split, batch_size=1, sample_rate=sample_rate, clip_seconds=None, training=False)
    for b in AudioLoader(cfg):
        if bool(b.valid[0]):
            clips.append(b.audio[0, : int(b.lengths[0])])
        if max_clips and len(clips) >= max_clips:
            break
    if not clips:
        raise ValueError(f"{source}: split {split!r} holds no usable clip")
    lengths = torch.tensor([len(c) for c in clips])
    bank = torch.zeros(len(clips), int(lengths.max()))
    for i, c in enumerate(clips):
        bank[i, : len(c)] = c
    return bank, lengths
