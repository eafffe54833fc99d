"""wds_audio: streaming audio classification data from WebDataset shards.

Example:
    >>> import wds_audio                                                     # doctest: +SKIP
    >>> loader = wds_audio.loader("data/demo", batch_size=64, sample_rate=16000, clip_seconds=2.0)
    >>> frontend = wds_audio.Frontend(sample_rate=16000, features="logmel", n_mels=64)
    >>> for batch in loader:
    ...     x = frontend(batch.audio, batch.lengths)
"""
from __future__ import annotations

from typing import Any

from .catalog import Catalog
from .config import LoaderConfig
from .loader import AudioLoader, loader
from .stream import Batch

__version__ = "0.1.0"
__all__ = ["AudioLoader", "Batch", "Catalog", "Frontend", "LoaderConfig", "Rebalance", "loader"]


def __getattr__(name: str) -> Any:
    # Frontend and Rebalance pull in more modules; import them on first use.
    if name == "Frontend":
        from .frontend import Frontend
        return Frontend
    if name == "Rebalance":
        from .rebalance import Rebalance
        return Rebalance
    raise AttributeError(name)
