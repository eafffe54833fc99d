"""What a reader knows before opening a tar: shards per split/fold, vocabulary, counts, stats.

Sources are a dataset folder/URL holding ``dataset.json`` (format v1, written by shardgen) or
a brace-expanded shard pattern with an explicit class list; for a pattern, per-shard sample
counts come from the DALI ``.idx`` next to each tar (its first line holds the count).

Example:
    >>> cat = Catalog.open("data/demo", split="train", folds=[1, 2])      # doctest: +SKIP
    >>> cat.num_samples, len(cat.classes)
    (650, 22)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import braceexpand

from ..io.open import read_bytes
from ..io.options import SourceError


class CatalogError(Exception):
    """The dataset description is missing, malformed or does not have what was asked for."""


@dataclass(frozen=True)
class Shard:
    url: str
    samples: int
    index_url: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    fold: int | None = None
    class_counts: tuple[int, ...] | None = None


@dataclass
class Catalog:
    """The shards selected for one split (and folds), with what the manifest says about them."""

    shards: list[Shard]
    classes: list[str]
    sample_rate: int | None = None
    multi_label: bool = True
    codec: str | None = None
    feature_stats: dict[str, Any] | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    base: str = ""

    @property
    def num_samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> list[int] | None:
        if any(s.class_counts is None for s in self.shards):
            return None
        return [sum(col) for col in zip(*(s.class_counts for s in self.shards))] if self.shards else None

    def shards_of(self, split: str) -> list[Shard]:
        """Shards of another split of the same dataset (e.g. the ``noise`` split)."""
        return _select(self.manifest, self.base, split, None)

    @staticmethod
    def open(source: str, split: str = "train", folds: list[int] | None = None,
             classes: list[str] | None = None, options: Any = None) -> "Catalog":
        source = str(source)
        if _is_pattern(source):
            if classes is None:
                raise CatalogError(f"{source}: a shard pattern needs classes=[...] (no dataset.json to read them from)")
            return _from_pattern(source, classes, options)
        base = source[: -len("/dataset.json")] if source.endswith("/dataset.json") else source.rstrip("/")
        try:
            manifest = json.loads(read_bytes(f"{base}/dataset.json", options=options))
        except (FileNotFoundError, SourceError) as e:
            raise CatalogError(f"{base}/dataset.json cannot be read ({e}): is {source!r} a dataset packed by shardgen?") from e
        except ValueError as e:
            raise CatalogError(f"{base}/dataset.json does not parse ({e})") from e
        if manifest.get("format_version") != 1:
            raise CatalogError(f"{base}/dataset.json: format_version {manifest.get('format_version')!r}, expected 1")
        return Catalog(shards=_select(manifest, base, split, folds), classes=list(manifest["classes"]),
                       sample_rate=manifest["sample_rate"], multi_label=manifest["multi_label"],
                       codec=manifest.get("codec"), feature_stats=manifest.get("feature_stats"),
                       manifest=manifest, base=base)


def _is_pattern(source: str) -> bool:
    return source.endswith(".tar") or "{" in source


def _select(manifest: dict[str, Any], base: str, split: str, folds: list[int] | None) -> list[Shard]:
    splits = manifest["splits"]
    if split not in splits:
        raise CatalogError(f"{base}: no split {split!r}; the dataset has {sorted(splits)}")
    entries = splits[split]["shards"]
    if folds is not None:
        have = sorted({s["fold"] for s in entries if s["fold"] is not None})
        missing = sorted(set(folds) - set(have))
        if missing:
            raise CatalogError(f"{base}: split {split!r} has no fold(s) {missing}; folds present: {have}")
        entries = [s for s in entries if s["fold"] in set(folds)]
    return [Shard(url=f"{base}/{s['path']}", samples=s["samples"], index_url=f"{base}/{s['index']}",
                  bytes=s["bytes"], sha256=s["sha256"], fold=s["fold"], class_counts=tuple(s["class_counts"]))
            for s in entries]


def read_index(url: str, options: Any = None) -> list[list[tuple[str, int, int]]]:
    """Parse a DALI .idx: per sample, [(ext, data_offset, size), ...]."""
    lines = read_bytes(url, options=options).decode().splitlines()
    head = lines[0].split()
    if len(head) != 2 or head[0] != "v1.2":
        raise CatalogError(f"{url}: not a DALI v1.2 index")
    samples = []
    for line in lines[1:int(head[1]) + 1]:
        parts = line.split()
        samples.append([(parts[i], int(parts[i + 1]), int(parts[i + 2])) for i in range(0, len(parts), 4)])
    return samples


def _from_pattern(pattern: str, classes: list[str], options: Any = None) -> Catalog:
    shards = []
    for url in braceexpand.braceexpand(pattern):
        idx = url[:-4] + ".idx"
        try:
            head = read_bytes(idx, options=options).split(b"\n", 1)[0].split()
            shards.append(Shard(url=url, samples=int(head[1]), index_url=idx))
        except (OSError, IndexError, ValueError) as e:
            raise CatalogError(f"{idx}: needed for the sample count of {url} ({e}); "
                               "write it with `wds2idx` or pack with shardgen") from e
    return Catalog(shards=shards, classes=list(classes))
