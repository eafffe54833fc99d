"""esc50: ESC-50 environmental sounds, 2,000 clips of 5 s, 50 classes, 5 official folds.

Layout (ESC-50-master.zip from github.com/karolpiczak/ESC-50 unpacks to)::

    SRC/meta/esc50.csv       filename,fold,target,category,esc10,src_file,take
    SRC/audio/<filename>     e.g. audio/1-100032-A-0.wav (5 s, 44.1 kHz, mono)

Classes are the 50 categories in ``target`` order (0 dog ... 49 hand_saw). ``--subset esc10``
keeps the rows whose ``esc10`` column is True: the 10 ESC-10 classes, re-indexed 0..9 in
target order. Every clip is split ``train`` with fold = the official fold 1..5 (choose folds
when reading, for cross-validation). group = ``src_file``, the freesound recording the clip
was cut from. ``take``, ``target`` (the ESC-50 index) and ``esc10`` are kept in each json.

Example::

    shardgen pack --recipe esc50 ESC-50-master out/esc50 --sample-rate 32000 --workers 4
    shardgen pack --recipe esc50 ESC-50-master out/esc10 --subset esc10
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..records import Collection, Problem, Record, RecipeError, require_file, safe_key
from ._common import did_you_mean, malformed, read_csv, unlisted

NAME = "esc50"
DESCRIPTION = "ESC-50 (meta/esc50.csv + audio/): 50 classes or --subset esc10, 5 official folds, group = src_file"
DEFAULT_ON_ERROR = "skip"
META = "meta/esc50.csv"
COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
FOLDS = range(1, 6)

# The publisher's vocabulary, indexed by the `target` column. Fixed here (not read from the
# rows) so a partial copy still gets the official indices.
CLASSES = [
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    "rain", "sea_waves", "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind",
    "pouring_water", "toilet_flush", "thunderstorm", "crying_baby", "sneezing", "clapping",
    "breathing", "coughing", "footsteps", "laughing", "brushing_teeth", "snoring",
    "drinking_sipping", "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks",
    "can_opening", "washing_machine", "vacuum_cleaner", "clock_alarm", "clock_tick",
    "glass_breaking", "helicopter", "chainsaw", "siren", "car_horn", "engine", "train",
    "church_bells", "airplane", "fireworks", "hand_saw",
]
ESC10 = ["dog", "rooster", "rain", "sea_waves", "crackling_fire", "crying_baby", "sneezing",
         "clock_tick", "helicopter", "chainsaw"]
SUBSETS = ("esc50", "esc10")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subset", choices=SUBSETS, default="esc50",
                        help="esc50: all 50 classes (default); esc10: the 10 ESC-10 classes, re-indexed")


def load(root: Path, subset: str = "esc50") -> Collection:
    """Read ESC-50 as its archive unpacks.

    Example:
        >>> c = load(Path("ESC-50-master"), subset="esc10")       # doctest: +SKIP
        >>> c.classes[:3], c.records[0].fold, c.records[0].group  # doctest: +SKIP
        (['dog', 'rooster', 'rain'], 1, '100032')
    """
    if subset not in SUBSETS:
        raise RecipeError(f"--subset must be one of {SUBSETS}, got {subset!r}")
    root = Path(root)
    table = require_file(root, META, _hint(root))
    audio = root / "audio"
    if not audio.is_dir():
        raise RecipeError(f"expected audio/ beside meta/ under {root} (not found at {audio})")
    rows = read_csv(table, required=COLUMNS)
    vocab = ESC10 if subset == "esc10" else CLASSES
    index = {name: i for i, name in enumerate(vocab)}
    records: list[Record] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{table}:{line}"
        reason = _row_problem(row, seen, where)
        if reason is None and subset == "esc10":
            if row["esc10"] == "False":
                continue
            if row["category"] not in index:
                reason = f"esc10 is True but {row['category']!r} is not an ESC-10 class"
        if reason is None and not (audio / row["filename"]).is_file():
            reason = f"audio file audio/{row['filename']} not found"
        if reason is not None:
            problems.append(Problem(where, reason))
            continue
        records.append(_record(row, audio, index[row["category"]]))
    listed = {audio / row["filename"] for row in rows if row.get("filename")}
    problems += unlisted(audio, listed, META)
    return Collection(
        name=subset, classes=list(vocab), records=records, multi_label=False, problems=problems,
        info={"recipe": NAME, "source": META,
              "split_rule": "official folds 1-5 from the fold column; every clip split train"
                            + ("; rows with esc10 True" if subset == "esc10" else ""),
              "options": {"subset": subset}})


def _hint(root: Path) -> str:
    return did_you_mean(root, META) or "SRC must be the folder holding meta/ and audio/ (ESC-50-master)"


def _row_problem(row: dict[str, Any], seen: dict[str, str], where: str) -> str | None:
    """Why a metadata row cannot be used, or None."""
    problem = malformed(row, COLUMNS)
    if problem:
        return problem
    name = row["filename"]
    if not name:
        return "empty filename"
    if not row["fold"].isdigit() or int(row["fold"]) not in FOLDS:
        return f"fold {row['fold']!r} is not one of 1-5"
    if not row["target"].isdigit() or int(row["target"]) >= len(CLASSES):
        return f"unknown label: target {row['target']!r} is not an ESC-50 class index 0-49"
    if CLASSES[int(row["target"])] != row["category"]:
        return (f"unknown label: category {row['category']!r} does not match target {row['target']} "
                f"({CLASSES[int(row['target'])]!r})")
    if row["esc10"] not in ("True", "False"):
        return f"esc10 {row['esc10']!r} is not True or False"
    if name in seen:
        return f"duplicate filename {name} (also {seen[name]})"
    seen[name] = where
    return None


def _record(row: dict[str, str], audio: Path, label: int) -> Record:
    source = f"audio/{row['filename']}"
    return Record(
        key=safe_key(source), source=source, path=audio / row["filename"], labels=[label],
        split="train", fold=int(row["fold"]), group=row["src_file"],
        extra={"take": row["take"], "target": int(row["target"]), "esc10": row["esc10"] == "True"})
