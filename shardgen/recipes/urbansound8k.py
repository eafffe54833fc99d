"""urbansound8k: UrbanSound8K, 8,732 urban sound slices (<= 4 s), 10 classes, 10 official folds.

Layout (UrbanSound8K.tar.gz unpacks to UrbanSound8K/ holding)::

    SRC/metadata/UrbanSound8K.csv        slice_file_name,fsID,start,end,salience,fold,classID,class (CRLF)
    SRC/audio/fold<N>/<slice_file_name>  N = 1..10, e.g. audio/fold5/100032-3-0-0.wav

Classes are the 10 classes in ``classID`` order (0 air_conditioner ... 9 street_music). Every
slice is split ``train`` with fold = the official fold 1..10 (choose folds when reading, for
cross-validation: the publisher asks for 10-fold CV on these folds, never a re-shuffle).
group = ``fsID``, the freesound recording the slice was cut from. Each json keeps ``fsID``,
``start`` and ``end`` (the slice's position in seconds inside that recording, not a crop) and
``salience`` (1 foreground, 2 background).

Example::

    shardgen pack --recipe urbansound8k UrbanSound8K out/us8k --sample-rate 22050 --workers 4
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from ..records import Collection, Problem, Record, RecipeError, require_file, safe_key
from ._common import malformed, read_csv, unlisted

NAME = "urbansound8k"
DESCRIPTION = "UrbanSound8K (metadata/UrbanSound8K.csv + audio/fold1..10/): 10 classes, 10 folds, group = fsID"
DEFAULT_ON_ERROR = "skip"
META = "metadata/UrbanSound8K.csv"
COLUMNS = ("slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class")
FOLDS = range(1, 11)
# The publisher's vocabulary by classID, fixed so a partial copy keeps the official indices.
CLASSES = ["air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling",
           "engine_idling", "gun_shot", "jackhammer", "siren", "street_music"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: the folds and classes are fixed by the publisher."""


def load(root: Path) -> Collection:
    """Read UrbanSound8K as its archive unpacks.

    Example:
        >>> c = load(Path("UrbanSound8K"))                        # doctest: +SKIP
        >>> r = c.records[0]; r.source, r.fold, r.group, r.extra["salience"]  # doctest: +SKIP
        ('audio/fold1/101415-3-0-2.wav', 1, '101415', 1)
    """
    root = Path(root)
    table = require_file(root, META, _hint(root))
    audio = root / "audio"
    if not audio.is_dir():
        raise RecipeError(f"expected audio/fold1..10/ beside metadata/ under {root} (not found at {audio})")
    rows = read_csv(table, required=COLUMNS)
    records: list[Record] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{table}:{line}"
        reason = _row_problem(row, seen, where)
        if reason is None and not (audio / _rel(row)).is_file():
            reason = f"audio file audio/{_rel(row)} not found"
        if reason is not None:
            problems.append(Problem(where, reason))
            continue
        records.append(_record(row, audio))
    listed = {audio / _rel(row) for row in rows if row.get("slice_file_name") and row.get("fold")}
    problems += unlisted(audio, listed, META)
    return Collection(
        name="urbansound8k", classes=list(CLASSES), records=records, multi_label=False, problems=problems,
        info={"recipe": NAME, "source": META,
              "split_rule": "official folds 1-10 from the fold column; every slice split train",
              "options": {}})


def _hint(root: Path) -> str:
    below = next(iter(sorted(root.glob(f"*/{META}"))), None) if root.is_dir() else None
    if below is not None:
        return f"did you mean {below.parents[1]}?"
    return "SRC must be the UrbanSound8K folder holding metadata/ and audio/"


def _rel(row: dict[str, str]) -> str:
    return f"fold{row['fold']}/{row['slice_file_name']}"


def _number(text: str) -> float | None:
    try:
        x = float(text)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _row_problem(row: dict[str, Any], seen: dict[str, str], where: str) -> str | None:
    """Why a metadata row cannot be used, or None."""
    problem = malformed(row, COLUMNS)
    if problem:
        return problem
    name = row["slice_file_name"]
    if not name:
        return "empty slice_file_name"
    if not row["fold"].isdigit() or int(row["fold"]) not in FOLDS:
        return f"fold {row['fold']!r} is not one of 1-10"
    if not row["classID"].isdigit() or int(row["classID"]) >= len(CLASSES):
        return f"unknown label: classID {row['classID']!r} is not an UrbanSound8K class 0-9"
    if CLASSES[int(row["classID"])] != row["class"]:
        return (f"unknown label: class {row['class']!r} does not match classID {row['classID']} "
                f"({CLASSES[int(row['classID'])]!r})")
    if row["salience"] not in ("1", "2"):
        return f"salience {row['salience']!r} is not 1 or 2"
    start, end = _number(row["start"]), _number(row["end"])
    if start is None or end is None or not 0 <= start < end:
        return f"start/end {row['start']!r}/{row['end']!r} are not seconds with 0 <= start < end"
    if not row["fsID"]:
        return "empty fsID"
    if name in seen:
        return f"duplicate slice_file_name {name} (also {seen[name]})"
    seen[name] = where
    return None


def _record(row: dict[str, str], audio: Path) -> Record:
    source = f"audio/{_rel(row)}"
    return Record(
        key=safe_key(source), source=source, path=audio / _rel(row), labels=[int(row["classID"])],
        split="train", fold=int(row["fold"]), group=row["fsID"],
        extra={"fsID": row["fsID"], "start": float(row["start"]), "end": float(row["end"]),
               "salience": int(row["salience"])})
