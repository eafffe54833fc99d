"""Cached features against the audio path, in the same run: clips/s and shard bytes per clip.

512 clips of 5 s (FLAC stored at 44.1 kHz, benchmarks.common.make_clips), 32 kHz target, 128 mels
(n_fft 1024, hop 320), SpecAugment, batch 64, 2 workers, the Frontend in the loader's workers (the
CPU-machine setup, row (c) of throughput.py):
  audio          wds_audio.loader(ds): decode + soxr + crop in the workers, then log-mel + SpecAugment
  cached, kept   `shardgen features ds mel --sample-rate 32000 ...`, loader(mel, features="cached"):
                 fp16 log-mels cropped in frames, then SpecAugment (the FLAC member still in the shards)
  cached, lean   the same with --drop-audio
Each row runs ``--epochs`` epochs per round with persistent workers, counted from the arrival of batch
2 x workers to the end (as throughput.py's _timed: every row in its steady state); rounds are
interleaved with the order rotated, so outside load falls on every row alike. Ratios are those of the
same run (median of the per-round ratios and ratio of the medians). No target: it is a measurement.

    .venv/bin/python benchmarks/features.py [--clips 512] [--workers 2] [--rounds 3] [--epochs 3]
    .venv/bin/python benchmarks/features.py --quick        # 128 clips, 1 round, 1 epoch, no report
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import cpu_seconds, logmel_frontend, make_clips, markdown_table  # noqa: E402

SR_IN, SR, SECONDS, BATCH, N_MELS, N_FFT, HOP = 44100, 32000, 5.0, 64, 128, 1024, 320


def _frontend() -> torch.nn.Module:
    return logmel_frontend(SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, time_width=40, freq_width=16)


def row(name: str, dataset: Path, workers: int, epochs: int, cached: bool) -> Callable[[], dict[str, Any]]:
    import wds_audio

    def run() -> dict[str, Any]:
        loader = wds_audio.loader(str(dataset), batch_size=BATCH, sample_rate=SR, clip_seconds=SECONDS,
                                  num_workers=workers, seed=0, persistent_workers=workers > 0, frontend=_frontend(),
                                  features="cached" if cached else None)
        warmup = 2 * max(workers, 1)
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        arrivals: list[tuple[float, int]] = []
        clips = 0
        for e in range(epochs):
            loader.set_epoch(e)
            for b in loader:
                assert b.features.shape == (BATCH, N_MELS, int(SR * SECONDS) // HOP + 1)
                clips += len(b)
                arrivals.append((time.perf_counter() - t0, clips))
        dt = time.perf_counter() - t0
        del loader  # its persistent workers end here, and their CPU time is counted
        gc.collect()
        cpu = cpu_seconds() - cpu0
        t_w, n_w = arrivals[warmup - 1] if len(arrivals) > 2 * warmup else (0.0, 0)
        rate = (clips - n_w) / (dt - t_w)
        print(f"  {name}: {rate:.1f} clips/s, first batch {arrivals[0][0]:.2f} s, CPU {1e3 * cpu / clips:.1f} ms/clip",
              flush=True)
        return {"name": name, "clips_per_s": rate, "first_batch_s": arrivals[0][0], "cpu_ms_per_clip": 1e3 * cpu / clips}
    return run


def rounds(runners: list[Callable[[], dict[str, Any]]], n: int) -> dict[str, list[dict[str, Any]]]:
    seen: dict[str, list[dict[str, Any]]] = {}
    for r in range(n):
        print(f"round {r + 1}/{n}", flush=True)
        k = r % len(runners)
        for run in runners[k:] + runners[:k]:
            out = run()
            seen.setdefault(out["name"], []).append(out)
    return seen


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": len(os.sched_getaffinity(0)), "cpu": model, "load": os.getloadavg()}


def bytes_per_clip(dataset: Path) -> float:
    m = json.loads((dataset / "dataset.json").read_text())
    sp = m["splits"]["train"]
    return sp["bytes"] / sp["samples"]


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in rows][::-1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.6 * len(rows) + 2), sharey=True)
    med = [r["clips_per_s"] for r in rows][::-1]
    lo = [r["clips_per_s"] - r["min"] for r in rows][::-1]
    hi = [r["max"] - r["clips_per_s"] for r in rows][::-1]
    left.barh(names, med, xerr=[lo, hi], capsize=4)
    left.set_xlabel("clips/s (median, min-max of the rounds; higher is better)")
    right.barh(names, [r["kB_per_clip"] for r in rows][::-1], color="tab:orange")
    right.set_xlabel("shard kB per clip (lower is better)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=512)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3, help="epochs per row and round (persistent workers)")
    p.add_argument("--quick", action="store_true", help="128 clips, 1 round, 1 epoch; printed, no report")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--workdir", type=Path, help="keep the clips and shards here and reuse them on the next run")
    args = p.parse_args()
    n, rounds_n, epochs = (128, 1, 1) if args.quick else (args.clips, args.rounds, args.epochs)
    torch.set_num_threads(1)
    from shardgen.features import FeatureOptions, make_features
    from shardgen.recipes import get
    from shardgen.writer import PackOptions, pack

    start = machine()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        src, ds, kept, lean = work / "src", work / "ds", work / "mel", work / "mel-lean"
        if not (ds / "dataset.json").exists():
            make_clips(src, n, SECONDS, SR_IN)
            pack(get("csv").load(src), ds, PackOptions(sample_rate=SR_IN, max_shard_bytes=16_000_000,
                                                        workers=args.workers, progress=False))
        made = {}
        for out, keep in ((kept, True), (lean, False)):
            opts = FeatureOptions(sample_rate=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, keep_audio=keep,
                                  overwrite=True, threads=args.workers, progress=False)
            t = time.perf_counter()
            made[keep] = make_features(str(ds), str(out), opts)
            print(f"shardgen features ({'kept' if keep else 'dropped'} audio): {made[keep].clips} clips in "
                  f"{time.perf_counter() - t:.1f} s", flush=True)
        for d in (ds, kept, lean):  # the first row must not pay for pages the writing left uncached
            for tar in d.rglob("*.tar"):
                tar.read_bytes()
        w = args.workers
        names = {"audio": "audio: decode + resample + log-mel + SpecAugment",
                 "kept": "cached fp16 log-mel + SpecAugment (audio kept)",
                 "lean": "cached fp16 log-mel + SpecAugment (--drop-audio)"}
        runners = [row(names["audio"], ds, w, epochs, False), row(names["kept"], kept, w, epochs, True),
                   row(names["lean"], lean, w, epochs, True)]
        seen = rounds(runners, rounds_n)
        size = {names["audio"]: bytes_per_clip(ds), names["kept"]: bytes_per_clip(kept),
                names["lean"]: bytes_per_clip(lean)}
    end = machine()
    audio = [x["clips_per_s"] for x in seen[names["audio"]]]
    rows = []
    for name, rs in seen.items():
        rates = [x["clips_per_s"] for x in rs]
        per = [a / b for a, b in zip(rates, audio)]
        rows.append({"name": name, "clips_per_s": statistics.median(rates), "min": min(rates), "max": max(rates),
                     "range": f"{min(rates):.0f}-{max(rates):.0f}",
                     "rounds": " ".join(f"{v:.0f}" for v in rates),
                     "x_audio": f"{statistics.median(rates) / statistics.median(audio):.2f} "
                                f"(per round {' '.join(f'{v:.2f}' for v in per)})",
                     "cpu_ms_per_clip": statistics.median(x["cpu_ms_per_clip"] for x in rs),
                     "first_batch_s": statistics.median(x["first_batch_s"] for x in rs),
                     "kB_per_clip": size[name] / 1e3})
    for r in rows:
        print(f"  {r['name']}: median {r['clips_per_s']:.1f} clips/s ({r['range']}), x audio {r['x_audio']}, "
              f"{r['kB_per_clip']:.1f} kB/clip")
    if args.quick:
        return
    secs = made[True].seconds
    per_clip_saved = 1 / rows[0]["clips_per_s"] - 1 / rows[2]["clips_per_s"]
    breakeven = secs / (per_clip_saved * n) if per_clip_saved > 0 else float("inf")
    table = markdown_table(rows, ["name", "clips_per_s", "range", "rounds", "x_audio", "cpu_ms_per_clip",
                                  "first_batch_s", "kB_per_clip"])
    text = (f"# Cached features against the audio path\n\n"
            f"{n} clips of {SECONDS:g} s (FLAC {SR_IN} Hz stored, tone mixtures + noise from "
            f"benchmarks.common.make_clips), {SR} Hz target, {N_MELS} mels (n_fft {N_FFT}, hop {HOP}), SpecAugment "
            f"(2 time masks of 40 frames, 2 frequency masks of 16 bins), batch {BATCH}, {args.workers} workers, the "
            f"Frontend in the loader's workers (the CPU setup). Rows: median of {rounds_n} interleaved rounds of "
            f"{epochs} epochs each (persistent workers), clips/s counted from the arrival of batch 2 x workers; "
            f"range = slowest-fastest round; x_audio = the row's median over the audio row's median (then each "
            f"round's ratio: both rows ran minutes apart at most, under the same outside load); cpu_ms_per_clip: "
            f"user + system time of all the row's processes per clip; kB_per_clip: the train split's shard bytes "
            f"(dataset.json) per clip.\n\n"
            f"Machine: {start['nproc']} CPUs ({start['cpu']}); load average (1, 5, 15 min) "
            f"{' '.join(f'{v:.1f}' for v in start['load'])} at the start, {' '.join(f'{v:.1f}' for v in end['load'])} "
            f"at the end: shared with other jobs, so compare the ratios of this run, not the absolute rates with "
            f"other runs.\n\n{table}\n\n"
            f"Computing the features once (`shardgen features --sample-rate {SR} --threads {args.workers}`, audio "
            f"kept): {made[True].clips} clips in {secs:.1f} s ({made[True].clips / secs:.0f} clips/s); with the "
            f"--drop-audio row's rate it pays for itself after {breakeven:.1f} epochs of this set. The fp16 member is "
            f"{made[True].feature_bytes / made[True].clips / 1e3:.1f} kB per clip ({N_MELS} x "
            f"{int(SR * SECONDS) // HOP + 1} x 2 bytes + a 128-byte .npy header).\n\n"
            f"![clips/s and shard bytes per clip](features.png)\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "features.md").write_text(text)
    plot(rows, args.out / "features.png", f"cached features vs audio: {n} x {SECONDS:g} s, batch {BATCH}, "
                                          f"{args.workers} workers, {start['nproc']} CPUs")
    print(text)


if __name__ == "__main__":
    main()
