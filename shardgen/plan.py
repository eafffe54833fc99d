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
import os
from concurrent.futures import ProcessPoolExecutor
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


@dataclass(frozen=True)
class Header:
    """What planning needs of a clip's header, as soundfile.info gives it."""

    format: str
    subtype: str
    samplerate: int
    channels: int
    frames: int


def read_header(src: bytes | Any) -> Header | None:
    """The header of a plain FLAC or 16/24/32-bit PCM WAV file (``src``: its bytes or path), read
    directly; None for anything else or anything unusual (an ID3 tag, an unknown length, a data
    chunk longer than the file, WAVE_FORMAT_EXTENSIBLE), which soundfile then reads.

    soundfile.info took ~0.1 ms per clip (libsndfile sets up a whole decoder, whose CPU probing
    traps to the hypervisor on a VM), ~1.5 % of packing a 5-s clip, once per clip of the
    dataset before any encoding; this takes ~10 us. tests/shardgen/test_plan.py holds the two
    to the same figures, on real recordings and every layout written there."""
    if isinstance(src, (bytes, bytearray)):
        head, size = bytes(src[:65536]), len(src)
    else:
        try:
            with open(src, "rb") as f:
                head = f.read(65536)
                size = os.fstat(f.fileno()).st_size
        except OSError:
            return None
    if head[:4] == b"fLaC" and len(head) >= 42 and head[4] & 0x7F == 0 and int.from_bytes(head[5:8], "big") == 34:
        bits = int.from_bytes(head[18:26], "big")  # rate 20, channels-1 3, bits-1 5, total samples 36
        rate, ch, bps, total = bits >> 44, (bits >> 41 & 7) + 1, (bits >> 36 & 31) + 1, bits & (1 << 36) - 1
        if rate == 0 or total == 0 or bps not in (8, 16, 24):
            return None
        return Header("FLAC", {8: "PCM_S8", 16: "PCM_16", 24: "PCM_24"}[bps], rate, ch, total)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, fmt = 12, None
    while pos + 8 <= len(head):
        cid, n = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        body = pos + 8
        if cid == b"fmt ":
            if n < 16 or body + 16 > len(head):
                return None
            tag, ch, rate = (int.from_bytes(head[body + a:body + b], "little") for a, b in ((0, 2), (2, 4), (4, 8)))
            align, bps = (int.from_bytes(head[body + a:body + b], "little") for a, b in ((12, 14), (14, 16)))
            if tag != 1 or bps not in (16, 24, 32) or ch < 1 or rate < 1 or align != ch * bps // 8:
                return None
            fmt = (rate, ch, bps, align)
        elif cid == b"data":
            if fmt is None or body + n > size:
                return None
            rate, ch, bps, align = fmt
            return Header("WAV", f"PCM_{bps}", rate, ch, n // align)
        pos = body + n + (n & 1)
    return None


def probe(args: tuple[Record, int, str, int, bool, int]) -> int | Problem:
    """Upper bound of one sample's bytes in a tar, from its audio header; a Problem if it has no audio."""
    record, sr, codec, channels, multi_label, num_classes = args
    where = f"{record.where()} (key {record.key})"
    info: Any = read_header(record.audio if record.audio is not None else record.path)
    if info is None:
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
    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as ex:  # see writer._encoded: not a Pool
        return list(ex.map(probe, jobs, chunksize=64))


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
