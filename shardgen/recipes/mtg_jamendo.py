"""mtg_jamendo: MTG-Jamendo auto-tagging, 55k full-length tracks, multi-label genre/instrument/mood tags.

Layout (a clone of github.com/MTG/mtg-jamendo-dataset for the metadata; the audio tars that
its scripts/download/download.py fetches, unpacked into the audio folder)::

    SRC/data/splits/split-<N>/<prefix>-train.tsv        N = 0..4 (--split-index)
    SRC/data/splits/split-<N>/<prefix>-validation.tsv
    SRC/data/splits/split-<N>/<prefix>-test.tsv
        TRACK_ID  ARTIST_ID  ALBUM_ID  PATH  DURATION  TAGS...   (tab-separated, CRLF, one tag
        per column after DURATION, as many columns as the track has tags, e.g. genre---rock)
    AUDIO/<PATH>          e.g. AUDIO/48/948.mp3, or the low-quality AUDIO/48/948.low.mp3

AUDIO is ``--audio-dir`` (default SRC/audio; a relative path is taken relative to SRC). The
full-quality file is used when present, else the ``.low.mp3`` one (json ``audio_variant``).

``--subset`` picks the prefix: ``top50tags`` (default; autotagging_top50tags), ``genre``,
``instrument``, ``moodtheme`` or ``all`` (autotagging, every tag). The split files are the
authority: classes = every tag found in the three files of the chosen subset and split, sorted
(the publisher keeps only tags present in all three splits, so this is the official tag list:
50, 87, 40, 56 and 183 tags for split-0), written as in the files (``mood/theme---calm``).
Splits: train -> ``train``, validation -> ``valid``, test -> ``test`` (fold None); group = the
artist id (the publisher's splits keep each artist in one split). Key = PATH without extension
(``48_948``); each json keeps track_id, artist_id, album_id and the DURATION column as
``listed_duration`` (its ``duration`` is the length of the packed audio). Audio files that the
chosen subset does not list are not reported: the audio archive holds every track of raw_30s.tsv
and each subset lists only part of it. MP3 is transcoded by the writer.

Example::

    shardgen pack --recipe mtg_jamendo mtg-jamendo-dataset out/jamendo-mood --subset moodtheme \\
        --audio-dir /data/jamendo/audio-low --sample-rate 16000 --workers 8
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..records import Collection, Problem, Record, RecipeError, require_file, safe_key
from ._common import did_you_mean, read_text

NAME = "mtg_jamendo"
DESCRIPTION = "MTG-Jamendo (data/splits/split-N/*.tsv + audio/): top50/genre/instrument/moodtheme/all, group = artist"
DEFAULT_ON_ERROR = "skip"
SUBSETS = {"top50tags": "autotagging_top50tags", "genre": "autotagging_genre",
           "instrument": "autotagging_instrument", "moodtheme": "autotagging_moodtheme", "all": "autotagging"}
PARTS = {"train": "train", "validation": "valid", "test": "test"}
COLUMNS = ["TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subset", choices=list(SUBSETS), default="top50tags",
                        help="tag subset (default top50tags; 'all' = autotagging with every tag)")
    parser.add_argument("--split-index", type=int, default=0, help="which of the 5 official splits (default 0)")
    parser.add_argument("--audio-dir", default="audio",
                        help="folder the PATH column is relative to (default SRC/audio)")


def load(root: Path, subset: str = "top50tags", split_index: int = 0, audio_dir: str = "audio") -> Collection:
    """Read one official split of one MTG-Jamendo subset.

    Example:
        >>> c = load(Path("mtg-jamendo-dataset"), subset="moodtheme")   # doctest: +SKIP
        >>> len(c.classes), c.split_counts()                             # doctest: +SKIP
        (56, {'test': 4231, 'train': 9949, 'valid': 3802})
    """
    if subset not in SUBSETS:
        raise RecipeError(f"--subset must be one of {list(SUBSETS)}, got {subset!r}")
    root = Path(root)
    rels = [f"data/splits/split-{split_index}/{SUBSETS[subset]}-{part}.tsv" for part in PARTS]
    tables = [require_file(root, rel, _hint(root, split_index)) for rel in rels]
    audio = root / audio_dir
    if not audio.is_dir():
        raise RecipeError(f"expected the audio folder at {audio} (the folders 00-99 of the audio tars); "
                          "pass --audio-dir DIR")
    rows: list[dict[str, Any]] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for table, split in zip(tables, PARTS.values()):
        good, bad = read_split(table, split, seen)
        rows += good
        problems += bad
    vocab = sorted({t for row in rows for t in row["tags"]})
    index = {t: i for i, t in enumerate(vocab)}
    present = mp3_files(audio)
    records: list[Record] = []
    for row in rows:
        path, variant = _audio_file(audio, row["path"], present)
        if path is None:
            reason = f"audio file {row['path']} (or its .low.mp3) not found under {audio}"
            problems.append(Problem(row["where"], reason))
            continue
        records.append(Record(
            key=safe_key(row["path"]), source=row["path"], path=path,
            labels=sorted(index[t] for t in row["tags"]), split=row["split"], group=row["artist_id"],
            extra={"track_id": row["track_id"], "artist_id": row["artist_id"], "album_id": row["album_id"],
                   "listed_duration": row["duration"], "audio_variant": variant}))
    return Collection(
        name=f"mtg_jamendo_{subset}", classes=vocab, records=records, multi_label=True, problems=problems,
        info={"recipe": NAME, "source": rels,
              "split_rule": f"official split-{split_index}: train -> train, validation -> valid, test -> test",
              "options": {"subset": subset, "split_index": split_index, "audio_dir": audio_dir}})


def read_split(path: Path, split: str, seen: dict[str, str]) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Usable rows of one split TSV and the problems of the rest; ``seen`` tracks ids across files."""
    lines = read_text(path).split("\n")
    header = lines[0].split("\t") if lines else []
    if header != COLUMNS:
        raise RecipeError(f"{path}: expected the header {' '.join(COLUMNS)} (tab-separated), found {header}")
    rows: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for line, text in enumerate(lines[1:], start=2):
        if not text.strip():
            continue
        where = f"{path}:{line}"
        row, reason = _parse_row(text.split("\t"))
        if reason is None and row["track_id"] in seen:
            reason = f"duplicate TRACK_ID {row['track_id']} (also {seen[row['track_id']]})"
        if reason is not None:
            problems.append(Problem(where, reason))
            continue
        seen[row["track_id"]] = where
        row.update(split=split, where=where)
        rows.append(row)
    return rows, problems


def _parse_row(fields: list[str]) -> tuple[dict[str, Any], str | None]:
    fields = [f.strip() for f in fields]
    if len(fields) < 5:
        return {}, f"malformed row: {len(fields)} fields, expected {' '.join(COLUMNS)}..."
    track, artist, album, path, duration = fields[:5]
    tags = [t for t in fields[5:] if t]
    if not track or not artist or not album:
        return {}, "empty TRACK_ID, ARTIST_ID or ALBUM_ID"
    if not path.endswith(".mp3"):
        return {}, f"PATH {path!r} is not an .mp3 path"
    try:
        seconds = float(duration)
    except ValueError:
        return {}, f"DURATION {duration!r} is not a number"
    if not tags:
        return {}, "no tags"
    odd = [t for t in tags if "---" not in t]
    if odd:
        return {}, f"tag(s) {odd} are not <category>---<tag>"
    return {"track_id": track, "artist_id": artist, "album_id": album, "path": path,
            "duration": seconds, "tags": sorted(set(tags))}, None


def mp3_files(audio: Path) -> set[str]:
    """Paths of the .mp3 files below ``audio``, relative to it: one walk instead of a stat per row."""
    found: set[str] = set()
    for folder, _, names in os.walk(audio, followlinks=True):
        rel = Path(folder).relative_to(audio).as_posix()
        found.update(n if rel == "." else f"{rel}/{n}" for n in names if n.endswith(".mp3"))
    return found


def _audio_file(audio: Path, rel: str, present: set[str]) -> tuple[Path | None, str]:
    if rel in present:
        return audio / rel, "full"
    low = rel[: -len(".mp3")] + ".low.mp3"
    return (audio / low, "low") if low in present else (None, "")


def _hint(root: Path, split_index: int) -> str:
    hint = did_you_mean(root, "data/splits")
    if hint:
        return hint
    if (root / "data" / "splits").is_dir():
        return f"data/splits/ has {sorted(p.name for p in (root / 'data' / 'splits').iterdir())}; check --split-index"
    return f"SRC must be the mtg-jamendo-dataset folder holding data/splits/split-{split_index}/"
