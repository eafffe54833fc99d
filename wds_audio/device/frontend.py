"""The device stage: one nn.Module from waveform batch to training features.

Order: int16 PCM -> float (``pcm_on_device``), resampling from ``input_sample_rate``
(``resample_on_device``), waveform augmentations (gain, noise, reverb,
bandpass, speed, pitch; training only), log-mel or MFCC (+ deltas), standardization
(dataset.json statistics or per-utterance CMVN over the valid frames; statistics from dataset.json
are checked against every feature setting they record, a plain ``{"mean", "std"}`` dict is used as
given: see :mod:`wds_audio.device.stats`), SpecAugment and mixup
(training only). Padding frames are zero after standardization. Runs on whatever device its
input is on; ``frontend.train()`` / ``.eval()`` switch augmentation on and off.

A batch of cached features (``loader(..., features="cached")``: ``batch.features`` fp16 log-mels,
``batch.lengths`` in frames) skips everything up to the log-mel: it is checked against the cached
settings (:meth:`Frontend.check_cached`; a Frontend with waveform augmentations is refused), then
standardized, SpecAugmented and mixed up like the Frontend's own log-mels, in float32.

Example:
    >>> import torch
    >>> fe = Frontend(sample_rate=16000, features="logmel", n_mels=64, specaugment=True).eval()
    >>> fe(torch.zeros(2, 16000), torch.tensor([16000, 8000])).shape
    torch.Size([2, 64, 101])
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn

from ..pipeline.batch import Batch
from ..signal.augment.mixup import Mixup
from ..signal.augment.specaugment import SpecAugment
from ..signal.features import MFCC, LogMel, frame_mask, frames_for
from ..signal.resample import Resample
from .stats import _fmt, check_settings, is_recorded, recorded_settings, settings_mismatch

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
        self._mel_scale = mel_scale
        self.stats_info: dict[str, Any] | None = None
        if standardize == "dataset":
            self._load_stats(stats)

    def feature_settings(self) -> dict[str, Any]:
        """The feature settings that dataset statistics must have been computed with (effective values:
        ``win_length`` None is ``n_fft``, ``hop_length`` None 10 ms, ``f_max`` None half the rate)."""
        mel = self.features.mel if self.features_kind == "mfcc" else self.features
        if mel is None:
            return {"kind": None, "sample_rate": self.sample_rate}
        return {"kind": self.features_kind, "sample_rate": mel.sample_rate, "n_fft": mel.n_fft,
                "win_length": mel.win_length, "hop_length": mel.hop_length, "n_mels": mel.n_mels,
                "f_min": float(mel.f_min), "f_max": float(mel.f_max), "mel_scale": self._mel_scale}

    def _load_stats(self, stats: dict[str, Any] | None) -> None:
        """``stats``: an entry of dataset.json (recorded: every setting it records is checked, see
        :mod:`wds_audio.device.stats`) or a plain ``{"mean", "std"}`` dict (explicit: used as given)."""
        if stats is None:
            raise ValueError("standardize='dataset' needs stats (dataset.json 'feature_stats'; run `shardgen stats`)")
        check_settings(stats, self.feature_settings(), "this frontend")
        bins = (self.features.dct.shape[0] * (self.features.deltas + 1) if self.features_kind == "mfcc"
                else self.features.n_mels)
        if len(stats["mean"]) != bins or len(stats["std"]) != bins:
            raise ValueError(f"feature statistics have {len(stats['mean'])} mean and {len(stats['std'])} std values; "
                             f"this frontend makes {bins} feature bins")
        device = self.mean.device if "mean" in self._buffers else None
        self.register_buffer("mean", torch.tensor(stats["mean"], dtype=torch.float32, device=device)[:, None])
        self.register_buffer("std", torch.tensor(stats["std"], dtype=torch.float32, device=device).clamp_min(1e-5)[:, None])
        # where the statistics came from (split, folds, settings), None for explicit ones: a loader
        # given this frontend checks the folds against its evaluation folds
        self.stats_info = ({k: v for k, v in stats.items() if k not in ("mean", "std")} if is_recorded(stats)
                           else None)

    def with_stats(self, stats: dict[str, Any]) -> "Frontend":
        """A copy of this frontend standardizing with ``stats`` (checked as in the constructor)."""
        if self.standardize != "dataset":
            raise ValueError("with_stats: this frontend does not standardize with dataset statistics")
        fe = copy.deepcopy(self)
        fe._load_stats(stats)
        return fe

    def set_epoch(self, epoch: int) -> None:
        """Augmentation draws depend on (seed, epoch, key): call once per epoch, as for the loader."""
        self.epoch = epoch

    def check_cached(self, cached: dict[str, Any]) -> None:
        """Raise ``ValueError`` unless this Frontend can take features cached with the settings of
        ``cached`` (dataset.json's ``features`` entry): every recorded setting the same (both values
        named otherwise), and no waveform augmentation (named), which needs the audio."""
        bad = settings_mismatch(cached, self.feature_settings())
        if bad:
            rec, mine = recorded_settings(cached), self.feature_settings()
            raise ValueError(f"the cached features were computed with {_fmt({k: rec[k] for k in bad})}; this frontend "
                             f"has {_fmt({k: mine[k] for k in bad})}. Build the Frontend with the cached settings "
                             "(dataset.json 'features'), or compute features with these "
                             "(`shardgen features DATASET OUT --n-mels ... --n-fft ... --hop-length ...`)")
        if len(self.waveform_augment):
            names = ", ".join(type(t).__name__ for t in self.waveform_augment)
            raise ValueError(f"waveform augmentations cannot run on cached features: {names} (this frontend's "
                             "augment=); leave them out (SpecAugment and Mixup still run), or load audio "
                             "(features=None) to use them")

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
            if getattr(b, "feature_settings", None):  # cached features (pipeline/cached.py): lengths in frames
                self.check_cached(b.feature_settings)
                return self._from_features(b.features, b.lengths, b.targets, b.draw_keys, self.training and b.training)
            return self._forward(b.audio, b.lengths, b.targets, b.draw_keys, self.training and b.training)
        return self._forward(audio, lengths, targets, keys, self.training)

    def _from_features(self, feats: torch.Tensor, flen: torch.Tensor, targets: torch.Tensor | None,
                       keys: Sequence[str], augment: bool) -> Any:
        """Cached log-mels (B, n_mels, frames) and their lengths in frames -> what :meth:`_forward` returns."""
        feats = feats.to(torch.float32, copy=True)  # ours: the stages after may work in place, never on the batch's
        flen = flen.to(feats.device).clamp(max=feats.shape[-1])
        mask = torch.arange(feats.shape[-1], device=feats.device)[None, :] < flen[:, None]
        return self._after_features(feats, flen, mask, targets, keys, augment)

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
        return self._after_features(feats, flen, mask, targets, keys, augment)

    def _after_features(self, feats: torch.Tensor, flen: torch.Tensor, mask: torch.Tensor,
                        targets: torch.Tensor | None, keys: Sequence[str], augment: bool) -> Any:
        """Standardization, SpecAugment and Mixup: the feature-domain stages, for computed and cached features."""
        feats = self._standardize(feats, mask)
        if augment and self.specaugment is not None:
            # the features are this call's own: on a CPU the masks go straight into them (no copy)
            feats, _ = self.specaugment(feats, flen, keys, self.epoch, inplace=True)
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

    # ------------------------------------------- features a few clips at a time (the loader's workers)

    def by_chunks(self, augment: bool) -> bool:
        """Whether a batch's features can be made a few clips at a time as its clips are decoded, with
        :meth:`chunk_features` then :meth:`finish_chunks`, instead of from the batch's waveforms
        (B, T): log-mels on the CPU, nothing resampled, no waveform augmentation to run (``augment``:
        this batch is augmented). The features are the same; the (B, T) waveforms are never made
        (41 MB for 64 x 5 s at 32 kHz, and their copy)."""
        return (self.features_kind == "logmel" and self.resample is None and self.features.window.device.type == "cpu"
                and not (augment and len(self.waveform_augment)))

    def chunk_shape(self, num_samples: int) -> tuple[int, int]:
        """(n_mels, frames) of the log-mels of ``num_samples`` samples."""
        return self.features.n_mels, int(frames_for(num_samples, self.hop_length))

    def chunk_features(self, audio: torch.Tensor, out: torch.Tensor) -> None:
        """Log-mels of a few clips ``audio`` (k, T), float or int16, into ``out`` (k, n_mels, frames):
        the rows forward computes for them before standardization (see :meth:`by_chunks`)."""
        self.features.into(audio.float() / 32768.0 if audio.dtype == torch.int16 else audio.float(), out)

    def finish_chunks(self, feats: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor | None,
                      keys: Sequence[str], augment: bool) -> Any:
        """What forward returns for a batch whose log-mels ``feats`` :meth:`chunk_features` made
        (``lengths`` in samples): standardization, then SpecAugment and Mixup when ``augment``."""
        flen = self.frame_lengths(lengths, feats.shape[-1])
        feats = self._standardize(feats, frame_mask(lengths, self.hop_length, feats.shape[-1]))
        if augment and self.specaugment is not None:
            feats, _ = self.specaugment(feats, flen, keys, self.epoch, inplace=True)
        if augment and self.mixup is not None and targets is not None:
            feats, targets, _ = self.mixup(feats, targets.to(feats.device), flen, keys, self.epoch)
        return feats if targets is None else (feats, targets)


def noise_bank(source: str, split: str = "noise", sample_rate: int = 16000, max_clips: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The clips of a dataset's noise split back to back, (sum of lengths,) float32, and their lengths
    (N,): ``NoiseMix(*noise_bank(...))``. The memory is the sum of the clips' lengths (a zero-padded
    (N, longest) bank held N times the longest: 10 clips of 1 s and one of 60 s took 70 s of audio)."""
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
    return torch.cat(clips), torch.tensor([len(c) for c in clips])
