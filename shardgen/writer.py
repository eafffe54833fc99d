"""Records -> size-targeted tar shards, DALI indexes and ``dataset.json``.

Deterministic: records are grouped by (split, fold), put in key-hash order, encoded (in parallel,
results consumed in order) and cut into shards by encoded size alone, so the bytes do not
depend on ``workers``. Atomic: every file is written under a temporary name and renamed
when complete, the index before its tar, the manifest last. Resumable: each finished
shard is appended to a journal; ``resume=True`` keeps the journalled shards whose sha256
still matches and redoes the rest, giving the same bytes as an uninterrupted run.

Example:
    >>> from shardgen.writer import PackOptions, pack          # doctest: +SKIP
    >>> manifest = pack(collection, "out/", PackOptions(sample_rate=16000, workers=4))
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterator

from tqdm import tqdm

from . import __version__
from .encode import EncodeError, Encoded, encode_record
from .records import Collection, Problem, Record
from .tarfmt import FORMAT, format_index, member_info, split_name

FORMAT_VERSION = 1
MANIFEST = "dataset.json"
JOURNAL = ".shardgen-journal.jsonl"
TMP_MARK = ".tmp-"


class PackError(Exception):
    """Packing cannot go on; the message names the file or row at fault."""


@dataclass
class PackOptions:
    sample_rate: int = 16000
    codec: str = "flac"
    channels: int = 1
    max_shard_bytes: int = 256 * 1000 * 1000
    max_shard_samples: int | None = None
    workers: int = 1
    on_error: str = "raise"
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        if self.codec not in ("flac", "wav"):
            raise ValueError(f"codec must be 'flac' or 'wav', got {self.codec!r}")
        if self.max_shard_bytes < 1024 or (self.max_shard_samples is not None and self.max_shard_samples < 1):
            raise ValueError("max_shard_bytes must be >= 1024 and max_shard_samples >= 1")

    def fingerprint_fields(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("sample_rate", "codec", "channels", "max_shard_bytes", "max_shard_samples")}


@dataclass
class PackResult:
    manifest: dict[str, Any]
    problems: list[Problem]
    seconds: float
    kept_shards: int = 0
    encoded_bytes: int = 0
    encoded_clips: int = 0


@dataclass
class _Shard:
    """A shard being written: its temporary file and what it holds so far."""

    path: Path
    rel: str
    split: str
    fold: int | None
    group: str
    num_classes: int
    tmp: Path = field(init=False)
    samples: int = 0
    consumed: int = 0
    bytes_est: int = 1024  # end-of-archive blocks
    duration: float = 0.0
    keys: list[str] = field(default_factory=list)
    class_counts: list[int] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tmp = self.path.with_name(f"{self.path.name}{TMP_MARK}{os.getpid()}")
        self.class_counts = [0] * self.num_classes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = _HashingFile(open(self.tmp, "wb"))
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=FORMAT)
        self._index: list[list[tuple[str, int, int, str]]] = []

    def add(self, members: list[tuple[str, bytes]], record: Record, duration: float) -> None:
        entries = []
        for name, data in members:
            self._tar.addfile(member_info(name, len(data)), io.BytesIO(data))
            data_offset = self._tar.offset - (len(data) + 511) // 512 * 512
            entries.append((split_name(name)[1], data_offset, len(data), name))
        self._index.append(entries)
        self.bytes_est += sample_bytes(members)
        self.samples += 1
        self.duration += duration
        self.keys.append(record.key)
        for c in record.labels:
            self.class_counts[c] += 1

    def finish(self) -> dict[str, Any]:
        self._tar.close()
        self._file.close()  # flushed and fsynced
        # the index and checksum were kept while writing: the shard is never read back
        atomic_write(self.path.with_suffix(".idx"), format_index(self._index).encode())
        os.replace(self.tmp, self.path)  # the tar appears only once complete, after its index
        return {
            "path": self.rel, "index": self.rel[:-4] + ".idx", "split": self.split, "fold": self.fold,
            "group": self.group, "samples": self.samples, "bytes": self._file.size,
            "sha256": self._file.sha.hexdigest(), "duration": round(self.duration, 3),
            "class_counts": self.class_counts, "first_key": self.keys[0] if self.keys else None,
            "last_key": self.keys[-1] if self.keys else None, "consumed": self.consumed,
            "skipped": [p.to_json() for p in self.skipped],
        }

    def abort(self) -> None:
        try:
            self._file.f.close()  # no flush/fsync: on a full disk they would fail again
        except OSError:
            pass
        self.tmp.unlink(missing_ok=True)


class _HashingFile:
    """A write-only file that keeps the sha256 and size of what went through it."""

    def __init__(self, f: Any) -> None:
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.f.write(data)

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()


def sample_bytes(members: list[tuple[str, bytes]]) -> int:
    return sum(512 + (len(d) + 511) // 512 * 512 for _, d in members)


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def shard_group(fold: int | None) -> str:
    return "all" if fold is None else f"fold{fold}"


def sample_members(record: Record, enc: Encoded, multi_label: bool, num_classes: int) -> list[tuple[str, bytes]]:
    """The tar members of one sample, in the order they are written."""
    meta = dict(record.extra)
    meta.update({
        "key": record.key, "labels": list(record.labels), "split": record.split, "fold": record.fold,
        "group": record.group, "duration": round(enc.duration, 6), "sample_rate": enc.sample_rate,
        "source": record.source,
    })
    hot = bytearray(num_classes)
    for c in record.labels:
        hot[c] = 1
    members = [(f"{record.key}.{enc.ext}", enc.data)]
    if not multi_label and record.labels:
        members.append((f"{record.key}.cls", str(record.labels[0]).encode()))
    members.append((f"{record.key}.json", json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()))
    members.append((f"{record.key}.labels", bytes(hot)))
    return members


def validate(collection: Collection, on_error: str) -> tuple[list[Record], list[Problem]]:
    """Reject duplicate keys and labels outside the vocabulary (raise or skip per policy)."""
    c = len(collection.classes)
    seen: dict[str, Record] = {}
    good: list[Record] = []
    problems: list[Problem] = []
    for r in collection.records:
        reason = None
        if not r.key or "." in r.key or len(r.key) > 90:
            reason = f"invalid key {r.key!r} (must be 1-90 characters, no dots)"
        elif r.key in seen:
            reason = f"duplicate key {r.key!r} (also {seen[r.key].where()})"
        elif any(not (0 <= x < c) for x in r.labels):
            reason = f"label index outside [0, {c}): {r.labels}"
        if reason is None:
            seen[r.key] = r
            good.append(r)
            continue
        if on_error == "raise":
            raise PackError(f"{r.where()}: {reason}")
        problems.append(Problem(r.where(), reason))
    return good, problems


def write_order(key: str) -> tuple[bytes, str]:
    """Samples are written in the order of a hash of their key: deterministic like key order,
    but class-mixed, since many publishers' keys sort by class (``yes/…``, ``blues.000…``) and a
    class-sorted shard makes every streamed window single-class."""
    return hashlib.blake2b(key.encode(), digest_size=8).digest(), key


def plan_groups(records: list[Record]) -> list[tuple[tuple[str, int | None], list[Record]]]:
    groups: dict[tuple[str, int | None], list[Record]] = {}
    for r in records:
        groups.setdefault((r.split, r.fold), []).append(r)
    order = sorted(groups, key=lambda g: (g[0], -1 if g[1] is None else g[1]))
    return [(g, sorted(groups[g], key=lambda r: write_order(r.key))) for g in order]


def fingerprint(collection: Collection, opts: PackOptions) -> str:
    h = hashlib.sha256(json.dumps(opts.fingerprint_fields(), sort_keys=True).encode())
    h.update(json.dumps(collection.classes).encode())
    for r in collection.records:
        h.update(json.dumps([r.key, r.source, r.labels, r.split, r.fold, r.group, r.start, r.end,
                             sorted(r.extra.items(), key=str)], default=str).encode())
    return h.hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def clean_temporaries(out: Path) -> int:
    n = 0
    for p in out.rglob(f"*{TMP_MARK}*"):
        if p.is_file():
            p.unlink()
            n += 1
    return n


def _load_journal(out: Path, fp: str) -> dict[str, dict[str, Any]]:
    """Shards a previous run finished and that are still intact, by relative path."""
    path = out / JOURNAL
    if not path.exists():
        return {}
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    if not lines or lines[0].get("fingerprint") != fp:
        raise PackError(f"{path}: written for other input or options; pack again without --resume")
    kept: dict[str, dict[str, Any]] = {}
    for entry in lines[1:]:
        p = out / entry["path"]
        if p.is_file() and (out / entry["index"]).is_file() and _sha256_file(p) == entry["sha256"]:
            kept[entry["path"]] = entry
    return kept


def _prepare_out(out: Path, opts: PackOptions, fp: str) -> dict[str, dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    clean_temporaries(out)
    if opts.resume:
        kept = _load_journal(out, fp)
        if not kept and (out / MANIFEST).exists():
            raise PackError(f"{out / MANIFEST} exists and no journal to resume from; use --overwrite")
        (out / MANIFEST).unlink(missing_ok=True)
        return kept
    if any(out.iterdir()):
        if not opts.overwrite:
            raise PackError(f"{out} is not empty; use --resume to continue a pack or --overwrite to replace it")
        for p in sorted(out.rglob("*"), reverse=True):
            if p.is_file() and (p.suffix in (".tar", ".idx") or p.name in (MANIFEST, JOURNAL)):
                p.unlink()
    (out / JOURNAL).write_text(json.dumps({"fingerprint": fp}) + "\n")
    return {}


def _encode_job(args: tuple[Record, int, str, int]) -> Encoded | Problem:
    record, sr, codec, ch = args
    try:
        return encode_record(record, sr, codec, ch)
    except EncodeError as e:
        return Problem(f"{record.where()} (key {record.key})", str(e).split(": ", 1)[-1])


def _encoded(jobs: list[tuple[Record, int, str, int]], workers: int) -> Iterator[Encoded | Problem]:
    if workers <= 1:
        yield from map(_encode_job, jobs)
        return
    # fork: workers start in milliseconds and inherit the records instead of unpickling them
    with get_context("fork").Pool(workers) as pool:
        yield from pool.imap(_encode_job, jobs, chunksize=8)


def pack(collection: Collection, out: str | Path, opts: PackOptions | None = None) -> PackResult:
    """Write ``collection`` as shards + indexes + dataset.json into ``out``."""
    opts = opts or PackOptions()
    t0 = time.perf_counter()
    out = Path(out)
    fp = fingerprint(collection, opts)
    kept = _prepare_out(out, opts, fp)
    if opts.on_error == "raise" and collection.problems:
        first = collection.problems[0]
        raise PackError(f"{first} ({len(collection.problems)} problem(s) in the input; "
                        "--on-error skip packs the rest and lists them)")
    records, problems = validate(collection, opts.on_error)
    problems = list(collection.problems) + problems
    groups = plan_groups(records)
    result = PackResult({}, problems, 0.0, kept_shards=len(kept))

    shards_meta: list[dict[str, Any]] = []
    todo: list[tuple[tuple[str, int | None], list[Record], int]] = []
    for (split, fold), recs in groups:
        n_done, number = 0, 0
        while True:
            rel = f"{split}/{shard_group(fold)}-{number:06d}.tar"
            if rel not in kept:
                break
            shards_meta.append(kept[rel])
            n_done += kept[rel]["consumed"]
            number += 1
        for stale in out.glob(f"{split}/{shard_group(fold)}-*.tar"):
            if int(stale.stem.rsplit("-", 1)[1]) >= number:
                stale.unlink()
        todo.append(((split, fold), recs[n_done:], number))

    total = sum(len(r) for _, r, _ in todo)
    bar = tqdm(total=total, desc="pack", unit="clip", disable=not opts.progress)
    jobs = [(r, opts.sample_rate, opts.codec, opts.channels) for _, recs, _ in todo for r in recs]
    stream = _encoded(jobs, opts.workers)
    journal = open(out / JOURNAL, "a")
    try:
        for (split, fold), recs, number in todo:
            shards_meta += _write_group(out, collection, split, fold, recs, number, stream, opts, result, journal, bar)
    finally:
        journal.close()
        bar.close()
        stream.close()

    for shard in shards_meta:
        problems.extend(Problem(**p) for p in shard.get("skipped", []))
    manifest = build_manifest(collection, opts, shards_meta, problems)
    atomic_write(out / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    (out / JOURNAL).unlink(missing_ok=True)
    result.manifest, result.problems = manifest, problems
    result.seconds = time.perf_counter() - t0
    return result


def _write_group(out, collection, split, fold, recs, number, stream, opts, result, journal, bar) -> list[dict]:
    c = len(collection.classes)
    metas: list[dict[str, Any]] = []
    shard: _Shard | None = None

    def new_shard(n: int) -> _Shard:
        rel = f"{split}/{shard_group(fold)}-{n:06d}.tar"
        return _Shard(out / rel, rel, split, fold, shard_group(fold), c)

    def close(s: _Shard) -> None:
        meta = s.finish()
        journal.write(json.dumps(meta) + "\n")
        journal.flush()
        os.fsync(journal.fileno())
        metas.append(meta)

    try:
        for record in recs:
            enc = next(stream)
            bar.update(1)
            if isinstance(enc, Problem):
                if opts.on_error == "raise":
                    raise PackError(str(enc))
                shard = shard or new_shard(number)
                shard.skipped.append(enc)
                shard.consumed += 1
                continue
            members = sample_members(record, enc, collection.multi_label, c)
            size = sample_bytes(members)
            if shard is not None and shard.samples and (
                shard.bytes_est + size > opts.max_shard_bytes
                or (opts.max_shard_samples and shard.samples >= opts.max_shard_samples)
            ):
                close(shard)
                number += 1
                shard = None
            shard = shard or new_shard(number)
            shard.add(members, record, enc.duration)
            shard.consumed += 1
            result.encoded_bytes += len(enc.data)
            result.encoded_clips += 1
        if shard is not None and shard.samples == 0:  # every record of the group failed
            result.problems.extend(shard.skipped)
            shard.abort()
        elif shard is not None:
            close(shard)
        shard = None
    finally:
        if shard is not None:
            shard.abort()
    return metas


def build_manifest(collection: Collection, opts: PackOptions, shards: list[dict[str, Any]],
                   problems: list[Problem]) -> dict[str, Any]:
    c = len(collection.classes)
    splits: dict[str, dict[str, Any]] = {}
    for s in sorted(shards, key=lambda s: s["path"]):
        sp = splits.setdefault(s["split"], {"samples": 0, "bytes": 0, "duration": 0.0,
                                            "class_counts": [0] * c, "folds": [], "shards": []})
        sp["samples"] += s["samples"]
        sp["bytes"] += s["bytes"]
        sp["duration"] = round(sp["duration"] + s["duration"], 3)
        sp["class_counts"] = [a + b for a, b in zip(sp["class_counts"], s["class_counts"])]
        if s["fold"] is not None and s["fold"] not in sp["folds"]:
            sp["folds"].append(s["fold"])
        sp["shards"].append({k: v for k, v in s.items() if k not in ("consumed", "skipped")})
    groups: dict[str, set[str]] = {}
    for r in collection.records:
        groups.setdefault(r.split, set()).add(r.group)
    folds = sorted({s["fold"] for s in shards if s["fold"] is not None})
    return {
        "format_version": FORMAT_VERSION,
        "name": collection.name,
        "created_by": f"shardgen {__version__}",
        "sample_rate": opts.sample_rate,
        "channels": opts.channels,
        "codec": opts.codec,
        "classes": list(collection.classes),
        "num_classes": c,
        "multi_label": collection.multi_label,
        "recipe": collection.info,
        "splits": splits,
        "folds": folds,
        "groups": {k: len(v) for k, v in sorted(groups.items())},
        "skipped": [p.to_json() for p in problems],
        "feature_stats": None,
    }
