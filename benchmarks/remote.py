"""Remote shards vs local disk vs one request per clip: clips/s of the full CPU pipeline, one run.

A dataset of 5-s FLAC clips is generated and packed into shards of a few MB, then read with
``wds_audio.loader`` running the full CPU pipeline (decode + random 2-s crop, then log-mel +
SpecAugment computed in the workers, as the CPU setup of benchmarks/throughput.py; ``num_workers``
2, batch 32, persistent workers) from:

  local disk                    the baseline every remote row is compared with
  HTTP, 0 and 20 ms             tests/integration/faultserver.py, ``latency_s`` added to every request
  S3 (moto), 0 ms               moto's S3 server, reached through s3fs with AWS_ENDPOINT_URL
  S3, 0 and 20 ms               the fault server posing as an S3 endpoint (moto has no latency knob)

and the file-per-clip baseline: a map-style Dataset that GETs each clip as its own object from
the same HTTP server (20 ms), decodes and crops it the same way, in a DataLoader with the same
workers and batch size, the same log-mel + SpecAugment applied to each batch in the workers.
"decode + crop only" rows repeat local / HTTP 20 ms / S3 20 ms / file-per-clip with the GPU
setup's CPU work alone: less CPU per clip, so the transport is a larger share (a stricter check,
reported). Every server runs in its own process. Rows are measured in interleaved rounds (the
median is reported), each after one untimed warm-up epoch.

Goals (issue 7, full CPU pipeline): remote at 20 ms >= 0.9 x local; ours >= 10 x the
file-per-clip baseline.
``--sweep`` adds rows at HTTP 20 ms with other prefetch depths, stream counts and shard sizes.
The table and verdicts go to benchmarks/results/remote.md; a hand-written analysis after the
ANALYSIS marker there is kept. ``--quick`` only prints.

    .venv/bin/python benchmarks/remote.py [--clips 1200] [--rounds 3] [--epochs 3] [--sweep] [--quick]
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import io
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import (logmel_frontend, make_clips, markdown_table, number, paired_ratio,  # noqa: E402
                               read_markdown_table)
from wds_audio.io.options import SourceOptions  # noqa: E402

SR, SECONDS, CLIP, BATCH, WORKERS = 16000, 5.0, 2.0, 32, 2
SHARD_BYTES = 3_000_000
LATENCY_S = 0.020
BACKLOG = 128  # listen backlog of the benchmark servers (see _fault_server_main)
LIGHT = "decode + crop only"  # name prefix of the rows without features
ANALYSIS = "<!-- analysis: kept when the benchmark rewrites this file -->"


# ---------------------------------------------------------------- servers, each in its own process

def _fault_server_main(root: str, latency_s: float, backlog: int, conn: Any) -> None:
    from tests.integration import faultserver

    # socketserver's default listen backlog is 5: with more connects in flight the kernel drops the
    # SYNs and the client retries a second later. Real servers listen with hundreds (nginx: 511).
    faultserver._QuietServer.request_queue_size = backlog
    srv = faultserver.FaultServer(root).start()
    srv.latency_s = latency_s
    conn.send(srv.base)
    cpu = _cpu_s()
    while (cmd := conn.recv()) != "stop":
        if cmd == "take":  # requests and CPU seconds spent serving since the last take
            now = _cpu_s()
            conn.send((sum(srv.requests.values()), now - cpu))
            srv.clear()
            cpu = now
    srv.stop()


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _moto_main(conn: Any) -> None:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    conn.send(f"http://{host}:{port}")
    while conn.recv() != "stop":
        conn.send((None, None))  # moto keeps no request counts
    srv.stop()


@dataclass
class Server:
    """A server process; ``take()`` returns (requests, CPU seconds serving them) since the last call."""

    base: str
    conn: Any
    proc: Any

    def take(self) -> tuple[int | None, float | None]:
        self.conn.send("take")
        return self.conn.recv()

    def stop(self) -> None:
        self.conn.send("stop")
        self.proc.join(timeout=10)


def start(target: Callable[..., None], *args: Any) -> Server:
    here, there = get_context("fork").Pipe()
    proc = get_context("fork").Process(target=target, args=(*args, there), daemon=True)
    proc.start()
    return Server(here.recv(), here, proc)


@contextlib.contextmanager
def environ(env: dict[str, str]) -> Iterator[None]:
    """Set environment variables (as a user sets AWS_ENDPOINT_URL), restored afterwards."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def s3_env(endpoint: str) -> dict[str, str]:
    from tests.integration.conftest import s3_env as env

    return env(endpoint)


def upload(root: Path, bucket: str) -> None:
    import boto3

    client = boto3.client("s3")  # endpoint and credentials from the environment
    client.create_bucket(Bucket=bucket)
    for path in sorted(root.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, path.relative_to(root).as_posix())


# ---------------------------------------------------------------- the rows

@dataclass
class Row:
    """One configuration: ``run()`` makes a fresh reader and returns (clips/s, extra figures)."""

    name: str
    latency_ms: int
    run: Callable[[], tuple[float, dict[str, Any]]]
    notes: str = ""
    rates: list[float] = field(default_factory=list)
    firsts: list[float] = field(default_factory=list)  # ms from an epoch's start to its first batch, per round
    extra: dict[str, Any] = field(default_factory=dict)


def _timed_epochs(batches: Callable[[], Iterator[Any]], epochs: int,
                  server: Server | None) -> tuple[float, dict[str, Any]]:
    """One untimed warm-up epoch, then clips/s over ``epochs`` epochs, the median time from an
    epoch's start to its first batch, and the server's requests and CPU seconds per epoch (the
    server shares the machine's cores with the loader)."""
    sum(len(b) for b in batches())
    if server:
        server.take()
    t0 = time.perf_counter()
    clips, firsts = 0, []
    for _ in range(epochs):
        t = time.perf_counter()
        for i, b in enumerate(batches()):
            if i == 0:
                firsts.append(time.perf_counter() - t)
            clips += len(b)
    rate = clips / (time.perf_counter() - t0)
    requests, cpu = server.take() if server else (None, None)
    return rate, {"first_batch_ms": 1000 * statistics.median(firsts),
                  "requests_per_epoch": None if requests is None else requests / epochs,
                  "server_cpu_s_per_epoch": None if cpu is None else cpu / epochs}


def ours(source: str, env: dict[str, str], epochs: int, server: Server | None, **kw: Any) -> tuple[float, dict[str, Any]]:
    import wds_audio
    opts = SourceOptions(timeout_s=10, retries=3, backoff_s=0.1, prefetch=kw.pop("prefetch", SourceOptions.prefetch),
                         verify_remote=kw.pop("verify_remote", SourceOptions.verify_remote))
    if kw.pop("features", True):
        kw["frontend"] = _frontend()
    with environ(env):
        loader = wds_audio.loader(source, batch_size=BATCH, sample_rate=SR, clip_seconds=CLIP, num_workers=WORKERS,
                                  seed=0, training=True, persistent_workers=True, source_options=opts, **kw)
        rate, extra = _timed_epochs(lambda: iter(loader), epochs, server)
        m = loader.metrics()
        del loader  # shuts the persistent workers down
        gc.collect()
    # bytes from the source per epoch (the warm-up epoch is in the loader's counters too)
    src = m["source"]
    whole = src["sha256_checked"] + src["sha256_skipped"]
    return rate, {**extra, "MB_per_epoch": src["bytes_read"] / (epochs + 1) / 1e6,
                  "hashed": f"{src['sha256_checked']:.0f}/{whole:.0f}" if whole else None}


def _frontend() -> torch.nn.Module:
    """The CPU setup of benchmarks/throughput.py at 16 kHz: log-mel + SpecAugment in the workers."""
    return logmel_frontend(SR, n_fft=512, hop_length=160, n_mels=64, time_width=20, freq_width=8)


class ClipPerRequest(torch.utils.data.Dataset):
    """The usual file-per-clip Dataset: one GET per clip, then the same decode + random crop as ours
    (the features, when asked, are computed per batch in the workers: see ``file_per_clip``)."""

    def __init__(self, urls: list[str], labels: list[int], num_classes: int) -> None:
        self.urls, self.labels, self.num_classes = urls, labels, num_classes

    def __len__(self) -> int:
        return len(self.urls)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        with urllib.request.urlopen(self.urls[i], timeout=10) as r:  # noqa: S310 - our own server
            data = r.read()
        need = int(CLIP * SR)
        with sf.SoundFile(io.BytesIO(data)) as f:  # decode only the window, as ours does
            start = int(np.random.default_rng().integers(max(1, f.frames - need + 1)))
            f.seek(start)
            x = f.read(need, dtype="float32")
        x = np.pad(x, (0, need - len(x)))
        target = torch.zeros(self.num_classes)
        target[self.labels[i]] = 1
        return torch.from_numpy(x), target


class _FeatureCollate:
    """Stack a batch, then the same log-mel + SpecAugment as ours, in the DataLoader worker."""

    def __init__(self) -> None:
        self.frontend = _frontend()

    def __call__(self, items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        audio, targets = torch.utils.data.default_collate(items)
        with torch.no_grad():
            return self.frontend(audio), targets


def file_per_clip(src: Path, server: Server, epochs: int, features: bool = True) -> tuple[float, dict[str, Any]]:
    with open(src / "metadata.csv") as f:
        rows = list(csv.DictReader(f))
    classes = sorted({r["labels"] for r in rows})
    ds = ClipPerRequest([f"{server.base}/{r['path']}" for r in rows], [classes.index(r["labels"]) for r in rows],
                        len(classes))
    extra: dict[str, Any] = {"collate_fn": _FeatureCollate()} if features else {}
    dl = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=WORKERS, persistent_workers=True,
                                     **extra)
    rate, extra = _timed_epochs(lambda: (x for x, _ in dl), epochs, server)
    del dl
    gc.collect()
    return rate, {**extra, "MB_per_epoch": sum(
        (src / r["path"]).stat().st_size for r in rows) / 1e6}


# ---------------------------------------------------------------- data

def build(tmp: Path, clips: int, shard_bytes: int, name: str = "ds") -> tuple[Path, Path]:
    """(clip folder, packed dataset): ``clips`` 5-s FLAC clips at 16 kHz, shards of ``shard_bytes``."""
    from shardgen.recipes import get
    from shardgen.writer import PackOptions, pack

    src = tmp / "src"
    if not (src / "metadata.csv").exists():
        make_clips(src, clips, SECONDS, SR)
    ds = tmp / name
    pack(get("csv").load(src), ds, PackOptions(sample_rate=SR, max_shard_bytes=shard_bytes, workers=WORKERS,
                                                 progress=False))
    return src, ds


def describe(ds: Path) -> str:
    m = json.loads((ds / "dataset.json").read_text())
    shards = m["splits"]["train"]["shards"]
    mb = [s["bytes"] / 1e6 for s in shards]
    return f"{sum(s['samples'] for s in shards)} clips in {len(shards)} shards of {min(mb):.1f}-{max(mb):.1f} MB"


# ---------------------------------------------------------------- the run

def measure(rows: list[Row], rounds: int) -> None:
    """Interleaved rounds, so load from other jobs on the machine falls on every row alike; the
    order rotates by one row each round, so no row always runs right after the same one."""
    for r in range(rounds):
        k = r % len(rows)
        for row in rows[k:] + rows[:k]:
            rate, extra = row.run()
            row.rates.append(rate)
            row.firsts.append(extra.pop("first_batch_ms"))
            row.extra = extra
            print(f"  round {r + 1}/{rounds} {row.name}: {rate:.0f} clips/s {extra}", flush=True)


def table_rows(rows: list[Row], local: float) -> list[dict[str, Any]]:
    """x_local: against local disk with the same pipeline (the decode + crop rows against theirs)."""
    out = []
    light = next((statistics.median(r.rates) for r in rows if r.name == f"{LIGHT}, local disk"), None)
    for row in rows:
        med = statistics.median(row.rates)
        ref = light if row.name.startswith(LIGHT) and light else local
        rpe, cpu, mb = (row.extra.get(k) for k in ("requests_per_epoch", "server_cpu_s_per_epoch", "MB_per_epoch"))
        first = statistics.median(row.firsts) if row.firsts else None
        out.append({"name": row.name, "latency_ms": row.latency_ms,
                    "clips_per_s": med, "range": f"{min(row.rates):.0f}-{max(row.rates):.0f}",
                    "x_local": med / ref, "first_batch_ms": "" if first is None else f"{first:.0f}",
                    "requests_per_epoch": "" if rpe is None else f"{rpe:.0f}",
                    "MB_per_epoch": f"{mb:.1f}" if mb else "",
                    "server_cpu_s_per_epoch": "" if cpu is None else f"{cpu:.2f}",
                    "hashed": row.extra.get("hashed") or "", "notes": row.notes})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=1200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per measurement (after one warm-up)")
    p.add_argument("--sweep", action="store_true", help="also HTTP 20 ms rows with other prefetch/streams/shards")
    p.add_argument("--quick", action="store_true", help="96 clips, 1 round, 1 timed epoch; prints, writes nothing")
    p.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results, not with --quick)")
    p.add_argument("--replot", action="store_true", help="only redraw remote.png from the table in remote.md")
    args = p.parse_args()
    if args.replot:
        out = args.out or Path(__file__).parent / "results"
        plot(out / "remote.md", out / "remote.png")
        return
    if args.quick:
        args.clips, args.rounds, args.epochs = 96, 1, 1
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        src, ds = build(Path(tmp), args.clips, SHARD_BYTES)
        print(f"{describe(ds)}; {len(os.sched_getaffinity(0))} CPUs, load {load0[0]:.1f}", flush=True)
        servers = {lat: start(_fault_server_main, str(ds.parent), lat, BACKLOG) for lat in (0.0, LATENCY_S)}
        clip_server = start(_fault_server_main, str(src), LATENCY_S, BACKLOG)
        moto = start(_moto_main)
        with environ(s3_env(moto.base)):
            upload(ds, "bench")
        try:
            rows = _rows(ds, src, servers, clip_server, moto, args)
            if args.sweep:
                rows += _sweep_rows(Path(tmp), ds, servers[LATENCY_S], args)
            measure(rows, args.rounds)
        finally:
            for srv in (*servers.values(), clip_server, moto):
                srv.stop()
        _report(rows, describe(ds), args, load0, os.getloadavg())


def _rows(ds: Path, src: Path, servers: dict[float, Server], clip_server: Server, moto: Server,
          args: argparse.Namespace) -> list[Row]:
    e, ms, lat = args.epochs, round(LATENCY_S * 1000), LATENCY_S
    http = {la: f"{srv.base}/{ds.name}" for la, srv in servers.items()}
    s3 = {la: s3_env(srv.base) for la, srv in servers.items()}  # path-style: bucket = the dataset folder
    rows = [Row("ours, local disk", 0, lambda: ours(str(ds), {}, e, None))]
    for la in servers:
        rows.append(Row(f"ours, HTTP {round(la * 1000)} ms", round(la * 1000),
                        lambda la=la: ours(http[la], {}, e, servers[la])))
    rows.append(Row("ours, S3 (moto) 0 ms", 0, lambda: ours("s3://bench", s3_env(moto.base), e, None)))
    for la in servers:
        rows.append(Row(f"ours, S3 {round(la * 1000)} ms", round(la * 1000),
                        lambda la=la: ours(f"s3://{ds.name}", s3[la], e, servers[la]), "fault server as S3 endpoint"))
    rows.append(Row(f"ours, HTTP {ms} ms, sha256 every read", ms,
                    lambda: ours(http[lat], {}, e, servers[lat], verify_remote="always"),
                    'verify_remote="always" (the default before session 7): every whole read hashed'))
    rows.append(Row(f"ours, HTTP {ms} ms, sha256 off", ms,
                    lambda: ours(http[lat], {}, e, servers[lat], verify_remote="never"),
                    'verify_remote="never": what checking whole shards costs'))
    rows.append(Row(f"file-per-clip, HTTP {ms} ms", ms, lambda: file_per_clip(src, clip_server, e),
                    "map-style Dataset, one GET per clip"))
    light = "decode + crop only (the GPU setup's CPU work)"
    rows.append(Row(f"{LIGHT}, local disk", 0, lambda: ours(str(ds), {}, e, None, features=False), light))
    rows.append(Row(f"{LIGHT}, HTTP {ms} ms", ms, lambda: ours(http[lat], {}, e, servers[lat], features=False), light))
    rows.append(Row(f"{LIGHT}, S3 {ms} ms", ms,
                    lambda: ours(f"s3://{ds.name}", s3[lat], e, servers[lat], features=False),
                    light + "; fault server as S3 endpoint"))
    rows.append(Row(f"{LIGHT}, file-per-clip, HTTP {ms} ms", ms,
                    lambda: file_per_clip(src, clip_server, e, features=False), light + "; one GET per clip"))
    return rows


def _sweep_rows(tmp: Path, ds: Path, server: Server, args: argparse.Namespace) -> list[Row]:
    """HTTP 20 ms with other settings: what hides the latency (see benchmarks/results/remote.md)."""
    e, ms = args.epochs, round(LATENCY_S * 1000)
    url = f"{server.base}/{ds.name}"
    rows = [Row(f"ours, HTTP {ms} ms, prefetch {d}", ms, lambda d=d: ours(url, {}, e, server, prefetch=d),
                "sweep") for d in (0, 1, 2, 8)]
    rows += [Row(f"ours, HTTP {ms} ms, {s} streams", ms, lambda s=s: ours(url, {}, e, server, streams=s),
                 "sweep") for s in (2, 4)]
    _, big = build(tmp, args.clips, 4 * SHARD_BYTES, name="ds-big")
    big_url = f"{server.base}/{big.name}"
    rows.append(Row(f"ours, HTTP {ms} ms, shards x4", ms, lambda: ours(big_url, {}, e, server),
                    f"sweep: {describe(big)}"))
    return rows


def _report(rows: list[Row], data: str, args: argparse.Namespace, load0: tuple[float, ...],
            load1: tuple[float, ...]) -> None:
    by = {r.name: r for r in rows}
    ms = round(LATENCY_S * 1000)
    pairs = [(f"HTTP {ms} ms / local >= 0.9", f"ours, HTTP {ms} ms", "ours, local disk", 0.9),
             (f"S3 {ms} ms / local >= 0.9", f"ours, S3 {ms} ms", "ours, local disk", 0.9),
             (f"ours HTTP {ms} ms / file-per-clip HTTP {ms} ms >= 10", f"ours, HTTP {ms} ms", f"file-per-clip, HTTP {ms} ms", 10.0),
             (f"ours S3 {ms} ms / file-per-clip HTTP {ms} ms >= 10", f"ours, S3 {ms} ms", f"file-per-clip, HTTP {ms} ms", 10.0)]
    if f"{LIGHT}, local disk" in by:  # the same checks with less CPU per clip: stricter, reported
        pairs += [(f"{LIGHT}: {what} {ms} ms / {base} >= {goal:g}", f"{LIGHT}, {what} {ms} ms",
                   f"{LIGHT}, {'local disk' if base == 'local' else f'file-per-clip, HTTP {ms} ms'}", goal)
                  for base, goal in (("local", 0.9), ("file-per-clip", 10.0)) for what in ("HTTP", "S3")]
    verdicts = "\n".join(_verdict(name, by[x].rates, by[y].rates, goal) for name, x, y, goal in pairs)
    local = statistics.median(by["ours, local disk"].rates)
    table = markdown_table(table_rows(rows, local), ["name", "latency_ms", "clips_per_s", "range", "x_local",
                                                     "first_batch_ms", "requests_per_epoch", "MB_per_epoch", "server_cpu_s_per_epoch",
                                                     "hashed", "notes"])
    text = (f"# Remote reads: local vs HTTP vs S3, and one request per clip\n\n"
            f"`benchmarks/remote.py{' --quick' if args.quick else ''}{' --sweep' if args.sweep else ''}`: {data} "
            f"(5-s FLAC, 16 kHz), the full CPU pipeline: decode + random {CLIP:g}-s crop + log-mel (64 mels) + "
            f"SpecAugment in the workers (\"{LIGHT}\" rows: the GPU setup's CPU work alone), batch {BATCH}, num_workers {WORKERS} "
            f"(persistent), prefetch {SourceOptions.prefetch} (the default), 8 streams unless noted. Median of {args.rounds} interleaved round(s) (the "
            f"order rotated by one row each round) of {args.epochs} timed epoch(s) after a warm-up epoch; a goal is met "
            f"when both the ratio of the row medians and the median of the per-round ratios reach it; first_batch_ms: time from a "
            f"timed epoch's start to its first batch (median over epochs, then rounds); hashed: whole-shard reads whose "
            f"sha256 was computed / all whole-shard reads (warm-up epoch included, last round). {len(os.sched_getaffinity(0))} CPU cores shared "
            f"with other jobs; 1-min load average {load0[0]:.1f} at the start, {load1[0]:.1f} at the end.\n\n"
            f"{table}\n\n{verdicts}\n\n![clips/s and time to the first batch](remote.png)\n")
    print(text)
    out = args.out or (None if args.quick else Path(__file__).parent / "results")
    if out is not None:
        write_keeping_analysis(out / "remote.md", text)
        plot(out / "remote.md", out / "remote.png")


def plot(table: Path, path: Path) -> None:
    """remote.png from the table in remote.md: clips/s of every row (bars: slowest-fastest round),
    and each transport's time to the first batch against the latency per request."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_markdown_table(table) if number(r["clips_per_s"]) is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.42 * len(rows) + 2), gridspec_kw={"width_ratios": [3, 2]})
    names, rates = [r["name"] for r in rows][::-1], [number(r["clips_per_s"]) for r in rows][::-1]
    spans = [[float(x) for x in r["range"].split("-")] if "-" in r["range"] else [v, v] for r, v in zip(rows[::-1], rates)]
    err = [[v - lo for v, (lo, _) in zip(rates, spans)], [hi - v for v, (_, hi) in zip(rates, spans)]]
    left.barh(names, rates, xerr=err, capsize=2)
    left.set_xlabel("clips/s (median; bars: slowest-fastest round)")
    for prefix, marker in (("ours", "o"), (LIGHT, "s")):
        for transport in ("HTTP", "S3"):
            pts = sorted((int(r["latency_ms"]), number(r["first_batch_ms"])) for r in rows
                         if r["name"] == f"{prefix}, {transport} {r['latency_ms']} ms"
                         and number(r["first_batch_ms"]) is not None)
            if pts:
                right.plot(*zip(*pts), marker=marker, label=f"{prefix}: {transport}")
        local = [number(r["first_batch_ms"]) for r in rows if r["name"] == f"{prefix}, local disk"]
        if local and local[0] is not None:
            right.axhline(local[0], linestyle=":", color="grey")
    right.set_xlabel("latency per request (ms)")
    right.set_ylabel("ms to an epoch's first batch (dotted: local disk)")
    right.legend(fontsize=8)
    fig.suptitle("Remote reads (benchmarks/results/remote.md)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _verdict(name: str, x: list[float], y: list[float], goal: float) -> str:
    detail, met = paired_ratio(x, y, goal)
    return f"- {name}: {detail} -> {'met' if met else 'NOT met'}"


def write_keeping_analysis(path: Path, text: str) -> None:
    """Write ``text``, keeping a hand-written analysis that follows ANALYSIS in the old file."""
    old = path.read_text() if path.exists() else ""
    kept = old[old.index(ANALYSIS):] if ANALYSIS in old else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + ("\n" + kept if kept else ""))


if __name__ == "__main__":
    main()
