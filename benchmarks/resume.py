"""Time to the first batch after a mid-epoch resume, over HTTP with 20 ms of latency per request.

Rows, each measured in every round (rounds interleave the rows, so outside load hits them alike):

  fresh start                    a new loader, iter(), the first batch of the epoch
  resume at 90 %                 a new loader, load_state_dict(batches = 90 % of the epoch), the first batch
  resume at 90 %, rebalanced     the same with a Rebalance stage: its reservoir depends on the labels
                                 seen, so these streams read their consumed samples again (no decode)
  whole epoch                    for scale: what a resume that re-reads the consumed part costs at most

The server is tests/integration/faultserver.py with ``latency_s`` added to every request; the
loader decodes and crops (no features), training, 2 workers. Goal (issue 21): resume at 90 % /
fresh start <= 1.5 (the median of the per-round ratios and the ratio of the medians).

    .venv/bin/python benchmarks/resume.py [--clips 1200] [--rounds 5] [--quick]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import wds_audio  # noqa: E402
from benchmarks.common import markdown_table  # noqa: E402
from benchmarks.remote import BACKLOG, LATENCY_S, SHARD_BYTES, _fault_server_main, build, describe, start  # noqa: E402

GOAL = 1.5
KW = dict(split="train", batch_size=32, sample_rate=16000, clip_seconds=2.0, num_workers=2, seed=0, training=True)


def first_batch_s(url: str, at: float | None, **extra: Any) -> tuple[float, float]:
    """(seconds to the first batch, seconds of the rest of the epoch) of a new loader, resumed at
    fraction ``at`` of the epoch (None: from its start)."""
    t0 = time.perf_counter()
    loader = wds_audio.loader(url, **KW, **extra)
    if at is not None:
        loader.load_state_dict({**loader.state_dict(), "batches": int(len(loader) * at)})
    it = iter(loader)
    next(it)
    first = time.perf_counter() - t0
    for _ in it:
        pass
    rest = time.perf_counter() - t0 - first
    del it, loader
    return first, rest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=1200)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="160 clips, 2 rounds; prints, writes nothing")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args()
    if args.quick:
        args.clips, args.rounds = 160, 2
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        _, ds = build(Path(tmp), args.clips, SHARD_BYTES)
        what = describe(ds)
        print(f"{what}; {len(os.sched_getaffinity(0))} CPUs, load {load0[0]:.1f}", flush=True)
        server = start(_fault_server_main, str(ds.parent), LATENCY_S, BACKLOG)
        url = f"{server.base}/{ds.name}"
        cases: dict[str, Callable[[], tuple[float, float]]] = {
            "fresh start": lambda: first_batch_s(url, None),
            "resume at 90 %": lambda: first_batch_s(url, 0.9),
            "resume at 90 %, rebalanced": lambda: first_batch_s(url, 0.9, rebalance=wds_audio.Rebalance("sqrt")),
        }
        try:
            first_batch_s(url, None)  # warm-up: page cache, imports
            for r in range(args.rounds):
                for name, run in cases.items():
                    first, rest = run()
                    rows.setdefault(name, []).append(first)
                    if name == "fresh start":
                        rows.setdefault("whole epoch", []).append(first + rest)
                print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in rows.items()), flush=True)
        finally:
            server.stop()
    report(rows, what, args, load0, os.getloadavg())


def report(rows: dict[str, list[float]], what: str, args: argparse.Namespace, load0: tuple, load1: tuple) -> None:
    fresh = rows["fresh start"]
    table = []
    for name, v in rows.items():
        per = [a / b for a, b in zip(v, fresh)]
        table.append({"name": name, "median ms": statistics.median(v) * 1000, "min ms": min(v) * 1000,
                      "max ms": max(v) * 1000, "/ fresh (median of rounds)": statistics.median(per)})
    r90 = rows["resume at 90 %"]
    whole, per = statistics.median(r90) / statistics.median(fresh), statistics.median(a / b for a, b in zip(r90, fresh))
    verdict = "met" if max(whole, per) <= GOAL else "not met"
    text = (f"# Resume: time to the first batch (HTTP, {round(LATENCY_S * 1000)} ms per request)\n\n"
            f"{what}; loader: {KW}; {args.rounds} rounds, rows interleaved in each; "
            f"{len(os.sched_getaffinity(0))} CPUs, load average {load0[0]:.1f} before, {load1[0]:.1f} after.\n\n"
            + markdown_table(table, ["name", "median ms", "min ms", "max ms", "/ fresh (median of rounds)"])
            + f"\n\nGoal resume at 90 % / fresh start <= {GOAL}: ratio of the medians {whole:.2f}, median of the "
              f"per-round ratios {per:.2f}: **{verdict}**.\n")
    print(text)
    if args.quick:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "resume.md").write_text(text + "\n![time to first batch](resume.png)\n")
    _plot(rows, args.out / "resume.png")


def _plot(rows: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.boxplot([[x * 1000 for x in rows[n]] for n in names], orientation="horizontal", tick_labels=names)
    ax.set_xscale("log")
    ax.set_xlabel("ms to the first batch (whole epoch: ms for all of it), log scale")
    ax.set_title(f"Resume over HTTP with {round(LATENCY_S * 1000)} ms latency")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
