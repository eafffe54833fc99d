"""`python -m wds_audio.demo DATASET`: stream one training epoch and one evaluation pass.

Prints clips/s, how long the consumer waited, the class histogram seen, and checks that the
evaluation pass saw every clip of the split exactly once.

Example::

    python -m wds_audio.demo data/demo --workers 2 --batch-size 32
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import torch

import wds_audio

from .device.frontend import Frontend
from .signal.augment.gain import Gain


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("Example::")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", type=Path)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--clip-seconds", type=float, default=2.0)
    args = p.parse_args(argv)
    manifest = json.loads((args.dataset / "dataset.json").read_text())
    sr, classes = manifest["sample_rate"], manifest["classes"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    stats = manifest.get("feature_stats")
    fe = Frontend(sample_rate=sr, features="logmel", n_mels=stats["n_mels"] if stats else 64,
                  n_fft=stats["n_fft"] if stats else 1024, standardize="dataset" if stats else "utterance",
                  stats=stats, augment=[Gain(-6, 6, p=0.5)], specaugment=True).to(device).train()

    train = wds_audio.loader(str(args.dataset), split="train", batch_size=args.batch_size, sample_rate=sr,
                             clip_seconds=args.clip_seconds, num_workers=args.workers, seed=0)
    seen, t0 = Counter(), time.perf_counter()
    for batch in train:
        x = fe(batch.audio.to(device, non_blocking=True), batch.lengths, keys=batch.draw_keys)
        seen.update(int(c) for c in torch.nonzero(batch.targets)[:, 1])
    dt = time.perf_counter() - t0
    m = train.metrics()
    print(f"train: {len(train)} batches x {args.batch_size} clips of {args.clip_seconds} s in {dt:.1f} s "
          f"= {m['samples'] / dt:.0f} clips/s on {args.workers} workers; features {tuple(x.shape)} on {device}; "
          f"first batch after {m['first_batch_s']:.2f} s, consumer waited {m['wait_s']:.1f} s; "
          f"skipped {m['skipped_total']}")
    print("labels seen this epoch (clips may repeat to fill the last batch):")
    top = max(seen.values())
    for c, name in enumerate(classes):
        print(f"  {name:<16} {seen[c]:5d} {'#' * round(40 * seen[c] / top)}")

    valid = wds_audio.loader(str(args.dataset), split="valid", batch_size=args.batch_size, sample_rate=sr,
                             clip_seconds=None, training=False, num_workers=args.workers)
    keys = [k for b in valid for k, v in zip(b.keys, b.valid) if v]
    want = manifest["splits"]["valid"]["samples"]
    ok = len(keys) == len(set(keys)) == want
    print(f"valid: {len(keys)} of {want} clips, each exactly once: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
