"""`shardgen stats`: class histogram, duration summary, per-mel-bin mean/std into dataset.json.

The feature statistics use the same :class:`wds_audio.signal.features.LogMel` the loader's
frontend uses, so ``Frontend(standardize="dataset")`` standardizes with exactly them.
"""
from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from .verify import read_samples
from .writer import MANIFEST, atomic_write


def class_table(manifest: dict[str, Any]) -> str:
    names = manifest["classes"]
    splits = list(manifest["splits"])
    width = max(8, *(len(n) for n in names))
    lines = [f"{'class':<{width}} " + " ".join(f"{s:>9}" for s in splits)]
    for i, n in enumerate(names):
        lines.append(f"{n:<{width}} " + " ".join(f"{manifest['splits'][s]['class_counts'][i]:>9d}" for s in splits))
    lines.append(f"{'(clips)':<{width}} " + " ".join(f"{manifest['splits'][s]['samples']:>9d}" for s in splits))
    return "\n".join(lines)


def plot_classes(manifest: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = manifest["classes"]
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(names)), 4))
    bottom = np.zeros(len(names))
    for split, sp in manifest["splits"].items():
        counts = np.array(sp["class_counts"])
        ax.bar(range(len(names)), counts, bottom=bottom, label=split)
        bottom += counts
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_ylabel("clips")
    ax.set_title(f"{manifest['name']}: clips per class")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def feature_stats(base: Path, manifest: dict[str, Any], split: str, n_mels: int, n_fft: int,
                  hop_length: int | None, max_clips: int | None = None) -> tuple[dict[str, Any], list[float]]:
    """Per-mel-bin mean/std of log-mel frames over ``split`` and the clip durations seen."""
    from wds_audio.signal.features import LogMel

    sr = manifest["sample_rate"]
    mel = LogMel(sample_rate=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
    total = np.zeros(n_mels)
    total_sq = np.zeros(n_mels)
    frames = 0
    durations: list[float] = []
    shards = manifest["splits"][split]["shards"]
    bar = tqdm(total=sum(s["samples"] for s in shards), desc=f"stats {split}", unit="clip")
    for shard in shards:
        for key, members in read_samples((base / shard["path"]).read_bytes()):
            audio = next(members[e] for e in ("flac", "wav", "ogg") if e in members)
            x, _ = sf.read(io.BytesIO(audio), dtype="float32", always_2d=True)
            durations.append(len(x) / sr)
            with torch.no_grad():
                m = mel(torch.from_numpy(x.mean(axis=1))[None])[0].double().numpy()
            total += m.sum(axis=1)
            total_sq += (m ** 2).sum(axis=1)
            frames += m.shape[1]
            bar.update(1)
            if max_clips and len(durations) >= max_clips:
                break
        if max_clips and len(durations) >= max_clips:
            break
    bar.close()
    mean = total / max(frames, 1)
    std = np.sqrt(np.maximum(total_sq / max(frames, 1) - mean ** 2, 0.0))
    stats = {"split": split, "feature": "logmel_db", "sample_rate": sr, "n_fft": n_fft,
             "hop_length": mel.hop_length, "n_mels": n_mels, "f_min": 0.0, "f_max": sr / 2,
             "mel_scale": "htk", "frames": frames, "clips": len(durations),
             "mean": [round(float(v), 5) for v in mean], "std": [round(float(v), 5) for v in std]}
    return stats, durations


def duration_summary(durations: list[float]) -> str:
    d = np.asarray(durations)
    return (f"durations over {len(d)} clips: min {d.min():.2f} s, median {np.median(d):.2f} s, "
            f"mean {d.mean():.2f} s, max {d.max():.2f} s, total {d.sum() / 3600:.2f} h")


def run_stats(args: argparse.Namespace) -> int:
    base = Path(args.dataset)
    manifest = json.loads((base / MANIFEST).read_text())
    print(class_table(manifest))
    if args.plot:
        plot_classes(manifest, args.plot)
        print(f"class histogram chart: {args.plot}")
    if args.split not in manifest["splits"]:
        print(f"no split {args.split!r}; splits: {list(manifest['splits'])}")
        return 2
    stats, durations = feature_stats(base, manifest, args.split, args.n_mels, args.n_fft, args.hop_length,
                                     args.max_clips)
    print(duration_summary(durations))
    manifest["feature_stats"] = stats
    atomic_write(base / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    print(f"log-mel statistics ({stats['n_mels']} bins, {stats['frames']} frames of {args.split!r}) "
          f"written to {base / MANIFEST}")
    return 0


