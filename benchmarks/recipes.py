"""Full-size ESC-50 and UrbanSound8K trees packed with their recipes: counts and throughput.

Builds, in a temporary folder, an ESC-50-shaped tree (all 2,000 rows of the real esc50.csv,
generated 5-s 44.1 kHz mono clips) and an UrbanSound8K-shaped tree (all 8,732 rows of the real
UrbanSound8K.csv, generated 44.1 kHz clips of the listed end - start durations), packs each with
``shardgen pack --recipe NAME SRC OUT --workers 2``, asserts the official fold counts (5 x 400
for ESC-50, the per-fold counts of UrbanSound8K.csv), verifies the shards against dataset.json
(no decoding) and prints a markdown table of the times. The metadata comes from
../shared/datasets-meta; the audio is synthetic (tone + noise), so only the shape is real.

Usage::

    .venv/bin/python benchmarks/recipes.py --quick          # all rows, 0.25-s clips: a fast check
    .venv/bin/python benchmarks/recipes.py                  # full size; writes benchmarks/results/recipes.md
    .venv/bin/python benchmarks/recipes.py --us8k-max-seconds 1.0
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shardgen import cli  # noqa: E402
from shardgen.verify import verify  # noqa: E402

SHARED = REPO.parent / "shared" / "datasets-meta"
ESC50_CSV = SHARED / "esc50" / "meta" / "esc50.csv"
US8K_CSV = SHARED / "urbansound8k" / "metadata" / "UrbanSound8K.csv"
SOURCE_RATE = 44100


@dataclass
class Run:
    dataset: str
    clips: int
    audio_hours: float
    source_mb: float
    generate_s: float
    pack_s: float
    out_mb: float
    shards: int


def _clip(job: tuple[str, float, int]) -> None:
    """Write one synthetic 16-bit 44.1 kHz mono clip: a tone with an envelope, plus noise."""
    path, seconds, seed = job
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * SOURCE_RATE)))
    t = np.arange(n) / SOURCE_RATE
    freq = 100.0 + 40.0 * (seed % 97)
    x = 0.3 * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))
    x += 0.03 * rng.standard_normal(n)
    sf.write(path, x.astype(np.float32), SOURCE_RATE, subtype="PCM_16")


def _generate(jobs: list[tuple[str, float, int]], workers: int) -> float:
    t0 = time.perf_counter()
    for d in {str(Path(p).parent) for p, _, _ in jobs}:
        os.makedirs(d, exist_ok=True)
    with get_context("spawn").Pool(workers) as pool:
        for _ in pool.imap_unordered(_clip, jobs, chunksize=16):
            pass
    return time.perf_counter() - t0


def esc50_tree(root: Path, seconds: float, workers: int) -> tuple[float, int, float]:
    """meta/esc50.csv (the real file) + audio/<filename>; returns (generate s, clips, hours)."""
    (root / "meta").mkdir(parents=True)
    shutil.copy(ESC50_CSV, root / "meta" / "esc50.csv")
    rows = list(csv.DictReader(ESC50_CSV.open(newline="")))
    jobs = [(str(root / "audio" / r["filename"]), seconds, i) for i, r in enumerate(rows)]
    return _generate(jobs, workers), len(rows), len(rows) * seconds / 3600


def us8k_tree(root: Path, max_seconds: float | None, workers: int) -> tuple[float, int, float]:
    """metadata/UrbanSound8K.csv (the real file) + audio/fold<N>/<slice> of the listed durations."""
    (root / "metadata").mkdir(parents=True)
    shutil.copy(US8K_CSV, root / "metadata" / "UrbanSound8K.csv")
    rows = list(csv.DictReader(US8K_CSV.open(newline="")))
    jobs = []
    for i, r in enumerate(rows):
        seconds = float(r["end"]) - float(r["start"])
        if max_seconds is not None:
            seconds = min(seconds, max_seconds)
        jobs.append((str(root / "audio" / f"fold{r['fold']}" / r["slice_file_name"]), seconds, i))
    return _generate(jobs, workers), len(rows), sum(s for _, s, _ in jobs) / 3600


def _mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def pack_and_check(recipe: str, src: Path, out: Path, workers: int, sample_rate: int,
                   want_folds: dict[int, int]) -> tuple[float, dict]:
    """Run `shardgen pack` in-process, then check fold counts and the shards against dataset.json."""
    t0 = time.perf_counter()
    rc = cli.main(["pack", "--recipe", recipe, str(src), str(out), "--workers", str(workers),
                   "--sample-rate", str(sample_rate), "--no-progress"])
    seconds = time.perf_counter() - t0
    assert rc == 0, f"shardgen pack --recipe {recipe} exited {rc}"
    m = json.loads((out / "dataset.json").read_text())
    folds: Counter[int] = Counter()
    for shard in m["splits"]["train"]["shards"]:
        folds[shard["fold"]] += shard["samples"]
    assert dict(folds) == want_folds, f"{recipe}: fold counts {dict(folds)} != {want_folds}"
    assert m["skipped"] == [], f"{recipe}: skipped {m['skipped'][:3]}"
    problems = verify(str(out), decode=False)
    assert problems == [], f"{recipe}: verify found {problems[:3]}"
    return seconds, m


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="all rows, 0.25-s clips (a fast check of the counts)")
    p.add_argument("--us8k-max-seconds", type=float, default=None,
                   help="cap the UrbanSound8K clip durations (default: the listed durations)")
    p.add_argument("--workers", type=int, default=2, help="shardgen pack --workers (default 2)")
    p.add_argument("--sample-rate", type=int, default=16000, help="shardgen pack --sample-rate (default 16000)")
    p.add_argument("--tmp", type=Path, default=None, help="where to build the trees (default: system temp)")
    p.add_argument("--results", type=Path, default=None,
                   help="markdown file to write (default benchmarks/results/recipes.md, none with --quick)")
    args = p.parse_args(argv)
    for f in (ESC50_CSV, US8K_CSV):
        if not f.is_file():
            p.error(f"needs the real metadata at {f} (../shared/datasets-meta)")
    esc_seconds = 0.25 if args.quick else 5.0
    us_cap = 0.25 if args.quick else args.us8k_max_seconds
    results = args.results or (None if args.quick else REPO / "benchmarks" / "results" / "recipes.md")

    us8k_folds = Counter(int(r["fold"]) for r in csv.DictReader(US8K_CSV.open(newline="")))
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-recipes-", dir=args.tmp) as tmp:
        work = Path(tmp)
        for name, build, arg, folds in (
            ("esc50", esc50_tree, esc_seconds, {f: 400 for f in range(1, 6)}),
            ("urbansound8k", us8k_tree, us_cap, dict(us8k_folds)),
        ):
            src, out = work / f"{name}-src", work / f"{name}-out"
            gen_s, clips, hours = build(src, arg, args.workers)
            print(f"{name}: generated {clips} clips ({hours:.2f} h) in {gen_s:.1f} s", flush=True)
            pack_s, m = pack_and_check(name, src, out, args.workers, args.sample_rate, folds)
            runs.append(Run(name, clips, hours, _mb(src), gen_s, pack_s, _mb(out),
                            len(m["splits"]["train"]["shards"])))
            shutil.rmtree(src)
            shutil.rmtree(out)

    table = render(runs, args, esc_seconds, us_cap)
    print("\n" + table)
    if results is not None:
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(table)
        print(f"wrote {results}")
    return 0


def render(runs: list[Run], args: argparse.Namespace, esc_seconds: float, us_cap: float | None) -> str:
    lines = [
        "# Recipe pack throughput: full-size ESC-50 and UrbanSound8K trees",
        "",
        f"`.venv/bin/python benchmarks/recipes.py{' --quick' if args.quick else ''}"
        f"{f' --us8k-max-seconds {args.us8k_max_seconds}' if args.us8k_max_seconds and not args.quick else ''}`"
        f" on {platform.machine()} with {os.cpu_count()} CPU cores, Python {platform.python_version()};"
        f" 1-min load average at the end {os.getloadavg()[0]:.1f} (other jobs share the cores).",
        f"Real metadata rows, synthetic 16-bit {SOURCE_RATE} Hz mono audio (ESC-50: {esc_seconds:g}-s clips; "
        f"UrbanSound8K: listed durations{f' capped at {us_cap:g} s' if us_cap else ''}). "
        f"`shardgen pack --workers {args.workers} --sample-rate {args.sample_rate}` (FLAC), timed in-process "
        "from recipe load to dataset.json; fold counts asserted, shards verified against dataset.json.",
        "",
        "| recipe | clips | folds | audio (h) | source (MB) | generate (s) | pack (s) | clips/s | audio h/min | shards | out (MB) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    folds = {"esc50": "5 x 400", "urbansound8k": "10 (official counts)"}
    for r in runs:
        lines.append(
            f"| {r.dataset} | {r.clips} | {folds[r.dataset]} | {r.audio_hours:.2f} | {r.source_mb:.0f} | "
            f"{r.generate_s:.1f} | {r.pack_s:.1f} | {r.clips / r.pack_s:.1f} | "
            f"{r.audio_hours * 60 / r.pack_s:.2f} | {r.shards} | {r.out_mb:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
