"""tau_scenes: TAU Urban Acoustic Scenes 2019 development set, 14,400 10-s clips, 10 scenes.

Layout (the .meta.zip and .audio.1..21.zip archives from Zenodo all unpack into
TAU-urban-acoustic-scenes-2019-development/)::

    SRC/meta.csv                         filename, scene_label, identifier, source_label (tab-separated)
    SRC/evaluation_setup/fold1_train.csv     filename, scene_label (tab-separated)
    SRC/evaluation_setup/fold1_evaluate.csv  filename, scene_label: the test clips with their labels
    SRC/evaluation_setup/fold1_test.csv      filename: the same clips without labels (optional)
    SRC/audio/<scene>-<city>-<location>-<segment>-<device>.wav   e.g. audio/airport-lisbon-1000-40000-a.wav

Classes are the 10 scene labels, sorted (airport, bus, metro, metro_station, park,
public_square, shopping_mall, street_pedestrian, street_traffic, tram). Splits come from the
official fold-1 setup: fold1_train.csv -> ``train``; fold1_evaluate.csv -> ``test`` (or the
name given with ``--eval-split``, e.g. ``valid``; fold1_test.csv lists the same clips, so there
is no third split). fold is None. group = the recording location (``identifier``, e.g.
``barcelona-0``): the setup keeps a location on one side, and so must any custom split. Each
json keeps ``city``, ``location`` and ``device``. The 1,030 clips of meta.csv that the
setup leaves unused are reported, or packed as split ``--unused-split NAME``.

Example::

    shardgen pack --recipe tau_scenes TAU-urban-acoustic-scenes-2019-development out/tau2019 --sample-rate 44100
    shardgen pack --recipe tau_scenes TAU-urban-acoustic-scenes-2019-development out/tau2019 --unused-split unused
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..records import Collection, Problem, Record, RecipeError, require_file, safe_key
from ._common import did_you_mean, read_csv, unlisted

NAME = "tau_scenes"
DESCRIPTION = "TAU Urban Acoustic Scenes 2019 dev (meta.csv + evaluation_setup/fold1_*): 10 scenes, group = location"
DEFAULT_ON_ERROR = "skip"
META = "meta.csv"
TRAIN = "evaluation_setup/fold1_train.csv"
EVALUATE = "evaluation_setup/fold1_evaluate.csv"
TEST = "evaluation_setup/fold1_test.csv"
META_COLUMNS = ("filename", "scene_label", "identifier", "source_label")
LIST_COLUMNS = ("filename", "scene_label")
CLASSES = ["airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
           "street_pedestrian", "street_traffic", "tram"]
IDENTIFIER = re.compile(r"^([a-z]+)-(\d+)$")


@dataclass
class _Clip:
    """One usable meta.csv row."""

    where: str
    filename: str
    scene: str
    identifier: str
    device: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eval-split", choices=("test", "valid"), default="test",
                        help="split name for the fold1_evaluate.csv clips (default test)")
    parser.add_argument("--unused-split", default=None, metavar="NAME",
                        help="pack the clips no fold-1 list uses as this split (default: report them)")


def load(root: Path, eval_split: str = "test", unused_split: str | None = None) -> Collection:
    """Read the TAU 2019 development set as its archives unpack.

    Example:
        >>> c = load(Path("TAU-urban-acoustic-scenes-2019-development"))  # doctest: +SKIP
        >>> c.split_counts()                                              # doctest: +SKIP
        {'test': 4185, 'train': 9185}
    """
    root = Path(root)
    if eval_split not in ("test", "valid"):
        raise RecipeError(f"--eval-split must be test or valid, got {eval_split!r}")
    if unused_split is not None and unused_split in ("train", eval_split):
        raise RecipeError(f"--unused-split {unused_split!r} would mix the unused clips into an official split")
    meta = require_file(root, META, _hint(root))
    train_list = require_file(root, TRAIN, "the evaluation_setup/ folder comes with meta.csv in the .meta.zip")
    eval_list = require_file(root, EVALUATE, "the evaluation_setup/ folder comes with meta.csv in the .meta.zip")
    audio = root / "audio"
    if not audio.is_dir():
        raise RecipeError(f"expected audio/ beside meta.csv under {root} (not found at {audio})")

    problems: list[Problem] = []
    clips = _read_meta(meta, problems)
    split_of: dict[str, str] = {}
    _assign(train_list, "train", clips, split_of, problems)
    _assign(eval_list, eval_split, clips, split_of, problems)
    if (root / TEST).is_file():
        problems += _compare_test_list(root / TEST, eval_list)
    records = []
    for name, clip in clips.items():
        split = split_of.get(name, unused_split)
        if split is None:
            problems.append(Problem(clip.where, f"{name} is in no fold-1 list (unused by the official setup)"))
        elif not (root / name).is_file():
            problems.append(Problem(clip.where, f"audio file {name} not found"))
        else:
            records.append(_record(root, clip, split))
    problems += unlisted(audio, {root / n for n in clips}, META)
    return Collection(
        name="tau_scenes_2019", classes=list(CLASSES), records=records, multi_label=False, problems=problems,
        info={"recipe": NAME, "source": f"{META}, {TRAIN}, {EVALUATE}",
              "split_rule": f"fold1_train -> train, fold1_evaluate -> {eval_split}"
                            + (f", unused -> {unused_split}" if unused_split else ", unused clips reported"),
              "options": {"eval_split": eval_split, "unused_split": unused_split}})


def _hint(root: Path) -> str:
    return did_you_mean(root, META) or "SRC must be TAU-urban-acoustic-scenes-2019-development/ holding meta.csv, evaluation_setup/ and audio/"


def _read_meta(meta: Path, problems: list[Problem]) -> dict[str, _Clip]:
    """Usable meta.csv rows by filename; the others become problems."""
    clips: dict[str, _Clip] = {}
    for line, row in enumerate(read_csv(meta, delimiter="\t", required=META_COLUMNS), start=2):
        where = f"{meta}:{line}"
        reason = _meta_problem(row, clips)
        if reason is not None:
            problems.append(Problem(where, reason))
            continue
        clips[row["filename"]] = _Clip(where, row["filename"], row["scene_label"], row["identifier"],
                                       row["source_label"])
    return clips


def _meta_problem(row: dict[str, Any], clips: dict[str, _Clip]) -> str | None:
    if None in row or any(row.get(c) is None for c in META_COLUMNS):
        n = len([v for k, v in row.items() if k is not None and v is not None]) + len(row.get(None) or [])
        return f"malformed row: {n} fields, expected {len(META_COLUMNS)} (tab-separated {', '.join(META_COLUMNS)})"
    name, scene, ident = row["filename"], row["scene_label"], row["identifier"]
    if not name:
        return "empty filename"
    if scene not in CLASSES:
        return f"unknown label {scene!r}"
    if not IDENTIFIER.match(ident):
        return f"identifier {ident!r} is not <city>-<location number>"
    # the file name repeats scene, location and device: a disagreement means a damaged row
    expected = f"{scene}-{ident}-"
    base = name.rsplit("/", 1)[-1]
    if not base.startswith(expected) or not base.endswith(f"-{row['source_label']}.wav"):
        return f"file name {base} does not match scene {scene!r}, identifier {ident!r}, device {row['source_label']!r}"
    if name in clips:
        return f"duplicate filename {name} (also {clips[name].where})"
    return None


def _assign(table: Path, split: str, clips: dict[str, _Clip], split_of: dict[str, str],
            problems: list[Problem]) -> None:
    """Put the clips of one fold-1 list into ``split``, checking each row against meta.csv."""
    for line, row in enumerate(read_csv(table, delimiter="\t", required=LIST_COLUMNS), start=2):
        where = f"{table}:{line}"
        name, scene = row.get("filename"), row.get("scene_label")
        if None in row or not name or not scene:
            problems.append(Problem(where, "malformed row: expected filename<TAB>scene_label"))
        elif name not in clips:
            problems.append(Problem(where, f"{name} is not a usable clip of {META}"))
        elif scene != clips[name].scene:
            problems.append(Problem(where, f"label {scene!r} differs from {META} ({clips[name].scene!r})"))
        elif name in split_of:
            problems.append(Problem(where, f"{name} is already in split {split_of[name]!r}"))
        else:
            split_of[name] = split


def _compare_test_list(test: Path, evaluate: Path) -> list[Problem]:
    """fold1_test.csv must list exactly the clips of fold1_evaluate.csv."""
    tested = [r.get("filename") or "" for r in read_csv(test, delimiter="\t", required=("filename",))]
    evaluated = {r.get("filename") for r in read_csv(evaluate, delimiter="\t", required=("filename",))}
    problems = [Problem(f"{test}:{i}", f"{name} is not in {EVALUATE}")
                for i, name in enumerate(tested, start=2) if name not in evaluated]
    missing = sorted(evaluated - set(tested) - {None})
    problems += [Problem(str(evaluate), f"{name} is not in {TEST}") for name in missing]
    return problems


def _record(root: Path, clip: _Clip, split: str) -> Record:
    return Record(
        key=safe_key(clip.filename), source=clip.filename, path=root / clip.filename,
        labels=[CLASSES.index(clip.scene)], split=split, fold=None, group=clip.identifier,
        extra={"city": clip.identifier.split("-", 1)[0], "location": clip.identifier, "device": clip.device})
