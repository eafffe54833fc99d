"""The DALI back end: the same LoaderConfig as a DALI pipeline, yielding the same Batch type.

Reading. Each epoch gets its own pipeline, built from the torch back end's epoch plan
(:func:`wds_audio.plan.plan_epoch`), in one of two modes:

* ``"plan"`` (every selected shard has a readable DALI ``.idx``): the rank's planned samples,
  in the torch back end's batch order, are written as small per-epoch index files (lines of
  the shard's own ``.idx``, so DALI reads exactly those samples from the original tar), and
  ``fn.readers.webdataset`` reads that explicit per-rank path list with ``num_shards=1``. The
  epoch therefore holds ``len(loader) * batch_size`` samples on every rank: wrap-around repeats
  in training, fill-ins (``valid=False``) in evaluation, and evaluation batches carry the same
  keys in the same order as the torch back end's.
* ``"reader"`` (some ``.idx`` is missing: DALI infers the index from the tar): whole shards with
  ``shard_id=rank``, ``num_shards=world_size``, ``pad_last_batch=True`` and ``stick_to_shard``.
  DALI splits the samples with the same ``floor(rank * N / world)`` rule as the plan, so each
  rank reads the same samples; batch order is file order and padding repeats the last sample.

Training shuffles with the reader's seeded ``random_shuffle`` buffer (``initial_fill`` =
``cfg.shuffle_buffer``) on top of the plan's per-epoch shard order and rotation; the seed is
derived from (seed, epoch, rank), so shuffling changes every epoch and repeats across runs.
Evaluation reads in order without shuffling.

Decoding and shaping: ``fn.decoders.audio`` (``downmix``, float32), then, when the stored rate
(dataset.json, or the first sample's json for a shard pattern) differs from ``cfg.sample_rate``,
an anti-aliasing FIR and ``fn.audio_resample``, optional ``fn.nonsilent_region`` trimming, a
random crop (training) or centre crop / full clip (evaluation) with ``fn.slice`` and ``fn.pad``,
and peak/RMS loudness normalization. With the feature stage on the GPU, everything after
decoding runs there (except with trimming); lengths are always computed from CPU metadata.

Features (:class:`DaliFeatures`, optional): random gain, noise mixing at a sampled SNR from a
second reader over the ``noise`` split, ``fn.spectrogram`` -> ``fn.mel_filter_bank`` ->
``fn.to_decibels`` (-> ``fn.mfcc``), ``fn.normalize`` (dataset.json statistics or per
utterance) and SpecAugment with ``fn.erase`` at random anchors. On a machine with CUDA they run
on the GPU (``.gpu()``); otherwise on CPU with ``device_id=None``.

Where DALI's definitions differ from ours (``wds_audio.features.LogMel``), and the options
that align them:

==============  ====================================  ==========================================
setting         DALI default                          used here (= LogMel)
==============  ====================================  ==========================================
window          its own Hann, sampled at (t + 0.5)    ``window_fn`` = periodic Hann samples
frames          centred, reflect padding              same (``center_windows``, ``reflect``)
mel scale       ``slaney``                            ``mel_formula="htk"`` (or ``slaney``)
filter norm     area (``normalize=True``)             ``normalize=False`` (peak 1, no norm)
dB reference    the per-sample maximum                ``reference=1.0``
dB floor        ``cutoff_db=-200``                    ``cutoff_db=-100`` (amin 1e-10)
MFCC top_db     none                                  ``max(dB, max(dB) - top_db)`` per clip
DCT             unnormalized                          ``normalize=True`` (ortho, type II)
downsampling    sinc at the input Nyquist: aliases    Kaiser FIR (``fn.filter``) first;
                                                      soxr's output length (round)
==============  ====================================  ==========================================

Features are computed on each clip's own samples (not on the zero-padded batch), then padded
to the batch: padding frames hold the silence floor (-100 dB) without standardization, else 0.

Randomness differs from the torch back end by construction: DALI's random operators are seeded
per (seed, epoch, rank, purpose), not per sample key, so crops and augmentations repeat for the
same run configuration but are not the torch back end's draws.

Known limits: ``rebalance``, ``pcm_on_device`` and ``loudness="lufs"`` are not available
(clear errors); shards must be local files (DALI's webdataset reader opens paths); a clip that
does not decode stops the pipeline with DALI's error (in ``"plan"`` mode, samples without an
audio member are replaced by fill-ins before reading and counted, like the torch back end).

Example:
    >>> import wds_audio                                                     # doctest: +SKIP
    >>> from wds_audio.dali import DaliFeatures, DaliSpecAugment
    >>> loader = wds_audio.loader("data/demo", split="train", batch_size=64, sample_rate=16000,
    ...                           clip_seconds=2.0, backend="dali",
    ...                           extra={"dali_features": DaliFeatures(n_mels=64, specaugment=DaliSpecAugment())})
    >>> for batch in loader:
    ...     batch.features.shape            # (64, 64, 201)
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from .catalog import Catalog, Shard
from .config import LoaderConfig
from .plan import EpochPlan, Slice, plan_epoch
from .rng import sample_rng, seed_of
from .sources import SourceError, read_bytes, scheme_of
from .metrics import LoaderMetrics
from .stream import Batch

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install wds-audio[dali]"
AUDIO_EXTS = ("flac", "wav", "ogg")  # what fn.decoders.audio reads (no MP3: shardgen transcodes it)
AMIN_DB = -100.0  # 10 * log10(1e-10): the dB floor of features.LogMel
READER = "audio_reader"


def import_dali() -> Any:
    """The ``nvidia.dali`` module, or an ImportError that says how to install it."""
    try:
        import nvidia.dali as dali
        import nvidia.dali.fn  # noqa: F401 - the operators live in submodules
        import nvidia.dali.math  # noqa: F401
        import nvidia.dali.plugin.pytorch  # noqa: F401
        import nvidia.dali.types  # noqa: F401
    except ImportError as e:
        raise ImportError(f"backend='dali' needs NVIDIA DALI, which is not installed: `{INSTALL_HINT}` "
                          f"(or install an nvidia-dali-cudaXXX wheel matching your CUDA) ({e})") from e
    return dali


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
    standardize: None, "dataset" (``stats`` or dataset.json ``feature_stats``) or "utterance".
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

    def num_features(self) -> int:
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    def on_gpu(self) -> bool:
        if self.device == "gpu" and not torch.cuda.is_available():
            raise RuntimeError("DaliFeatures(device='gpu') but CUDA is not available")
        return self.device == "gpu" or (self.device == "auto" and torch.cuda.is_available())


@dataclass
class DaliBatch(Batch):
    """A :class:`Batch` plus the DALI feature stage's output: features (B, F, frames) and frame counts."""

    features: torch.Tensor | None = None
    frames: torch.Tensor | None = None


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
    if stats is None:
        raise ValueError("standardize='dataset' needs stats (dataset.json 'feature_stats'; run `shardgen stats`)")
    if spec.kind != "logmel" or stats.get("n_mels") != spec.n_mels or stats.get("sample_rate") != sample_rate:
        raise ValueError(f"feature_stats were computed for logmel n_mels={stats.get('n_mels')} at "
                         f"{stats.get('sample_rate')} Hz; this stage has {spec.kind} n_mels={spec.n_mels} at {sample_rate} Hz")
    mean = np.asarray(stats["mean"], np.float32).reshape(-1, 1)
    std = np.maximum(np.asarray(stats["std"], np.float32), 1e-5).reshape(-1, 1)
    return mean, std


def dali_features(x: Any, length: Any, spec: DaliFeatures, sample_rate: int, *, training: bool, seed: int,
                  stats: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """Unpadded clips ``x`` (CPU or GPU DataNode) and their lengths (CPU) -> ((F, frames) features, frame counts).

    Log-mel as wds_audio.features.LogMel (see the module table), optional MFCC, standardization
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


# ------------------------------------------------------------------------------------ reader inputs

@dataclass
class ReaderInputs:
    """What one epoch's reader reads on this rank, and which of its positions are real samples."""

    mode: str  # "plan" or "reader"
    paths: list[str]
    index_paths: list[str] | None
    valid: np.ndarray  # per position of the epoch (plan mode: all batches; reader mode: real samples)
    skipped: Counter = field(default_factory=Counter)
    skipped_keys: list[str] = field(default_factory=list)


def batch_order(plan: EpochPlan) -> list[Slice]:
    """The rank's slots as slices, in the torch back end's batch order (batch i = stream i % k)."""
    b = plan.batch_size
    chunks: list[list[list[Slice]]] = []
    for sp in plan.streams:
        per_batch: list[list[Slice]] = [[] for _ in range(sp.batches)]
        pos = 0
        for sl in sp.slices:  # cut each stream's slices at batch boundaries, in one pass
            start = sl.start
            while start < sl.stop:
                i = pos // b
                take = min(sl.stop - start, (i + 1) * b - pos)
                per_batch[i].append(Slice(sl.shard, start, start + take, sl.rep, sl.valid))
                start += take
                pos += take
        chunks.append(per_batch)
    out: list[Slice] = []
    for i in range(plan.batches):
        s, j = plan.stream_of(i)
        out += chunks[s][j]
    return out


def _local_path(url: str) -> str:
    scheme = scheme_of(url)
    if scheme == "file":
        return url[len("file://"):]
    if scheme:
        raise ValueError(f"{url}: the DALI back end reads local shards only (fn.readers.webdataset opens paths); "
                         "copy the dataset to a local disk or use backend='torch' for remote sources")
    return url


class IndexUnusable(Exception):
    """A shard's .idx is missing, unreadable or not a v1.2 index of the catalogued sample count."""


class ShardIndex:
    """The lines of a shard's DALI .idx (v1.2), with per sample: its key and a stand-in if it has no audio."""

    def __init__(self, shard: Shard) -> None:
        try:
            lines = read_bytes(shard.index_url).decode().splitlines()  # type: ignore[arg-type]
        except (OSError, SourceError, UnicodeDecodeError, TypeError) as e:
            raise IndexUnusable(f"{shard.index_url}: {e}") from e
        head = lines[0].split() if lines else []
        if (len(head) != 2 or head[0] != "v1.2" or head[1] != str(shard.samples)
                or len(lines) < shard.samples + 1):
            raise IndexUnusable(f"{shard.index_url}: not a v1.2 DALI index of {shard.samples} samples")
        self.lines = lines[1:shard.samples + 1]
        self.keys: list[str] = []
        self.has_audio: list[bool] = []
        for line in self.lines:
            parts = line.split()
            exts, names = parts[0::4], parts[3::4]
            self.keys.append(names[0].rsplit("/", 1)[-1].split(".", 1)[0] if names else "")
            self.has_audio.append(any(e in AUDIO_EXTS for e in exts))
        good = [i for i, ok in enumerate(self.has_audio) if ok]
        if not good:
            raise ValueError(f"{shard.url}: no sample of this shard has an audio member ({'/'.join(AUDIO_EXTS)})")
        # the stand-in of a sample without audio: the previous good one (else the first good one)
        self.stand_in, last = [], good[0]
        for i, ok in enumerate(self.has_audio):
            last = i if ok else last
            self.stand_in.append(last)


def antialias_taps(rate_in: int, rate_out: int, attenuation_db: float = 80.0) -> np.ndarray:
    """Odd-length Kaiser FIR low-pass at ``rate_in``: flat to 0.9, stopped from 1.0 x rate_out / 2.

    Example:
        >>> h = antialias_taps(44100, 16000)
        >>> len(h) % 2, round(float(h.sum()), 4)
        (1, 1.0)
    """
    from scipy.signal import firwin, kaiserord

    nyq_out = rate_out / 2
    numtaps, beta = kaiserord(attenuation_db, 0.1 * nyq_out / (rate_in / 2))
    numtaps |= 1  # odd: the filter is centred on each sample (no delay)
    return firwin(numtaps, 0.95 * nyq_out, window=("kaiser", beta), fs=rate_in).astype(np.float32)


def _write_index(path: str, lines: list[str]) -> None:
    with open(path, "w") as f:
        f.write(f"v1.2 {len(lines)}\n")
        f.write("\n".join(lines))
        f.write("\n")


def plan_inputs(catalog: Catalog, indexes: list[ShardIndex], plan: EpochPlan, workdir: str, training: bool,
                on_error: str) -> ReaderInputs:
    """Per-epoch index files for the rank's planned samples (one per run of one shard, in batch order)."""
    paths, index_paths, valid = [], [], []
    skipped: Counter = Counter()
    keys: list[str] = []
    runs: list[tuple[int, list[str]]] = []
    for sl in batch_order(plan):
        idx = indexes[sl.shard]
        lines = []
        for i in range(sl.start, sl.stop):
            if not idx.has_audio[i]:
                msg = f"{catalog.shards[sl.shard].url}: sample {idx.keys[i]} has no audio member"
                if on_error == "raise":
                    raise ValueError(msg)
                if sl.rep == 0:
                    skipped["no_audio"] += 1
                    keys.append(msg)
                    log.warning("skipped %s", msg)
                valid.append(training)  # a fill-in: the previous clip again, invalid in evaluation
            else:
                valid.append(sl.valid)
            lines.append(idx.lines[idx.stand_in[i]])
        if runs and runs[-1][0] == sl.shard:
            runs[-1][1].extend(lines)
        else:
            runs.append((sl.shard, lines))
    for n, (shard, lines) in enumerate(runs):
        path = os.path.join(workdir, f"e{plan.epoch}-r{plan.rank}-{n:06d}.idx")
        _write_index(path, lines)
        paths.append(_local_path(catalog.shards[shard].url))
        index_paths.append(path)
    return ReaderInputs("plan", paths, index_paths, np.asarray(valid, dtype=bool), skipped, keys)


def reader_inputs(catalog: Catalog, plan: EpochPlan, seed: int, training: bool) -> ReaderInputs:
    """Whole shards for DALI's own sharding (some .idx is missing); training permutes them per epoch."""
    order = list(range(len(catalog.shards)))
    if training:
        order = sample_rng(seed, plan.epoch, "", "dali-shard-order").permutation(len(order)).tolist()
    paths = [_local_path(catalog.shards[i].url) for i in order if catalog.shards[i].samples > 0]
    valid = np.zeros(plan.batches * plan.batch_size, dtype=bool)
    valid[: plan.real_samples] = True
    if training:
        valid[:] = True
    return ReaderInputs("reader", paths, None, valid)


# ------------------------------------------------------------------------------------------ loader

def _unsupported(cfg: LoaderConfig) -> None:
    if cfg.rebalance is not None:
        raise ValueError("rebalance is not available with backend='dali' (DALI's reader cannot drop or repeat "
                         "samples by label); use backend='torch'")
    if cfg.pcm_on_device:
        raise ValueError("pcm_on_device is a torch back end option; DALI decodes WAV itself")
    if cfg.resample_on_device:
        raise ValueError("resample_on_device is a torch back end option; DALI resamples inside its own pipeline")
    if cfg.loudness == "lufs":
        raise ValueError("loudness='lufs' (BS.1770 gating) is not available with backend='dali'; use 'peak' or 'rms'")
    if cfg.frontend is not None:
        raise ValueError("frontend= runs a torch Frontend in DataLoader workers; with backend='dali' use "
                         "extra={'dali_features': DaliFeatures(...)}")


class DaliLoader:
    """An iterable of :class:`DaliBatch` with the AudioLoader interface, run by a DALI pipeline.

    Options beyond LoaderConfig come from ``features`` or ``cfg.extra``: ``dali_features``
    (:class:`DaliFeatures`), ``dali_num_threads`` (default ``num_workers``, else min(4, cores)),
    ``dali_resample_quality`` (0-100, default 50). Per-epoch index files live in a temporary
    folder removed with the loader.

    Example:
        >>> cfg = LoaderConfig("data/demo", split="valid", batch_size=8, sample_rate=16000, training=False)
        >>> loader = DaliLoader(cfg)                                          # doctest: +SKIP
        >>> len(loader), next(iter(loader)).audio.shape                       # doctest: +SKIP
        (3, torch.Size([8, 80000]))
    """

    def __init__(self, cfg: LoaderConfig, features: DaliFeatures | None = None) -> None:
        self._dali = import_dali()
        from .loader import dist_info

        _unsupported(cfg)
        self.cfg = cfg
        self.features: DaliFeatures | None = features or cfg.extra.get("dali_features")
        self.catalog = Catalog.open(cfg.source, cfg.split, cfg.folds, cfg.classes, cfg.source_options)
        self.rank, self.world_size = dist_info(cfg)
        for s in self.catalog.shards:
            _local_path(s.url)
        self.num_threads = int(cfg.extra.get("dali_num_threads", cfg.num_workers or min(4, os.cpu_count() or 1)))
        self.resample_quality = float(cfg.extra.get("dali_resample_quality", 50.0))
        self.indexes = self._load_indexes(self.catalog)
        self.mode = "plan" if self.indexes is not None else "reader"
        self.stored_rate = self.catalog.sample_rate or self._rate_from_json()
        self.noise = self._noise_shards()
        self.workdir = tempfile.mkdtemp(prefix="wds-dali-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.workdir, True)
        self.epoch, self.start = 0, 0  # start: batches of this epoch delivered so far (state_dict)
        self._resume_at = 0  # where the next iteration begins: only load_state_dict sets it
        self._pending: str | None = None  # a DALI checkpoint from load_state_dict
        self._live: tuple[int, Any] | None = None  # (epoch, DALIGenericIterator) being consumed
        self._metrics = LoaderMetrics(cfg.max_reported_keys)
        if self.features is not None and self.features.standardize == "dataset":
            _dataset_stats(self.features, self.features.stats or self.catalog.feature_stats, cfg.sample_rate)

    @staticmethod
    def _load_indexes(catalog: Catalog) -> list[ShardIndex] | None:
        out = []
        for s in catalog.shards:
            try:
                out.append(ShardIndex(s))
            except IndexUnusable as e:
                log.warning("%s: no usable .idx (%s): DALI infers the indexes and shards by itself", s.url, e)
                return None
        return out

    def _rate_from_json(self) -> int | None:
        """The stored rate of a shard-pattern source (no dataset.json): the first sample's json says it."""
        if self.indexes is None:
            return None
        parts = self.indexes[0].lines[0].split()
        for ext, offset, size in zip(parts[0::4], parts[1::4], parts[2::4]):
            if ext == "json":
                with open(_local_path(self.catalog.shards[0].url), "rb") as f:
                    f.seek(int(offset))
                    rate = json.loads(f.read(int(size))).get("sample_rate")
                return int(rate) if rate else None
        return None

    def _noise_shards(self) -> dict[str, Any]:
        """Reader arguments for the noise split's shards (with their .idx when every one has one)."""
        if self.features is None or self.features.noise is None or not self.cfg.training:
            return {}
        if not self.catalog.manifest:
            raise ValueError("DaliNoise reads a noise split of the dataset: it needs a source with dataset.json")
        shards = [s for s in self.catalog.shards_of(self.features.noise.split) if s.samples > 0]
        if not shards:
            raise ValueError(f"{self.cfg.source}: split {self.features.noise.split!r} holds no noise clip")
        args: dict[str, Any] = {"paths": [_local_path(s.url) for s in shards]}
        indexes = [_local_path(s.index_url) for s in shards if s.index_url]
        if len(indexes) == len(shards) and all(os.path.isfile(p) for p in indexes):
            args["index_paths"] = indexes
        return args

    @property
    def classes(self) -> list[str]:
        return self.catalog.classes

    def plan(self, epoch: int | None = None) -> EpochPlan:
        return plan_epoch([s.samples for s in self.catalog.shards], batch_size=self.cfg.batch_size, seed=self.cfg.seed,
                          epoch=self.epoch if epoch is None else epoch, rank=self.rank, world_size=self.world_size,
                          streams=self.cfg.streams, training=self.cfg.training)

    def __len__(self) -> int:
        """Batches per epoch on this rank: the same on every rank, known before iterating."""
        return self.plan(0).batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.start, self._resume_at, self._pending, self._live = epoch, 0, 0, None, None

    # ---------------------------------------------------------------- the pipeline

    def _window(self) -> int | None:
        cfg = self.cfg
        return cfg.clip_samples if (cfg.training or cfg.eval_crop == "center") else None

    def _decode(self, encoded: Any, to_gpu: bool = False) -> tuple[Any, Any]:
        """Encoded bytes -> (mono float32 at cfg.sample_rate, its length as a CPU node).

        Resampled only when the stored rate differs; with ``to_gpu`` the anti-aliasing filter and
        the resampler (the costly CPU steps: measured 4 + 12 ms per 3.75-s clip, 44.1 -> 32 kHz,
        against 4 ms to decode) run on the GPU. Lengths always come from CPU metadata.
        """
        fn, types, dmath = self._dali.fn, self._dali.types, self._dali.math
        x, rate = fn.decoders.audio(encoded, downmix=True, dtype=types.FLOAT)
        n = x.shape()[0]
        stored, target = self.stored_rate, self.cfg.sample_rate
        if stored == target:
            return (x.gpu() if to_gpu else x), n
        x = x.gpu() if to_gpu else x
        if stored is None or stored > target:
            x = self._antialias(x, stored)
        x = fn.audio_resample(x, in_rate=rate, out_rate=float(target), quality=self.resample_quality)
        # DALI emits ceil(n * out / in) samples, soxr (the torch back end) round(n * out / in)
        n = fn.cast(dmath.floor(fn.cast(n, dtype=types.FLOAT) * float(target) / rate + 0.5), dtype=types.INT64)
        x = fn.slice(x, start=[0], shape=_scalar_i32(n), axes=[0], out_of_bounds_policy="trim_to_shape")
        return x, n

    def _antialias(self, x: Any, stored: int | None) -> Any:
        """Low-pass below the target Nyquist before downsampling.

        fn.audio_resample interpolates with a sinc at the *input* Nyquist: measured on white noise
        from 44.1 to 16 kHz it keeps 98 % of the power (soxr: 35 %), i.e. everything between 8 and
        22 kHz aliases. A Kaiser-windowed sinc FIR (fn.filter over the clip as a 1 x n image) with
        its passband to 0.9 and stopband from 1.0 of the target Nyquist (80 dB) fixes that.
        """
        if stored is None:
            log.warning("neither dataset.json nor the sample json gives the stored sample rate: no anti-aliasing "
                        "filter can be designed, and downsampling with fn.audio_resample alone aliases")
            return x
        fn, types = self._dali.fn, self._dali.types
        taps = antialias_taps(stored, self.cfg.sample_rate)
        row = fn.reshape(x, shape=[1, -1], layout="HW")
        # the filter is a regular input: it lives where the audio is
        y = fn.filter(row, types.Constant(taps.reshape(1, -1), device=x.device), border="constant")
        return fn.reshape(y, shape=[-1], layout="")

    def _trim(self, x: Any, n: Any) -> tuple[Any, Any]:
        """fn.nonsilent_region trimming (CPU audio: its outputs become slice arguments)."""
        fn, dmath = self._dali.fn, self._dali.math
        window = max(1, self.cfg.sample_rate // 100)  # 10 ms, as the torch back end's frames
        begin, length = fn.nonsilent_region(x, cutoff_db=-float(self.cfg.trim_db), window_length=window,
                                            reset_interval=window * max(1, 8192 // window))
        silent = fn.cast(length == 0, dtype=self._dali.types.INT64)  # all quiet: keep the clip as it is
        begin = begin * (1 - silent)
        length = dmath.max(length, silent * n)
        return fn.slice(x, start=_scalar_i32(begin), shape=_scalar_i32(length), axes=[0]), length

    def _crop(self, x: Any, n: Any, seed: int) -> tuple[Any, Any]:
        """Random (training) or centre crop to the window; clips shorter than it stay whole (padded later)."""
        fn, dmath, types = self._dali.fn, self._dali.math, self._dali.types
        w = self._window()
        if w is None:
            return x, n
        excess = dmath.max(n - w, 0)
        if self.cfg.training:
            u = fn.random.uniform(range=[0.0, 1.0], seed=_seed(seed, "crop"))
            start = dmath.floor(u * fn.cast(excess + 1, dtype=types.FLOAT))
        else:
            start = excess // 2
        n = dmath.min(n, w)
        return fn.slice(x, start=_scalar_i32(start), shape=_scalar_i32(n), axes=[0]), n

    def _loudness(self, x: Any) -> Any:
        fn, dmath = self._dali.fn, self._dali.math
        level = fn.reductions.max(dmath.abs(x)) if self.cfg.loudness == "peak" else fn.reductions.rms(x)
        # as loudness.normalize: at most +40 dB, silence stays silence (0 * 100)
        return x * dmath.min(10.0 ** (self.cfg.loudness_db / 20.0) / level, 100.0)

    def output_names(self) -> list[str]:
        names = ["audio", "length", "labels", "labels_len", "meta", "meta_len"]
        return names + (["features", "frames"] if self.features is not None else [])

    def _pipeline(self, epoch: int, inputs: ReaderInputs, checkpoint: str | None) -> Any:
        dali, cfg, spec = self._dali, self.cfg, self.features
        fn, types = dali.fn, dali.types
        seed = _seed(cfg.seed, epoch, self.rank)
        gpu = spec is not None and spec.on_gpu()
        window = self._window()
        reader_args: dict[str, Any] = dict(
            paths=inputs.paths, ext=[";".join(AUDIO_EXTS), "json", "labels"], dtypes=[types.UINT8] * 3,
            missing_component_behavior="empty", pad_last_batch=True, name=READER)
        if inputs.index_paths is not None:
            reader_args["index_paths"] = inputs.index_paths
        else:
            reader_args.update(shard_id=self.rank, num_shards=self.world_size, stick_to_shard=True)
        if cfg.training:
            reader_args.update(random_shuffle=True, initial_fill=max(1, min(cfg.shuffle_buffer, len(inputs.valid))),
                               seed=_seed(seed, "shuffle"))

        @dali.pipeline_def(batch_size=cfg.batch_size, num_threads=self.num_threads,
                           device_id=torch.cuda.current_device() if gpu else None, seed=seed,
                           enable_checkpointing=True, prefetch_queue_depth=max(1, cfg.prefetch_factor))
        def graph() -> tuple[Any, ...]:
            encoded, meta, labels = fn.readers.webdataset(**reader_args)
            # with GPU features the audio moves to the GPU right after decoding, unless trimming
            # needs it on the CPU (fn.nonsilent_region's outputs become slice arguments)
            x, length = self._decode(encoded, to_gpu=gpu and cfg.trim_db is None)
            if cfg.trim_db is not None:
                x, length = self._trim(x, length)
            x, length = self._crop(x, length, seed)
            if cfg.loudness is not None:
                x = self._loudness(x)
            outs = [fn.pad(labels, axes=[0]), labels.shape()[0], fn.pad(meta, axes=[0]),
                    meta.shape()[0]]
            if spec is not None:
                x, feats = self._feature_stage(x, length, seed, gpu)
                outs += feats
            return (fn.pad(x, axes=[0], shape=[window] if window else [-1]), length, *outs)

        return graph(checkpoint=checkpoint) if checkpoint else graph()

    def _feature_stage(self, x: Any, length: Any, seed: int, gpu: bool) -> tuple[Any, list[Any]]:
        fn, cfg, spec = self._dali.fn, self.cfg, self.features
        assert spec is not None
        x = x.gpu() if gpu and x.device != "gpu" else x
        if cfg.training and (spec.gain is not None or spec.noise is not None):
            noise = noise_length = None
            if self.noise:
                encoded = fn.readers.webdataset(**self.noise, ext=[";".join(AUDIO_EXTS)], random_shuffle=True,
                                                initial_fill=64, seed=_seed(seed, "noise-reader"), name="noise_reader")
                noise, noise_length = self._decode(encoded, to_gpu=gpu)
            x = dali_augment(x, length, spec, seed, noise, noise_length)
        feats, frames = dali_features(x, length, spec, cfg.sample_rate, training=cfg.training, seed=seed,
                                      stats=spec.stats or self.catalog.feature_stats)
        fill = AMIN_DB if (spec.kind == "logmel" and spec.standardize is None) else 0.0
        window = self._window()
        n_frames = [window // spec.hop(cfg.sample_rate) + 1] if window else [-1]
        return x, [fn.pad(feats, axes=[1], shape=n_frames, fill_value=fill), frames]

    # ---------------------------------------------------------------- iteration

    def _inputs(self, plan: EpochPlan) -> ReaderInputs:
        if self.indexes is not None:
            # DALI parses the index files when the pipeline is built: earlier epochs' can go
            for name in os.listdir(self.workdir):
                shutil.rmtree(os.path.join(self.workdir, name), ignore_errors=True)
            folder = os.path.join(self.workdir, f"epoch{plan.epoch}")
            os.makedirs(folder)
            return plan_inputs(self.catalog, self.indexes, plan, folder, self.cfg.training, self.cfg.on_error)
        return reader_inputs(self.catalog, plan, self.cfg.seed, self.cfg.training)

    def _iterator(self, epoch: int, inputs: ReaderInputs, checkpoint: str | None) -> Any:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        pipe = self._pipeline(epoch, inputs, checkpoint)
        return DALIGenericIterator([pipe], self.output_names(), reader_name=READER,
                                   last_batch_policy=LastBatchPolicy.FILL, auto_reset=False)

    def __iter__(self) -> Iterator[DaliBatch]:
        epoch, start = self.epoch, self._resume_at  # an abandoned iteration does not shorten the next
        self.start, self._resume_at = start, 0
        checkpoint = self._resume_checkpoint(epoch, start)
        plan = self.plan(epoch)
        inputs = self._inputs(plan)
        self._metrics.add_skips(inputs.skipped, inputs.skipped_keys)
        self._metrics.start()
        it = self._iterator(epoch, inputs, checkpoint)
        self._live, self._pending = (epoch, it), None
        if checkpoint is None and start > 0:
            log.warning("resuming epoch %d at batch %d without a DALI checkpoint: re-reading %d batches", epoch, start, start)
            for _ in range(start):
                next(it)
        for index in range(start, plan.batches):
            t_wait = time.perf_counter()
            out = next(it)[0]
            batch = self._batch(out, inputs.valid, index)
            self._metrics.batch(batch, time.perf_counter() - t_wait)
            self.start = index + 1
            yield batch
        self.epoch, self.start, self._live = epoch + 1, 0, None

    def _resume_checkpoint(self, epoch: int, start: int) -> str | None:
        if start == 0:
            return None
        if self._pending is not None:
            return self._pending
        if self._live is not None and self._live[0] == epoch:
            return self._live[1].checkpoints()[0]
        return None

    def _batch(self, out: dict[str, torch.Tensor], valid: np.ndarray, index: int) -> DaliBatch:
        b, c = self.cfg.batch_size, self.catalog.num_classes
        labels, labels_len = out["labels"].cpu().numpy(), out["labels_len"].cpu().numpy().reshape(-1)
        meta, meta_len = out["meta"].cpu().numpy(), out["meta_len"].cpu().numpy().reshape(-1)
        keys, targets = [], np.zeros((b, c), np.float32)
        for i in range(b):
            info = json.loads(meta[i, : meta_len[i]].tobytes()) if meta_len[i] else {}
            keys.append(str(info.get("key", "")))
            if labels_len[i] == c and labels[i, :c].max(initial=0) <= 1:
                targets[i] = labels[i, :c]
            else:  # no (usable) .labels member: the json's label indices, as the torch back end
                targets[i, [j for j in info.get("labels", []) if 0 <= j < c]] = 1.0
        lo = index * b
        ok = torch.from_numpy(valid[lo: lo + b].copy()) if len(valid) >= lo + b else torch.ones(b, dtype=torch.bool)
        feats = out.get("features")
        frames = out["frames"].reshape(-1).to(torch.int64) if "frames" in out else None
        return DaliBatch(audio=out["audio"], lengths=out["length"].reshape(-1).to(torch.int64),
                         targets=torch.from_numpy(targets), keys=keys, valid=ok, index=index,
                         features=feats, frames=frames)

    def metrics(self) -> dict[str, Any]:
        """As the torch back end's (wds_audio.metrics.LoaderMetrics), plus the back end and mode."""
        return {**self._metrics.as_dict(), "backend": "dali", "mode": self.mode}

    # ---------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Epoch, batches consumed and DALI's pipeline checkpoint (readers, shuffle and random states)."""
        return {"backend": "dali", "epoch": self.epoch, "batches": self.start, "seed": self.cfg.seed,
                "rank": self.rank, "world_size": self.world_size, "streams": self.cfg.streams, "mode": self.mode,
                "dali_checkpoint": self._resume_checkpoint(self.epoch, self.start)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("backend") != "dali":
            raise ValueError("this checkpoint was not taken by the DALI back end (no DALI pipeline state in it)")
        for k, have in (("seed", self.cfg.seed), ("world_size", self.world_size), ("streams", self.cfg.streams),
                        ("mode", self.mode)):
            if state[k] != have:
                raise ValueError(f"checkpoint was taken with {k}={state[k]}, this loader has {have}: batches would differ")
        self.epoch, self.start = int(state["epoch"]), int(state["batches"])
        self._resume_at = self.start
        self._pending, self._live = state.get("dali_checkpoint"), None
