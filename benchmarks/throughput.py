"""Loader throughput and memory against the baselines users would otherwise write, all in one run.

512 clips of 5 s of real recordings (``make_real_clips``: ../shared/audio-samples played back to back;
tones with ``--content tones`` or when the recordings are absent), FLAC stored at 44.1 kHz, 32 kHz
target, 128 mels, SpecAugment, batch 64:
  (a) decode-only tight loop            (the machine's CPU decode limit, same processes as ours)
  (b) the same ops per clip, tight loop (each process: decode + soxr + crop, then the Frontend's
      log-mel + SpecAugment, one clip at a time, 64 clips per task; 1 torch thread per process)
  (b') the same, features per batch     (decode + soxr + crop of 64 clips, then the Frontend on all
      64 at once: what batching the features alone buys)
  (c) ours as set up on a CPU machine: wds_audio.loader(frontend=...) runs the Frontend in its workers
  (c') ours as set up on a GPU machine (Frontend in the training process), here on the CPU
  (cb) (c) with SourceOptions(local_spans=False): the shuffle buffers hold the clips' bytes (not by
      default; with --rows, e.g. the 2,048-clip report, where the buffers fill)
  (d) torchaudio tutorial: map-style Dataset over files, per-sample transforms in DataLoader workers
  (e) plain webdataset pipeline with the same per-sample transforms as (d)
  (f) ours as set up on a GPU machine, with a GPU: workers decode and crop to int16 at the stored
      rate (pcm_on_device, resample_on_device); the Frontend resamples, log-mels and SpecAugments on the GPU
  (f') the same, resampled on the CPU (soxr in the workers, float32 batches): what (f) saves
  + DALI rows (benchmarks/dali_rows.py) when DALI is installed. (f) and (f') only with CUDA, and
  then (c') is left out.

Every row runs in a process of its own (started from this one, importing only what the row needs),
so that each row's memory is its own: this process samples the PSS (/proc/PID/smaps_rollup) and the
summed VmRSS of the row's whole process tree (the row's process, its DataLoader workers or pool)
every 0.2 s while a second, untimed run of the row goes on (see run_row). Rows run in interleaved rounds (the order rotated each round).
Targets on CPU (issue 23): (c)/(d) >= 1.5, (c)/(b) >= 1.0, (c)'s peak PSS <= (d)'s, first batch
<= 1 s, RSS growth over 5 epochs <= 5 %. With a GPU: (f)/(a) >= 0.9.

    .venv/bin/python benchmarks/throughput.py [--clips 512] [--workers 2] [--rounds 5] [--quick]
    .venv/bin/python benchmarks/throughput.py --rows c,d --workdir /tmp/tp2   # a subset, data kept
    .venv/bin/python benchmarks/throughput.py --clips 2048 --rows c,cb,d --report throughput-2048  # buffers full
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import (cpu_seconds, logmel_frontend, make_clips, make_real_clips, markdown_table,  # noqa: E402
                               number, paired_ratio, read_markdown_table, tree_memory_mb)

SR_IN, SR, SECONDS, BATCH, N_MELS = 44100, 32000, 5.0, 64, 128
WINDOW = int(SR * SECONDS)
# with a GPU, (f) is the GPU setup itself and (c'), its stand-in on the CPU, is left out
ROWS = "a,b,b',c,c',d,e,f,f'" if torch.cuda.is_available() else "a,b,b',c,c',d,e"
# memory sampling period: short, as the runs that sample are not timed; one batch of log-mels is
# 16 MB, and at 0.2 s a peak caught 0 to 4 batches in flight (per-epoch peaks stepped by 16-18 MB)
SAMPLE_S = 0.05


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


def _frontend(input_sample_rate: int | None = None) -> torch.nn.Module:
    return logmel_frontend(SR, n_fft=1024, hop_length=320, n_mels=N_MELS, time_width=40, freq_width=16,
                           input_sample_rate=input_sample_rate)


def _timed(name: str, batches: Callable[[], Iterable[int]], notes: str, workers: int) -> dict[str, Any]:
    """Clips/s over the whole epoch (``epoch_clips_per_s``: from the start of the row, its process
    pool or DataLoader workers started within it, to its last clip: what a 512-clip epoch costs a
    user), and in the steady state (``clips_per_s``: from the arrival of item ``warmup`` = 2 x
    workers to the end; from the first when there are no more than 2 x ``warmup`` items, as the 8
    batches of 512 clips: ours makes its last batch alone, just after the pair before, and counting
    from item 4 of 8 would credit it with that phase), the time to the first batch and the CPU time
    per clip.

    Counting the steady state from the first batch alone favours pipelines whose workers all start at
    once: with 2 workers the tutorial's first two batches arrive together, so "after the first batch"
    got a whole batch for free, while ours (one worker makes the first batch with every core, see
    EpochStart) had made about half of its second. ``warmup`` = the items that can be in flight
    when the first arrives (workers x prefetch 2) puts both in their steady state first."""
    warmup = 2 * max(workers, 1)
    _mark("START")
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    arrivals: list[tuple[float, int]] = []  # (seconds since start, clips so far)
    clips = 0
    for n in batches():
        clips += n
        arrivals.append((time.perf_counter() - t0, clips))
    dt, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    _mark("END")
    first = arrivals[0][0] if arrivals else dt
    k = warmup if len(arrivals) > 2 * warmup else 1  # a short run (512 clips: 8 batches): after the first item
    t_w, n_w = arrivals[k - 1] if len(arrivals) > k else (0.0, 0)
    rate = (clips - n_w) / (dt - t_w) if dt > t_w else clips / dt
    return {"name": name, "clips": clips, "seconds": dt, "clips_per_s": rate, "epoch_clips_per_s": clips / dt,
            "first_batch_s": first, "cpu_ms_per_clip": 1e3 * cpu / max(clips, 1), "notes": notes,
            "arrivals": [round(a, 3) for a, _ in arrivals]}


_MARKS = False  # a row's process tells the parent when its epoch starts and ends (run_row)


def _mark(what: str) -> None:
    if _MARKS:
        print(f"@@{what}", flush=True)


def row_decode_only(shards: list[str], workers: int) -> dict[str, Any]:
    def run() -> Iterable[int]:
        with get_context("fork").Pool(workers) as pool:
            yield from pool.imap_unordered(_decode_shard, shards)
    return _timed("(a) decode-only tight loop", run, f"{workers} processes, soundfile", workers)


_CLIPS: list[tuple[str, bytes]] = []  # (b)'s clips, read before its pool forks


def _ops_batch(i: int, per_clip: bool = True) -> int:
    """Decode + soxr + crop 64 clips, each then given the Frontend's log-mel + SpecAugment on its own
    (``per_clip``, as a per-clip loop does: the issue's (b)), or all 64 at once at the end (b'), 1
    torch thread."""
    import soxr

    torch.set_num_threads(1)
    rng = np.random.default_rng(i)
    chunk, out = _CLIPS[i * BATCH:(i + 1) * BATCH], []
    fe = _FE.get("fe") or _FE.setdefault("fe", _frontend())
    with torch.no_grad():
        for key, data in chunk:
            x, _ = sf.read(io.BytesIO(data), dtype="float32")
            x = soxr.resample(x, SR_IN, SR, quality="HQ")
            if len(x) > WINDOW:
                s = int(rng.integers(len(x) - WINDOW + 1))
                x = x[s:s + WINDOW]
            x = np.pad(x, (0, WINDOW - len(x)))
            out.append(fe(torch.from_numpy(x)[None], keys=[key])[0] if per_clip else x)
        if per_clip:
            torch.stack(out)  # the batch a per-clip pipeline collates
        else:
            fe(torch.from_numpy(np.stack(out)), keys=[k for k, _ in chunk])
    return len(chunk)


_FE: dict[str, torch.nn.Module] = {}


def row_tight_ops(shards: list[str], workers: int, per_clip: bool = True) -> dict[str, Any]:
    def run() -> Iterable[int]:
        _CLIPS[:] = [c for s in shards for c in _tar_samples(s)]  # read here: the pool's processes inherit them
        _CLIPS[:] = _CLIPS[:len(_CLIPS) // BATCH * BATCH]  # full batches, as every other row
        with get_context("fork").Pool(workers) as pool:
            yield from pool.imap_unordered(partial(_ops_batch, per_clip=per_clip), range(len(_CLIPS) // BATCH))
    if per_clip:
        return _timed("(b) same ops per clip, tight loop", run, f"{workers} processes, 1 torch thread each: decode+soxr+"
                      "crop+log-mel+SpecAugment per clip, a batch of 64 clips per task", workers)
    return _timed("(b') same ops, features per batch, tight loop", run, f"{workers} processes, 1 torch thread each: "
                  "decode+soxr+crop per clip, then log-mel+SpecAugment on the 64 clips at once", workers)


def _ours(dataset: Path, workers: int, epochs: int = 1, persistent: bool = False, in_workers: bool = False,
          device: str = "cpu", on_device: bool = False, spans: bool = True) -> tuple[Callable, Any]:
    """Our loader and a function running ``epochs`` of it. The Frontend runs in the workers
    (``in_workers``) or on ``device`` in this process, where batches are copied without blocking
    (pinned, by default, when CUDA is there); ``on_device``: int16 batches at the stored rate,
    resampled by the Frontend. On CUDA the clock stops after the GPU has finished the last batch."""
    import wds_audio

    fe = _frontend(SR_IN if on_device else None).to(device)
    loader = wds_audio.loader(str(dataset), batch_size=BATCH, sample_rate=SR, clip_seconds=SECONDS,
                              num_workers=workers, seed=0, persistent_workers=persistent and workers > 0,
                              frontend=fe if in_workers else None, pcm_on_device=on_device,
                              resample_on_device=on_device,
                              source_options=wds_audio.SourceOptions(local_spans=spans))

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


def row_ours(dataset: Path, workers: int, in_workers: bool, device: str = "cpu", on_device: bool = False,
             spans: bool = True) -> dict[str, Any]:
    run, loader = _ours(dataset, workers, in_workers=in_workers, device=device, on_device=on_device, spans=spans)
    if device == "cuda":
        name = ("(f) ours, GPU: int16 at the stored rate, resampled + log-mel on the GPU" if on_device else
                "(f') ours, GPU: resampled on the CPU, log-mel on the GPU")
        notes = f"num_workers={workers}, pinned, {torch.cuda.get_device_name(0)}"
    else:
        name = ("(c) ours, CPU setup: Frontend in the loader's workers" if in_workers else
                "(c') ours, GPU setup run on CPU: Frontend in the main process")
        if not spans:
            name = "(cb) ours as (c), clips held as bytes: SourceOptions(local_spans=False)"
        notes = f"num_workers={workers}, streams 8"
    row = _timed(name, run, notes, workers)
    row["consumer_wait_s"] = loader.metrics()["wait_s"]
    return row


class _FileDataset(torch.utils.data.Dataset):
    """The torchaudio tutorial pattern: one file per item, transforms built once, applied per sample."""

    def __init__(self, files: list[Path]) -> None:
        import torchaudio

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


class TreeMemory:
    """Samples the PSS, the summed VmRSS and the USS of process ``pid`` and its descendants (see
    tree_memory_mb) every ``interval`` s in a thread; ``peak()`` gives the largest of each, in MB,
    since the last ``reset()``."""

    def __init__(self, pid: int | None = None, interval: float = SAMPLE_S) -> None:
        self.pid, self.interval, self._stop = pid or os.getpid(), interval, threading.Event()
        self.reset()

    def reset(self) -> None:
        self.pss, self.rss, self.uss = 0.0, 0.0, 0.0

    def sample(self) -> None:
        m = tree_memory_mb(self.pid)
        self.pss, self.rss, self.uss = max(self.pss, m["pss"]), max(self.rss, m["rss"]), max(self.uss, m["uss"])

    def peak(self) -> dict[str, float]:
        return {"peak_pss_MB": self.pss, "peak_rss_MB": self.rss, "peak_uss_MB": self.uss}

    def __enter__(self) -> "TreeMemory":
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()


def rss_growth(dataset: Path, workers: int, epochs: int) -> dict[str, Any]:
    """Peak memory of each epoch of ours (persistent workers, Frontend in the workers), as PSS and as
    the sum of VmRSS (which counts the pages workers share with their parent once per process),
    sampled in a thread; growth = last epoch's peak / first epoch's - 1."""
    run, loader = _ours(dataset, workers, epochs=epochs, persistent=True, in_workers=True)
    per = len(loader)
    per_epoch: dict[str, list[float]] = {"rss": [], "pss": [], "uss": []}
    seen = 0
    with TreeMemory() as mem:
        for n in run():
            seen += n
            if seen % (per * BATCH) == 0:
                mem.sample()
                for k in per_epoch:
                    per_epoch[k].append(getattr(mem, k))
                mem.reset()
    grow = {k: v[-1] / v[0] - 1 if len(v) > 1 else float("nan") for k, v in per_epoch.items()}
    return {"epochs": epochs, "rss_MB_per_epoch": [round(v) for v in per_epoch["rss"]], "growth": grow["rss"],
            "pss_MB_per_epoch": [round(v) for v in per_epoch["pss"]], "pss_growth": grow["pss"],
            "uss_MB_per_epoch": [round(v) for v in per_epoch["uss"]], "uss_growth": grow["uss"]}


def _inputs(work: Path) -> tuple[Path, list[str], list[Path]]:
    ds = work / "ds"
    m = json.loads((ds / "dataset.json").read_text())
    return ds, [str(ds / s["path"]) for s in m["splits"]["train"]["shards"]], sorted((work / "src" / "audio").glob("*.flac"))


def _child(key: str, work: Path, workers: int, epochs: int) -> None:
    """Run one row (or the growth check) in this process and print it as one JSON line."""
    global _MARKS
    _MARKS = key != "growth"
    torch.set_num_threads(1)
    ds, shards, files = _inputs(work)
    w = workers
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "a": lambda: row_decode_only(shards, w), "b": lambda: row_tight_ops(shards, w),
        "b'": lambda: row_tight_ops(shards, w, per_clip=False),
        "c": lambda: row_ours(ds, w, in_workers=True), "c'": lambda: row_ours(ds, w, in_workers=False),
        "cb": lambda: row_ours(ds, w, in_workers=True, spans=False),
        "d": lambda: row_torchaudio(files, w), "e": lambda: row_webdataset(shards, w),
        "f": lambda: row_ours(ds, w, False, "cuda", on_device=True),
        "f'": lambda: row_ours(ds, w, False, "cuda", on_device=False),
        "growth": lambda: rss_growth(ds, w, epochs)}
    print("@@ROW " + json.dumps(runners[key]()), flush=True)


def run_row(key: str, work: Path, workers: int, epochs: int = 1, sample: bool = True) -> dict[str, Any]:
    """``key``'s row in a new process, its tree's memory sampled from here during the row's epoch
    (between its @@START and @@END: not its imports before, nor its exit after) when ``sample``.

    Sampling is not free: one read of a tree's smaps_rollup took 20-37 ms here, every 0.2 s, on the
    cores the row runs on: ours ran at 337-348 clips/s sampled against 351-364 not (up to 7 % less).
    So the timed run of a row is never sampled; its memory comes from a run of its own."""
    cmd = [sys.executable, __file__, "--child", key, "--workdir", str(work), "--workers", str(workers),
           "--epochs", str(epochs)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    mem, lines = TreeMemory(proc.pid), []
    assert proc.stdout is not None
    for ln in proc.stdout:
        lines.append(ln)
        if ln.startswith("@@START") and sample:
            mem.sample()
            mem.__enter__()
        elif ln.startswith("@@END") and sample:
            mem.sample()
            mem.__exit__()
    proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"row {key} failed ({proc.returncode}): {''.join(lines)[-2000:]}")
    row = json.loads(next(ln for ln in lines if ln.startswith("@@ROW "))[6:])
    if key != "growth" and sample:
        row.update(mem.peak())
    return row


def _rounds(keys: list[str], rounds: int, work: Path, workers: int) -> list[dict[str, Any]]:
    """Interleaved rounds (every row once per round, the order rotated by one each round so no row
    always follows the same one), so load from other jobs falls on every row alike; each row reports
    the median of its rounds, the range, and its value in each round. In each round a row runs
    twice: timed, then again with its memory sampled (see run_row)."""
    seen: dict[str, list[dict[str, Any]]] = {}
    for r in range(rounds):
        print(f"round {r + 1}/{rounds}, 1-min load {os.getloadavg()[0]:.2f}", flush=True)
        k = r % len(keys)
        for key in keys[k:] + keys[:k]:
            row = run_row(key, work, workers, sample=False)
            sampled = run_row(key, work, workers)
            row.update({k: sampled[k] for k in ("peak_pss_MB", "peak_rss_MB", "peak_uss_MB")})
            print(f"  {row['name']}: {row['epoch_clips_per_s']:.1f} clips/s over the epoch, {row['clips_per_s']:.1f} "
                  f"steady, first batch {row['first_batch_s']:.2f} s, CPU {row['cpu_ms_per_clip']:.2f} ms/clip, "
                  f"peak PSS {row['peak_pss_MB']:.0f} MB (USS {row['peak_uss_MB']:.0f}, summed RSS {row['peak_rss_MB']:.0f})",
                  flush=True)
            seen.setdefault(key, []).append(row)
    out = []
    for key, rs in seen.items():
        row = dict(rs[0], key=key)
        for field in ("clips_per_s", "epoch_clips_per_s", "first_batch_s", "cpu_ms_per_clip", "peak_pss_MB",
                      "peak_rss_MB", "peak_uss_MB"):
            vals = [x[field] for x in rs]
            row[field], row[f"{field}_range"], row[f"{field}_rounds"] = (statistics.median(vals),
                                                                        f"{min(vals):.0f}-{max(vals):.0f}", vals)
        out.append(row)
    return out


def _warm(paths: list[Path]) -> None:
    """Read every input once: the first row must not pay for pages the packing left uncached."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 22):
                pass


def _cpu_model() -> str:
    try:
        return next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=512)
    p.add_argument("--content", choices=("real", "tones"), default="real",
                   help="real: recordings of ../shared/audio-samples played back to back (see make_real_clips); "
                        "tones: tone mixtures + white noise")
    p.add_argument("--workers", type=int, default=min(4, len(os.sched_getaffinity(0))))
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are reported")
    p.add_argument("--epochs", type=int, default=5, help="epochs for the RSS growth check")
    p.add_argument("--quick", action="store_true", help="128 clips, 1 round, 2 epochs, no DALI")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--rows", default=ROWS, help="comma-separated subset of a,b,b',c,c',cb,d,e,f,f' (no report is written "
                   "then, unless --report; (c) and (d) are needed for one)")
    p.add_argument("--report", help="with --rows: write the report of those rows to OUT/REPORT.md and .png "
                                    "(no growth check, no DALI rows)")
    p.add_argument("--workdir", type=Path, help="keep the clips and shards here and reuse them on the next run")
    p.add_argument("--replot", action="store_true", help="only redraw throughput.png from the table in throughput.md")
    p.add_argument("--child", help=argparse.SUPPRESS)  # one row in this process (run_row)
    args = p.parse_args()
    if args.report and not {"c", "d"} <= set(args.rows.split(",")):
        p.error("--report needs rows c and d among --rows")
    if args.child:
        return _child(args.child, args.workdir, args.workers, args.epochs)
    if args.replot:
        return _plot([{k: (number(v) if k not in ("name", "epoch clips/s range", "steady clips/s range") else v)
                       for k, v in r.items()} for r in read_markdown_table(args.out / "throughput.md")],
                     args.out / "throughput.png")
    n, epochs, rounds = (128, 2, 1) if args.quick else (args.clips, args.epochs, args.rounds)
    torch.set_num_threads(1)
    from shardgen.recipes import get
    from shardgen.writer import PackOptions, pack

    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        src, ds = work / "src", work / "ds"
        content = args.content
        if not (ds / "dataset.json").exists():
            try:
                (make_real_clips if content == "real" else make_clips)(src, n, SECONDS, SR_IN)
            except FileNotFoundError as e:
                print(f"{e}: tones instead", flush=True)
                content = "tones"
                make_clips(src, n, SECONDS, SR_IN)
            pack(get("csv").load(src), ds, PackOptions(sample_rate=SR_IN, max_shard_bytes=16_000_000,
                                                        workers=args.workers, progress=False))
        content = "real" if next((src / "audio").glob("r*.flac"), None) else "tones"
        ds, shards, files = _inputs(work)
        _warm([Path(s) for s in shards] + files)
        print(f"{len(files)} clips ({content}), {len(shards)} shards, {args.workers} workers, "
              f"{len(os.sched_getaffinity(0))} CPUs", flush=True)
        rows = _rounds(args.rows.split(","), rounds, work, args.workers)
        if not args.quick and args.rows == ROWS:
            try:
                from benchmarks.dali_rows import dali_rows

                rows += dali_rows(ds, BATCH, SR, SECONDS, N_MELS, seconds_budget=30)
            except ImportError as e:
                print(f"  DALI rows skipped ({e})")
        growth = run_row("growth", work, args.workers, epochs) if args.rows == ROWS else None
    if growth is None and not args.report:  # a subset of rows, for development: printed, no report written
        for r in rows:
            print(f"  {r['name']}: epoch {r['epoch_clips_per_s']:.1f} clips/s ({r['epoch_clips_per_s_range']}), "
                  f"steady {r['clips_per_s']:.1f} ({r['clips_per_s_range']}), peak PSS {r['peak_pss_MB']:.0f} MB "
                  f"({r['peak_pss_MB_range']}), CPU {r['cpu_ms_per_clip']:.2f} ms/clip")
        return
    _report(rows, growth, n, content, rounds, args, load0)


def _report(rows: list[dict[str, Any]], growth: dict[str, Any] | None, n: int, content: str, rounds: int,
            args: argparse.Namespace, load0: tuple[float, float, float]) -> None:
    by = {r["name"].split(" ")[0]: r for r in rows}

    def ratio_check(name: str, x: str, y: str, target: float | None,
                    field: str = "clips_per_s") -> tuple[str, str, bool | None]:
        """Row x over row y against ``target``; with None, the ratios are reported without a verdict."""
        detail, ok = paired_ratio(by[x][f"{field}_rounds"], by[y][f"{field}_rounds"], target or 1.0)
        return name, detail, ok if target is not None else None

    c, d = by["(c)"], by["(d)"]
    checks: list[tuple[str, str, bool | None]] = [
        ratio_check("(c)/(d) >= 1.5, whole epoch", "(c)", "(d)", 1.5, "epoch_clips_per_s"),
        ratio_check("(c)/(d) >= 1.5, steady state", "(c)", "(d)", 1.5)]
    if "(b)" in by:
        checks += [
            ratio_check("(c)/(b) >= 1.0, whole epoch", "(c)", "(b)", 1.0, "epoch_clips_per_s"),
            ratio_check("(c)/(b) >= 1.0, steady state", "(c)", "(b)", 1.0)]
    if "(b')" in by:
        checks += [
            ratio_check("(c)/(b') (for reference: the loop with batched features), whole epoch", "(c)", "(b')", None,
                        "epoch_clips_per_s"),
            ratio_check("(c)/(b') (for reference), steady state", "(c)", "(b')", None)]
    checks += [
        ("(c)'s peak PSS <= (d)'s (medians over the rounds)",
         f"{c['peak_pss_MB']:.0f} MB vs {d['peak_pss_MB']:.0f} MB ({c['peak_pss_MB'] / d['peak_pss_MB']:.3f}; "
         f"rounds {' '.join(f'{a:.0f}/{b:.0f}' for a, b in zip(c['peak_pss_MB_rounds'], d['peak_pss_MB_rounds']))})",
         c["peak_pss_MB"] <= d["peak_pss_MB"]),
        ("(c)'s peak USS vs (d)'s (for reference: private pages alone, see above)",
         f"{c['peak_uss_MB']:.0f} MB vs {d['peak_uss_MB']:.0f} MB ({c['peak_uss_MB'] / d['peak_uss_MB']:.3f})", None),
        ("(d)/(c) CPU time per clip (for reference: how much less CPU ours spends per clip)",
         f"{d['cpu_ms_per_clip'] / c['cpu_ms_per_clip']:.3f}", None)]
    if "(cb)" in by:
        cb = by["(cb)"]
        checks += [
            ("(c)'s peak PSS vs (cb)'s (for reference: what holding local clips as spans saves)",
             f"{c['peak_pss_MB']:.0f} MB vs {cb['peak_pss_MB']:.0f} MB ({c['peak_pss_MB'] / cb['peak_pss_MB']:.3f})", None),
            ratio_check("(c)/(cb) clips/s (for reference), whole epoch", "(c)", "(cb)", None, "epoch_clips_per_s")]
    if "(a)" in by:
        checks.append(("(c)/(a) (CPU setup on this machine; for reference)",
                       f"{c['epoch_clips_per_s'] / by['(a)']['epoch_clips_per_s']:.3f}", None))
    checks.append(("time to first batch <= 1 s", f"{c['first_batch_s']:.3f} s", c["first_batch_s"] <= 1.0))
    if growth is not None:
        checks += [
            (f"RSS growth over {growth['epochs']} epochs <= 5 % (summed VmRSS)", f"{100 * growth['growth']:.1f} %",
             growth["growth"] <= 0.05),
            (f"PSS growth over {growth['epochs']} epochs <= 5 %", f"{100 * growth['pss_growth']:.1f} %",
             growth["pss_growth"] <= 0.05),
            (f"USS growth over {growth['epochs']} epochs (for reference)", f"{100 * growth['uss_growth']:.1f} %", None)]
    if "(f)" in by:
        f, f_cpu = by["(f)"]["clips_per_s"], by["(f')"]["clips_per_s"]
        checks += [ratio_check("(f)/(a) >= 0.9 (Frontend on the GPU)", "(f)", "(a)", 0.9),
                   ("(f)/(f') (for reference: what resampling on the GPU saves)", f"{f / f_cpu:.3f}", None)]
    for r in rows:
        for field, col in (("epoch_clips_per_s", "epoch clips/s"), ("clips_per_s", "steady clips/s"),
                           ("peak_pss_MB", "peak PSS MB"), ("peak_uss_MB", "peak USS MB"),
                           ("peak_rss_MB", "peak summed RSS MB")):
            if field in r:
                r[col] = r[field]
                if f"{field}_range" in r:
                    r[f"{col} range"] = r[f"{field}_range"]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    table = markdown_table(rows, ["name", "epoch clips/s", "epoch clips/s range", "steady clips/s", "steady clips/s range",
                                  "first_batch_s", "cpu_ms_per_clip", "peak PSS MB", "peak PSS MB range",
                                  "peak USS MB", "peak summed RSS MB", "notes"])
    verdicts = "\n".join(f"- {name}: {val} -> {'met' if ok else 'NOT met' if ok is not None else 'reported'}"
                         for name, val, ok in checks)
    load = os.getloadavg()
    name = args.report or "throughput"
    epochs_line = "" if growth is None else (
        f"Peak memory per epoch (MB, ours, persistent workers, {growth['epochs']} epochs): PSS "
        f"{growth['pss_MB_per_epoch']}, USS {growth['uss_MB_per_epoch']}, summed VmRSS {growth['rss_MB_per_epoch']}\n\n")
    machine = (f"{len(os.sched_getaffinity(0))} CPUs (nproc), {_cpu_model()}, {device}; torch {torch.__version__}, "
               f"libsndfile {sf.__libsndfile_version__}; 1-min load average {load0[0]:.2f} at the start, "
               f"{load[0]:.2f} at the end (other jobs shared the machine)")
    text = (f"# Loader throughput and memory\n\nMachine: {machine}.\n\n{n} clips of {SECONDS:g} s "
            f"({'real recordings played back to back, see make_real_clips' if content == 'real' else 'tones + noise'}; "
            f"FLAC {SR_IN} Hz stored, {SR} Hz target, {N_MELS} mels, SpecAugment, batch {BATCH}), {args.workers} "
            f"workers. Each row ran in a process of its own, {rounds} interleaved rounds (order rotated); the table "
            f"gives the median of the rounds and the range (slowest-fastest). epoch clips/s: clips over the time "
            f"from the row's start (its pool or DataLoader workers started within it) to its last clip; steady "
            f"clips/s: from the arrival of item 2 x workers, or of the first item when there are no more than 4 x workers "
            f"(512 clips: 8 batches; see _timed); cpu_ms_per_clip: CPU time (user + "
            f"system, every process of the row) over the epoch per clip; peak PSS: the largest proportional set size "
            f"of the row's whole process tree (its process + workers or pool, /proc/PID/smaps_rollup), sampled "
            f"every {SAMPLE_S:g} s from the parent during the epoch of a second, untimed run of the row in the same round (sampling slowed a timed row by up to 7 %); peak USS: the tree's private pages alone (PSS also counts its share of the "
            f"libraries that other Python processes on the machine map, so it moves with what else runs); peak "
            f"summed RSS counts the pages forked processes share once per process. A ratio target is met when both the ratio of the row medians and the median of the per-round "
            f"ratios meet it.\n\n{table}\n\n{epochs_line}{verdicts}\n\n![clips/s and memory]({name}.png)\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.md").write_text(text)
    _plot(rows, args.out / f"{name}.png")
    print(text)


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Clips/s over the epoch and in the steady state (median, bars from the slowest to the fastest
    round), and peak PSS of the process tree."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def span(r: dict[str, Any], col: str) -> tuple[float, float, float]:
        mid = r.get(col) or 0.0
        rng = r.get(f"{col} range")
        lo, hi = (float(v) for v in rng.split("-")) if isinstance(rng, str) and "-" in rng else (mid, mid)
        return mid, max(0.0, mid - lo), max(0.0, hi - mid)  # the range is printed rounded

    names = [r["name"] for r in rows][::-1]
    fig, axes = plt.subplots(1, 3, figsize=(17, 0.5 * len(rows) + 2), sharey=True)
    for ax, col, label in zip(axes, ("epoch clips/s", "steady clips/s", "peak PSS MB"),
                              ("clips/s, whole epoch (higher is better)", "clips/s, steady state (higher is better)",
                               "peak PSS of the process tree, MB (lower is better)")):
        vals = [span(r, col) for r in rows][::-1]
        ax.barh(names, [v[0] for v in vals], xerr=[[v[1] for v in vals], [v[2] for v in vals]], capsize=3,
                color=["tab:orange" if n.startswith("(c)") else "tab:blue" for n in names])
        ax.set_xlabel(label)
    fig.suptitle("median of the rounds; bars: slowest to fastest round")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
