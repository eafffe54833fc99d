"""The optional DALI feature stage: gain, noise, log-mel/MFCC, standardization and SpecAugment
as DALI operators (names as in :class:`wds_audio.Frontend`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.rng import seed_of
from ..device.stats import check_settings
from .ops import import_dali

AMIN_DB = -100.0  # 10 * log10(1e-10): the dB floor of features.LogMel


# ------------------------------------------------------------------------------------ feature stage

def _check_range(owner: str, lo: float, hi: float, p: float) -> None:
    if not lo <= hi:
        raise ValueError(f"{owner}: need min <= max, got {lo} > {hi}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{owner}: p must be in [0, 1], got {p}")


@dataclass(frozen=True)
class DaliGain:
    """Multiply each clip by a gain uniform in [min_gain_db, max_gain_db] dB, with probability ``p``."""

    min_gain_db: float = -12.0
    max_gain_db: float = 6.0
    p: float = 0.5

    def __post_init__(self) -> None:
        _check_range("DaliGain", self.min_gain_db, self.max_gain_db, self.p)


@dataclass(frozen=True)
class DaliNoise:
    """Add a clip of the ``split`` noise shards at an SNR uniform in [min_snr_db, max_snr_db], with
    probability ``p``. The noise is read cyclically from a random offset (tiled when shorter than the
    clip) and scaled so the SNR over the clip's own samples is exactly the drawn one."""

    split: str = "noise"
    min_snr_db: float = 3.0
    max_snr_db: float = 30.0
    p: float = 0.5

    def __post_init__(self) -> None:
        _check_range("DaliNoise", self.min_snr_db, self.max_snr_db, self.p)


@dataclass(frozen=True)
class DaliSpecAugment:
    """``time_masks`` masks of width uniform in {0..time_width} frames and ``freq_masks`` of width in
    {0..freq_width} bins, at uniform starts inside the clip's valid frames (as augment.SpecAugment);
    applied to a clip with probability ``p``. ``mask_value``: a number or "mean" (the clip's mean)."""

    time_masks: int = 2
    time_width: int = 20
    freq_masks: int = 2
    freq_width: int = 8
    mask_value: float | str = 0.0
    p: float = 1.0

    def __post_init__(self) -> None:
        for name in ("time_masks", "time_width", "freq_masks", "freq_width"):
            v = getattr(self, name)
            if int(v) != v or v < 0:
                raise ValueError(f"DaliSpecAugment: {name} must be a non-negative integer, got {v}")
        if not (self.mask_value == "mean" or isinstance(self.mask_value, (int, float))):
            raise ValueError(f"DaliSpecAugment: mask_value must be a number or 'mean', got {self.mask_value!r}")
        _check_range("DaliSpecAugment", 0, 0, self.p)


@dataclass(frozen=True)
class DaliFeatures:
    """The optional DALI feature stage (names as in :class:`wds_audio.Frontend`).

    kind: "logmel" or "mfcc" (DCT-II ortho of the dB log-mel with ``mfcc_top_db`` per clip).
    standardize: None, "dataset" (``stats``, else the dataset.json entry for these settings, checked
    as for the torch Frontend: see :mod:`wds_audio.device.stats`) or "utterance".
    gain, noise, specaugment: training augmentations (off in evaluation).
    device: "auto" (GPU when CUDA is available), "cpu" or "gpu".

    Example:
        >>> DaliFeatures(n_mels=64, hop_length=160).hop(16000)
        160
    """

    kind: str = "logmel"
    n_fft: int = 1024
    win_length: int | None = None
    hop_length: int | None = None
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float | None = None
    mel_scale: str = "htk"
    n_mfcc: int = 40
    mfcc_top_db: float | None = 80.0
    standardize: str | None = None
    stats: dict[str, Any] | None = None
    gain: DaliGain | None = None
    noise: DaliNoise | None = None
    specaugment: DaliSpecAugment | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.kind not in ("logmel", "mfcc"):
            raise ValueError(f"DaliFeatures: kind must be 'logmel' or 'mfcc', got {self.kind!r}")
        if self.standardize not in (None, "dataset", "utterance"):
            raise ValueError(f"DaliFeatures: standardize must be None, 'dataset' or 'utterance', got {self.standardize!r}")
        if self.mel_scale not in ("htk", "slaney"):
            raise ValueError(f"DaliFeatures: mel_scale must be 'htk' or 'slaney', got {self.mel_scale!r}")
        if self.device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"DaliFeatures: device must be 'auto', 'cpu' or 'gpu', got {self.device!r}")
        if self.kind == "mfcc" and self.n_mfcc > self.n_mels:
            raise ValueError(f"DaliFeatures: n_mfcc={self.n_mfcc} > n_mels={self.n_mels}")
        if not 0 < (self.win_length or self.n_fft) <= self.n_fft:
            raise ValueError(f"DaliFeatures: need 0 < win_length <= n_fft, got {self.win_length} and {self.n_fft}")

    def hop(self, sample_rate: int) -> int:
        return self.hop_length or sample_rate // 100

    def feature_settings(self, sample_rate: int) -> dict[str, Any]:
        """The settings dataset statistics must match (as ``Frontend.feature_settings()``)."""
        return {"kind": self.kind, "sample_rate": sample_rate, "n_fft": self.n_fft,
                "win_length": self.win_length or self.n_fft, "hop_length": self.hop(sample_rate),
                "n_mels": self.n_mels, "f_min": float(self.f_min), "f_max": float(self.f_max or sample_rate / 2),
                "mel_scale": self.mel_scale}

    def num_features(self) -> int:
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    def on_gpu(self) -> bool:
        if self.device == "gpu" and not torch.cuda.is_available():
            raise RuntimeError("DaliFeatures(device='gpu') but CUDA is not available")
        return self.device == "gpu" or (self.device == "auto" and torch.cuda.is_available())


def _seed(*parts: object) -> int:
    return seed_of("dali", *parts) % (2**31 - 1)


def _uniform(lo: float, hi: float, seed: int) -> Any:
    """One float per sample, uniform in [lo, hi) (exactly lo when the range is empty)."""
    fn = import_dali().fn
    if lo == hi:  # DALI rejects an empty range
        return fn.random.uniform(values=[float(lo)], seed=seed)
    return fn.random.uniform(range=[float(lo), float(hi)], seed=seed)


def _coin(p: float, seed: int) -> Any:
    """1.0 with probability ``p``, else 0.0, per sample."""
    dali = import_dali()
    return dali.fn.cast(dali.fn.random.coin_flip(probability=float(p), seed=seed), dtype=dali.types.FLOAT)


def _scalar_i32(node: Any) -> Any:
    """A per-sample scalar as the 1-element int32 tensor fn.slice takes for start/shape."""
    dali = import_dali()
    return dali.fn.reshape(dali.fn.cast(node, dtype=dali.types.INT32), shape=[1])


def dali_augment(x: Any, length: Any, spec: DaliFeatures, seed: int, noise: Any = None,
                 noise_length: Any = None) -> Any:
    """Random gain, then noise mixing (``noise``: a decoded noise clip per sample) on unpadded clips.

    ``length`` and ``noise_length``: sample counts as CPU nodes (slice arguments live on the CPU,
    also when the audio is on the GPU).
    """
    dali = import_dali()
    fn, dmath = dali.fn, dali.math
    if spec.gain is not None:
        g = spec.gain
        db = _uniform(g.min_gain_db, g.max_gain_db, _seed(seed, "gain"))
        on = _coin(g.p, _seed(seed, "gain-p"))
        x = x * dmath.pow(10.0, db * on / 20.0)
    if spec.noise is not None and noise is not None:
        nz = spec.noise
        offset = fn.random.uniform(range=[0.0, 1.0], seed=_seed(seed, "noise-offset"))
        start = dmath.floor(offset * fn.cast(noise_length, dtype=dali.types.FLOAT))
        # "wrap" reads the noise cyclically from the offset: it tiles noise shorter than the clip
        seg = fn.slice(noise, start=_scalar_i32(start), shape=_scalar_i32(length), axes=[0],
                       out_of_bounds_policy="wrap")
        snr = _uniform(nz.min_snr_db, nz.max_snr_db, _seed(seed, "noise-snr"))
        on = _coin(nz.p, _seed(seed, "noise-p"))
        p_signal = fn.reductions.sum(x * x)
        p_noise = fn.reductions.sum(seg * seg)
        has_noise = fn.cast(p_noise > 0.0, dtype=dali.types.FLOAT)
        scale = dmath.sqrt(p_signal / (dmath.max(p_noise, 1e-30) * dmath.pow(10.0, snr / 10.0)))
        x = x + seg * (scale * has_noise * on)
    return x


def _mask(feats: Any, extent: Any, count: int, width: int, axis: int, p_on: Any, seed: int, tag: str,
          fill: float) -> Any:
    """Erase ``count`` bands along ``axis`` (widths in {0..width} capped at ``extent``) at uniform starts."""
    dali = import_dali()
    fn, dmath, types = dali.fn, dali.math, dali.types
    if count == 0 or width == 0:
        return feats
    ext = fn.cast(extent, dtype=types.FLOAT)
    w = fn.random.uniform(values=[float(v) for v in range(width + 1)], shape=[count], seed=_seed(seed, tag, "w"))
    w = dmath.min(w, ext) * p_on  # p_on is 0 or 1: a clip skipped by p gets zero-width masks
    u = fn.random.uniform(range=[0.0, 1.0], shape=[count], seed=_seed(seed, tag, "u"))
    start = dmath.min(dmath.floor(u * (ext - w + 1.0)), ext - w)
    return fn.erase(feats, anchor=start, shape=w, axes=[axis], fill_value=fill)


def dali_specaugment(feats: Any, frames: Any, spec: DaliSpecAugment, num_features: int, seed: int) -> Any:
    """SpecAugment on unpadded (F, frames) features with fn.erase; anchors are CPU nodes (also for GPU data)."""
    dali = import_dali()
    fn, types = dali.fn, dali.types
    on = _coin(spec.p, _seed(seed, "specaugment-p"))
    bins = types.Constant(num_features)

    def both(x: Any, fill: float) -> Any:
        x = _mask(x, frames, spec.time_masks, spec.time_width, 1, on, seed, "time", fill)
        return _mask(x, bins, spec.freq_masks, spec.freq_width, 0, on, seed, "freq", fill)

    if spec.mask_value != "mean":
        return both(feats, float(spec.mask_value))
    # erase a map of ones, then blend: the fill is a per-clip statistic, which fn.erase cannot
    # take from GPU data
    keep = both(feats * 0.0 + 1.0, 0.0)
    return feats * keep + fn.reductions.mean(feats) * (1.0 - keep)


def _dataset_stats(spec: DaliFeatures, stats: dict[str, Any] | None, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Checked per-bin mean and std, (F, 1) each: the checks of the torch Frontend (wds_audio.device.stats)."""
    if stats is None:
        raise ValueError("standardize='dataset' needs stats (dataset.json 'feature_stats'; run `shardgen stats`)")
    check_settings(stats, spec.feature_settings(sample_rate), "this DALI feature stage")
    if len(stats["mean"]) != spec.num_features() or len(stats["std"]) != spec.num_features():
        raise ValueError(f"feature statistics have {len(stats['mean'])} mean and {len(stats['std'])} std values; "
                         f"this DALI feature stage makes {spec.num_features()} feature bins")
    mean = np.asarray(stats["mean"], np.float32).reshape(-1, 1)
    std = np.maximum(np.asarray(stats["std"], np.float32), 1e-5).reshape(-1, 1)
    return mean, std


def dali_features(x: Any, length: Any, spec: DaliFeatures, sample_rate: int, *, training: bool, seed: int,
                  stats: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """Unpadded clips ``x`` (CPU or GPU DataNode) and their lengths (CPU) -> ((F, frames) features, frame counts).

    Log-mel as wds_audio.signal.features.LogMel (see the module table), optional MFCC, standardization
    and (training) SpecAugment. Frame counts are ``len // hop + 1`` (centred frames).

    Example (inside a pipeline definition):
        >>> feats, frames = dali_features(audio, audio.shape()[0], DaliFeatures(n_mels=64), 16000,
        ...                               training=False, seed=0)                     # doctest: +SKIP
    """
    dali = import_dali()
    fn, types, dmath = dali.fn, dali.types, dali.math
    win, hop = spec.win_length or spec.n_fft, spec.hop(sample_rate)
    window = torch.hann_window(win).tolist()  # periodic Hann, as torch.stft in LogMel
    frames = length // hop + 1
    spec_ = fn.spectrogram(x, nfft=spec.n_fft, window_length=win, window_step=hop, window_fn=window,
                           center_windows=True, reflect_padding=True, power=2)
    mel = fn.mel_filter_bank(spec_, sample_rate=float(sample_rate), nfilter=spec.n_mels, freq_low=float(spec.f_min),
                             freq_high=float(spec.f_max or sample_rate / 2), mel_formula=spec.mel_scale, normalize=False)
    feats = fn.to_decibels(mel, multiplier=10.0, reference=1.0, cutoff_db=AMIN_DB)
    if spec.kind == "mfcc":
        if spec.mfcc_top_db is not None:
            feats = dmath.max(feats, fn.reductions.max(feats) - spec.mfcc_top_db)
        feats = fn.mfcc(feats, n_mfcc=spec.n_mfcc, dct_type=2, normalize=True, axis=0)
    if spec.standardize == "dataset":
        mean, std = _dataset_stats(spec, stats, sample_rate)
        feats = fn.normalize(feats, mean=types.Constant(mean), stddev=types.Constant(std))
    elif spec.standardize == "utterance":
        feats = fn.normalize(feats, axes=[1], epsilon=1e-10)
    if training and spec.specaugment is not None:
        feats = dali_specaugment(feats, frames, spec.specaugment, spec.num_features(), seed)
    return feats, frames
