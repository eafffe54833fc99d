"""fsd50k: FSD50K sound events, 51,197 Freesound clips, 200-class multi-label vocabulary.

Layout (the Zenodo zips FSD50K.ground_truth, FSD50K.dev_audio, FSD50K.eval_audio and,
optionally, FSD50K.metadata unpacked side by side)::

    SRC/FSD50K.ground_truth/vocabulary.csv   index,name,mid (no header; 200 rows)
    SRC/FSD50K.ground_truth/dev.csv          fname,labels,mids,split   (split: train or val)
    SRC/FSD50K.ground_truth/eval.csv         fname,labels,mids
    SRC/FSD50K.dev_audio/<fname>.wav
    SRC/FSD50K.eval_audio/<fname>.wav
    SRC/FSD50K.metadata/{dev,eval}_clips_info_FSD50K.json   optional: Freesound uploader per clip

``labels`` and ``mids`` are comma-separated lists in double quotes; each label name must be in
vocabulary.csv with the same MID. Classes are the vocabulary names in index order; labels are
multi-hot. Splits: dev.csv ``train`` -> ``train``, ``val`` -> ``valid``, eval.csv -> ``eval``
(fold None). group = the Freesound uploader when FSD50K.metadata is present (the publisher cut
train/val so that no uploader is in both), else empty. Each json keeps ``fname`` and ``mids``
(and ``uploader``, ``license`` when known). ``--part dev`` or ``--part eval`` reads one half.

Example::

    shardgen pack --recipe fsd50k FSD50K out/fsd50k --sample-rate 32000 --workers 4
"""
from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path
from typing import Any

from ..records import Collection, Problem, Record, RecipeError, require_file, safe_key
from ._common import did_you_mean, malformed, read_csv, read_json, read_text, unlisted

NAME = "fsd50k"
DESCRIPTION = "FSD50K (FSD50K.ground_truth/ + FSD50K.{dev,eval}_audio/): 200 classes multi-label, train/valid/eval"
DEFAULT_ON_ERROR = "skip"
GT = "FSD50K.ground_truth"
VOCAB = f"{GT}/vocabulary.csv"
PARTS = {  # part -> (ground-truth table, audio folder, required columns)
    "dev": (f"{GT}/dev.csv", "FSD50K.dev_audio", ("fname", "labels", "mids", "split")),
    "eval": (f"{GT}/eval.csv", "FSD50K.eval_audio", ("fname", "labels", "mids")),
}
DEV_SPLITS = {"train": "train", "val": "valid"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--part", choices=("all", "dev", "eval"), default="all",
                        help="all: dev.csv and eval.csv (default); dev or eval: one half only")


def load(root: Path, part: str = "all") -> Collection:
    """Read FSD50K as its zips unpack.

    Example:
        >>> c = load(Path("FSD50K"))                                # doctest: +SKIP
        >>> len(c.classes), c.split_counts()                        # doctest: +SKIP
        (200, {'eval': 10231, 'train': 36796, 'valid': 4170})
    """
    if part not in ("all", "dev", "eval"):
        raise RecipeError(f"--part must be all, dev or eval, got {part!r}")
    root = Path(root)
    names, mids = read_vocabulary(require_file(root, VOCAB, _hint(root)))
    index = {n: i for i, n in enumerate(names)}
    records: list[Record] = []
    problems: list[Problem] = []
    sources = [VOCAB]
    for name in (("dev", "eval") if part == "all" else (part,)):
        table_rel, audio_rel, columns = PARTS[name]
        table = require_file(root, table_rel, _hint(root))
        audio = root / audio_rel
        if not audio.is_dir():
            raise RecipeError(f"expected {audio_rel}/ beside {GT}/ under {root} (not found at {audio})")
        info = _clips_info(root, name)
        rows = read_csv(table, required=columns)
        recs, probs = _read_part(table, rows, audio, audio_rel, name, index, mids, info)
        records += recs
        # every named file counts as listed, so a bad row is not reported twice
        listed = {audio / f"{row['fname']}.wav" for row in rows if row.get("fname")}
        problems += probs + unlisted(audio, listed, table_rel)
        sources.append(table_rel)
    return Collection(
        name="fsd50k", classes=names, records=records, multi_label=True, problems=problems,
        info={"recipe": NAME, "source": sources,
              "split_rule": "dev.csv split column (train -> train, val -> valid); eval.csv -> eval",
              "options": {"part": part}})


def read_vocabulary(path: Path) -> tuple[list[str], list[str]]:
    """Class names and MIDs from vocabulary.csv (``index,name,mid`` rows, no header)."""
    names: list[str] = []
    mids: list[str] = []
    for line, row in enumerate(csv.reader(io.StringIO(read_text(path))), start=1):
        if not row:
            continue
        if len(row) != 3 or row[0].strip() != str(len(names)):
            raise RecipeError(f"{path}:{line}: expected 'index,name,mid' with index {len(names)}, got {row}")
        names.append(row[1].strip())
        mids.append(row[2].strip())
    if not names:
        raise RecipeError(f"{path}: no classes")
    if len(set(names)) != len(names):
        raise RecipeError(f"{path}: a class name appears twice")
    return names, mids


def _read_part(table: Path, rows: list[dict[str, Any]], audio: Path, audio_rel: str, part: str,
               index: dict[str, int], mids: list[str], info: dict[str, dict[str, Any]]
               ) -> tuple[list[Record], list[Problem]]:
    records: list[Record] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{table}:{line}"
        reason = _row_problem(row, part, index, mids)
        fname = row.get("fname") or ""
        if reason is None and fname in seen:
            reason = f"duplicate fname {fname} (also line {seen[fname]})"
        source = f"{audio_rel}/{fname}.wav"
        if reason is None and not (audio / f"{fname}.wav").is_file():
            reason = f"audio file {source} not found"
        if reason is not None:
            problems.append(Problem(where, reason))
            continue
        seen[fname] = line
        labels = sorted({index[n] for n in _split_list(row["labels"])})
        split = DEV_SPLITS[row["split"]] if part == "dev" else "eval"
        clip = info.get(fname, {})
        extra: dict[str, Any] = {"fname": fname, "mids": _split_list(row["mids"])}
        extra.update({k: clip[k] for k in ("uploader", "license") if k in clip})
        records.append(Record(key=safe_key(source), source=source, path=audio / f"{fname}.wav",
                              labels=labels, split=split, group=str(clip.get("uploader", "")),
                              extra=extra))
    return records, problems


def _row_problem(row: dict[str, Any], part: str, index: dict[str, int], mids: list[str]) -> str | None:
    """Why a ground-truth row cannot be used, or None."""
    problem = malformed(row, PARTS[part][2])
    if problem:
        return problem
    if not row["fname"]:
        return "empty fname"
    names, row_mids = _split_list(row["labels"]), _split_list(row["mids"])
    if not names:
        return "no labels"
    unknown = [n for n in names if n not in index]
    if unknown:
        return f"unknown label(s) {unknown} (not in vocabulary.csv)"
    expected = [mids[index[n]] for n in names]
    if row_mids != expected:
        return f"mids {row_mids} do not match the vocabulary's mids {expected} for labels {names}"
    if part == "dev" and row["split"] not in DEV_SPLITS:
        return f"split {row['split']!r} is not train or val"
    return None


def _split_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _clips_info(root: Path, part: str) -> dict[str, dict[str, Any]]:
    """fname -> {uploader, license, ...} from FSD50K.metadata, or {} when that zip is absent."""
    path = root / "FSD50K.metadata" / f"{part}_clips_info_FSD50K.json"
    if not path.is_file():
        return {}
    data = read_json(path, dict, "an object mapping fname to clip info")
    return {str(k): v for k, v in data.items() if isinstance(v, dict)}


def _hint(root: Path) -> str:
    return did_you_mean(root, VOCAB) or f"SRC must be the folder holding {GT}/, FSD50K.dev_audio/ and FSD50K.eval_audio/"
