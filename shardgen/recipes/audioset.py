"""audioset: Google AudioSet, 10-s YouTube segments, 527 classes, multi-label.

AudioSet ships metadata only; the audio is whatever the user downloaded. Layout::

    SRC/class_labels_indices.csv        index,mid,display_name (527 rows)
    SRC/balanced_train_segments.csv     each: 3 '#' comment lines, then rows
    SRC/unbalanced_train_segments.csv   YTID, start_seconds, end_seconds, "mid1,mid2,..."
    SRC/eval_segments.csv
    SRC/<audio folder per split>/...    one file per clip, in sub-folders or not

(``--meta-dir DIR`` when the CSVs are elsewhere, e.g. ``--meta-dir metadata`` for PANNs.)
Audio folders, first one found per split (``--audio-dir SPLIT=DIR`` overrides; a relative DIR
is taken relative to SRC)::

    balanced_train:   balanced_train/    audio/balanced_train/    audios/balanced_train_segments/
    unbalanced_train: unbalanced_train/  audio/unbalanced_train/  audios/unbalanced_train_segments/
    eval:             eval/              audio/eval/              audios/eval_segments/

A clip file is wav, flac, ogg or mp3, named by its YTID with or without the start time:
``<YTID>.wav``, ``Y<YTID>.wav`` (PANNs' download), ``<YTID>_<start>.flac``,
``<YTID>_<start>_<end>.wav``; files are taken to hold the 10-s segment already.

Classes are the display names in index order; labels are the row's MIDs as a multi-hot vector.
Split = the segment file (``balanced_train``, ``unbalanced_train``, ``eval``; fold None); key
and group = the YTID; each json keeps ``start_seconds``, ``end_seconds`` and ``mids``.
``--segments`` picks the segment files (comma-separated, or ``all``); by default every split
whose CSV and audio folder both exist. Listed clips without a local file (videos taken down:
availability drift) are reported as one summary per split followed by one problem per clip, and
the rest is packed; dataset.json's recipe.availability has the counts.

Example::

    shardgen pack --recipe audioset ~/audioset out/audioset --sample-rate 32000 --workers 8
    shardgen pack --recipe audioset ~/audioset out/as20k --segments balanced_train,eval \\
        --audio-dir balanced_train=/data/as/bal_wav --audio-dir eval=/data/as/eval_wav
"""
from __future__ import annotations

import argparse
import csv
import io
import re
from pathlib import Path
from typing import Any

from ..records import Collection, Problem, Record, RecipeError, require_file, safe_key
from ._common import did_you_mean, read_csv, read_text

NAME = "audioset"
DESCRIPTION = "AudioSet (class_labels_indices.csv + *_segments.csv + local clips by YTID): 527 classes multi-label"
DEFAULT_ON_ERROR = "skip"
LABELS = "class_labels_indices.csv"
SEGMENTS = {
    "balanced_train": "balanced_train_segments.csv",
    "unbalanced_train": "unbalanced_train_segments.csv",
    "eval": "eval_segments.csv",
}
AUDIO_DIRS = ("{split}", "audio/{split}", "audios/{split}_segments")
AUDIO_EXTS = {".wav", ".flac", ".ogg", ".mp3"}
_YTID = re.compile(r"[A-Za-z0-9_-]{11}")
_ROW = re.compile(r'([^,"]*), *([^,"]*), *([^,"]*), *"([^"]*)" *')  # YTID, start, end, "mids"
_TIMES = re.compile(r"(?:_\d+(?:\.\d+)?){0,2}")  # "", "_30", "_30.000_40.000", "_30000_40000"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--segments", default=None,
                        help="segment files to read: comma-separated from balanced_train, unbalanced_train, "
                             "eval, or 'all' (default: every split whose CSV and audio folder exist)")
    parser.add_argument("--audio-dir", action="append", default=[], metavar="SPLIT=DIR",
                        help="audio folder of one split (repeatable); relative to SRC unless absolute")
    parser.add_argument("--meta-dir", default=None,
                        help="folder holding class_labels_indices.csv and the segment CSVs (default: SRC)")


def load(root: Path, segments: str | list[str] | None = None, audio_dir: list[str] | None = None,
         meta_dir: str | None = None) -> Collection:
    """Read AudioSet's metadata and match the local clips to it.

    Example:
        >>> c = load(Path("audioset"), segments="balanced_train,eval")   # doctest: +SKIP
        >>> len(c.classes), c.info["availability"]["eval"]["listed"]    # doctest: +SKIP
        (527, 20371)
    """
    root = Path(root)
    meta = root / meta_dir if meta_dir else root
    mids, names = read_labels(require_file(meta, LABELS, _hint(root, meta_dir)))
    index = {m: i for i, m in enumerate(mids)}
    overrides = _parse_audio_dirs(audio_dir or [])
    splits = _choose_splits(meta, root, segments, overrides)
    records: list[Record] = []
    summaries: list[Problem] = []
    problems: list[Problem] = []
    availability: dict[str, dict[str, Any]] = {}
    for split in splits:
        table = require_file(meta, SEGMENTS[split], f"--segments {split} needs its segment CSV")
        folder = _audio_folder(root, split, overrides)
        if folder is None:
            raise RecipeError(f"no audio folder for {split} under {root}: expected one of "
                              f"{[d.format(split=split) for d in AUDIO_DIRS]} (or --audio-dir {split}=DIR)")
        rows, bad, named = read_segments(table, index)
        files, file_problems = _match_files(folder, {r["ytid"] for r in rows}, named, SEGMENTS[split])
        missing = [r for r in rows if r["ytid"] not in files]
        for r in rows:
            if r["ytid"] in files:
                records.append(_record(r, files[r["ytid"]], root, split))
        availability[split] = {"listed": len(rows), "present": len(rows) - len(missing),
                               "missing": len(missing), "audio_dir": _rel(folder, root)}
        if missing:
            summaries.append(Problem(str(table), (
                f"{len(missing)} of {len(rows)} listed clips ({100 * len(missing) / len(rows):.1f}%) are "
                f"missing locally under {folder} (availability drift); packing the "
                f"{len(rows) - len(missing)} present")))
        problems += bad + file_problems + [
            Problem(f"{table}:{r['line']}", f"clip {r['ytid']} missing locally: no audio file named by "
                                            f"this YTID under {folder}") for r in missing]
    return Collection(
        name="audioset", classes=names, records=records, multi_label=True, problems=summaries + problems,
        info={"recipe": NAME, "source": [LABELS] + [SEGMENTS[s] for s in splits],
              "split_rule": "one split per segment file: " + ", ".join(f"{SEGMENTS[s]} -> {s}" for s in splits),
              "options": {"segments": list(splits), "audio_dir": {s: availability[s]["audio_dir"] for s in splits},
                          "meta_dir": meta_dir},
              "availability": availability})


def read_labels(path: Path) -> tuple[list[str], list[str]]:
    """MIDs and display names in index order from class_labels_indices.csv."""
    rows = read_csv(path, required=("index", "mid", "display_name"))
    for line, row in enumerate(rows, start=2):
        if row.get("index") != str(line - 2) or not row.get("mid") or not row.get("display_name"):
            raise RecipeError(f"{path}:{line}: expected index {line - 2} with a mid and a display_name, got {row}")
    mids = [r["mid"] for r in rows]
    if not mids:
        raise RecipeError(f"{path}: no classes")
    if len(set(mids)) != len(mids):
        raise RecipeError(f"{path}: a mid appears twice")
    return mids, [r["display_name"] for r in rows]


def read_segments(path: Path, index: dict[str, int]
                  ) -> tuple[list[dict[str, Any]], list[Problem], set[str]]:
    """Usable rows of a segment CSV (ytid, start, end, mids, labels, line), the problems of the
    rest, and the first field of every row (so a bad row's clip is not also called unlisted)."""
    rows: list[dict[str, Any]] = []
    problems: list[Problem] = []
    named: set[str] = set()
    seen: dict[str, int] = {}
    for line, text in enumerate(read_text(path).split("\n"), start=1):
        if not text.strip() or text.startswith("#"):
            continue
        fields = _fields(text)
        named.add(fields[0].strip() if fields else "")
        if line == 1 and fields[:1] == ["YTID"]:  # a copy with the header left uncommented
            continue
        row, reason = _segment(fields, index)
        if reason is None and row["ytid"] in seen:
            reason = f"duplicate YTID {row['ytid']} (also line {seen[row['ytid']]})"
        if reason is not None:
            problems.append(Problem(f"{path}:{line}", reason))
            continue
        seen[row["ytid"]] = line
        row["line"] = line
        rows.append(row)
    return rows, problems, named


def _fields(text: str) -> list[str]:
    """Fields of one segment line; the regular shape is matched directly, anything else goes to csv."""
    m = _ROW.fullmatch(text)
    if m is not None:
        return list(m.groups())
    return next(csv.reader(io.StringIO(text), skipinitialspace=True))


def _segment(fields: list[str], index: dict[str, int]) -> tuple[dict[str, Any], str | None]:
    """One parsed segment row, or the reason it cannot be used."""
    if len(fields) != 4:
        return {}, (f"malformed row: {len(fields)} fields, expected 4 "
                    "(YTID, start_seconds, end_seconds, positive_labels)")
    ytid, start, end, labels = (f.strip() for f in fields)
    if not _YTID.fullmatch(ytid):
        return {}, f"YTID {ytid!r} is not 11 characters of [A-Za-z0-9_-]"
    try:
        t0, t1 = float(start), float(end)
    except ValueError:
        return {}, f"start/end {start!r}, {end!r} are not numbers"
    if not 0 <= t0 < t1:
        return {}, f"start {start} is not before end {end}"
    mids = [m.strip() for m in labels.split(",") if m.strip()]
    if not mids:
        return {}, "no labels"
    unknown = [m for m in mids if m not in index]
    if unknown:
        return {}, f"unknown label(s) {unknown} (not in {LABELS})"
    return {"ytid": ytid, "start": t0, "end": t1, "mids": mids, "labels": sorted({index[m] for m in mids})}, None


def ytid_of(stem: str) -> str | None:
    """The YTID a file name stands for: ``<YTID>`` or ``Y<YTID>``, optionally + ``_<start>[_<end>]``.

    The two readings never both fit one name (the character after an 11-character YTID would
    have to be both ``_`` and a digit), so a YTID that itself starts with Y is read correctly.
    """
    for prefix in ("", "Y"):
        body = stem[len(prefix):] if stem.startswith(prefix) else ""
        if _YTID.fullmatch(body[:11]) and _TIMES.fullmatch(body[11:]):
            return body[:11]
    return None


def _match_files(folder: Path, listed: set[str], named: set[str], table: str
                 ) -> tuple[dict[str, Path], list[Problem]]:
    """YTID -> its file below ``folder`` for the usable rows (``listed``); problems for second
    files of a YTID and for files no row names at all (``named`` includes the bad rows)."""
    found: dict[str, Path] = {}
    problems: list[Problem] = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTS and not p.name.startswith(".")):
        ytid = ytid_of(path.stem)
        if ytid is None or ytid not in named:
            problems.append(Problem(str(path), f"audio file not listed in {table}"))
        elif ytid not in listed:
            continue  # its row is already reported as a problem
        elif ytid in found:
            problems.append(Problem(str(path), f"second audio file for YTID {ytid} (using {found[ytid].name})"))
        else:
            found[ytid] = path
    return found, problems


def _record(row: dict[str, Any], path: Path, root: Path, split: str) -> Record:
    return Record(key=safe_key(row["ytid"]), source=_rel(path, root), path=path, labels=row["labels"],
                  split=split, group=row["ytid"],
                  extra={"start_seconds": row["start"], "end_seconds": row["end"], "mids": row["mids"]})


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _parse_audio_dirs(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        split, sep, folder = item.partition("=")
        if not sep or split not in SEGMENTS or not folder:
            raise RecipeError(f"--audio-dir expects SPLIT=DIR with SPLIT one of {list(SEGMENTS)}, got {item!r}")
        out[split] = folder
    return out


def _audio_folder(root: Path, split: str, overrides: dict[str, str]) -> Path | None:
    if split in overrides:
        folder = root / overrides[split]
        if not folder.is_dir():
            raise RecipeError(f"--audio-dir {split}={overrides[split]}: no folder at {folder}")
        return folder
    return next((root / d.format(split=split) for d in AUDIO_DIRS if (root / d.format(split=split)).is_dir()), None)


def _choose_splits(meta: Path, root: Path, segments: str | list[str] | None,
                   overrides: dict[str, str]) -> list[str]:
    if segments is None:
        chosen = [s for s in SEGMENTS if (meta / SEGMENTS[s]).is_file() and _audio_folder(root, s, overrides)]
        if not chosen:
            raise RecipeError(f"no split has both its segment CSV in {meta} and an audio folder under {root}: "
                              f"expected e.g. {meta / SEGMENTS['eval']} and {root / 'eval'}/ "
                              f"(or --audio-dir eval=DIR)")
        return chosen
    names = segments.split(",") if isinstance(segments, str) else list(segments)
    names = list(SEGMENTS) if names == ["all"] else [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in SEGMENTS]
    if unknown or not names:
        raise RecipeError(f"--segments: unknown split(s) {unknown}; choose from {list(SEGMENTS)} or 'all'")
    return [s for s in SEGMENTS if s in names]


def _hint(root: Path, meta_dir: str | None) -> str:
    if meta_dir is None and (root / "metadata" / LABELS).is_file():
        return "found metadata/class_labels_indices.csv: add --meta-dir metadata"
    return did_you_mean(root, LABELS) or "SRC must hold class_labels_indices.csv and the *_segments.csv files (or use --meta-dir)"
