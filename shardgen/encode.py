"""Source audio -> the bytes stored in a shard.

The source encoding is kept when it already is what the format wants (FLAC, 16-bit PCM
WAV or OGG at the target rate and channel count): no generation loss and no CPU spent.
Anything else (MP3, other rates, stereo, 24-bit WAV) is decoded with soundfile,
downmixed, resampled with soxr and encoded as ``codec``. MP3 is always transcoded
because DALI cannot decode it.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from wds_audio.signal.resample_cpu import resample

from .records import Record

KEEP_FORMATS = {"FLAC": "flac", "WAV": "wav", "OGG": "ogg"}
CODECS = {"flac": ("FLAC", "PCM_16"), "wav": ("WAV", "PCM_16")}


class EncodeError(Exception):
    """A clip cannot be turned into shard audio; the message names the file and the cause."""


@dataclass
class Encoded:
    data: bytes
    ext: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def _open(record: Record) -> sf.SoundFile:
    src = io.BytesIO(record.audio) if record.audio is not None else record.path
    try:
        return sf.SoundFile(src)
    except Exception as e:  # soundfile raises RuntimeError/LibsndfileError/OSError
        raise EncodeError(f"{record.where()}: cannot open audio ({e})") from e


def _read(f: sf.SoundFile, record: Record) -> np.ndarray:
    start = int(round((record.start or 0.0) * f.samplerate))
    stop = int(round(record.end * f.samplerate)) if record.end is not None else None
    try:
        f.seek(start)
        frames = -1 if stop is None else max(0, stop - start)
        return f.read(frames, dtype="float32", always_2d=True)
    except Exception as e:
        raise EncodeError(f"{record.where()}: audio does not decode ({e})") from e


def _keepable(f: sf.SoundFile, record: Record, sample_rate: int, channels: int) -> str | None:
    ext = KEEP_FORMATS.get(f.format)
    if ext is None or record.start is not None or record.end is not None:
        return None
    if f.samplerate != sample_rate or f.channels != channels:
        return None
    if ext == "wav" and f.subtype != "PCM_16":
        return None
    return ext


def to_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """(frames, ch) -> (frames, channels): average to mono, or repeat mono."""
    if x.shape[1] == channels:
        return x
    if channels == 1:
        return x.mean(axis=1, keepdims=True)
    if x.shape[1] == 1:
        return np.repeat(x, channels, axis=1)
    raise EncodeError(f"cannot map {x.shape[1]} channels to {channels}")


def encode_array(x: np.ndarray, sample_rate: int, codec: str) -> bytes:
    """Encode float audio (frames, ch) as 16-bit FLAC or PCM WAV bytes."""
    fmt, subtype = CODECS[codec]
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1.0, 1.0), sample_rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def encode_record(record: Record, sample_rate: int, codec: str = "flac", channels: int = 1) -> Encoded:
    """Produce the shard audio of one record, or raise :class:`EncodeError` naming the file."""
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    with _open(record) as f:
        if f.frames == 0:
            raise EncodeError(f"{record.where()}: zero-length clip")
        keep = _keepable(f, record, sample_rate, channels)
        x = _read(f, record)  # decoded even when kept: a clip that does not decode is caught here
        src_rate = f.samplerate
    if x.shape[0] == 0:
        raise EncodeError(f"{record.where()}: zero-length clip")
    if not np.isfinite(x).all():
        raise EncodeError(f"{record.where()}: audio contains NaN or Inf samples")
    if keep is not None:
        data = record.audio if record.audio is not None else record.path.read_bytes()
        return Encoded(data, keep, sample_rate, channels, x.shape[0])
    y = resample(to_channels(x, channels), src_rate, sample_rate)
    return Encoded(encode_array(y, sample_rate, codec), codec, sample_rate, channels, y.shape[0])
