"""Loader throughput against the baselines users would otherwise write, all in one run.

Shards of 5-s clips (FLAC stored at 44.1 kHz, 32 kHz target, 128 mels, SpecAugment, batch 64):
  (a) decode-only tight loop            (the machine's CPU decode limit, same processes as ours)
  (b) the same ops as ours, tight loop  (decode + resample + crop in a process pool, log-mel + SpecAugment)
  (c) ours as set up on a CPU machine: wds_audio.loader(frontend=...) runs the Frontend in its workers
  (c') ours as set up on a GPU machine (Frontend in the training process), here on the CPU
  (d) torchaudio tutorial: map-style Dataset over files, per-sample transforms in DataLoader workers
  (e) plain webdataset pipeline with the same per-sample transforms as (d)
  (f) ours as set up on a GPU machine, with a GPU: workers decode and crop to int16 at the stored
      rate (pcm_on_device, resample_on_device); the Frontend resamples, log-mels and SpecAugments on the GPU
  (f') the same, resampled on the CPU (soxr in the workers, float32 batches): what (f) saves
  + DALI rows (benchmarks/dali_rows.py) when DALI is installed. (f) and (f') only with CUDA, and
  then (c') is left out.
Targets on CPU: (c)/(b) >= 0.85, (c)/(d) >= 1.3, first batch <= 1 s, RSS growth over 5 epochs <= 5 %.
With a GPU: (f)/(a) >= 0.9.

    .venv/bin/python benchmarks/throughput.py [--clips 2048] [--workers 2] [--rounds 3] [--quick]
    .venv/bin/python benchmarks/throughput.py --rows c,d --workdir /tmp/tp2   # a subset, data kept
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import soxr  # noqa: E402
import torch  # noqa: E402
import torchaudio  # noqa: E402

from benchmarks.common import (PeakRSS, bar_chart, cpu_seconds, logmel_frontend, make_clips, markdown_table,  # noqa: E402
                               number, paired_ratio, read_markdown_table, tree_rss_mb)

SR_IN, SR, SECONDS, BATCH, N_MELS = 44100, 32000, 5.0, 64, 128
WINDOW = int(SR * SECONDS)
# with a GPU, (f) is the GPU setup itself and (c'), its stand-in on the CPU, is left out
ROWS = "a,b,c,d,e,f,f'" if torch.cuda.is_available() else "a,b,c,c',d,e"


def _tar_samples(path: str) -> Iterable[tuple[str, bytes]]:
    from wds_audio.pipeline.shards import iter_members

    with open(path, "rb") as f:
        for name, data in iter_members(f, path):
            if name.endswith(".flac"):
                yield name, data


def _decode_shard(path: str) -> int:
    n = 0
    for _, data in _tar_samples(path):
        sf.read(io.BytesIO(data), dtype="float32")
        n += 1
    return n


def _prepare_shard(path: str) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for _, data in _tar_samples(path):
        x, _ = sf.read(io.BytesIO(data), dtype="float32")
        x = soxr.resample(x, SR_IN, SR, quality="HQ")
        if len(x) > WINDOW:
            s = int(rng.integers(len(x) - WINDOW + 1))
            x = x[s:s + WINDOW]
        out.append(np.pad(x, (0, WINDOW - len(x))))
    return out


def _frontend(input_sample_rate: int | None = None) -> torch.nn.Module:
    return logmel_frontend(SR, n_fft=1024, hop_length=320, n_mels=N_MELS, time_width=40, freq_width=16,
                           input_sample_rate=input_sample_rate)


def _timed(name: str, batches: Callable[[], Iterable[int]], notes: str, workers: int) -> dict[str, Any]:
    """Time to the first batch, and clips/s in the steady state, for every row alike: from the
    arrival of item ``warmup`` = 2 x workers (a batch, or a shard for the pool rows) to the end.

    Counting from the first batch alone favours pipelines whose workers all start at once: with
    2 workers the tutorial's first two batches arrive together (measured: 1.67 s and 1.67 s), so
    "after the first batch" got a whole batch for free, while ours (one worker makes the first
    batch with every core, see EpochStart) had made about half of its second. ``warmup`` = the
    items that can be in flight when the first arrives (workers x prefetch 2) puts both in their
    steady state first."""
    warmup = 2 * max(workers, 1)
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    arrivals: list[tuple[float, int]] = []  # (seconds since start, clips so far)
    clips = 0
    with PeakRSS() as rss:
        for n in batches():
            clips += n
            arrivals.append((time.perf_counter() - t0, clips))
    dt, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    first = arrivals[0][0] if arrivals else dt
    k = warmup if len(arrivals) > 2 * warmup else 1  # a short run (--quick): after the first item
    t_w, n_w = arrivals[k - 1] if len(arrivals) > k else (0.0, 0)
    rate = (clips - n_w) / (dt - t_w) if dt > t_w else clips / dt
    row = {"name": name, "clips": clips, "seconds": dt, "clips_per_s": rate, "with_start_clips_per_s": clips / dt,
           "audio_s_per_s": rate * SECONDS, "first_batch_s": first, "peak_rss_MB": rss.peak,
           "cpu_ms_per_clip": 1e3 * cpu / max(clips, 1), "notes": notes}
    print(f"  {name}: {rate:.1f} clips/s after {warmup} item(s) ({clips / dt:.1f} with them), first batch {first:.2f} s, "
          f"peak RSS {rss.peak:.0f} MB, CPU {row['cpu_ms_per_clip']:.1f} ms/clip", flush=True)
    return row


def row_decode_only(shards: list[str], workers: int) -> dict[str, Any]:
    def run() -> Iterable[int]:
        with get_context("fork").Pool(workers) as pool:
            yield from pool.imap_unordered(_decode_shard, shards)
    return _timed("(a) decode-only tight loop", run, f"{workers} processes, soundfile", workers)


def _ops_shard(path: str) -> int:
    """Decode + resample + crop every clip of a shard, then log-mel + SpecAugment in batches."""
    torch.set_num_threads(1)
    fe, clips = _frontend(), _prepare_shard(path)
    with torch.no_grad():
        for i in range(0, len(clips), BATCH):
            chunk = clips[i:i + BATCH]
            fe(torch.from_numpy(np.stack(chunk)), keys=[f"{path}:{i + j}" for j in range(len(chunk))])
    return len(clips)


def row_tight_ops(shards: list[str], workers: int) -> dict[str, Any]:
    def run() -> Iterable[int]:
        with get_context("fork").Pool(workers) as pool:
            yield from pool.imap_unordered(_ops_shard, shards)
    return _timed("(b) same ops, tight loop", run, f"{workers} processes: decode+soxr+crop+log-mel+SpecAugment per shard",
                  workers)


def _ours(dataset: Path, workers: int, epochs: int = 1, persistent: bool = False, in_workers: bool = False,
          device: str = "cpu", on_device: bool = False) -> tuple[Callable, Any]:
    """Our loader and a function running ``epochs`` of it. The Frontend runs in the workers
    (``in_workers``) or on ``device`` in this process, where batches are copied without blocking
    (pinned, by default, when CUDA is there); ``on_device``: int16 batches at the stored rate,
    resampled by the Frontend. On CUDA the clock stops after the GPU has finished the last batch."""
    import wds_audio

    fe = _frontend(SR_IN if on_device else None).to(device)
    loader = wds_audio.loader(str(dataset), batch_size=BATCH, sample_rate=SR, clip_seconds=SECONDS,
                              num_workers=workers, seed=0, persistent_workers=persistent and workers > 0,
                              frontend=fe if in_workers else None, pcm_on_device=on_device,
                              resample_on_device=on_device)

    def run() -> Iterable[int]:
        with torch.no_grad():
            for e in range(epochs):
                loader.set_epoch(e)
                for b in loader:
                    if not in_workers:
                        fe(b.audio.to(device, non_blocking=True), b.lengths.to(device, non_blocking=True),
                           keys=b.draw_keys)
                    yield len(b)
            if device == "cuda":
                torch.cuda.synchronize()
    return run, loader


def row_ours(dataset: Path, workers: int, in_workers: bool, device: str = "cpu", on_device: bool = False) -> dict[str, Any]:
    run, loader = _ours(dataset, workers, in_workers=in_workers, device=device, on_device=on_device)
    if device == "cuda":
        name = ("(f) ours, GPU: int16 at the stored rate, resampled + log-mel on the GPU" if on_device else
                "(f') ours, GPU: resampled on the CPU, log-mel on the GPU")
        notes = f"num_workers={workers}, pinned, {torch.cuda.get_device_name(0)}"
    else:
        name = ("(c) ours, CPU setup: Frontend in the loader's workers" if in_workers else
                "(c') ours, GPU setup run on CPU: Frontend in the main process")
        notes = f"num_workers={workers}, streams 8"
    row = _timed(name, run, notes, workers)
    row["consumer_wait_s"] = loader.metrics()["wait_s"]
    return row


class _FileDataset(torch.utils.data.Dataset):
    """The torchaudio tutorial pattern: one file per item, transforms built once, applied per sample."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.resample = torchaudio.transforms.Resample(SR_IN, SR)
        self.mel = torchaudio.transforms.MelSpectrogram(SR, n_fft=1024, hop_length=320, n_mels=N_MELS)
        self.db = torchaudio.transforms.AmplitudeToDB()
        self.fmask = torchaudio.transforms.FrequencyMasking(16)
        self.tmask = torchaudio.transforms.TimeMasking(40)

    def __len__(self) -> int:
        return len(self.files)

    def transform(self, data: bytes | Path) -> torch.Tensor:
        x, _ = sf.read(io.BytesIO(data) if isinstance(data, bytes) else data, dtype="float32")
        x = self.resample(torch.from_numpy(x))
        x = torch.nn.functional.pad(x[:WINDOW], (0, max(0, WINDOW - len(x))))
        spec = self.db(self.mel(x))
        return self.tmask(self.tmask(self.fmask(self.fmask(spec[None]))))[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.files[i])


def row_torchaudio(files: list[Path], workers: int) -> dict[str, Any]:
    ds = _FileDataset(files)
    dl = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True)
    return _timed("(d) torchaudio tutorial (files, map-style)", lambda: (len(b) for b in dl),
                  f"num_workers={workers}, Resample+MelSpectrogram modules built once", workers)


def row_webdataset(shards: list[str], workers: int) -> dict[str, Any]:
    import webdataset as wds

    ds = _FileDataset([])
    pipe = (wds.WebDataset(shards, shardshuffle=len(shards), nodesplitter=wds.split_by_node,
                           workersplitter=wds.split_by_worker, empty_check=False)
            .shuffle(256).map(lambda s: (ds.transform(s["flac"]),)).batched(BATCH, partial=False))
    dl = wds.WebLoader(pipe, batch_size=None, num_workers=workers)
    # samples are 1-tuples: webdataset's collation then stacks them (a bare tensor would be zipped
    # along its first axis, and len() would count mel bins instead of clips)
    return _timed("(e) plain webdataset pipeline", lambda: (len(b[0]) for b in dl), f"num_workers={workers}",
                  workers)


def rss_growth(dataset: Path, workers: int, epochs: int) -> dict[str, Any]:
    """Peak memory of each epoch of ours (persistent workers), as the sum of VmRSS (the target's
    measure) and as PSS (what the tree holds: pages that workers copy from their parent count)."""
    run, _ = _ours(dataset, workers, epochs=epochs, persistent=True, in_workers=True)
    per_epoch: dict[str, list[float]] = {"rss": [], "pss": []}
    peak = {"rss": 0.0, "pss": 0.0}
    seen, per = 0, None
    for n in run():
        seen += n
        peak = {"rss": max(peak["rss"], tree_rss_mb()), "pss": max(peak["pss"], tree_rss_mb(pss=True))}
        per = per or _batches_per_epoch(dataset)
        if seen % (per * BATCH) == 0:
            for k in per_epoch:
                per_epoch[k].append(peak[k])
            peak = {"rss": 0.0, "pss": 0.0}
    grow = {k: v[-1] / v[0] - 1 if len(v) > 1 else float("nan") for k, v in per_epoch.items()}
    return {"epochs": epochs, "rss_MB_per_epoch": [round(v) for v in per_epoch["rss"]], "growth": grow["rss"],
            "pss_MB_per_epoch": [round(v) for v in per_epoch["pss"]], "pss_growth": grow["pss"]}


def _batches_per_epoch(dataset: Path) -> int:
    import wds_audio

    return len(wds_audio.loader(str(dataset), batch_size=BATCH, sample_rate=SR, clip_seconds=SECONDS))


def _rounds(runners: list[Callable[[], dict[str, Any]]], rounds: int) -> list[dict[str, Any]]:
    """Interleaved rounds (every row once per round, the order rotated by one each round so no row
    always follows the same one), so load from other jobs falls on every row alike; each row reports
    its median clips/s and first batch over the rounds, the range, and its rate in each round."""
    seen: dict[str, list[dict[str, Any]]] = {}
    for r in range(rounds):
        print(f"round {r + 1}/{rounds}", flush=True)
        k = r % len(runners)
        for run in runners[k:] + runners[:k]:
            row = run()
            seen.setdefault(row["name"], []).append(row)
    out = []
    for name, rs in seen.items():
        rates = sorted(x["clips_per_s"] for x in rs)
        row = dict(rs[0])
        row.update(clips_per_s=statistics.median(rates), audio_s_per_s=statistics.median(rates) * SECONDS,
                   with_start_clips_per_s=statistics.median(x["with_start_clips_per_s"] for x in rs),
                   first_batch_s=statistics.median(x["first_batch_s"] for x in rs),
                   cpu_ms_per_clip=statistics.median(x["cpu_ms_per_clip"] for x in rs),
                   peak_rss_MB=max(x["peak_rss_MB"] for x in rs), range=f"{rates[0]:.0f}-{rates[-1]:.0f}",
                   per_round=[x["clips_per_s"] for x in rs])
        out.append(row)
    return out


def _warm(paths: list[Path]) -> None:
    """Read every input once: the first row must not pay for pages the packing left uncached."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 22):
                pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=2048)
    p.add_argument("--workers", type=int, default=min(4, len(os.sched_getaffinity(0))))
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    p.add_argument("--epochs", type=int, default=5, help="epochs for the RSS growth check")
    p.add_argument("--quick", action="store_true", help="128 clips, 1 round, 2 epochs, no DALI")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--rows", default=ROWS, help="comma-separated subset of a,b,c,c',d,e,f,f' (no report is written then)")
    p.add_argument("--workdir", type=Path, help="keep the clips and shards here and reuse them on the next run")
    p.add_argument("--replot", action="store_true", help="only redraw throughput.png from the table in throughput.md")
    args = p.parse_args()
    if args.replot:
        rows = [{k: (number(v) if k != "name" else v) for k, v in r.items()} for r in
                read_markdown_table(args.out / "throughput.md")]
        bar_chart(rows, ["clips_per_s", "peak_rss_MB"], args.out / "throughput.png",
                  "clips/s (higher is better) and peak memory of the process tree (summed VmRSS, lower is better)")
        return
    n, epochs, rounds = (128, 2, 1) if args.quick else (args.clips, args.epochs, args.rounds)
    torch.set_num_threads(1)
    from shardgen.recipes import get
    from shardgen.writer import PackOptions, pack

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        src, ds = work / "src", work / "ds"
        if not (ds / "dataset.json").exists():
            make_clips(src, n, SECONDS, SR_IN)
            pack(get("csv").load(src), ds, PackOptions(sample_rate=SR_IN, max_shard_bytes=16_000_000,
                                                        workers=args.workers, progress=False))
        m = json.loads((ds / "dataset.json").read_text())
        shards = [str(ds / s["path"]) for s in m["splits"]["train"]["shards"]]
        files = sorted((src / "audio").glob("*.flac"))
        _warm([Path(s) for s in shards] + files)
        print(f"{len(files)} clips, {len(shards)} shards, {args.workers} workers, {len(os.sched_getaffinity(0))} CPUs", flush=True)
        w = args.workers
        runners = {"a": lambda: row_decode_only(shards, w), "b": lambda: row_tight_ops(shards, w),
                   "c": lambda: row_ours(ds, w, in_workers=True), "c'": lambda: row_ours(ds, w, in_workers=False),
                   "d": lambda: row_torchaudio(files, w), "e": lambda: row_webdataset(shards, w),
                   "f": lambda: row_ours(ds, w, False, "cuda", on_device=True),
                   "f'": lambda: row_ours(ds, w, False, "cuda", on_device=False)}
        rows = _rounds([runners[k] for k in args.rows.split(",")], rounds)
        if not args.quick and args.rows == ROWS:
            try:
                from benchmarks.dali_rows import dali_rows

                rows += dali_rows(ds, BATCH, SR, SECONDS, N_MELS, seconds_budget=30)
            except ImportError as e:
                print(f"  DALI rows skipped ({e})")
        growth = rss_growth(ds, args.workers, epochs) if args.rows == ROWS else None
    if growth is None:  # a subset of rows, for development: printed, no report written
        for r in rows:
            print(f"  {r['name']}: median {r['clips_per_s']:.1f} clips/s ({r['range']}; rounds "
                  f"{' '.join(f'{v:.0f}' for v in r['per_round'])}), CPU {r['cpu_ms_per_clip']:.2f} ms/clip")
        return
    _report(rows, growth, n, rounds, args)


def _report(rows: list[dict[str, Any]], growth: dict[str, Any], n: int, rounds: int, args: argparse.Namespace) -> None:
    by = {r["name"].split(" ")[0]: r for r in rows}
    a, c = by["(a)"]["clips_per_s"], by["(c)"]["clips_per_s"]

    def ratio_check(name: str, x: str, y: str, target: float) -> tuple[str, str, bool]:
        return (name, *paired_ratio(by[x]["per_round"], by[y]["per_round"], target))

    checks: list[tuple[str, str, bool | None]] = [
        ratio_check("(c)/(b) >= 0.85", "(c)", "(b)", 0.85), ratio_check("(c)/(d) >= 1.3", "(c)", "(d)", 1.3),
        ("(c)/(d) counting the start-up too (for reference)",
         f"{by['(c)']['with_start_clips_per_s'] / by['(d)']['with_start_clips_per_s']:.3f}", None),
        ("(d)/(c) CPU time per clip (for reference: how much less CPU ours spends per clip)",
         f"{by['(d)']['cpu_ms_per_clip'] / by['(c)']['cpu_ms_per_clip']:.3f}", None),
        ("(c)/(a) (CPU setup on this machine; for reference)", f"{c / a:.3f}", None),
        ("time to first batch <= 1 s", f"{by['(c)']['first_batch_s']:.3f} s", by["(c)"]["first_batch_s"] <= 1.0),
        (f"RSS growth over {growth['epochs']} epochs <= 5 %", f"{100 * growth['growth']:.1f} %", growth["growth"] <= 0.05),
        ("the same as PSS (for reference)", f"{100 * growth['pss_growth']:.1f} %", None)]
    if "(f)" in by:
        f, f_cpu = by["(f)"]["clips_per_s"], by["(f')"]["clips_per_s"]
        checks += [ratio_check("(f)/(a) >= 0.9 (Frontend on the GPU)", "(f)", "(a)", 0.9),
                   ("(f)/(f') (for reference: what resampling on the GPU saves)", f"{f / f_cpu:.3f}", None)]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU only, {len(os.sched_getaffinity(0))} cores"
    table = markdown_table(rows, ["name", "clips_per_s", "range", "with_start_clips_per_s", "audio_s_per_s", "first_batch_s",
                                  "cpu_ms_per_clip", "peak_rss_MB", "notes"])
    verdicts = "\n".join(f"- {name}: {val} -> {'met' if ok else 'NOT met' if ok is not None else 'reported'}"
                         for name, val, ok in checks)
    load = os.getloadavg()[0]
    text = (f"# Loader throughput\n\n{n} clips of {SECONDS:g} s (FLAC {SR_IN} Hz stored, {SR} Hz target, {N_MELS} mels, "
            f"SpecAugment, batch {BATCH}), {args.workers} workers; device: {device}. Rows: median of {rounds} "
            f"interleaved round(s) (range = slowest-fastest), all in the same run; clips_per_s is the steady state, counted from the "
            f"arrival of item 2 x workers (batch, or shard for (a) and (b); see _timed: counting from the first batch "
            f"favoured rows whose workers all start at once; the DALI rows still count from their first batch), with_start_clips_per_s from the start of the epoch; cpu_ms_per_clip is the CPU time (user + "
            f"system, all processes of the row) over the whole epoch per clip; peak_rss_MB is the process "
            f"tree's summed VmRSS, which counts the pages forked processes share once per process (PSS, which counts them "
            f"once, is read only in the untimed growth check: reading it costs a timed row ~15 %); a ratio target is met when both the ratio of "
            f"the row medians and the median of the per-round ratios meet it; 1-min load average at the end "
            f"{load:.1f}.\n\n{table}\n\nPeak memory per epoch (MB, ours, persistent workers): summed VmRSS "
            f"{growth['rss_MB_per_epoch']}, PSS {growth['pss_MB_per_epoch']}\n\n"
            f"{verdicts}\n\n![clips/s and memory](throughput.png)\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.md").write_text(text)
    bar_chart(rows, ["clips_per_s", "peak_rss_MB"], args.out / "throughput.png",
              "clips/s (higher is better) and peak memory of the process tree (summed VmRSS, lower is better)")
    print(text)


if __name__ == "__main__":
    main()
