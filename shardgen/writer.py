"""Records -> size-bounded tar shards, DALI indexes and ``dataset.json``, whole or in parts.

Deterministic: records are grouped by (split, fold) and put in key-hash order, and the plan
(which records go into which shard, and the shard names; ``shardgen/plan.py``) is computed from
the record list and the options before anything is encoded. Encoding runs in parallel with results
consumed in order, so the bytes depend neither on ``workers`` nor on the partitioning:
``pack(..., part=(i, n))`` writes only part i of n of the plan's shards plus a part manifest
(``.parts/part-000i-of-000n.json``), and ``shardgen.parts.merge`` turns n part manifests into the
dataset.json that one plain ``pack`` writes.

Atomic: every file is written through :class:`shardgen.store.Store` (a folder, or a bucket through
fsspec): it appears only once complete, the index before its tar, the manifest last - dataset.json
is the commit marker. Resumable: each finished shard is appended to a journal (one per part);
``resume=True`` keeps the journalled shards whose size and sha256 still match and redoes the rest,
giving the same bytes as an uninterrupted run.

Example:
    >>> from shardgen.writer import PackOptions, pack          # doctest: +SKIP
    >>> manifest = pack(collection, "out/", PackOptions(sample_rate=16000, workers=4))
    >>> pack(collection, "s3://bucket/esc50", PackOptions(), part=(1, 4))  # then shardgen.parts.merge
"""
from __future__ import annotations

import hashlib
import json
import os
import tarfile
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from multiprocessing import current_process, get_context
from pathlib import Path
from typing import Any, Iterator

from tqdm import tqdm

from . import __version__
from . import plan as planning
from .encode import EncodeError, Encoded, encode_record
from .records import Collection, Problem, Record
from .store import TMP_MARK, Store, StoreError
from .tarfmt import format_index, member_header, split_name

FORMAT_VERSION = 1
MANIFEST = "dataset.json"
JOURNAL = ".shardgen-journal.jsonl"
PARTS_DIR = ".parts"
PART_FORMAT = 1
_META_ONLY = ("consumed", "skipped", "keys_sha256", "empty")  # shard-meta fields kept out of dataset.json


class PackError(Exception):
    """Packing cannot go on; the message names the file or row at fault."""


def part_name(part: int, parts: int, suffix: str = ".json") -> str:
    """The part manifest (``.json``, written when the part is complete) or journal (``.jsonl``) of a part."""
    return f"{PARTS_DIR}/part-{part:04d}-of-{parts:04d}{suffix}"


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
        return {k: getattr(self, k) for k in ("sample_rate", "codec", "channels", "max_shard_bytes",
                                              "max_shard_samples")}


@dataclass
class PackResult:
    manifest: dict[str, Any]
    problems: list[Problem]
    seconds: float
    kept_shards: int = 0
    encoded_bytes: int = 0
    encoded_clips: int = 0
    shards_written: int = 0


@dataclass
class _Shard:
    """A shard being written: its spool file (see Store) and what it holds so far."""

    store: Store
    spec: planning.ShardSpec
    num_classes: int
    samples: int = 0
    consumed: int = 0
    duration: float = 0.0
    keys: list[str] = field(default_factory=list)
    class_counts: list[int] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rel = self.spec.rel
        self.tmp = self.store.spool_path(self.rel)
        self.class_counts = [0] * self.num_classes
        self._file = _HashingFile(open(self.tmp, "wb"))
        self._offset = 0
        self._index: list[list[tuple[str, int, int, str]]] = []

    def add(self, members: list[tuple[str, bytes]], record: Record, duration: float) -> None:
        # The bytes tarfile.addfile writes (its header, the data, NULs to the block), written whole:
        # addfile copies a member through 16-kB reads, ~6 writes per member, each hashed apart,
        # and that was most of the writing process's time when workers encode (measured, see
        # benchmarks/pack.py). tests/shardgen/test_writer.py holds the two to the same bytes.
        entries, parts = [], []
        for name, data in members:
            header = member_header(name, len(data))
            pad = -len(data) % tarfile.BLOCKSIZE
            parts += (header, data, tarfile.NUL * pad)
            entries.append((split_name(name)[1], self._offset + len(header), len(data), name))
            self._offset += len(header) + len(data) + pad
        self._file.write(b"".join(parts))  # the sample's members in one write, hashed at once
        self._index.append(entries)
        self.samples += 1
        self.duration += duration
        self.keys.append(record.key)
        for c in record.labels:
            self.class_counts[c] += 1

    def finish(self) -> dict[str, Any]:
        end = self._offset + 2 * tarfile.BLOCKSIZE  # tarfile's end: two zero blocks, padded to a record
        self._file.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE + -end % tarfile.RECORDSIZE))
        self._file.close()  # flushed and fsynced
        # the index and checksum were kept while writing: the shard is never read back
        idx = self.rel[:-4] + ".idx"
        self.store.write_bytes(idx, format_index(self._index).encode())
        self.store.commit(self.tmp, self.rel)  # the tar appears only once complete, after its index
        return {
            "path": self.rel, "index": idx, "split": self.spec.split, "fold": self.spec.fold,
            "group": self.spec.group, "samples": self.samples, "bytes": self._file.size,
            "sha256": self._file.sha.hexdigest(), "duration": round(self.duration, 3),
            "class_counts": self.class_counts, "first_key": self.keys[0] if self.keys else None,
            "last_key": self.keys[-1] if self.keys else None, "consumed": self.consumed,
            "skipped": [p.to_json() for p in self.skipped], "keys_sha256": keys_sha256(self.spec),
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


def keys_sha256(spec: planning.ShardSpec) -> str:
    return hashlib.sha256("\n".join(spec.keys).encode()).hexdigest()


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
    """sha256 of what decides the bytes: the options, the recipe's output (name, vocabulary,
    records, recipe info) - not the dataset's root folder, so nodes may mount it anywhere."""
    h = hashlib.sha256(json.dumps(opts.fingerprint_fields(), sort_keys=True).encode())
    h.update(json.dumps([collection.name, collection.classes, collection.multi_label, collection.info],
                        sort_keys=True, default=str).encode())
    for r in collection.records:
        h.update(json.dumps([r.key, r.source, r.labels, r.split, r.fold, r.group, r.start, r.end,
                             sorted(r.extra.items(), key=str)], default=str).encode())
    return h.hexdigest()


def _encode_job(args: tuple[Record, int, str, int]) -> Encoded | Problem:
    record, sr, codec, ch = args
    try:
        return encode_record(record, sr, codec, ch)
    except EncodeError as e:
        return Problem(f"{record.where()} (key {record.key})", str(e).split(": ", 1)[-1])


ENCODE_CHUNK = 8  # clips per task sent to an encoding process
AHEAD = 4  # tasks in flight per process: results wait here for their turn, so this bounds memory


def _encode_jobs(jobs: list[tuple[Record, int, str, int]]) -> list[Encoded | Problem]:
    return [_encode_job(j) for j in jobs]


def _encoded(jobs: list[tuple[Record, int, str, int]], workers: int) -> Iterator[Encoded | Problem]:
    """The jobs' results, in order, encoded by ``workers`` processes (forked: they start in
    milliseconds). At most AHEAD tasks per process are in flight, so results that wait for the
    writer hold bounded memory, however large the dataset.

    Not multiprocessing.Pool: its worker-handling thread wakes whenever a result sits in the
    result pipe, and with results of ~200 kB it spun all the time they crossed (measured: 0.07
    CPU-s of the parent's 0.22 for 200 clips, on the cores the encoders need)."""
    if workers <= 1 or not jobs:
        yield from map(_encode_job, jobs)
        return
    if current_process().daemon:  # inside an engine's worker process (Dask, Ray): no children allowed
        with ThreadPoolExecutor(workers) as ex:
            yield from ex.map(_encode_job, jobs)
        return
    tasks = iter([jobs[i:i + ENCODE_CHUNK] for i in range(0, len(jobs), ENCODE_CHUNK)])
    ex = ProcessPoolExecutor(workers, mp_context=get_context("fork"))
    try:
        window: deque[Future] = deque(ex.submit(_encode_jobs, t) for t in islice(tasks, AHEAD * workers))
        while window:
            done = window.popleft().result()
            nxt = next(tasks, None)
            if nxt is not None:
                window.append(ex.submit(_encode_jobs, nxt))
            yield from done
    finally:
        ex.shutdown(wait=True, cancel_futures=True)  # a pack that stops early does not encode on


def clean_temporaries(out: Path, names: list[str] | None = None) -> int:
    """Remove this writer's temporaries under ``out``: all of them, or only those of ``names``."""
    pats = [f"*{TMP_MARK}*"] if names is None else [f"{n}{TMP_MARK}*" for n in names]
    n = 0
    for pat in pats:
        for p in out.glob(pat) if names is not None else out.rglob(pat):
            if p.is_file():
                p.unlink()
                n += 1
    return n


def _read_journal(store: Store, rel: str, fp: str) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in store.read_text(rel).splitlines() if x.strip()]
    if not lines or lines[0].get("fingerprint") != fp:
        raise PackError(f"{store.name(rel)}: written for other input or options; pack again without --resume")
    return lines[1:]


def _still_intact(store: Store, meta: dict[str, Any], spec: planning.ShardSpec) -> bool:
    """A journalled shard is kept when its plan is unchanged and its bytes are still those written."""
    if meta.get("keys_sha256") != keys_sha256(spec):
        return False
    if meta.get("empty"):
        return True
    return (store.size(meta["path"]) == meta["bytes"] and store.size(meta["index"]) is not None
            and store.sha256(meta["path"]) == meta["sha256"])


def _prepare(store: Store, opts: PackOptions, fp: str, part: tuple[int, int] | None) -> tuple[str, list[dict]]:
    """Check OUT, write the journal's first line (so a store that cannot be written fails here,
    before any encoding) and return the journal's name and the entries of a run to resume."""
    try:
        store.mkdir()
        if store.local is not None and part is None:
            clean_temporaries(store.local)
        journal = JOURNAL if part is None else part_name(*part, suffix=".jsonl")
        entries: list[dict[str, Any]] = []
        if part is None:
            if opts.resume and store.exists(JOURNAL):
                entries = _read_journal(store, JOURNAL, fp)
            elif opts.resume and store.exists(MANIFEST):
                raise PackError(f"{store.name(MANIFEST)} exists and no journal to resume from; use --overwrite")
            elif not opts.resume and store.list():
                if not opts.overwrite:
                    raise PackError(f"{store.url} is not empty; use --resume to continue a pack or --overwrite to replace it")
                for rel in store.list():
                    if rel.endswith((".tar", ".idx")) or rel in (MANIFEST, JOURNAL) or rel.startswith(PARTS_DIR + "/"):
                        store.delete(rel)
            store.delete(MANIFEST)
        else:
            done = part_name(*part)
            if store.exists(MANIFEST) and not opts.overwrite:
                raise PackError(f"{store.name(MANIFEST)} exists: this pack was merged already; "
                                "use --overwrite to pack it again")
            if opts.resume and store.exists(done):
                entries = json.loads(store.read_text(done)).get("shards", [])
                first = json.loads(store.read_text(done)).get("fingerprint")
                if first != fp:
                    raise PackError(f"{store.name(done)}: written for other input or options; pack again without --resume")
            elif opts.resume and store.exists(journal):
                entries = _read_journal(store, journal, fp)
            elif not opts.overwrite and (store.exists(done) or store.exists(journal)):
                what = "is complete" if store.exists(done) else "was started"
                raise PackError(f"part {part[0]}/{part[1]} {what} in {store.url} already "
                                f"({store.name(done if store.exists(done) else journal)}); "
                                "use --resume to continue it or --overwrite to pack it again")
            if opts.overwrite:
                store.delete(MANIFEST)
        store.append_line(journal, json.dumps({"fingerprint": fp}), new=True)
        for e in entries:  # a resumed part's journal starts from what it had
            store.append_line(journal, json.dumps(e))
        if part is not None:
            store.delete(part_name(*part))  # a part being packed is not complete
        return journal, entries
    except StoreError as e:
        raise PackError(f"cannot write to {store.url}: {e}") from None


def plan_pack(collection: Collection, opts: PackOptions) -> tuple[list[planning.ShardSpec], list[Problem]]:
    """The whole pack's plan and the input problems (raised under on_error='raise')."""
    if opts.on_error == "raise" and collection.problems:
        first = collection.problems[0]
        raise PackError(f"{first} ({len(collection.problems)} problem(s) in the input; "
                        "--on-error skip packs the rest and lists them)")
    records, problems = validate(collection, opts.on_error)
    problems = list(collection.problems) + problems
    groups = plan_groups(records)
    flat = [r for _, recs in groups for r in recs]
    bounds = planning.probe_all(flat, opts.sample_rate, opts.codec, opts.channels, collection.multi_label,
                                len(collection.classes), opts.workers)
    bound_of = dict(zip((r.key for r in flat), bounds))
    bad = [b for b in bounds if isinstance(b, Problem)]
    if bad and opts.on_error == "raise":
        raise PackError(str(bad[0]))
    problems += bad
    sized = [(g, [(r, bound_of[r.key]) for r in recs if not isinstance(bound_of[r.key], Problem)]) for g, recs in groups]
    specs = planning.cut(sized, opts.max_shard_bytes, opts.max_shard_samples, shard_group)
    return specs, problems


def pack(collection: Collection, out: str | Path, opts: PackOptions | None = None, *,
         part: tuple[int, int] | None = None, storage_options: dict[str, Any] | None = None) -> PackResult:
    """Write ``collection`` as shards + indexes + dataset.json into ``out`` (a folder or a bucket URL).

    With ``part=(i, n)`` only part i of n of the plan's shards is written, with a part manifest
    instead of dataset.json; ``shardgen.parts.merge(out)`` writes dataset.json from the n parts.
    """
    opts = opts or PackOptions()
    if part is not None:
        planning.parse_part(f"{part[0]}/{part[1]}")
    t0 = time.perf_counter()
    store = Store(out, storage_options)
    try:
        return _pack(collection, store, opts, part, t0)
    finally:
        store.close()


def _pack(collection: Collection, store: Store, opts: PackOptions, part: tuple[int, int] | None,
          t0: float) -> PackResult:
    fp = fingerprint(collection, opts)
    journal, entries = _prepare(store, opts, fp, part)
    specs, problems = plan_pack(collection, opts)
    mine = specs if part is None else planning.take_part(specs, *part)
    if store.local is not None and part is not None:
        for spec in mine:
            clean_temporaries(store.local / spec.split, [Path(spec.rel).name, Path(spec.rel).stem + ".idx"])
    journalled = {e["path"]: e for e in entries}
    kept = {s.rel: journalled[s.rel] for s in mine if s.rel in journalled and _still_intact(store, journalled[s.rel], s)}
    if part is None:  # a whole pack owns OUT: shards outside the plan or not kept go
        wanted = {s.rel for s in specs} | {s.rel[:-4] + ".idx" for s in specs}
        for rel in store.list():
            if rel.endswith((".tar", ".idx")) and (rel not in wanted or rel in journalled and rel not in kept):
                store.delete(rel)
    todo = [s for s in mine if s.rel not in kept]
    result = PackResult({}, problems, 0.0, kept_shards=sum(1 for m in kept.values() if not m.get("empty")))

    desc = "pack" if part is None else f"pack {part[0]}/{part[1]}"
    bar = tqdm(total=sum(len(s.records) for s in todo), desc=desc, unit="clip", disable=not opts.progress)
    jobs = [(r, opts.sample_rate, opts.codec, opts.channels) for s in todo for r in s.records]
    stream = _encoded(jobs, opts.workers)
    metas = list(kept.values())
    finisher = _Finisher(store, journal, result)
    try:
        for spec in todo:
            finisher.submit(_write_shard(store, collection, spec, stream, opts, result, bar))
        metas += finisher.wait()
    except StoreError as e:
        raise PackError(str(e)) from None
    finally:
        finisher.close()
        bar.close()
        stream.close()

    metas.sort(key=lambda m: m["path"])
    header = manifest_header(collection, opts)
    if part is None:
        all_problems = problems + shard_problems(metas)
        manifest = assemble_manifest(header, metas, all_problems)
        store.write_bytes(MANIFEST, manifest_bytes(manifest))  # last: the commit marker
        store.delete(JOURNAL)
        result.manifest, result.problems = manifest, all_problems
    else:
        doc = {"shardgen_part": PART_FORMAT, "part": part[0], "parts": part[1], "fingerprint": fp,
               "plan": planning.digest(specs), "planned": [s.rel for s in mine], "header": header,
               "problems": [p.to_json() for p in problems], "shards": metas}
        store.write_bytes(part_name(*part), (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
        store.delete(journal)
        result.manifest = doc
        result.problems = problems + shard_problems(metas)
    result.seconds = time.perf_counter() - t0
    return result


class _Finisher:
    """Finishes written shards in one thread of its own, in order, while the next shard is being
    encoded and written: the fsync, the index, the commit (an upload, for a bucket) and the journal
    line. Encoding no longer waits for the disk or the network (measured, benchmarks/pack.py).

    At most one shard is being finished while the next is written, so at most two are spooled.
    All the store's writes of the pack loop happen in this thread, one after the other; the loop
    itself only writes its spool file."""

    def __init__(self, store: Store, journal: str, result: PackResult) -> None:
        self.store, self.journal, self.result = store, journal, result
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="shardgen-finish")
        self._pending: Future | None = None
        self.metas: list[dict[str, Any]] = []

    def submit(self, shard: "_Shard | dict[str, Any]") -> None:
        """Finish ``shard`` (or journal the meta of an empty one) once the one before is done."""
        try:
            self._collect()
        except BaseException:
            if not isinstance(shard, dict):
                shard.abort()
            raise
        self._pending = self._pool.submit(self._finish, shard)

    def _finish(self, shard: "_Shard | dict[str, Any]") -> dict[str, Any]:
        if isinstance(shard, dict):
            meta = shard
        else:
            try:
                meta = shard.finish()
            except BaseException:
                shard.abort()
                raise
            self.result.shards_written += 1
        self.store.append_line(self.journal, json.dumps(meta))  # after the commit: the shard is complete
        return meta

    def _collect(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.metas.append(pending.result())  # a failure to finish surfaces here

    def wait(self) -> list[dict[str, Any]]:
        self._collect()
        return self.metas

    def close(self) -> None:
        self._pool.shutdown(wait=True)  # a shard being finished is completed (or aborted) before we go


def _write_shard(store: Store, collection: Collection, spec: planning.ShardSpec, stream, opts: PackOptions,
                 result: PackResult, bar) -> "_Shard | dict[str, Any]":
    """Write the shard's samples into its spool file; returns the shard, still to be finished
    (see :class:`_Finisher`), or the meta of an empty shard."""
    c = len(collection.classes)
    shard = _Shard(store, spec, c)
    try:
        for record in spec.records:
            enc = next(stream)
            bar.update(1)
            shard.consumed += 1
            if isinstance(enc, Problem):
                if opts.on_error == "raise":
                    raise PackError(str(enc))
                shard.skipped.append(enc)
                continue
            shard.add(sample_members(record, enc, collection.multi_label, c), record, enc.duration)
            result.encoded_bytes += len(enc.data)
            result.encoded_clips += 1
        if shard.samples == 0:  # every record of the shard failed: no file, the plan keeps its number
            shard.abort()
            return {"path": spec.rel, "empty": True, "skipped": [p.to_json() for p in shard.skipped],
                    "keys_sha256": keys_sha256(spec)}
        return shard
    except BaseException:
        shard.abort()
        raise


def shard_problems(metas: list[dict[str, Any]]) -> list[Problem]:
    return [Problem(**p) for m in sorted(metas, key=lambda m: m["path"]) for p in m.get("skipped", [])]


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()


def manifest_header(collection: Collection, opts: PackOptions) -> dict[str, Any]:
    """Everything of dataset.json that does not depend on the shards."""
    groups: dict[str, set[str]] = {}
    for r in collection.records:
        groups.setdefault(r.split, set()).add(r.group)
    return {
        "format_version": FORMAT_VERSION,
        "name": collection.name,
        "created_by": f"shardgen {__version__}",
        "sample_rate": opts.sample_rate,
        "channels": opts.channels,
        "codec": opts.codec,
        "classes": list(collection.classes),
        "num_classes": len(collection.classes),
        "multi_label": collection.multi_label,
        "recipe": collection.info,
        "groups": {k: len(v) for k, v in sorted(groups.items())},
        "feature_stats": None,
    }


def assemble_manifest(header: dict[str, Any], shards: list[dict[str, Any]], problems: list[Problem]) -> dict[str, Any]:
    """dataset.json from its header, the shard metas (any order) and the problems met."""
    c = header["num_classes"]
    shards = [s for s in shards if not s.get("empty")]
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
        sp["shards"].append({k: v for k, v in s.items() if k not in _META_ONLY})
    manifest = dict(header)
    manifest.update({
        "splits": splits,
        "folds": sorted({s["fold"] for s in shards if s["fold"] is not None}),
        "skipped": [p.to_json() for p in problems],
    })
    return manifest


def build_manifest(collection: Collection, opts: PackOptions, shards: list[dict[str, Any]],
                   problems: list[Problem]) -> dict[str, Any]:
    return assemble_manifest(manifest_header(collection, opts), shards, problems)
