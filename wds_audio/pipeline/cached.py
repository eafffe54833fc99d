"""Cached features (``loader(..., features="cached")``): fp16 log-mels read from the shards, no audio decoded.

``shardgen features`` stores each clip's whole-clip log-mel as ``<key>.logmel.npy`` (float16,
(n_mels, frames)) and its settings in dataset.json ``features``. This stage replaces decoding and
shaping: it reads the member, crops or pads frames to ``clip_seconds``, and batches them as a
:class:`FeatureBatch`: ``features`` (B, n_mels, frames) float16, ``lengths`` in frames, ``audio`` an
empty (B, 0) tensor, ``feature_settings`` the cached settings. A Frontend given such a batch checks
its settings against them, then standardizes, SpecAugments and mixes them up as it does its own
log-mels (waveform augmentations cannot run: the Frontend refuses them, naming them).

**Why an explicit switch, not detection.** A features dataset normally keeps its audio, so both paths
can read it; which one runs decides what a Frontend gets and whether waveform augmentations are
possible. Detecting the member would change that behind the user's back (and silently fall back to
audio when a dataset lacks it); ``features="cached"`` says it, and fails with a clear message on a
dataset without cached features or with a sample rate other than theirs.

**Crops, the same rule as audio.** The audio path draws a crop start ``s`` in the clip's stored samples
(``crop_start``: uniform from ``sample_uniform(seed, epoch, key, "crop<occurrence>")`` in training, the
centre for ``eval_crop="center"``, none for ``"full"``). Here ``s`` is drawn identically from the
clip's stored length (json ``duration`` x ``sample_rate``), taken to the feature rate and to the nearest
frame: ``f0 = round(s * rate / stored_rate / hop)``, at most ``frames - window``; the window is
``clip_samples // hop + 1`` frames, the frame count the on-the-fly log-mel of a ``clip_samples`` crop
has. A clip no longer than the window is taken whole and padded. The cached window's frame ``j`` is
centred within ``hop / 2`` samples of the audio crop's frame ``j``; it is exactly the same frame when
``s`` is a multiple of ``hop`` (always for ``eval_crop="full"``). Frames near a crop's edges differ
anyway: on the fly, the STFT of a crop reflects its edges (and a clip padded in a batch sees zeros)
where the cached one saw the real neighbouring audio: about ``n_fft / 2 / hop`` frames at each end.

Padding frames hold -100 dB (the log-mel of digital silence, ``10 log10(amin)``); they are outside
``lengths`` and zeroed by a standardizing Frontend, as for audio.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from ..core.rng import sample_uniform
from ..signal.features import AMIN, frames_for
from ..signal.shaping import crop_start
from .batch import Batch
from .config import LoaderConfig
from .samples import SampleError, labels_of, occurrence
from .shards import Sample

PAD_DB = float(10.0 * np.log10(AMIN))  # -100 dB


@dataclass
class FeatureBatch(Batch):
    """A batch of cached features: ``features`` (B, n_mels, frames) float16, ``lengths`` in frames,
    ``feature_settings`` dataset.json's ``features`` entry (the settings of
    :data:`wds_audio.device.stats.SETTINGS` among them)."""

    feature_settings: dict[str, Any] = field(default_factory=dict)


def cached_info(cfg: LoaderConfig, manifest: dict[str, Any]) -> dict[str, Any]:
    """dataset.json's ``features`` entry, checked against the loader: raises ValueError when the dataset
    has no cached features or they were computed at another rate than ``cfg.sample_rate``; asks a
    given Frontend to check its settings and augmentations (``Frontend.check_cached``)."""
    info = manifest.get("features")
    if not info:
        raise ValueError(f"{cfg.source}: dataset.json has no cached features (no 'features' entry): compute them "
                         "with `shardgen features DATASET OUT ...` and load OUT, or leave features= unset to read audio")
    if int(info["sample_rate"]) != cfg.sample_rate:
        raise ValueError(f"{cfg.source}: the cached features were computed at sample_rate={info['sample_rate']}; "
                         f"this loader has sample_rate={cfg.sample_rate} (use sample_rate={info['sample_rate']}, "
                         f"or `shardgen features ... --sample-rate {cfg.sample_rate}`)")
    check = getattr(cfg.frontend, "check_cached", None)
    if check is not None:
        check(info)
    return info


def npy_array(data: bytes, key: str) -> np.ndarray:
    """The array of a .npy member, a read-only view of ``data`` (no copy)."""
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
    except ValueError as e:
        raise SampleError("bad_features", f"{key}: the feature member is not a .npy file ({e})") from e
    if fortran or dtype.hasobject:
        raise SampleError("bad_features", f"{key}: the feature member is not a C-order numeric array")
    count = int(np.prod(shape))
    if len(data) - f.tell() < count * dtype.itemsize:
        raise SampleError("bad_features", f"{key}: the feature member is truncated")
    return np.frombuffer(data, dtype=dtype, count=count, offset=f.tell()).reshape(shape)


@dataclass
class FeatureShaper:
    """Reads one sample's cached features and crops them (see the module docstring); a drop-in for
    :class:`~wds_audio.pipeline.samples.Shaper` in the stream (``window`` in frames)."""

    cfg: LoaderConfig
    num_classes: int
    epoch: int
    info: dict[str, Any]

    def __post_init__(self) -> None:
        self.member, self.hop, self.n_mels = self.info["member"], int(self.info["hop_length"]), int(self.info["n_mels"])
        self.rate = int(self.info["sample_rate"])
        self.samples = self.cfg.clip_samples  # the audio window at the feature rate (== cfg.sample_rate)
        self.window = None if self.samples is None else int(frames_for(self.samples, self.hop))

    def frame_start(self, key: str, meta: dict[str, Any], frames: int, mode: str, u: float | None) -> int:
        """The first frame of the window: the audio path's crop start (in the clip's stored samples) at
        the feature rate, to the nearest frame."""
        sr = int(meta.get("sample_rate") or self.rate)
        if "duration" not in meta:
            raise SampleError("bad_features", f"{key}: json has no duration: the crop cannot follow the audio's")
        stored = int(round(float(meta["duration"]) * sr))
        need = -(-self.samples * sr // self.rate)  # the stored samples the audio path decodes for the window
        if stored <= need:
            return 0
        s = crop_start(stored, need, mode, u) * self.rate / sr
        return max(0, min(int(s / self.hop + 0.5), frames - self.window))  # type: ignore[operator]

    def __call__(self, sample: Sample) -> Sample:
        key = sample["__key__"]
        labels = labels_of(sample, self.num_classes)
        if self.member not in sample:
            raise SampleError("no_features", f"{key} ({sample.get('__url__')}) has no {self.member} member")
        x = npy_array(sample[self.member], key)
        if x.ndim != 2 or x.shape[0] != self.n_mels or x.shape[1] == 0:
            raise SampleError("bad_features", f"{key}: features of shape {x.shape}, dataset.json says "
                              f"({self.n_mels}, frames)")
        mode = "random" if self.cfg.training else ("center" if self.cfg.eval_crop == "center" else "full")
        if mode != "full" and x.shape[1] > self.window:  # type: ignore[operator]
            u = sample_uniform(self.cfg.seed, self.epoch, key, f"crop{occurrence(sample)}") if mode == "random" else None
            meta = json.loads(sample["json"]) if "json" in sample else {}
            f0 = self.frame_start(key, meta, x.shape[1], mode, u)
            x = x[:, f0:f0 + self.window]
        return {"key": key, "features": x, "labels": labels, "valid": bool(sample.get("__valid__", True)),
                "repeat": occurrence(sample)}


def feature_batches(samples: Iterator[Sample], batch_size: int, count: int, window: int | None,
                    n_mels: int, settings: dict[str, Any]) -> Iterator[FeatureBatch]:
    """``count`` :class:`FeatureBatch` es of ``batch_size`` samples, padded to ``window`` frames (None:
    to the longest). Each sample's features are copied into the batch as it comes."""
    for _ in range(count):
        yield _feature_batch(samples, batch_size, window, n_mels, settings)


def _feature_batch(samples: Iterator[Sample], batch_size: int, window: int | None, n_mels: int,
                   settings: dict[str, Any]) -> FeatureBatch:
    held: list[np.ndarray] = []
    lengths: list[int] = []
    rest: list[tuple[str, bool, str, np.ndarray]] = []
    out = None if window is None else np.full((batch_size, n_mels, window), PAD_DB, dtype=np.float16)
    for i, s in zip(range(batch_size), samples):
        x = s.get("features")
        if x is None:  # a fill-in made before any sample of the stream decoded: one silent frame
            x = np.full((n_mels, 1), PAD_DB, dtype=np.float16)
        n = x.shape[1] if window is None else min(x.shape[1], window)
        if out is not None:
            out[i, :, :n] = x[:, :n]
        else:
            held.append(x)
        lengths.append(n)
        rest.append((s["key"], s["valid"], s.get("repeat", "0"), s["labels"]))
        del s, x
    if len(rest) < batch_size:
        raise RuntimeError(f"stream ended after {len(rest)} of {batch_size} samples of a planned batch")
    if out is None:
        out = np.full((batch_size, n_mels, max(lengths)), PAD_DB, dtype=np.float16)
        for i, x in enumerate(held):
            out[i, :, :x.shape[1]] = x
    keys, valid, repeats, labels = zip(*rest)
    return FeatureBatch(audio=torch.empty((batch_size, 0)), lengths=torch.tensor(lengths, dtype=torch.int64),
                        targets=torch.from_numpy(np.stack(labels).astype(np.float32)), keys=list(keys),
                        valid=torch.tensor(valid, dtype=torch.bool), repeats=list(repeats),
                        features=torch.from_numpy(out), feature_settings=dict(settings))

