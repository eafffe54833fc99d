"""Packing in parts on an existing engine, and the merge that makes the parts one dataset.

``pack_parts(source, out, opts, parts=N, executor=ex)`` submits ``pack(..., part=(i, N))`` for
i = 1..N to any :class:`concurrent.futures.Executor` - a ``ProcessPoolExecutor``, Dask's
``distributed.Client(...).get_executor()``, Ray's ``ray.util.multiprocessing.Pool`` behind an
Executor - waits for all of them and merges. The scheduling is the engine's; shardgen only
says what a part is. ``source`` is a Collection or, better for big datasets, a picklable callable
that returns one (``functools.partial(recipe.load, root)``): each task then reads the metadata on
its worker instead of receiving millions of pickled records.

``merge(out)`` reads the part manifests ``.parts/part-IIII-of-NNNN.json``, checks that they are
N distinct parts of one plan (same fingerprint of source records, recipe and options; same plan
digest), that every planned shard is there with its size, and writes dataset.json - last, as the
commit marker - byte-identical to what one plain ``pack`` writes. Then it removes ``.parts/``.

Example:
    >>> from distributed import Client                               # doctest: +SKIP
    >>> from functools import partial
    >>> from shardgen import recipes
    >>> with Client("tcp://scheduler:8786") as client:
    ...     pack_parts(partial(recipes.get("esc50").load, "ESC-50-master"), "s3://bucket/esc50",
    ...                PackOptions(sample_rate=32000), parts=64, executor=client.get_executor())
"""
from __future__ import annotations

import json
import re
import time
from concurrent.futures import Executor, Future, as_completed
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from .records import Collection, Problem
from .store import Store, StoreError
from .writer import (MANIFEST, PART_FORMAT, PARTS_DIR, PackError, PackOptions, PackResult, assemble_manifest,
                     manifest_bytes, pack, shard_problems)

_PART_FILE = re.compile(r"part-(\d+)-of-(\d+)\.json$")


class MergeError(PackError):
    """The parts do not make one dataset; the message names the part manifest(s) at fault."""


def _run_part(source: Collection | Callable[[], Collection], out: str, opts: PackOptions, part: int, parts: int,
              storage_options: dict[str, Any] | None) -> dict[str, Any]:
    collection = source() if callable(source) else source
    res = pack(collection, out, opts, part=(part, parts), storage_options=storage_options)
    return {"part": part, "seconds": res.seconds, "encoded_clips": res.encoded_clips,
            "encoded_bytes": res.encoded_bytes, "kept_shards": res.kept_shards, "shards": res.shards_written}


def pack_parts(source: Collection | Callable[[], Collection], out: str | Path, opts: PackOptions | None = None, *,
               parts: int, executor: Executor | None = None, storage_options: dict[str, Any] | None = None,
               merge_after: bool = True) -> PackResult:
    """Pack ``parts`` parts on ``executor`` (in this process, one after the other, when None) and merge."""
    opts = opts or PackOptions()
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    t0 = time.perf_counter()
    task_opts = PackOptions(**{**opts.__dict__, "progress": False})
    out = str(out)
    done: list[dict[str, Any]] = []
    bar = tqdm(total=parts, desc="parts", unit="part", disable=not opts.progress)
    try:
        if executor is None:
            for i in range(1, parts + 1):
                done.append(_run_part(source, out, task_opts, i, parts, storage_options))
                bar.update(1)
        else:
            futures: list[Future] = [executor.submit(_run_part, source, out, task_opts, i, parts, storage_options)
                                     for i in range(1, parts + 1)]
            try:
                for f in as_completed(futures):
                    done.append(f.result())  # the first failure is raised, naming its part
                    bar.update(1)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    finally:
        bar.close()
    result = PackResult({}, [], 0.0, kept_shards=sum(d["kept_shards"] for d in done),
                        encoded_bytes=sum(d["encoded_bytes"] for d in done),
                        encoded_clips=sum(d["encoded_clips"] for d in done),
                        shards_written=sum(d["shards"] for d in done))
    if merge_after:
        result.manifest, result.problems = merge(out, storage_options=storage_options)
    result.seconds = time.perf_counter() - t0
    return result


def _load_parts(store: Store, manifests: list[str] | None) -> list[tuple[str, dict[str, Any]]]:
    names = manifests if manifests is not None else [r for r in store.list(PARTS_DIR) if _PART_FILE.search(r)]
    if not names:
        left = [r for r in store.list(PARTS_DIR) if r.endswith(".jsonl")]
        raise MergeError(f"{store.name(PARTS_DIR)}: no part manifest (part-IIII-of-NNNN.json) to merge"
                         + (f"; {len(left)} part(s) not complete: {', '.join(left)}" if left else ""))
    docs = []
    for rel in names:
        try:
            doc = json.loads(Path(rel).read_text() if Path(rel).is_file() else store.read_text(rel))
        except (OSError, StoreError, json.JSONDecodeError) as e:
            raise MergeError(f"{rel}: not a readable part manifest ({e})") from None
        if doc.get("shardgen_part") != PART_FORMAT:
            raise MergeError(f"{rel}: not a shardgen part manifest (format {doc.get('shardgen_part')!r})")
        docs.append((rel, doc))
    return docs


def merge(out: str | Path, manifests: list[str] | None = None, *, storage_options: dict[str, Any] | None = None,
          keep_parts: bool = False) -> tuple[dict[str, Any], list[Problem]]:
    """Check the part manifests in ``out`` (or those given) and write dataset.json; returns it and the problems."""
    store = Store(out, storage_options)
    try:
        return _merge(store, manifests, keep_parts)
    except StoreError as e:
        raise MergeError(str(e)) from None
    finally:
        store.close()


def _merge(store: Store, manifests: list[str] | None, keep_parts: bool) -> tuple[dict[str, Any], list[Problem]]:
    docs = _load_parts(store, manifests)
    rel0, d0 = docs[0]
    counts = {d["parts"] for _, d in docs}
    if len(counts) > 1:
        raise MergeError("the part manifests come from packs of different sizes: "
                         + ", ".join(f"{r} (part {d['part']}/{d['parts']})" for r, d in docs))
    n = d0["parts"]
    for key, what in (("fingerprint", "source records, recipe or options"), ("plan", "plan (the audio files differ)")):
        odd = [r for r, d in docs if d[key] != d0[key]]
        if odd:
            raise MergeError(f"{', '.join(odd)}: packed from a different {what} than {rel0}; "
                             "pack every part from the same source with the same options")
    seen: dict[int, str] = {}
    for rel, d in docs:
        if d["part"] in seen:
            raise MergeError(f"part {d['part']}/{n} given twice: {seen[d['part']]} and {rel}")
        seen[d["part"]] = rel
    missing = sorted(set(range(1, n + 1)) - set(seen))
    if missing:
        left = set(store.list(PARTS_DIR))
        raise MergeError(f"{store.url}: part(s) {', '.join(f'{i}/{n}' for i in missing)} missing "
                         "(" + "; ".join(f"{PARTS_DIR}/part-{i:04d}-of-{n:04d}.json "
                                         + ("not written: the part is still running or was killed"
                                            if f"{PARTS_DIR}/part-{i:04d}-of-{n:04d}.jsonl" in left else "not found")
                                         for i in missing) + ")")
    metas: list[dict[str, Any]] = []
    for rel, d in sorted(docs, key=lambda x: x[1]["part"]):
        got = {m["path"] for m in d["shards"]}
        if got != set(d["planned"]):
            lack = sorted(set(d["planned"]) - got)
            raise MergeError(f"{rel}: part {d['part']}/{n} lacks planned shard(s) {', '.join(lack[:5])}")
        metas += d["shards"]
    for m in metas:
        if not m.get("empty") and store.size(m["path"]) != m["bytes"]:
            raise MergeError(f"{store.name(m['path'])}: missing or not {m['bytes']} bytes as its part manifest says")
    metas.sort(key=lambda m: m["path"])
    problems = [Problem(**p) for p in d0["problems"]] + shard_problems(metas)
    manifest = assemble_manifest(d0["header"], metas, problems)
    store.write_bytes(MANIFEST, manifest_bytes(manifest))  # last: the commit marker
    if not keep_parts and manifests is None:
        for rel in store.list(PARTS_DIR):
            store.delete(rel)
        if store.local is not None:
            try:
                (store.local / PARTS_DIR).rmdir()
            except OSError:
                pass
    return manifest, problems
