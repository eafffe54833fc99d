"""Shaping one decoded clip: downmix to mono, trim silence, crop or pad to a window."""
from __future__ import annotations

import numpy as np


def downmix(x: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,) mean of the channels, in the input's dtype."""
    if x.shape[1] == 1:
        return x[:, 0]
    if x.dtype == np.int16:
        return x.astype(np.int32).mean(axis=1).astype(np.int16)
    return x.mean(axis=1, dtype=np.float32)


def crop_start(length: int, window: int, mode: str, u: float | None) -> int:
    """First sample of a ``window`` crop of a ``length``-sample clip: random (``u`` uniform in [0, 1)) or centred."""
    if length <= window:
        return 0
    return int(u * (length - window + 1)) if mode == "random" else (length - window) // 2  # type: ignore[operator]


def trim(x: np.ndarray, sr: int, top_db: float) -> np.ndarray:
    """Drop leading/trailing 10-ms frames whose RMS is more than ``top_db`` below the loudest."""
    hop = max(1, sr // 100)
    n = len(x) // hop
    if n < 2:
        return x
    rms = np.sqrt(np.mean(x[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1)) + 1e-12
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > -top_db)
    return x[loud[0] * hop: min(len(x), (loud[-1] + 1) * hop)] if loud.size else x


def crop(x: np.ndarray, window: int | None, mode: str, u: float | None) -> np.ndarray:
    """Random ("random", at ``u`` in [0, 1)) or centre ("center") crop to ``window``; shorter clips are returned whole."""
    if window is None or len(x) <= window:
        return x
    start = crop_start(len(x), window, mode, u)
    return x[start:start + window]
