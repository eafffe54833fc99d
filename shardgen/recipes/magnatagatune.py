"""magnatagatune: MagnaTagATune, 25,863 music clips of ~29 s, top-50 (or all 188) tags, multi-label.

Layout (annotations_final.csv, and mp3.zip.001-003 concatenated and unzipped)::

    SRC/annotations_final.csv     tab-separated, fields in double quotes: clip_id, 188 tag
                                  columns of 0/1, mp3_path (e.g. f/<artist>-<album>-<nn>-<title>-0-29.mp3)
    SRC/<0-9,a-f>/<clip>.mp3      or SRC/mp3/<0-9,a-f>/... (--audio-dir; default SRC/mp3 when
                                  it exists, else SRC; a relative DIR is taken relative to SRC)

Classes: ``--tags top50`` (default) = the 50 most frequent tag columns of annotations_final.csv
itself, most frequent first (ties in column order), which is the usual MTAT top-50 list;
``--tags all`` = every tag column in file order; ``--tags-file FILE`` = one tag per line in
your order, spelled as in the header or in camelCase (``noVocals`` = ``no vocals``).
Split = the official directory split: mp3 folders 0-9,a,b -> ``train``, c -> ``valid``,
d,e,f -> ``test`` (fold None); group = the folder. Clips with no tag of the chosen set are kept
with an empty label vector (``--drop-untagged`` leaves them out; either way the count is in
dataset.json's recipe.untagged). Key = ``<folder>_<clip_id>`` (e.g. ``f_000002``): the mp3 names
are longer than a sample key may be. Each json keeps ``clip_id`` and ``tags`` (every tag of the
188 set on the clip). The three mp3 files the release ships empty, and any other 0-byte file,
are reported and skipped. MP3 is transcoded by the writer.

Example::

    shardgen pack --recipe magnatagatune MTAT out/mtat --sample-rate 16000 --workers 4
    shardgen pack --recipe magnatagatune MTAT out/mtat188 --tags all --drop-untagged
"""
from __future__ import annotations

import argparse
import csv
import io
import re
from collections import Counter
from pathlib import Path
from typing import Any

from ..records import Collection, Problem, Record, RecipeError, require_file
from ._common import did_you_mean, read_text, unlisted

NAME = "magnatagatune"
DESCRIPTION = "MagnaTagATune (annotations_final.csv + mp3 folders 0-f): top-50/188 tags, dirs 0-b/c/d-f"
DEFAULT_ON_ERROR = "skip"
TABLE = "annotations_final.csv"
FOLDERS = "0123456789abcdef"
SPLITS = {**{d: "train" for d in "0123456789ab"}, "c": "valid", **{d: "test" for d in "def"}}
# Shipped as 0-byte files in the MTAT release (widely reported; they cannot be decoded).
KNOWN_EMPTY = {
    "6/norine_braun-now_and_zen-08-gently-117-146.mp3",
    "8/jacob_heringman-josquin_des_prez_lute_settings-19-gintzler__pater_noster-204-233.mp3",
    "9/american_baroque-dances_and_suites_of_rameau_and_couperin-25-le_petit_rien_xiveme_ordre_couperin-88-117.mp3",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tags", choices=("top50", "all"), default="top50",
                        help="top50: the 50 most frequent tags (default); all: every tag column")
    parser.add_argument("--tags-file", type=Path, default=None,
                        help="one tag per line, in class order (overrides --tags)")
    parser.add_argument("--drop-untagged", action="store_true",
                        help="leave out clips with no tag of the chosen set (default: keep, empty labels)")
    parser.add_argument("--audio-dir", default=None,
                        help="folder holding the 0-f mp3 folders (default SRC/mp3 if present, else SRC)")


def load(root: Path, tags: str = "top50", tags_file: Path | None = None, drop_untagged: bool = False,
         audio_dir: str | None = None) -> Collection:
    """Read MagnaTagATune as its files unpack.

    Example:
        >>> c = load(Path("MTAT"))                                   # doctest: +SKIP
        >>> len(c.classes), c.classes[:3]                            # doctest: +SKIP
        (50, ['guitar', 'classical', 'slow'])
    """
    if tags not in ("top50", "all"):
        raise RecipeError(f"--tags must be top50 or all, got {tags!r}")
    root = Path(root)
    table = require_file(root, TABLE, _hint(root))
    audio = _audio_root(root, audio_dir)
    columns, rows, problems = read_annotations(table)
    if tags_file is not None:
        vocab = resolve_tags(columns, read_text(Path(tags_file)).split("\n"), str(tags_file))
    elif tags == "all":
        vocab = list(columns)
    else:
        vocab = top_tags(columns, rows, 50)
    index = {t: i for i, t in enumerate(vocab)}
    records: list[Record] = []
    untagged = 0
    for row in rows:
        reason = _audio_problem(audio, row["mp3_path"])
        if reason is not None:
            problems.append(Problem(f"{table}:{row['line']}", reason))
            continue
        labels = sorted(index[t] for t in row["tags"] if t in index)
        untagged += not labels
        if not labels and drop_untagged:
            continue
        records.append(_record(row, labels, audio))
    listed = {audio / row["mp3_path"] for row in rows}
    for folder in FOLDERS:
        if (audio / folder).is_dir():
            problems += unlisted(audio / folder, listed, TABLE)
    return Collection(
        name="magnatagatune", classes=vocab, records=records, multi_label=True, problems=problems,
        info={"recipe": NAME, "source": TABLE,
              "split_rule": "mp3 folder: 0-9,a,b -> train, c -> valid, d,e,f -> test",
              "options": {"tags": "file" if tags_file is not None else tags,
                          "tags_file": str(tags_file) if tags_file is not None else None,
                          "drop_untagged": drop_untagged, "audio_dir": _rel(audio, root)},
              "untagged": {"count": untagged, "dropped": drop_untagged}})


def read_annotations(path: Path) -> tuple[list[str], list[dict[str, Any]], list[Problem]]:
    """Tag column names, usable rows (clip_id, tags set, mp3_path, line) and problems of the rest."""
    reader = csv.reader(io.StringIO(read_text(path)), delimiter="\t")
    header = [h.strip() for h in next(reader, [])]
    if len(header) < 3 or header[0] != "clip_id" or header[-1] != "mp3_path":
        raise RecipeError(f"{path}: expected a tab-separated header clip_id, <tags...>, mp3_path; "
                          f"found {header[:3]}...{header[-1:]}")
    columns = header[1:-1]
    rows: list[dict[str, Any]] = []
    problems: list[Problem] = []
    ids: dict[int, int] = {}
    paths: dict[str, int] = {}
    for line, fields in enumerate(reader, start=2):
        if not fields or fields == [""]:
            continue
        row, reason = _parse_row([f.strip() for f in fields], columns)
        if reason is None and row["clip_id"] in ids:
            reason = f"duplicate clip_id {row['clip_id']} (also line {ids[row['clip_id']]})"
        elif reason is None and row["mp3_path"] in paths:
            reason = f"duplicate mp3_path {row['mp3_path']} (also line {paths[row['mp3_path']]})"
        if reason is not None:
            problems.append(Problem(f"{path}:{line}", reason))
            continue
        ids[row["clip_id"]], paths[row["mp3_path"]] = line, line
        row["line"] = line
        rows.append(row)
    return columns, rows, problems


def _parse_row(fields: list[str], columns: list[str]) -> tuple[dict[str, Any], str | None]:
    if len(fields) != len(columns) + 2:
        return {}, f"malformed row: {len(fields)} fields, expected {len(columns) + 2} (clip_id, tags, mp3_path)"
    clip_id, values, mp3 = fields[0], fields[1:-1], fields[-1]
    if not clip_id.isdigit():
        return {}, f"clip_id {clip_id!r} is not a number"
    bad = [(c, v) for c, v in zip(columns, values) if v not in ("0", "1")]
    if bad:
        return {}, f"tag column {bad[0][0]!r} has value {bad[0][1]!r}, expected 0 or 1"
    folder = mp3.split("/", 1)[0]
    if "/" not in mp3 or folder not in SPLITS or not mp3.endswith(".mp3"):
        return {}, f"mp3_path {mp3!r} is not <0-9 or a-f>/<name>.mp3"
    return {"clip_id": int(clip_id), "mp3_path": mp3,
            "tags": [c for c, v in zip(columns, values) if v == "1"]}, None


def top_tags(columns: list[str], rows: list[dict[str, Any]], n: int) -> list[str]:
    """The ``n`` most frequent tags over all rows, most frequent first, ties in column order."""
    counts = Counter(t for row in rows for t in row["tags"])
    order = {c: i for i, c in enumerate(columns)}
    return sorted(columns, key=lambda c: (-counts[c], order[c]))[:n]


def _norm(tag: str) -> str:
    return re.sub(r"[\s_-]", "", tag).lower()


def resolve_tags(columns: list[str], wanted: list[str], where: str) -> list[str]:
    """Map a tag list (header spelling or camelCase) to header names, in the list's order."""
    by_norm: dict[str, list[str]] = {}
    for c in columns:
        by_norm.setdefault(_norm(c), []).append(c)
    vocab: list[str] = []
    for line, tag in enumerate((t.strip() for t in wanted), start=1):
        if not tag:
            continue
        matches = [tag] if tag in columns else by_norm.get(_norm(tag), [])
        if len(matches) != 1:
            why = "matches several columns " + str(matches) if matches else "is not a column of " + TABLE
            raise RecipeError(f"{where}:{line}: tag {tag!r} {why}")
        if matches[0] in vocab:
            raise RecipeError(f"{where}:{line}: tag {tag!r} is listed twice")
        vocab.append(matches[0])
    if not vocab:
        raise RecipeError(f"{where}: no tags")
    return vocab


def _audio_problem(audio: Path, mp3: str) -> str | None:
    path = audio / mp3
    if mp3 in KNOWN_EMPTY:
        return f"known-corrupt clip {mp3} (shipped as an empty file in the MTAT release)"
    if not path.is_file():
        return f"audio file {mp3} not found under {audio}"
    if path.stat().st_size == 0:
        return f"audio file {mp3} is empty (0 bytes)"
    return None


def _record(row: dict[str, Any], labels: list[int], audio: Path) -> Record:
    folder = row["mp3_path"].split("/", 1)[0]
    return Record(key=f"{folder}_{row['clip_id']:06d}", source=row["mp3_path"], path=audio / row["mp3_path"],
                  labels=labels, split=SPLITS[folder], group=folder,
                  extra={"clip_id": row["clip_id"], "tags": row["tags"]})


def _audio_root(root: Path, audio_dir: str | None) -> Path:
    if audio_dir is not None:
        audio = root / audio_dir
        if not audio.is_dir():
            raise RecipeError(f"--audio-dir {audio_dir}: no folder at {audio}")
        return audio
    return root / "mp3" if (root / "mp3").is_dir() else root


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _hint(root: Path) -> str:
    return did_you_mean(root, TABLE) or f"SRC must be the folder holding {TABLE} and the mp3 folders 0-9, a-f"
