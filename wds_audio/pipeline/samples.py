"""Samples -> decoded, shaped samples: labels, audio decoding (16-bit WAV sliced without a copy,
everything else through libsndfile), the per-sample error policy and its counts.
"""
from __future__ import annotations

import io
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Iterator

import numpy as np
import soundfile as sf

from ..core.rng import sample_uniform
from ..core.threads import ordered_map
from ..signal.loudness import normalize
from ..signal.resample_cpu import resample
from ..signal.shaping import crop, crop_start, downmix, trim
from .config import LoaderConfig
from .shards import Sample
from .spans import with_bytes

log = logging.getLogger(__name__)
AUDIO_EXTS = ("flac", "wav", "ogg", "mp3")


class SampleError(Exception):
    """One sample cannot be used; ``reason`` is a short counter name."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotPcm16(SampleError):
    """A WAV in another encoding than 16-bit PCM (libsndfile still decodes it)."""


@dataclass
class StreamStats:
    """Counters a stream keeps; shipped with each batch (as deltas) to the main process."""

    samples: int = 0
    skipped: Counter = field(default_factory=Counter)
    skipped_keys: list[str] = field(default_factory=list)
    max_keys: int = 100

    def skip(self, reason: str, key: str, message: str, on_error: str, repeat: bool = False, clips: int = 1) -> None:
        """Count (or raise for) ``clips`` lost clips; a planned repeat of a clip is not counted again."""
        if on_error == "raise":
            raise SampleError(reason, message)
        if repeat:
            return
        self.skipped[reason] += clips
        if len(self.skipped_keys) < self.max_keys:
            self.skipped_keys.append(f"{key}: {message}")
        log.warning("skipped %s", message)

    def take(self) -> dict[str, Any]:
        out = {"samples": self.samples, "skipped": dict(self.skipped), "skipped_keys": list(self.skipped_keys)}
        self.samples, self.skipped, self.skipped_keys = 0, Counter(), []
        return out


# ---------------------------------------------------------------- decoding and shaping

def labels_of(sample: Sample, num_classes: int) -> np.ndarray:
    if "labels" in sample:
        hot = np.frombuffer(sample["labels"], dtype=np.uint8)
        if hot.shape != (num_classes,) or hot.max(initial=0) > 1:
            raise SampleError("bad_labels", f"labels member of {sample['__key__']} is not a {num_classes}-byte multi-hot vector")
        return hot
    if "json" in sample:
        idx = json.loads(sample["json"]).get("labels", [])
        if any(not (0 <= i < num_classes) for i in idx):
            raise SampleError("bad_labels", f"json labels of {sample['__key__']} outside [0, {num_classes})")
        hot = np.zeros(num_classes, np.uint8)
        hot[idx] = 1
        return hot
    raise SampleError("no_labels", f"{sample['__key__']} has neither a labels nor a json member")


def wav_pcm16(data: bytes, key: str) -> tuple[np.ndarray, int, int]:
    """(int16 frames view, sample rate, channels) of a 16-bit PCM WAV, parsing only the header."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise SampleError("decode_error", f"{key}: not a RIFF/WAVE file")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        body = pos + 8
        if cid == b"fmt ":
            tag, ch, sr = (int.from_bytes(data[body:body + 2], "little"), int.from_bytes(data[body + 2:body + 4], "little"),
                           int.from_bytes(data[body + 4:body + 8], "little"))
            bits = int.from_bytes(data[body + 14:body + 16], "little")
            fmt = (tag, ch, sr, bits)
        elif cid == b"data":
            if fmt is None or fmt[0] not in (1, 0xFFFE) or fmt[3] != 16:
                raise NotPcm16("decode_error", f"{key}: not 16-bit PCM WAV: (format tag, channels, rate, bits) = {fmt}")
            n = min(size, len(data) - body) // (2 * fmt[1]) * 2 * fmt[1]
            return np.frombuffer(data, dtype="<i2", count=n // 2, offset=body).reshape(-1, fmt[1]), fmt[2], fmt[1]
        pos = body + size + (size & 1)
    raise SampleError("decode_error", f"{key}: WAV has no data chunk")


def _audio_member(sample: Sample) -> str:
    ext = next((e for e in AUDIO_EXTS if e in sample), None)
    if ext is None:
        raise SampleError("no_audio", f"{sample['__key__']} has no audio member")
    return ext


def occurrence(sample: Sample) -> str:
    """Which occurrence of a clip this is in the epoch: "0" the first time; wrap-around fills
    (``__rep__``) and rebalancing repeats (``__repeat__``) get their own crops and augmentation."""
    rep, again = sample.get("__rep__", 0), sample.get("__repeat__", 0)
    return "0" if not (rep or again) else f"{rep}.{again}"


def decode_audio(sample: Sample, pcm: bool, window: Callable[[int, int], tuple[int, int]] | None = None) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 (int16 for ``pcm``) and the stored sample rate.

    ``window(frames, sample_rate) -> (start, count)`` decodes only part of the clip (a crop),
    seeking in the compressed stream instead of decoding what would be thrown away. With ``pcm``,
    16-bit PCM WAV is sliced from the bytes without decoding; anything else goes through libsndfile.
    """
    ext = _audio_member(sample)
    x, sr = _wav_slice(sample, window) if pcm and ext == "wav" else (None, 0)
    if x is None:
        try:
            with sf.SoundFile(io.BytesIO(sample[ext])) as f:
                start, count = window(f.frames, f.samplerate) if window else (0, -1)
                if start:
                    f.seek(start)
                x, sr = f.read(count, dtype="int16" if pcm else "float32", always_2d=True), f.samplerate
        except Exception as e:  # noqa: BLE001 - every decoder failure is the same kind of skip
            raise SampleError("decode_error", f"{sample['__key__']} ({sample.get('__url__')}): .{ext} does not decode ({e})") from e
    if len(x) == 0:
        raise SampleError("decode_error", f"{sample['__key__']}: zero-length audio")
    return x, sr


def _wav_slice(sample: Sample, window: Callable[[int, int], tuple[int, int]] | None) -> tuple[np.ndarray | None, int]:
    """The int16 frames of a 16-bit PCM WAV (``window`` of them), or (None, 0) for another WAV encoding."""
    try:
        x, sr, _ = wav_pcm16(sample["wav"], sample["__key__"])
    except NotPcm16:
        return None, 0  # float or 24-bit WAV: libsndfile converts it
    start, count = window(len(x), sr) if window else (0, -1)
    return (x[start:start + count] if count >= 0 else x[start:]), sr


@dataclass
class Shaper:
    """decode -> downmix -> resample -> trim -> crop -> loudness, per sample, with its own RNG.

    ``rate``: the rate of the shaped audio (``cfg.audio_rate``: the stored rate with
    ``resample_on_device``), and ``window`` the crop at that rate."""

    cfg: LoaderConfig
    num_classes: int
    epoch: int
    rate: int | None = None  # default: cfg.sample_rate

    def __post_init__(self) -> None:
        self.rate = self.rate or self.cfg.sample_rate
        self.window = self.cfg.audio_window(self.rate)

    def __call__(self, sample: Sample) -> Sample:
        key = sample["__key__"]
        labels = labels_of(sample, self.num_classes)
        mode = "random" if self.cfg.training else ("center" if self.cfg.eval_crop == "center" else "full")
        u = sample_uniform(self.cfg.seed, self.epoch, key, f"crop{occurrence(sample)}") if mode == "random" else None
        target = self.window if mode != "full" else None
        early = target is not None and self.cfg.trim_db is None

        def window(frames: int, sr: int) -> tuple[int, int]:
            # crop before decoding: only the window (in stored samples) is decoded and resampled
            need = -(-target * sr // self.rate)  # type: ignore[operator]
            return (crop_start(frames, need, mode, u), need) if frames > need else (0, -1)
        x, sr = decode_audio(sample, self.cfg.pcm_on_device, window if early else None)
        x = self._at_rate(downmix(x), sr)
        if early:
            x = x[:target]
        else:
            if self.cfg.trim_db is not None:
                x = trim(x, self.rate, self.cfg.trim_db)
            x = crop(x, target, mode, u)
        return self._finish(key, x, labels, sample)

    def _at_rate(self, x: np.ndarray, sr: int) -> np.ndarray:
        if sr == self.rate:
            return x
        if x.dtype == np.int16:  # pcm_on_device: a clip stored at another rate than its dataset's
            return np.clip(np.rint(resample(x / np.float32(32768), sr, self.rate) * 32768), -32768, 32767).astype(np.int16)
        return resample(x, sr, self.rate)

    def _finish(self, key: str, x: np.ndarray, labels: np.ndarray, sample: Sample) -> Sample:
        if self.cfg.loudness is not None:
            x = normalize(x, self.rate, self.cfg.loudness, self.cfg.loudness_db)
        return {"key": key, "audio": np.ascontiguousarray(x), "labels": labels, "valid": bool(sample.get("__valid__", True)),
                "repeat": occurrence(sample)}


def decode(samples: Iterator[Sample], shaper: Shaper, stats: StreamStats, on_error: str,
           width: Callable[[int], int] = lambda i: 1) -> Iterator[Sample]:
    """Shape every sample, ``width(i)`` at a time on threads (results in order); a failure becomes
    a fill-in in the same position (see module docstring)."""
    last: Sample | None = None
    for sample, out in ordered_map(samples, partial(_shape, shaper), width):
        if isinstance(out, SampleError):
            if str(out):
                stats.skip(out.reason, sample["__key__"], str(out), on_error, repeat=sample.get("__rep__", 0) > 0)
            out = _fill_in(last, shaper, sample["__key__"])
        else:
            last = out
        stats.samples += 1
        yield out


def _shape(shaper: Shaper, sample: Sample) -> tuple[Sample, Sample | SampleError]:
    if "__failed__" in sample:
        return sample, SampleError(sample["__failed__"], "")  # already counted by the reader
    try:
        full = with_bytes(sample)
    except OSError as e:  # a clip held as its place in a local shard (spans.py) could not be read again
        return sample, SampleError("read_error", f"{sample['__key__']} ({sample.get('__url__')}): {e}")
    try:
        return sample, shaper(full)
    except SampleError as e:
        return sample, e


def _fill_in(last: Sample | None, shaper: Shaper, key: str) -> Sample:
    if last is not None:
        return {**last, "valid": last["valid"] and shaper.cfg.training, "key": last["key"]}
    n = shaper.window or 1
    dtype = np.int16 if shaper.cfg.pcm_on_device else np.float32
    return {"key": key, "audio": np.zeros(n, dtype), "labels": np.zeros(shaper.num_classes, np.uint8), "valid": False}
