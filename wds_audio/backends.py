"""``wds_audio.loader()``: the one entry point; it picks the torch or the DALI back end."""
from __future__ import annotations

from typing import Any

from .pipeline.config import LoaderConfig
from .pipeline.loader import AudioLoader


def loader(source: str, *, split: str = "train", folds: list[int] | None = None, batch_size: int,
           sample_rate: int, clip_seconds: float | None, num_workers: int = 0, seed: int = 0,
           training: bool = True, backend: str = "torch", rebalance: Any = None, on_error: str = "skip",
           **kwargs: Any) -> Any:
    """Build a loader over ``source`` (folder/URL with dataset.json, or a shard pattern + ``classes``).

    Returns an iterable of batches with ``len()``, ``set_epoch(n)``, ``state_dict()``,
    ``load_state_dict()`` and ``metrics()``. See :class:`wds_audio.pipeline.config.LoaderConfig` for the
    keyword arguments.

    Example:
        >>> loader = wds_audio.loader("data/esc50", split="train", folds=[1, 2, 3, 4], batch_size=64,
        ...                           sample_rate=32000, clip_seconds=5.0, num_workers=8)   # doctest: +SKIP
    """
    cfg = LoaderConfig(source=str(source), split=split, folds=folds, batch_size=batch_size, sample_rate=sample_rate,
                       clip_seconds=clip_seconds, num_workers=num_workers, seed=seed, training=training,
                       backend=backend, rebalance=rebalance, on_error=on_error, **kwargs)
    if backend == "torch":
        return AudioLoader(cfg)
    if backend == "dali":
        from .dali.loader import DaliLoader

        return DaliLoader(cfg)
    raise ValueError(f"backend must be 'torch' or 'dali', got {backend!r}")
