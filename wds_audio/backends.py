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

    An evaluation loader (``training=False``) given ``frontend=`` that standardizes with statistics
    from dataset.json computed over any clip it evaluates (the same split and one of ``folds``, every
    fold when None) runs a copy of the frontend with the dataset's statistics of the same settings
    that exclude them, or raises ``ValueError`` naming the folds (:mod:`wds_audio.device.stats`).

    Example:
        >>> loader = wds_audio.loader("data/esc50", split="train", folds=[1, 2, 3, 4], batch_size=64,
        ...                           sample_rate=32000, clip_seconds=5.0, num_workers=8)   # doctest: +SKIP
    """
    if not training and kwargs.get("frontend") is not None:
        kwargs["frontend"] = _evaluation_frontend(kwargs["frontend"], str(source), split, folds, kwargs)
    cfg = LoaderConfig(source=str(source), split=split, folds=folds, batch_size=batch_size, sample_rate=sample_rate,
                       clip_seconds=clip_seconds, num_workers=num_workers, seed=seed, training=training,
                       backend=backend, rebalance=rebalance, on_error=on_error, **kwargs)
    if backend == "torch":
        return AudioLoader(cfg)
    if backend == "dali":
        from .dali.loader import DaliLoader

        return DaliLoader(cfg)
    raise ValueError(f"backend must be 'torch' or 'dali', got {backend!r}")


def _evaluation_frontend(frontend: Any, source: str, split: str, folds: list[int] | None,
                         kwargs: dict[str, Any]) -> Any:
    """``frontend``, or a copy with statistics that exclude the evaluated (split, folds)."""
    info = getattr(frontend, "stats_info", None)
    if getattr(frontend, "standardize", None) != "dataset" or not info or "split" not in info:
        return frontend  # nothing standardized with recorded statistics: nothing to check
    from .device.stats import resolve_stats
    from .pipeline.catalog import Catalog

    catalog = Catalog.open(source, split, folds, kwargs.get("classes"), kwargs.get("source_options"))
    chosen = resolve_stats(info, frontend.feature_settings(), manifest=catalog.manifest, split=split, folds=folds,
                           training=False, who="the frontend")
    return frontend if chosen is info else frontend.with_stats(chosen)
