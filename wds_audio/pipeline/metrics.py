"""What a loader reports: throughput, time the consumer waited, skipped clips, source faults.

Both back ends keep one :class:`LoaderMetrics`; ``loader.metrics()`` returns ``as_dict()``.

Example:
    >>> m = LoaderMetrics(max_keys=10)
    >>> m.add_skips({"decode_error": 1}, ["clip7: .flac does not decode"])
    >>> m.as_dict()["skipped_total"]
    1
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Any

from ..io.options import SourceMetrics


class LoaderMetrics:
    """Counters of one loader over its life (all epochs)."""

    def __init__(self, max_keys: int = 100) -> None:
        self.max_keys = max_keys
        self.batches = self.samples = self.valid_samples = 0
        self.wait_s = self.time_s = 0.0
        self.first_batch_s: float | None = None
        self.skipped: Counter = Counter()
        self.skipped_keys: list[str] = []
        self.source = SourceMetrics()
        self.extra: dict[str, Any] = {}
        self.rebalance: dict[int, dict[str, Any]] = {}  # stream -> its stage's latest stats
        self._t0 = self._last = time.perf_counter()

    def start(self) -> None:
        """An iteration begins (time to first batch counts from here)."""
        self._t0 = self._last = time.perf_counter()

    def batch(self, b: Any, waited: float) -> None:
        """Account one delivered batch; ``waited`` is how long the consumer blocked for it."""
        now = time.perf_counter()
        if self.first_batch_s is None:
            self.first_batch_s = now - self._t0
        self.wait_s += waited
        self.time_s += now - self._last  # wall time of iteration, the consumer's own work included
        self._last = now
        self.batches += 1
        self.samples += len(b)
        self.valid_samples += int(b.valid.sum())
        stats = getattr(b, "stats", None) or {}
        self.add_skips(stats.get("skipped", {}), stats.get("skipped_keys", []))
        if "source" in stats:
            self.source.merge(stats["source"])
        if "rebalance" in stats:
            stream, st = stats["rebalance"]
            self.rebalance[stream] = st

    def add_skips(self, counts: dict[str, int], keys: list[str]) -> None:
        self.skipped.update(counts)
        room = self.max_keys - len(self.skipped_keys)
        self.skipped_keys += keys[: max(room, 0)]

    def as_dict(self) -> dict[str, Any]:
        t = self.time_s
        return {
            "batches": self.batches, "samples": self.samples, "valid_samples": self.valid_samples,
            "time_s": t, "wait_s": self.wait_s, "first_batch_s": self.first_batch_s,
            "clips_per_s": self.samples / t if t > 0 else None, "wait_fraction": self.wait_s / t if t > 0 else None,
            "skipped": dict(self.skipped), "skipped_total": sum(self.skipped.values()),
            "skipped_keys": list(self.skipped_keys), "source": self.source.as_dict(),
            **({"rebalance": merge_rebalance(list(self.rebalance.values()))} if self.rebalance else {}), **self.extra,
        }


def merge_rebalance(per_stream: list[dict[str, Any]]) -> dict[str, Any]:
    """The streams' rebalancing statistics added up (peak bytes: the sum of the streams' peaks)."""
    out: dict[str, Any] = {"streams": len(per_stream)}
    for key in ("samples_in", "samples_out", "repeats", "unique_out", "dropped", "bytes_held", "peak_bytes"):
        out[key] = sum(int(st.get(key, 0)) for st in per_stream)
    for key in ("emitted_counts", "reuse_histogram"):
        rows = [st[key] for st in per_stream if st.get(key)]
        width = max((len(r) for r in rows), default=0)
        out[key] = [sum(r[i] for r in rows if i < len(r)) for i in range(width)]
    skipped: Counter = Counter()
    for st in per_stream:
        skipped.update(st.get("skipped", {}))
    out["skipped"] = dict(skipped)
    return out
