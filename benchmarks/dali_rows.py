"""DALI rows of the throughput benchmark: clips/s of the DALI back end on the given shards.

Rows: (1) DALI CPU decode + resample + random crop, (2) the same + DALI CPU log-mel with
SpecAugment, and when CUDA is available (3) the same with the feature stage on the GPU. Each row
reads the ``train`` split with ``training=True`` for at least ``seconds_budget`` seconds (several
epochs if needed); the first batch (pipeline start, shuffle-buffer fill) is timed separately and
left out of the rate. ``benchmarks/throughput.py`` calls :func:`dali_rows`.

Example:
    >>> rows = dali_rows("data/demo", batch_size=64, sample_rate=32000, clip_seconds=5.0,
    ...                  n_mels=128, seconds_budget=20.0)                     # doctest: +SKIP
    >>> [(r["name"], round(r["clips_per_s"])) for r in rows]                 # doctest: +SKIP

    python benchmarks/dali_rows.py data/demo --batch-size 64 --sample-rate 32000 --clip-seconds 5
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from typing import Any

import torch

from wds_audio.pipeline.config import LoaderConfig
from wds_audio.dali.features import DaliFeatures, DaliSpecAugment
from wds_audio.dali.loader import DaliLoader


def _measure(loader: DaliLoader, seconds_budget: float, gpu: bool) -> dict[str, float]:
    """Clips/s after the first batch, over at least ``seconds_budget`` seconds of batches."""
    t0 = time.perf_counter()
    clips, first, start = 0, None, None
    while True:  # epochs, until the budget is spent
        for batch in loader:
            if gpu and batch.features is not None:
                torch.cuda.synchronize()  # count a batch when its features exist, not when queued
            now = time.perf_counter()
            if first is None:
                first, start = now - t0, now
                continue
            clips += len(batch)
            if now - start >= seconds_budget:
                return {"clips": clips, "seconds": now - start, "first_batch_s": first}


def dali_rows(dataset_dir: str, batch_size: int, sample_rate: int, clip_seconds: float, n_mels: int,
              seconds_budget: float) -> list[dict[str, Any]]:
    """Measure the DALI back end on ``dataset_dir`` (train split): a list of rows with keys
    name, clips_per_s, audio_s_per_s (seconds of delivered clip audio per second) and notes."""
    threads = os.cpu_count() or 1
    features = DaliFeatures(n_fft=1024, hop_length=sample_rate // 100, n_mels=n_mels,
                            specaugment=DaliSpecAugment(time_masks=2, time_width=20, freq_masks=2, freq_width=8))
    cases: list[tuple[str, DaliFeatures | None, bool]] = [
        ("dali-cpu decode+resample+crop", None, False),
        ("dali-cpu + log-mel features", replace(features, device="cpu"), False),
    ]
    if torch.cuda.is_available():
        cases.append(("dali-gpu features", replace(features, device="gpu"), True))
    rows = []
    for name, spec, gpu in cases:
        cfg = LoaderConfig(dataset_dir, split="train", batch_size=batch_size, sample_rate=sample_rate,
                           clip_seconds=clip_seconds, training=True, seed=0, extra={"dali_num_threads": threads})
        loader = DaliLoader(cfg, features=spec)
        m = _measure(loader, seconds_budget, gpu)
        rate = m["clips"] / m["seconds"]
        feat = "" if spec is None else (f"; {n_mels} mels, n_fft 1024, hop 10 ms, SpecAugment 2+2 masks "
                                        f"on {'GPU' if gpu else 'CPU'}")
        rows.append({"name": name, "clips_per_s": rate, "audio_s_per_s": rate * clip_seconds,
                     "notes": (f"{threads} DALI threads, batch {batch_size}, {m['clips']} clips in {m['seconds']:.1f} s, "
                               f"first batch {m['first_batch_s']:.2f} s, stored {loader.stored_rate} Hz -> "
                               f"{sample_rate} Hz{feat}")})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset_dir")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--sample-rate", type=int, default=32000)
    ap.add_argument("--clip-seconds", type=float, default=5.0)
    ap.add_argument("--n-mels", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=20.0, help="time budget per row")
    a = ap.parse_args()
    rows = dali_rows(a.dataset_dir, a.batch_size, a.sample_rate, a.clip_seconds, a.n_mels, a.seconds)
    print("| row | clips/s | audio-s/s | notes |\n|---|---:|---:|---|")
    for r in rows:
        print(f"| {r['name']} | {r['clips_per_s']:.1f} | {r['audio_s_per_s']:.1f} | {r['notes']} |")


if __name__ == "__main__":
    main()
