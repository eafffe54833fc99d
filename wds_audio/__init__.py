"""wds_audio: streaming audio classification data from WebDataset shards.

The rooms, in the order the data goes through them (each subpackage's docstring says what
enters and what leaves it):

- ``io``: shard URLs -> bytes (file, HTTP, S3, GCS; retries, resumes, checks, cache).
- ``pipeline``: dataset.json -> plan -> samples -> batches (the torch back end).
- ``signal``: numbers -> numbers (shaping, resampling, loudness, features, augmentations).
- ``device``: batches -> features on the GPU or CPU (:class:`Frontend`).
- ``dali``: the DALI back end: the same plan, decoded and featurized by DALI.
- ``core``: what every room uses: seeded randomness, thread budgets, freed memory.

Example:
    >>> import wds_audio                                                     # doctest: +SKIP
    >>> loader = wds_audio.loader("data/demo", batch_size=64, sample_rate=16000, clip_seconds=2.0)
    >>> frontend = wds_audio.Frontend(sample_rate=16000, features="logmel", n_mels=64)
    >>> for batch in loader:
    ...     x = frontend(batch.audio, batch.lengths)
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from .backends import loader  # noqa: E402, F401 - the entry point; the rest is imported on first use

_LAZY = {
    "AudioLoader": "pipeline.loader", "LoaderConfig": "pipeline.config", "Catalog": "pipeline.catalog",
    "Batch": "pipeline.batch", "Rebalance": "pipeline.rebalance", "SourceOptions": "io.options",
    "SourceError": "io.options", "Frontend": "device.frontend", "noise_bank": "device.frontend",
    "select_stats": "device.stats",
    "class_weights": "pipeline.class_weights", "class_counts": "pipeline.class_weights",
    "LogMel": "signal.features", "MFCC": "signal.features", "Resample": "signal.resample",
    **{name: "signal.augment" for name in ("Gain", "NoiseMix", "Reverb", "Bandpass", "SpeedPerturb", "PitchShift",
                                            "SpecAugment", "Mixup", "synthetic_rirs",
                                            "TimeStretch", "DeviceResponse")},
}
__all__ = sorted([*_LAZY, "loader"])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'wds_audio' has no attribute {name!r}")
