"""`shardgen stats`: class histogram, duration summary, per-mel-bin mean/std into dataset.json.

The feature statistics use the same :class:`wds_audio.signal.features.LogMel` the loader's
frontend uses, so ``Frontend(standardize="dataset")`` standardizes with exactly them.

Statistics in dataset.json (an addition to DESIGN.md's "optional feature statistics"):

- ``feature_stats_sets``: a list of entries, one per (split, folds, feature settings); running
  ``shardgen stats`` again with the same ones replaces that entry, other ones are added.
- ``feature_stats``: the entry written last, a single dict as before, so a reader written for one
  set of statistics keeps working (a dataset.json with only it is read as a list of one entry).

An entry: ``split``, ``folds`` (the folds whose clips were used, sorted; null for a split without
folds), ``clips``, ``frames``, ``seed`` and ``max_clips`` (null: every clip; else a random sample of
that many clips over all the selected shards, drawn with ``seed``), every feature setting (``kind``
"logmel", ``sample_rate``, ``n_fft``, ``win_length``, ``hop_length``, ``n_mels``, ``f_min``, ``f_max``,
``mel_scale``; ``feature`` "logmel_db" as before), and ``mean``/``std`` per mel bin (dB). For
cross-validation compute one entry per held-out fold (``--exclude-folds K``). Readers pick and check
entries with :mod:`wds_audio.device.stats`: a Frontend checks every setting, an evaluation loader
refuses statistics that include the folds it evaluates unless dataset.json has a matching entry without them.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
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


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("--plot needs matplotlib: pip install 'wds-audio[plot]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _class_bars(ax: Any, manifest: dict[str, Any]) -> None:
    """Clips per class, one stacked bar segment per split."""
    names = manifest["classes"]
    bottom = np.zeros(len(names))
    for split, sp in manifest["splits"].items():
        counts = np.array(sp["class_counts"])
        ax.bar(range(len(names)), counts, bottom=bottom, label=split)
        bottom += counts
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_ylabel("clips")
    ax.set_title(f"{manifest['name']}: clips per class, by split")
    ax.legend(fontsize=8)


def plot_classes(manifest: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(manifest["classes"])), 4))
    _class_bars(ax, manifest)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_pack(manifest: dict[str, Any], path: Path, max_shard_bytes: int | None = None) -> None:
    """What ``shardgen pack --plot`` draws: the shard sizes by split (with the limit, when known) and
    the class counts by split."""
    plt = _pyplot()
    names = manifest["classes"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(6 + max(6, 0.3 * len(names)), 4),
                                      gridspec_kw={"width_ratios": [1, max(1.0, 0.05 * len(names))]})
    sizes = {split: [s["bytes"] / 1e6 for s in sp["shards"]] for split, sp in manifest["splits"].items()}
    left.hist([v for v in sizes.values()], bins=20, stacked=True, label=list(sizes))
    if max_shard_bytes:
        left.axvline(max_shard_bytes / 1e6, color="k", linestyle="--", label="--max-shard-bytes")
    left.set_xlabel("shard size (MB)")
    left.set_ylabel("shards")
    n = sum(len(v) for v in sizes.values())
    left.set_title(f"{n} shards, {sum(map(sum, sizes.values())):.0f} MB")
    left.legend(fontsize=8)
    _class_bars(right, manifest)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class StatsError(ValueError):
    """The statistics asked for do not fit the dataset (no such split or fold, bad --max-clips)."""


def select_shards(manifest: dict[str, Any], split: str, folds: list[int] | None = None,
                  exclude_folds: list[int] | None = None) -> tuple[list[dict[str, Any]], list[int] | None]:
    """The shards of ``split`` in ``folds`` (all when None) minus ``exclude_folds``, and the folds used
    (None for a split without folds). Raises StatsError naming a fold the split does not have."""
    if split not in manifest["splits"]:
        raise StatsError(f"no split {split!r}; splits: {sorted(manifest['splits'])}")
    shards = manifest["splits"][split]["shards"]
    have = sorted({s["fold"] for s in shards if s["fold"] is not None})
    for flag, asked in (("--folds", folds), ("--exclude-folds", exclude_folds)):
        missing = sorted(set(asked or ()) - set(have))
        if missing:
            raise StatsError(f"{flag}: split {split!r} has no fold(s) {missing}; folds present: "
                             f"{have or 'none (this split has no folds)'}")
    if not have:
        return list(shards), None
    use = set(have if folds is None else folds) - set(exclude_folds or ())
    if not use:
        raise StatsError(f"no fold of split {split!r} left: folds present {have}, --folds {folds}, "
                         f"--exclude-folds {exclude_folds}")
    return [s for s in shards if s["fold"] in use], sorted(use)


def sample_clips(shards: list[dict[str, Any]], max_clips: int | None, seed: int = 0) -> dict[str, set[int] | None]:
    """shard path -> the sample positions (in tar order) to use; None: every sample of that shard.

    With ``max_clips`` below the clip count: a uniform random sample without replacement over the
    clips of all ``shards``, drawn by ``numpy.random.default_rng(seed)`` from the manifest's sample
    counts (no tar is opened to draw it), so the same seed gives the same clips.
    """
    total = sum(s["samples"] for s in shards)
    if max_clips is None or max_clips >= total:
        return {s["path"]: None for s in shards}
    picked = np.sort(np.random.default_rng(seed).choice(total, size=max_clips, replace=False))
    out: dict[str, set[int] | None] = {}
    start = 0
    for s in shards:
        lo, hi = np.searchsorted(picked, [start, start + s["samples"]])
        if hi > lo:
            out[s["path"]] = {int(i) - start for i in picked[lo:hi]}
        start += s["samples"]
    return out


def feature_stats(base: Path, manifest: dict[str, Any], split: str, n_mels: int, n_fft: int,
                  hop_length: int | None, max_clips: int | None = None, *, folds: list[int] | None = None,
                  exclude_folds: list[int] | None = None, seed: int = 0, win_length: int | None = None,
                  f_min: float = 0.0, f_max: float | None = None, mel_scale: str = "htk",
                  progress: bool = True) -> tuple[dict[str, Any], list[float]]:
    """Per-mel-bin mean/std of log-mel frames over ``split`` (``folds`` of it, minus ``exclude_folds``)
    and the clip durations seen: an entry of dataset.json's ``feature_stats_sets`` (format below).

    ``max_clips``: a seeded random sample (``seed``) of that many clips across all selected shards
    (:func:`sample_clips`), not the first clips.
    """
    from wds_audio.signal.features import LogMel

    if max_clips is not None and max_clips < 1:
        raise StatsError(f"--max-clips must be at least 1, got {max_clips}")
    shards, used_folds = select_shards(manifest, split, folds, exclude_folds)
    sr = manifest["sample_rate"]
    mel = LogMel(sample_rate=sr, n_fft=n_fft, win_length=win_length, hop_length=hop_length, n_mels=n_mels,
                 f_min=f_min, f_max=f_max, mel_scale=mel_scale)
    plan = sample_clips(shards, max_clips, seed)
    total = np.zeros(n_mels)
    total_sq = np.zeros(n_mels)
    frames = 0
    durations: list[float] = []
    todo = sum(s["samples"] if plan[s["path"]] is None else len(plan[s["path"]]) for s in shards if s["path"] in plan)
    bar = tqdm(total=todo, desc=f"stats {split}", unit="clip", disable=not progress)
    for shard in shards:
        if shard["path"] not in plan:
            continue
        wanted = plan[shard["path"]]
        for i, (key, members) in enumerate(read_samples((base / shard["path"]).read_bytes())):
            if wanted is not None and i not in wanted:
                continue
            audio = next(members[e] for e in ("flac", "wav", "ogg") if e in members)
            x, _ = sf.read(io.BytesIO(audio), dtype="float32", always_2d=True)
            durations.append(len(x) / sr)
            with torch.no_grad():
                m = mel(torch.from_numpy(x.mean(axis=1))[None])[0].double().numpy()
            total += m.sum(axis=1)
            total_sq += (m ** 2).sum(axis=1)
            frames += m.shape[1]
            bar.update(1)
    bar.close()
    mean = total / max(frames, 1)
    std = np.sqrt(np.maximum(total_sq / max(frames, 1) - mean ** 2, 0.0))
    stats = {"split": split, "folds": used_folds, "clips": len(durations), "frames": frames, "seed": seed,
             "max_clips": max_clips, "kind": "logmel", "feature": "logmel_db", "sample_rate": sr, "n_fft": n_fft,
             "win_length": mel.win_length, "hop_length": mel.hop_length, "n_mels": n_mels,
             "f_min": float(mel.f_min), "f_max": float(mel.f_max), "mel_scale": mel_scale,
             "mean": [round(float(v), 5) for v in mean], "std": [round(float(v), 5) for v in std]}
    return stats, durations


def _identity(entry: dict[str, Any]) -> tuple:
    from wds_audio.device.stats import SETTINGS, recorded_settings

    rec = recorded_settings(entry)
    return (entry.get("split"), tuple(entry["folds"]) if entry.get("folds") else None,
            *(rec.get(k) for k in SETTINGS))


def store_stats(manifest: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with ``entry`` in ``feature_stats_sets`` (replacing the entry of the same split,
    folds and settings) and as ``feature_stats``. A legacy single ``feature_stats`` (no ``folds``: it
    covered every fold of its split) is kept in the list, with its folds and kind filled in."""
    sets = list(manifest.get("feature_stats_sets") or [])
    legacy = manifest.get("feature_stats")
    if not sets and legacy:
        legacy = dict(legacy)
        if "folds" not in legacy and legacy.get("split") in manifest["splits"]:
            legacy["folds"] = sorted(manifest["splits"][legacy["split"]].get("folds") or []) or None
        legacy.setdefault("kind", "logmel" if legacy.get("feature", "logmel_db") == "logmel_db" else legacy["feature"])
        legacy.setdefault("win_length", legacy.get("n_fft"))  # written before win_length: always n_fft
        if legacy.get("split") in manifest["splits"] and "clips" in legacy:  # it took the first clips
            whole = legacy["clips"] >= manifest["splits"][legacy["split"]]["samples"]
            legacy.setdefault("max_clips", None if whole else legacy["clips"])
            legacy.setdefault("seed", None)
        sets = [legacy]
    sets = [e for e in sets if _identity(e) != _identity(entry)] + [entry]
    return {**manifest, "feature_stats": entry, "feature_stats_sets": sets}


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
    folds, exclude = (None if v is None else [f for part in v for f in part] for v in (args.folds, args.exclude_folds))
    try:
        stats, durations = feature_stats(base, manifest, args.split, args.n_mels, args.n_fft, args.hop_length,
                                         args.max_clips, folds=folds, exclude_folds=exclude,
                                         seed=args.seed, win_length=args.win_length, f_min=args.f_min,
                                         f_max=args.f_max, mel_scale=args.mel_scale)
    except (StatsError, ValueError) as e:
        print(f"shardgen stats: error: {e}", file=sys.stderr)
        return 2
    print(duration_summary(durations))
    manifest = store_stats(manifest, stats)
    atomic_write(base / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    folds = "" if stats["folds"] is None else f" folds {stats['folds']}"
    sample = f", a random sample (seed {args.seed})" if args.max_clips and stats["clips"] == args.max_clips else ""
    print(f"log-mel statistics ({stats['n_mels']} bins, {stats['frames']} frames of {stats['clips']} clips of "
          f"{args.split!r}{folds}{sample}) written to {base / MANIFEST} "
          f"({len(manifest['feature_stats_sets'])} set(s) of statistics in it)")
    return 0
