"""What DALI's readers are given: per-epoch file lists and .idx index files from the plan."""
from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..core.rng import sample_rng
from ..io.open import read_bytes
from ..io.options import SourceError, scheme_of
from ..pipeline.catalog import Catalog, Shard
from ..pipeline.plan import EpochPlan, Slice

log = logging.getLogger(__name__)
AUDIO_EXTS = ("flac", "wav", "ogg")  # what fn.decoders.audio reads (no MP3: shardgen transcodes it)
READER = "audio_reader"


# ------------------------------------------------------------------------------------ reader inputs

@dataclass
class ReaderInputs:
    """What one epoch's reader reads on this rank, and which of its positions are real samples."""

    mode: str  # "plan" or "reader"
    paths: list[str]
    index_paths: list[str] | None
    valid: np.ndarray  # per position of the epoch (plan mode: all batches; reader mode: real samples)
    skipped: Counter = field(default_factory=Counter)
    skipped_keys: list[str] = field(default_factory=list)


def batch_order(plan: EpochPlan) -> list[Slice]:
    """The rank's slots as slices, in the torch back end's batch order (batch i = stream i % k)."""
    b = plan.batch_size
    chunks: list[list[list[Slice]]] = []
    for sp in plan.streams:
        per_batch: list[list[Slice]] = [[] for _ in range(sp.batches)]
        pos = 0
        for sl in sp.slices:  # cut each stream's slices at batch boundaries, in one pass
            start = sl.start
            while start < sl.stop:
                i = pos // b
                take = min(sl.stop - start, (i + 1) * b - pos)
                per_batch[i].append(Slice(sl.shard, start, start + take, sl.rep, sl.valid))
                start += take
                pos += take
        chunks.append(per_batch)
    out: list[Slice] = []
    for i in range(plan.batches):
        s, j = plan.stream_of(i)
        out += chunks[s][j]
    return out


def _local_path(url: str) -> str:
    scheme = scheme_of(url)
    if scheme == "file":
        return url[len("file://"):]
    if scheme:
        raise ValueError(f"{url}: the DALI back end reads local shards only (fn.readers.webdataset opens paths); "
                         "copy the dataset to a local disk or use backend='torch' for remote sources")
    return url


class IndexUnusable(Exception):
    """A shard's .idx is missing, unreadable or not a v1.2 index of the catalogued sample count."""


class ShardIndex:
    """The lines of a shard's DALI .idx (v1.2), with per sample: its key and a stand-in if it has no audio."""

    def __init__(self, shard: Shard) -> None:
        try:
            lines = read_bytes(shard.index_url).decode().splitlines()  # type: ignore[arg-type]
        except (OSError, SourceError, UnicodeDecodeError, TypeError) as e:
            raise IndexUnusable(f"{shard.index_url}: {e}") from e
        head = lines[0].split() if lines else []
        if (len(head) != 2 or head[0] != "v1.2" or head[1] != str(shard.samples)
                or len(lines) < shard.samples + 1):
            raise IndexUnusable(f"{shard.index_url}: not a v1.2 DALI index of {shard.samples} samples")
        self.lines = lines[1:shard.samples + 1]
        self.keys: list[str] = []
        self.has_audio: list[bool] = []
        for line in self.lines:
            parts = line.split()
            exts, names = parts[0::4], parts[3::4]
            self.keys.append(names[0].rsplit("/", 1)[-1].split(".", 1)[0] if names else "")
            self.has_audio.append(any(e in AUDIO_EXTS for e in exts))
        good = [i for i, ok in enumerate(self.has_audio) if ok]
        if not good:
            raise ValueError(f"{shard.url}: no sample of this shard has an audio member ({'/'.join(AUDIO_EXTS)})")
        # the stand-in of a sample without audio: the previous good one (else the first good one)
        self.stand_in, last = [], good[0]
        for i, ok in enumerate(self.has_audio):
            last = i if ok else last
            self.stand_in.append(last)


def _write_index(path: str, lines: list[str]) -> None:
    with open(path, "w") as f:
        f.write(f"v1.2 {len(lines)}\n")
        f.write("\n".join(lines))
        f.write("\n")


def plan_inputs(catalog: Catalog, indexes: list[ShardIndex], plan: EpochPlan, workdir: str, training: bool,
                on_error: str) -> ReaderInputs:
    """Per-epoch index files for the rank's planned samples (one per run of one shard, in batch order)."""
    paths, index_paths, valid = [], [], []
    skipped: Counter = Counter()
    keys: list[str] = []
    runs: list[tuple[int, list[str]]] = []
    for sl in batch_order(plan):
        idx = indexes[sl.shard]
        lines = []
        for i in range(sl.start, sl.stop):
            if not idx.has_audio[i]:
                msg = f"{catalog.shards[sl.shard].url}: sample {idx.keys[i]} has no audio member"
                if on_error == "raise":
                    raise ValueError(msg)
                if sl.rep == 0:
                    skipped["no_audio"] += 1
                    keys.append(msg)
                    log.warning("skipped %s", msg)
                valid.append(training)  # a fill-in: the previous clip again, invalid in evaluation
            else:
                valid.append(sl.valid)
            lines.append(idx.lines[idx.stand_in[i]])
        if runs and runs[-1][0] == sl.shard:
            runs[-1][1].extend(lines)
        else:
            runs.append((sl.shard, lines))
    for n, (shard, lines) in enumerate(runs):
        path = os.path.join(workdir, f"e{plan.epoch}-r{plan.rank}-{n:06d}.idx")
        _write_index(path, lines)
        paths.append(_local_path(catalog.shards[shard].url))
        index_paths.append(path)
    return ReaderInputs("plan", paths, index_paths, np.asarray(valid, dtype=bool), skipped, keys)


def reader_inputs(catalog: Catalog, plan: EpochPlan, seed: int, training: bool) -> ReaderInputs:
    """Whole shards for DALI's own sharding (some .idx is missing); training permutes them per epoch."""
    order = list(range(len(catalog.shards)))
    if training:
        order = sample_rng(seed, plan.epoch, "", "dali-shard-order").permutation(len(order)).tolist()
    paths = [_local_path(catalog.shards[i].url) for i in order if catalog.shards[i].samples > 0]
    valid = np.zeros(plan.batches * plan.batch_size, dtype=bool)
    valid[: plan.real_samples] = True
    if training:
        valid[:] = True
    return ReaderInputs("reader", paths, None, valid)
