"""Loader configuration shared by the torch and DALI back ends.

Example:
    >>> cfg = LoaderConfig("data/demo", batch_size=32, sample_rate=16000, clip_seconds=2.0)
    >>> cfg.clip_samples
    32000
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..signal.loudness import MODES

ON_ERROR = ("skip", "raise")
EVAL_CROPS = ("full", "center")
FEATURES = (None, "cached")


@dataclass
class LoaderConfig:
    """Everything that decides which samples are read and how they are shaped.

    source: dataset folder/URL with dataset.json, or a brace-expanded shard pattern (then ``classes``).
    split, folds: which shards (only those are read).
    clip_seconds: crop/pad window; None keeps full clips (padded to the longest in the batch).
    training: shuffle, random crops, wrap-around fill; False: file order, each sample once, ``eval_crop``.
    streams: independent sample streams per rank; batches are identical for every ``num_workers``
        (a DataLoader worker runs every ``num_workers``-th stream; with an uneven share, a worker
        with fewer streams waits its turn: see ``pipeline.loader.worker_slots``).
    shuffle_buffer: samples held per stream for shuffling (training). From local shards a held
        sample is its clip's place in the file, read again when drawn (``SourceOptions.local_spans``);
        from remote ones, its encoded bytes.
    trim_db: trim leading/trailing frames quieter than the loudest frame minus this (None: off).
    loudness, loudness_db: "peak" / "rms" (dBFS) or "lufs" (BS.1770) normalization to the target.
    pcm_on_device: batches carry int16 audio (half the bytes to hand over and copy to the GPU),
        and the Frontend converts it on the device. From 16-bit PCM WAV the CPU only parses the
        header and slices the samples; other formats are decoded straight to int16. No trimming
        or loudness normalization then (they need float audio on the CPU).
    resample_on_device: the CPU decodes and crops at the dataset's stored rate (dataset.json
        ``sample_rate``; a clip stored at another rate is resampled to it on the CPU) and batches
        carry audio at that rate (``loader.audio_rate``); ``Frontend(input_sample_rate=
        loader.audio_rate)`` resamples on the device. For GPU machines: it takes the resampling
        off the CPU (soxr: 2.4 of the 6.7 ms spent decoding and resampling a 5-s clip, 44.1 -> 32 kHz).
    features: "cached" reads the fp16 log-mels ``shardgen features`` stored instead of decoding audio:
        batches carry ``features`` (B, n_mels, frames) float16 and ``lengths`` in frames, cropped as audio
        would be (see :mod:`wds_audio.pipeline.cached`); a Frontend then standardizes and augments them.
        None (default): audio, even from a dataset that also holds cached features.
    frontend: a :class:`wds_audio.Frontend` to run inside the DataLoader workers, on the CPU,
        for machines without a GPU: each batch then carries ``features`` (and mixed ``targets``),
        computed in parallel by the workers instead of serially in the training process.
    decode_threads: samples a DataLoader worker decodes and resamples at once, on threads
        (libsndfile and soxr release the GIL). Default: CPUs / num_workers, at least 1 (with
        num_workers=0: 1). Without ``frontend``, worker 0 makes an epoch's first batch with every
        CPU while the other workers wait until it is made; with it, every worker starts at once
        (threads of one worker decoding and computing features reach ~1.4 of 2 cores). A worker
        done with its epoch's batches hands its CPUs to those still working (see ``threads.TailWidth``).
    return_audio: whether batches carry the waveforms. Default: yes, except with ``frontend``,
        where ``audio`` is an empty (B, 0) tensor unless asked for: handing a batch of 64 x 5 s
        at 32 kHz (41 MB) from a worker to the training process costs ~50 ms of shared-memory
        allocation, more than the features' own transfer (measured on a 2-core machine).
    """

    source: str
    split: str = "train"
    folds: list[int] | None = None
    batch_size: int = 32
    sample_rate: int = 16000
    clip_seconds: float | None = None
    num_workers: int = 0
    seed: int = 0
    training: bool = True
    backend: str = "torch"
    rebalance: Any = None
    on_error: str = "skip"
    classes: list[str] | None = None
    streams: int = 8
    shuffle_buffer: int = 256
    eval_crop: str = "full"
    trim_db: float | None = None
    loudness: str | None = None
    loudness_db: float = -23.0
    pcm_on_device: bool = False
    resample_on_device: bool = False
    frontend: Any = None
    features: str | None = None
    return_audio: bool | None = None
    decode_threads: int | None = None
    pin_memory: bool | None = None
    prefetch_factor: int = 2
    persistent_workers: bool = False
    rank: int | None = None
    world_size: int | None = None
    source_options: Any = None
    max_reported_keys: int = 100
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.source = str(self.source)  # a pathlib.Path is welcome too
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.sample_rate < 1:
            raise ValueError(f"sample_rate must be >= 1, got {self.sample_rate}")
        if self.clip_seconds is not None and self.clip_seconds <= 0:
            raise ValueError(f"clip_seconds must be > 0 or None, got {self.clip_seconds}")
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {self.on_error!r}")
        if self.eval_crop not in EVAL_CROPS:
            raise ValueError(f"eval_crop must be one of {EVAL_CROPS}, got {self.eval_crop!r}")
        if self.eval_crop == "center" and self.clip_seconds is None:
            raise ValueError("eval_crop='center' needs clip_seconds")
        if self.loudness is not None and self.loudness not in MODES:
            raise ValueError(f"loudness must be one of {MODES} or None, got {self.loudness!r}")
        if self.decode_threads is not None and self.decode_threads < 1:
            raise ValueError(f"decode_threads must be >= 1 or None, got {self.decode_threads}")
        if self.num_workers < 0 or self.streams < 1 or self.shuffle_buffer < 1:
            raise ValueError("num_workers must be >= 0, streams and shuffle_buffer >= 1")
        if self.pcm_on_device and (self.trim_db is not None or self.loudness is not None):
            raise ValueError("pcm_on_device=True passes int16 PCM through: trim_db and loudness need float audio on the CPU")
        if self.features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {self.features!r}")
        if self.features == "cached":
            audio_only = {"pcm_on_device": self.pcm_on_device, "resample_on_device": self.resample_on_device,
                          "trim_db": self.trim_db, "loudness": self.loudness, "return_audio": self.return_audio,
                          "backend='dali'": self.backend == "dali"}
            bad = [k for k, v in audio_only.items() if v not in (None, False)]
            if bad:
                raise ValueError(f"features='cached' decodes no audio: {', '.join(bad)} cannot apply (they work on "
                                 "the waveform; the torch back end reads cached features)")

    @property
    def keep_audio(self) -> bool:
        return self.frontend is None if self.return_audio is None else self.return_audio

    def audio_rate(self, stored_rate: int | None) -> int:
        """The sample rate of ``batch.audio``: ``sample_rate``, or the stored rate with ``resample_on_device``."""
        if not self.resample_on_device:
            return self.sample_rate
        if not stored_rate:
            raise ValueError(f"{self.source}: resample_on_device needs the stored sample rate, which dataset.json "
                             "gives; a shard pattern has none")
        return int(stored_rate)

    def audio_window(self, rate: int) -> int | None:
        """Crop window in samples at ``rate``: the samples that resample to ``clip_samples`` or more."""
        if self.clip_samples is None:
            return None
        return -(-self.clip_samples * rate // self.sample_rate)

    @property
    def clip_samples(self) -> int | None:
        return None if self.clip_seconds is None else int(round(self.clip_seconds * self.sample_rate))
