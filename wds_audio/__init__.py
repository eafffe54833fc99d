"""wds_audio: streaming audio classification data from WebDataset shards.

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

# `loader` is both a submodule and the entry point: importing it here, eagerly, makes the
# function win over the submodule attribute for good. The rest is imported on first use.
from .loader import AudioLoader, loader  # noqa: E402, F401

_LAZY = {"LoaderConfig": "config", "Catalog": "catalog", "Batch": "stream", "Frontend": "frontend",
         "Rebalance": "rebalance"}
__all__ = sorted([*_LAZY, "AudioLoader", "loader"])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'wds_audio' has no attribute {name!r}")
