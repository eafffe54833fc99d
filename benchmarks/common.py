"""Shared benchmark helpers: datasets made on the spot, process-tree RSS, markdown tables, charts."""
from __future__ import annotations

import csv
import os
import resource
import statistics
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf


def make_clips(root: Path, n: int, seconds: float, sample_rate: int, classes: int = 10, seed: int = 0,
               workers: int | None = None) -> Path:
    """``n`` FLAC clips (tone mixtures + noise) at ``sample_rate`` in the csv recipe layout, written
    by ``workers`` processes (default: every CPU)."""
    return _write_set(root, n, partial(_write_clip, root, seconds, sample_rate, classes, seed), workers)


def _write_set(root: Path, n: int, job: Any, workers: int | None) -> Path:
    """Clip ``i`` for i < n by ``job(i)`` (which returns its metadata row) in a fork pool, then metadata.csv."""
    from multiprocessing import get_context

    (root / "audio").mkdir(parents=True, exist_ok=True)
    with get_context("fork").Pool(workers or len(os.sched_getaffinity(0))) as pool:
        rows = pool.map(job, range(n), chunksize=16)
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def _write_clip(root: Path, seconds: float, sample_rate: int, classes: int, seed: int, i: int) -> dict[str, Any]:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rng = np.random.default_rng([seed, i])
    c = int(rng.integers(classes))
    x = 0.2 * np.sin(2 * np.pi * (200 + 150 * c) * t) + 0.05 * rng.standard_normal(len(t))
    x *= 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t)
    rel = f"audio/c{i:05d}.flac"
    sf.write(root / rel, x.astype(np.float32), sample_rate, format="FLAC", subtype="PCM_16")
    return {"path": rel, "labels": f"class{c}", "split": "train", "fold": 1 + i % 5, "group": f"g{i}"}


SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "audio-samples"


def make_real_clips(root: Path, n: int, seconds: float, sample_rate: int, seed: int = 0, samples: Path = SAMPLES,
                    workers: int | None = None) -> Path:
    """``n`` FLAC clips of real recordings at ``sample_rate`` in the csv recipe layout: each clip is
    recordings of one label of ../shared/audio-samples (sound effects or spoken digits, 16 kHz),
    resampled with soxr HQ and played back to back (in a random order, each at a random gain
    between -6 and 0 dB) until the clip is full. Real content throughout, so FLAC compresses and
    decodes as it does for real data (silence and noise floors of real microphones, no zero
    padding, which FLAC would store as near-free constant subframes). Raises FileNotFoundError
    when the recordings are absent."""
    folders = sorted({p.parent for p in samples.glob("*/*/*.flac")})
    if not folders:
        raise FileNotFoundError(f"no recordings under {samples}")
    return _write_set(root, n, partial(_write_real_clip, root, seconds, sample_rate, seed, folders), workers)


def _write_real_clip(root: Path, seconds: float, sample_rate: int, seed: int, folders: list[Path],
                     i: int) -> dict[str, Any]:
    import soxr

    rng = np.random.default_rng([seed, i])
    c = int(rng.integers(len(folders)))
    files = sorted(folders[c].glob("*.flac"))
    need, parts, have = int(seconds * sample_rate), [], 0
    while have < need:
        for k in rng.permutation(len(files)):
            x, sr = sf.read(files[k], dtype="float32")
            x = soxr.resample(x, sr, sample_rate, quality="HQ") * np.float32(10 ** (rng.uniform(-6, 0) / 20))
            parts.append(x)
            have += len(x)
            if have >= need:
                break
    x = np.clip(np.concatenate(parts)[:need], -1.0, 1.0)
    label = f"{folders[c].parent.name}-{folders[c].name}"
    rel = f"audio/r{i:05d}.flac"
    sf.write(root / rel, x, sample_rate, format="FLAC", subtype="PCM_16")
    return {"path": rel, "labels": label, "split": "train", "fold": 1 + i % 5, "group": f"g{i}"}


def tree_rss_mb(pid: int | None = None, pss: bool = False) -> float:
    """Memory of a process and all its descendants, in MB (Linux /proc): the sum of their VmRSS,
    or with ``pss`` of their proportional set sizes (a page shared by n processes counts 1/n in each).

    The sum of VmRSS counts the pages that forked workers share with their parent (torch's
    libraries, the parent's heap) once per process: 35 GB for 15 workers on a 16-core machine. PSS
    gives what the tree holds, but reading it (smaps_rollup) took 29 ms for a tree of one process
    here, against 3.6 ms with VmRSS (mostly listing /proc), and sampling it every 0.2 s during a
    timed row made our row ~13 % slower (paired runs). So timed rows sample VmRSS, and only the
    untimed growth check reads PSS. Falls back to VmRSS where smaps_rollup is missing."""
    pid = pid or os.getpid()
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += _memory_kb(p, pss)
        todo += children.get(p, [])
    return total / 1024


def tree_memory_mb(pid: int | None = None) -> dict[str, float]:
    """PSS, summed VmRSS and USS (private pages: Private_Clean + Private_Dirty) of a process and all
    its descendants, in MB, from one read of each one's /proc/PID/smaps_rollup. USS is what the
    tree alone holds; PSS adds its share of the pages it shares, also with processes outside it (the
    libraries every Python process of the machine maps), so it moves with what else runs."""
    out = {"pss": 0.0, "rss": 0.0, "uss": 0.0}
    for p in _tree(pid or os.getpid()):
        try:
            fields = {ln.split(":", 1)[0]: int(ln.split()[1]) for ln in open(f"/proc/{p}/smaps_rollup")
                      if ln.rstrip().endswith("kB")}
        except (OSError, ValueError, IndexError):
            continue
        out["pss"] += fields.get("Pss", 0) / 1024
        out["rss"] += fields.get("Rss", 0) / 1024
        out["uss"] += (fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)) / 1024
    return out


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _memory_kb(pid: int, pss: bool = False) -> int:
    sources = ((f"/proc/{pid}/smaps_rollup", "Pss:"),) if pss else ()
    for name, field in sources + ((f"/proc/{pid}/status", "VmRSS:"),):
        try:
            for line in open(name):
                if line.startswith(field):
                    return int(line.split()[1])
        except OSError:
            pass
    return 0


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its children that have exited (DataLoader
    workers and pool processes are joined when a row ends, so a row's delta covers them)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def logmel_frontend(sample_rate: int, n_fft: int, hop_length: int, n_mels: int, time_width: int,
                    freq_width: int, input_sample_rate: int | None = None) -> Any:
    """The benchmarks' feature stage: log-mel + SpecAugment (2 time and 2 frequency masks), training mode."""
    from wds_audio.signal.augment.specaugment import SpecAugment
    from wds_audio.device.frontend import Frontend

    return Frontend(sample_rate=sample_rate, features="logmel", n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                    input_sample_rate=input_sample_rate,
                    specaugment=SpecAugment(time_masks=2, time_width=time_width, freq_masks=2, freq_width=freq_width,
                                            p=1.0)).train()


class PeakRSS:
    """Samples the process tree's summed VmRSS (see tree_rss_mb) in a thread; ``peak`` in MB."""

    def __init__(self, interval: float = 0.2) -> None:
        self.peak, self.interval, self._stop = 0.0, interval, threading.Event()

    def __enter__(self) -> "PeakRSS":
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_mb())
            time.sleep(self.interval)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, tree_rss_mb())


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:,.2f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def bar_chart(rows: list[dict[str, Any]], key: str | list[str], path: Path, title: str) -> None:
    """One horizontal bar panel per key (rows without a value for it get no bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [key] if isinstance(key, str) else key
    fig, axes = plt.subplots(1, len(keys), figsize=(8 + 4 * (len(keys) - 1), 0.5 * len(rows) + 1.5), sharey=True,
                             squeeze=False)
    for ax, k in zip(axes[0], keys):
        ax.barh([r["name"] for r in rows][::-1], [r.get(k) or 0 for r in rows][::-1])
        ax.set_xlabel(k)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_markdown_table(path: Path) -> list[dict[str, str]]:
    """The first table of a results page (as markdown_table writes it), one dict per row."""
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]


def number(v: str) -> float | None:
    """A table cell as a number ("1,335.17" -> 1335.17), None when empty or not a number."""
    try:
        return float(v.replace(",", ""))
    except ValueError:
        return None


def paired_ratio(x: list[float], y: list[float], goal: float) -> tuple[str, bool]:
    """Row x over row y, measured in the same interleaved rounds: met only when the ratio of the row
    medians and the median of the per-round ratios (the two rows ran minutes apart at most, under
    the same outside load) both reach ``goal``. Returns the detail for the report and the verdict."""
    whole = statistics.median(x) / statistics.median(y)
    per = [a / b for a, b in zip(x, y)]
    mid = statistics.median(per)
    detail = (f"ratio of the row medians {whole:.3f}, median of the per-round ratios {mid:.3f} "
              f"(rounds: {' '.join(f'{v:.2f}' for v in per)})")
    return detail, whole >= goal and mid >= goal
