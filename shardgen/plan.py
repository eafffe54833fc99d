"""The pack plan: records -> shards (names and members), a pure function of the record list and options.

Shards are cut before anything is encoded, from an upper bound of each sample's size in the tar:
the audio header gives the clip's frames, rate and channels (``soundfile.info``, no decoding), from
which the bound follows: the file itself when it is kept as is, 16-bit PCM at the target rate (plus
FLAC's frame headers) when it is transcoded; the other members are sized exactly, the tar's padding
to 10240-byte records included. A shard is closed when the next sample could take it past
``max_shard_bytes`` (or when it holds ``max_shard_samples``), so every shard stays under the limit
and the cut does not depend on any encoder's output. Transcoded FLAC shards therefore come out at
about the codec's compression ratio times the limit (40-70 % for typical audio).

Because the plan is known up front, ``--part I/N`` can take whole shards: part I packs the shards
``i`` with ``i % N == I - 1`` of the plan's global list (round-robin). Round-robin rather than
contiguous: every split and fold is spread over all parts, so a costly group (MP3 transcoding, long
clips, the one big train split of AudioSet) does not land on one part, and every part's load is the
same to within one shard whatever the group sizes.

Example:
    >>> parse_part("2/7")
    (2, 7)
"""
from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass
from multiprocessing import current_process, get_context
from typing import Any, Iterable

import soundfile as sf

from .encode import KEEP_FORMATS
from .records import Problem, Record

TAR_BLOCK = 512
TAR_RECORD = 10240  # tarfile pads an archive to a multiple of 20 blocks
FLAC_OVERHEAD = 1.02  # frame + subframe headers when FLAC cannot compress a block (verbatim)
FLAC_FIXED = 8192  # STREAMINFO, seek table, padding and vendor string, bounded


@dataclass(frozen=True)
class ShardSpec:
    """One planned shard: its name and the indices of its records in the group's write order."""

    rel: str
    split: str
    fold: int | None
    group: str
    records: tuple[Record, ...]
    bound: int  # upper bound of the tar's size in bytes

    @property
    def keys(self) -> list[str]:
        return [r.key for r in self.records]


def parse_part(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 1 <= I <= N; a ValueError says what is wrong otherwise."""
    head, sep, tail = str(text).partition("/")
    if not sep:
        raise ValueError(f"part {text!r} must look like I/N (e.g. 1/4), 1-based")
    try:
        i, n = int(head), int(tail)
    except ValueError:
        raise ValueError(f"part {text!r}: I and N must be integers (e.g. 1/4)") from None
    if n < 1:
        raise ValueError(f"part {text!r}: N must be at least 1")
    if not 1 <= i <= n:
        raise ValueError(f"part {text!r}: I must be between 1 and {n} (parts are numbered from 1)")
    return i, n


def _member(n: int) -> int:
    return TAR_BLOCK + (n + TAR_BLOCK - 1) // TAR_BLOCK * TAR_BLOCK


def probe(args: tuple[Record, int, str, int, bool, int]) -> int | Problem:
    """Upper bound of one sample's bytes in a tar, from its audio header; a Problem if it has no audio."""
    record, sr, codec, channels, multi_label, num_classes = args
    where = f"{record.where()} (key {record.key})"
    src = io.BytesIO(record.audio) if record.audio is not None else record.path
    try:
        info = sf.info(src)
    except Exception as e:  # soundfile raises RuntimeError/LibsndfileError/OSError
        return Problem(where, f"cannot open audio ({e})")
    frames = info.frames
    if record.start is not None or record.end is not None:
        start = int(round((record.start or 0.0) * info.samplerate))
        stop = int(round(record.end * info.samplerate)) if record.end is not None else frames
        frames = max(0, min(stop, frames) - start)
    if frames <= 0:
        return Problem(where, "zero-length clip")
    ext = KEEP_FORMATS.get(info.format)
    kept = (ext is not None and record.start is None and record.end is None and info.samplerate == sr
            and info.channels == channels and (ext != "wav" or info.subtype == "PCM_16"))
    if kept:
        audio = len(record.audio) if record.audio is not None else record.path.stat().st_size
        out_frames = frames
    else:
        out_frames = math.ceil(frames * sr / info.samplerate) + 2
        pcm = out_frames * channels * 2
        audio = 44 + pcm if codec == "wav" else int(pcm * FLAC_OVERHEAD) + FLAC_FIXED
    meta = dict(record.extra)
    meta.update({"key": record.key, "labels": list(record.labels), "split": record.split, "fold": record.fold,
                 "group": record.group, "duration": out_frames / sr, "sample_rate": sr, "source": record.source})
    js = len(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()) + 24  # duration's digits
    cls = _member(len(str(record.labels[0]))) if (not multi_label and record.labels) else 0
    return _member(audio) + _member(js) + _member(num_classes) + cls


def probe_all(records: list[Record], sr: int, codec: str, channels: int, multi_label: bool,
              num_classes: int, workers: int) -> list[int | Problem]:
    jobs = [(r, sr, codec, channels, multi_label, num_classes) for r in records]
    if workers <= 1 or len(jobs) < 64 or current_process().daemon:
        return list(map(probe, jobs))
    with get_context("fork").Pool(workers) as pool:
        return pool.map(probe, jobs, chunksize=64)


def tar_bound(members: int) -> int:
    """Bytes of a tar whose members take ``members`` bytes: two zero blocks, padded to a record."""
    return (members + 2 * TAR_BLOCK + TAR_RECORD - 1) // TAR_RECORD * TAR_RECORD


def cut(groups: Iterable[tuple[tuple[str, int | None], list[tuple[Record, int]]]], max_bytes: int,
        max_samples: int | None, group_name) -> list[ShardSpec]:
    """Cut each group's (record, bound) list, in order, into shards; returns every group's shards in order."""
    specs: list[ShardSpec] = []
    for (split, fold), items in groups:
        number, cur, total = 0, [], 0
        for rec, size in items:
            full = cur and (tar_bound(total + size) > max_bytes or (max_samples and len(cur) >= max_samples))
            if full:
                specs.append(_spec(split, fold, group_name(fold), number, cur, total))
                number, cur, total = number + 1, [], 0
            cur.append(rec)
            total += size
        if cur:
            specs.append(_spec(split, fold, group_name(fold), number, cur, total))
    return specs


def _spec(split: str, fold: int | None, group: str, number: int, recs: list[Record], total: int) -> ShardSpec:
    return ShardSpec(f"{split}/{group}-{number:06d}.tar", split, fold, group, tuple(recs), tar_bound(total))


def take_part(specs: list[ShardSpec], part: int, parts: int) -> list[ShardSpec]:
    """Part ``part`` of ``parts`` (1-based): every ``parts``-th shard of the plan, round-robin."""
    return [s for i, s in enumerate(specs) if i % parts == part - 1]


def digest(specs: list[ShardSpec]) -> str:
    """sha256 of the plan: shard names and their keys, in order."""
    h = hashlib.sha256()
    for s in specs:
        h.update(json.dumps([s.rel, s.keys]).encode())
    return h.hexdigest()


def describe(specs: list[ShardSpec]) -> dict[str, Any]:
    return {"shards": len(specs), "records": sum(len(s.records) for s in specs)}
