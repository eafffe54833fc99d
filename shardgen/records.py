"""Records: what a recipe produces and the shard writer consumes.

A recipe reads a dataset in its publisher's layout and returns a :class:`Collection`:
the class vocabulary, one :class:`Record` per clip, and the :class:`Problem` s it met
(missing files, unknown labels, malformed rows) so nothing is dropped silently.

Example:
    >>> r = Record(key=safe_key("audio/1-100032-A-0.wav"), source="audio/1-100032-A-0.wav",
    ...            path=None, labels=[0], split="train", fold=1, group="100032")
    >>> r.key
    'audio_1-100032-A-0'
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")
_AUDIO_EXT = re.compile(r"\.(wav|flac|ogg|mp3|opus|aiff?|au)$", re.IGNORECASE)


def safe_key(name: str) -> str:
    """Turn a file name into a tar-safe sample key.

    webdataset and DALI split a member name at the first dot of its base name, so a key
    must not contain dots; slashes would create directories. Everything outside
    ``[A-Za-z0-9_-]`` becomes ``_`` and a trailing audio extension is dropped.
    """
    return _UNSAFE.sub("_", _AUDIO_EXT.sub("", name))


@dataclass
class Record:
    """One clip: where its audio is and what it is labelled.

    ``source`` is the clip's path relative to the dataset root as the publisher names it.
    ``path`` is the file to read (``None`` when ``audio`` holds encoded bytes in memory).
    ``start``/``end`` (seconds) select a window of a longer file.
    """

    key: str
    source: str
    path: Path | None
    labels: list[int]
    split: str
    fold: int | None = None
    group: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    audio: bytes | None = None
    start: float | None = None
    end: float | None = None

    def where(self) -> str:
        return str(self.path) if self.path is not None else self.source


@dataclass
class Problem:
    """Something wrong with one input: ``where`` names the file (and row), ``reason`` says what."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"

    def to_json(self) -> dict[str, str]:
        return {"where": self.where, "reason": self.reason}


@dataclass
class Collection:
    """A dataset as a recipe read it: vocabulary, records and problems met on the way."""

    name: str
    classes: list[str]
    records: list[Record]
    multi_label: bool = False
    problems: list[Problem] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def split_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.records:
            counts[r.split] = counts.get(r.split, 0) + 1
        return dict(sorted(counts.items()))


class RecipeError(Exception):
    """The dataset root or its metadata cannot be used at all (wrong root, wrong columns)."""


def label_index(classes: list[str]) -> dict[str, int]:
    """Name -> index map, rejecting duplicate class names."""
    index: dict[str, int] = {}
    for i, name in enumerate(classes):
        if name in index:
            raise RecipeError(f"class {name!r} appears twice in the vocabulary")
        index[name] = i
    return index


def require_file(root: Path, rel: str, hint: str = "") -> Path:
    """Return ``root/rel`` or raise a RecipeError that says which file was expected where."""
    p = Path(root) / rel
    if not p.is_file():
        msg = f"expected {rel} under {root} (not found at {p})"
        raise RecipeError(msg + (f"; {hint}" if hint else ""))
    return p
