"""gtzan: GTZAN music genres, 1,000 30-s excerpts, 10 genres, with published split lists.

Layout (genres.tar.gz unpacks to genres/ with .au files; the widespread WAV copy names the
folder genres_original/; either is accepted, as .au or .wav)::

    SRC/genres/<genre>/<genre>.000NN.au      e.g. genres/blues/blues.00012.au
    SRC/genres_original/<genre>/<genre>.000NN.wav
    SPLITS/{train,valid,test}_<rule>.txt     one "<genre>/<genre>.000NN.wav" per line

GTZAN ships no splits. ``--split filtered`` (default) uses the fault-filtered,
artist-conditional lists of Kereliuk et al. 2015 (930 excerpts with no artist on two sides);
``--split stratified`` the random genre-stratified 50/25/25 lists. Both are read from
``--splits DIR`` (default: SRC), e.g. the gtzan/ folder of github.com/coreyker/dnn-mgr (both
rules) or GTZAN_split/ of github.com/jongpillee/music_dataset_split (filtered). Splits ``train``, ``valid``,
``test``; fold None; group empty (GTZAN has no artist ids; the filtered lists already keep
artists apart). Classes: blues, classical, country, disco, hiphop, jazz, metal, pop, reggae,
rock. The known-corrupt jazz.00054 is skipped and reported; files in no chosen list are reported.

Example::

    shardgen pack --recipe gtzan gtzan out/gtzan --splits dnn-mgr/gtzan --split filtered --sample-rate 22050
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from ..records import Collection, Problem, Record, RecipeError, safe_key
from ._common import audio_files, read_text

NAME = "gtzan"
DESCRIPTION = "GTZAN (genres/<genre>/*.au|wav): 10 genres, --split filtered|stratified lists from --splits DIR"
DEFAULT_ON_ERROR = "skip"
GENRES = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]
AUDIO_DIRS = ("genres", "genres_original")
SPLITS = ("train", "valid", "test")
RULES = ("filtered", "stratified")
EXTS = (".wav", ".au")
# jazz.00054 of the widespread WAV copy is damaged and fails to decode; it is skipped by name
# in every copy so that all copies give the same dataset.
CORRUPT = {"jazz/jazz.00054": "known-corrupt GTZAN excerpt (does not decode), skipped"}
ENTRY = re.compile(r"^([a-z]+)/([a-z]+\.\d{5})\.(wav|au)$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", choices=RULES, default="filtered",
                        help="which published lists: filtered (artist-conditional, default) or stratified")
    parser.add_argument("--splits", type=Path, default=None, metavar="DIR",
                        help="folder holding {train,valid,test}_<split>.txt (default: SRC)")


def load(root: Path, split: str = "filtered", splits: Path | None = None) -> Collection:
    """Read GTZAN with one of the published split lists.

    Example:
        >>> c = load(Path("gtzan"), split="filtered", splits=Path("dnn-mgr/gtzan"))  # doctest: +SKIP
        >>> c.split_counts()                                                      # doctest: +SKIP
        {'test': 290, 'train': 442, 'valid': 197}
    """
    if split not in RULES:
        raise RecipeError(f"--split must be one of {RULES}, got {split!r}")
    root = Path(root)
    audio = _audio_dir(root)
    lists = _list_files(Path(splits) if splits is not None else root, split)
    index = {g: i for i, g in enumerate(GENRES)}
    records: list[Record] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for name, table in zip(SPLITS, lists):
        for line, entry in _entries(table):
            where = f"{table}:{line}"
            path = _entry_audio(entry, audio, seen, where)
            if isinstance(path, str):
                problems.append(Problem(where, path))
                continue
            source = path.relative_to(root).as_posix()
            records.append(Record(key=safe_key(source), source=source, path=path,
                                  labels=[index[entry.split("/", 1)[0]]], split=name))
    problems += _not_listed(audio, seen, [t.name for t in lists])
    return Collection(
        name="gtzan", classes=list(GENRES), records=records, multi_label=False, problems=problems,
        info={"recipe": NAME, "source": f"{audio.name}/ + " + ", ".join(t.name for t in lists),
              "split_rule": f"{split} lists: " + ", ".join(f"{t.name} -> {s}" for s, t in zip(SPLITS, lists)),
              "options": {"split": split, "splits": str(splits) if splits is not None else None}})


def _audio_dir(root: Path) -> Path:
    for name in AUDIO_DIRS:
        if (root / name).is_dir():
            return root / name
    hint = "SRC must be the folder holding genres/ (or genres_original/)"
    if (root / "blues").is_dir():
        hint = f"did you mean {root.parent}? (SRC is the folder above genres/)"
    elif root.is_dir():
        below = next(iter(sorted(p for n in AUDIO_DIRS for p in root.glob(f"*/{n}") if p.is_dir())), None)
        if below is not None:
            hint = f"did you mean {below.parent}?"
    raise RecipeError(f"expected genres/ or genres_original/ under {root} (neither found); {hint}")


def _list_files(folder: Path, rule: str) -> list[Path]:
    files = [folder / f"{s}_{rule}.txt" for s in SPLITS]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise RecipeError(
            f"expected {', '.join(missing)} in {folder}: GTZAN ships no splits, pass --splits DIR holding "
            f"{{train,valid,test}}_{rule}.txt (e.g. the gtzan/ folder of github.com/coreyker/dnn-mgr)")
    return files


def _entries(table: Path) -> list[tuple[int, str]]:
    """(line number, entry) for the non-blank lines of a split list."""
    return [(i, x.strip()) for i, x in enumerate(read_text(table).split("\n"), start=1) if x.strip()]


def _entry_audio(entry: str, audio: Path, seen: dict[str, str], where: str) -> Path | str:
    """The audio file a list entry names, or the reason it cannot be used."""
    m = ENTRY.match(entry)
    if m is None:
        return f"malformed entry {entry!r}: expected <genre>/<genre>.000NN.wav"
    genre, stem = m.group(1), m.group(2)
    if genre not in GENRES or not stem.startswith(genre + "."):
        return f"unknown label: {entry!r} is not in one of the 10 genre folders"
    item = f"{genre}/{stem}"
    if item in seen:
        return f"{entry} is listed twice (also {seen[item]})"
    seen[item] = where
    if item in CORRUPT:
        return CORRUPT[item]
    path = next((p for p in (audio / genre / (stem + e) for e in EXTS) if p.is_file()), None)
    return path if path is not None else f"audio file {audio.name}/{item}.wav (or .au) not found"


def _not_listed(audio: Path, seen: dict[str, str], lists: list[str]) -> list[Problem]:
    """Audio files no chosen list names; the known-corrupt one says so instead."""
    problems = []
    for p in audio_files(audio):
        item = f"{p.parent.name}/{p.stem}"
        if item in CORRUPT and item not in seen:
            problems.append(Problem(str(p), CORRUPT[item]))
        elif item not in seen:
            problems.append(Problem(str(p), f"audio file not in {', '.join(lists)}"))
    return problems
