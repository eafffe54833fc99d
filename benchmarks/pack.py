"""Pack throughput (clips/s, MB/s) for --workers 1 and 2, keeping FLAC vs transcoding, same run.

    .venv/bin/python benchmarks/pack.py [--clips 400] [--quick]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import make_clips, markdown_table  # noqa: E402
from shardgen.recipes import get  # noqa: E402
from shardgen.writer import PackOptions, pack  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--clips", type=int, default=400)
    p.add_argument("--quick", action="store_true", help="100 clips")
    args = p.parse_args()
    n = 100 if args.quick else args.clips
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = make_clips(Path(tmp) / "src", n, seconds=5.0, sample_rate=44100)
        src_mb = sum(f.stat().st_size for f in src.rglob("*.flac")) / 1e6
        col = get("csv").load(src)
        for mode, sr in (("keep FLAC 44.1 kHz", 44100), ("resample -> 32 kHz FLAC", 32000)):
            for workers in (1, 2):
                out = Path(tmp) / f"out-{sr}-{workers}"
                t0 = time.perf_counter()
                res = pack(col, out, PackOptions(sample_rate=sr, workers=workers, max_shard_bytes=64_000_000, progress=False))
                dt = time.perf_counter() - t0
                shards = sum(len(s["shards"]) for s in res.manifest["splits"].values())
                rows.append({"name": mode, "workers": workers, "clips": n, "seconds": dt, "clips_per_s": n / dt,
                             "source_MB_per_s": src_mb / dt, "shards": shards})
    for r in rows:
        base = next(b for b in rows if b["name"] == r["name"] and b["workers"] == 1)
        r["speedup_vs_1_worker"] = base["seconds"] / r["seconds"]
    table = markdown_table(rows, ["name", "workers", "clips", "seconds", "clips_per_s", "source_MB_per_s",
                                  "speedup_vs_1_worker", "shards"])
    text = (f"# shardgen pack throughput\n\n{n} clips of 5 s, 44.1 kHz mono FLAC sources ({src_mb:.0f} MB), "
            f"measured in one run on this machine ({_cpus()} CPUs).\n\n{table}\n")
    print(text)
    (Path(__file__).parent / "results" / "pack.md").write_text(text)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
