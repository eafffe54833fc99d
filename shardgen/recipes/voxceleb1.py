"""voxceleb1: VoxCeleb1 speaker identification / verification, 1,251 speakers.

Layout (vox1_dev_wav.zip and vox1_test_wav.zip unpacked into the same folder, plus the two
metadata files from the VoxCeleb1 page)::

    SRC/vox1_meta.csv                 tab-separated: VoxCeleb1 ID, VGGFace1 ID, Gender, Nationality, Set
    SRC/iden_split.txt                lines "1 id10001/1zcIwhmdeo4/00001.wav" (1 train, 2 valid, 3 test)
    SRC/wav/<speaker>/<video>/<nnnnn>.wav

``--meta FILE`` / ``--iden-split FILE`` read those two files from elsewhere. Classes: the
speaker ids of vox1_meta.csv, sorted (id10001 ... id11251).

``--task identification`` (default): splits from iden_split.txt (1 -> ``train``,
2 -> ``valid``, 3 -> ``test``); group = the YouTube video id (utterances of one video stay
together). ``--task verification``: every clip under wav/, split by the speaker's Set column
(dev -> ``train``, test -> ``test``); group = the speaker id. Each json keeps speaker, video,
name (VGGFace1 ID), gender and nationality; source = ``wav/<speaker>/<video>/<nnnnn>.wav``.

Example::

    shardgen pack --recipe voxceleb1 ~/datasets/voxceleb1 out/vox1_iden --workers 8
    shardgen pack --recipe voxceleb1 ~/datasets/voxceleb1 out/vox1_veri --task verification
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from ..records import Collection, Problem, Record, RecipeError, safe_key
from ._common import read_csv, read_text, unlisted

NAME = "voxceleb1"
DESCRIPTION = "VoxCeleb1 (vox1_meta.csv + wav/ + iden_split.txt): 1,251 speakers, identification or verification"
DEFAULT_ON_ERROR = "skip"
META = "vox1_meta.csv"
IDEN = "iden_split.txt"
COLUMNS = ("VoxCeleb1 ID", "VGGFace1 ID", "Gender", "Nationality", "Set")
IDEN_SPLITS = {"1": "train", "2": "valid", "3": "test"}
SET_SPLITS = {"dev": "train", "test": "test"}
TASKS = ("identification", "verification")
CLIP = re.compile(r"^(?P<speaker>id\d+)/(?P<video>[^/]+)/[^/]+\.wav$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=TASKS, default="identification",
                        help="identification: iden_split.txt splits (default); verification: Set column dev/test")
    parser.add_argument("--meta", type=Path, help=f"speaker metadata file (default SRC/{META})")
    parser.add_argument("--iden-split", type=Path, help=f"identification split file (default SRC/{IDEN})")


def load(root: Path, task: str = "identification", meta: Path | None = None,
         iden_split: Path | None = None) -> Collection:
    """Read VoxCeleb1 as its archives unpack.

    Example:
        >>> c = load(Path("voxceleb1"), task="verification")   # doctest: +SKIP
        >>> len(c.classes), c.records[0].split, c.records[0].extra["gender"]  # doctest: +SKIP
        (1251, 'train', 'm')
    """
    if task not in TASKS:
        raise RecipeError(f"--task must be one of {TASKS}, got {task!r}")
    root = Path(root)
    meta_path = _expected(root, meta, META)
    wav = root / "wav"
    if not wav.is_dir():
        raise RecipeError(f"expected wav/<speaker>/<video>/*.wav under {root} (not found at {wav})")
    problems: list[Problem] = []
    speakers = read_speakers(meta_path, problems)
    classes = sorted(speakers)
    index = {s: i for i, s in enumerate(classes)}
    if task == "identification":
        table = _expected(root, iden_split, IDEN, "or use --task verification, which needs only vox1_meta.csv")
        records = identification_records(root, table, speakers, index, problems)
        source, rule = [META, IDEN], "iden_split.txt: 1 train, 2 valid, 3 test; group = video"
    else:
        records = verification_records(root, speakers, index, problems)
        source, rule = [META, "wav/"], "vox1_meta.csv Set: dev -> train, test -> test; group = speaker"
    return Collection(
        name=f"voxceleb1_{task}", classes=classes, records=records, multi_label=False, problems=problems,
        info={"recipe": NAME, "source": source, "split_rule": rule,
              "options": {"task": task, "meta": str(meta) if meta else None,
                          "iden_split": str(iden_split) if iden_split else None}})


def _expected(root: Path, given: Path | None, name: str, extra: str = "") -> Path:
    """The metadata file given, or SRC/<name>; a RecipeError saying where it was expected."""
    path = Path(given) if given is not None else root / name
    if path.is_file():
        return path
    below = sorted(root.glob(f"*/{name}")) if root.is_dir() and given is None else []
    hint = f"did you mean {below[0].parent}?" if below else f"SRC must hold {name} and wav/"
    raise RecipeError(f"expected {name} at {path} (not found); {hint}" + (f"; {extra}" if extra else ""))


def read_speakers(path: Path, problems: list[Problem]) -> dict[str, dict[str, str]]:
    """Speaker id -> its vox1_meta.csv row, for the well-formed rows."""
    rows = read_csv(path, delimiter="\t", required=COLUMNS)
    speakers: dict[str, dict[str, str]] = {}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{path}:{line}"
        sid = row.get("VoxCeleb1 ID") or ""
        if None in row or any(row.get(c) is None for c in COLUMNS):
            problems.append(Problem(where, f"malformed row: expected {len(COLUMNS)} tab-separated fields"))
        elif not re.fullmatch(r"id\d+", sid):
            problems.append(Problem(where, f"speaker id {sid!r} is not id<digits>"))
        elif row["Set"] not in SET_SPLITS:
            problems.append(Problem(where, f"Set {row['Set']!r} is not dev or test"))
        elif sid in speakers:
            problems.append(Problem(where, f"speaker {sid} appears twice"))
        else:
            speakers[sid] = row
    if not speakers:
        raise RecipeError(f"{path}: no usable speaker rows")
    return speakers


def identification_records(root: Path, table: Path, speakers: dict[str, dict[str, str]],
                           index: dict[str, int], problems: list[Problem]) -> list[Record]:
    records, listed = [], set()
    for line, text in enumerate(read_text(table).split("\n"), start=1):
        if not text.strip():
            continue
        where = f"{table}:{line}"
        parts = text.split()
        m = CLIP.match(parts[1]) if len(parts) == 2 else None
        if m is None or parts[0] not in IDEN_SPLITS:
            problems.append(Problem(where, f"malformed line {text.strip()!r}: "
                                           "expected '<1|2|3> id<n>/<video>/<n>.wav'"))
            continue
        source = f"wav/{parts[1]}"
        listed.add(root / source)
        if m["speaker"] not in speakers:
            problems.append(Problem(where, f"unknown label: speaker {m['speaker']} is not in {META}"))
        elif not (root / source).is_file():
            problems.append(Problem(where, f"audio file {source} not found"))
        else:
            records.append(_record(root, source, m, speakers, index, IDEN_SPLITS[parts[0]], m["video"]))
    problems += unlisted(root / "wav", listed, IDEN)
    return records


def verification_records(root: Path, speakers: dict[str, dict[str, str]], index: dict[str, int],
                         problems: list[Problem]) -> list[Record]:
    records, seen = [], set()
    for folder in sorted(p for p in (root / "wav").iterdir() if p.is_dir() and not p.name.startswith(".")):
        clips = sorted(folder.glob("*/*.wav"))
        seen.update(clips)
        if folder.name not in speakers:
            problems.append(Problem(str(folder), f"unknown label: speaker {folder.name} is not in {META}; "
                                                 f"its {len(clips)} clip(s) are not packed"))
            continue
        split = SET_SPLITS[speakers[folder.name]["Set"]]
        for path in clips:
            source = path.relative_to(root).as_posix()
            m = CLIP.match(source[len("wav/"):])
            records.append(_record(root, source, m, speakers, index, split, folder.name))
    # audio outside wav/<speaker>/<video>/ (wrong depth, other formats) would otherwise go unnoticed
    problems += unlisted(root / "wav", seen, "the wav/<speaker>/<video>/<n>.wav layout")
    return records


def _record(root: Path, source: str, m: re.Match, speakers: dict[str, dict[str, str]], index: dict[str, int],
            split: str, group: str) -> Record:
    row = speakers[m["speaker"]]
    return Record(key=safe_key(source), source=source, path=root / source, labels=[index[m["speaker"]]],
                  split=split, group=group,
                  extra={"speaker": m["speaker"], "video": m["video"], "name": row["VGGFace1 ID"],
                         "gender": row["Gender"], "nationality": row["Nationality"]})
