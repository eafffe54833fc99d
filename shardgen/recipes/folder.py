"""folder: one sub-folder per class.

Layout::

    SRC/<class>/<clip>                 everything is split "train"
    SRC/<class>/<sub/folders>/<clip>   group = the sub-folder path below the class folder
    SRC/<split>/<class>/<clip>         when the first level is named train/valid/test

Clips may be wav, flac, ogg or mp3. Classes are the class folder names, sorted.

Example::

    shardgen pack --recipe folder data/my_classes out/my_classes --workers 4
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..records import Collection, Record, RecipeError, safe_key
from ._common import audio_files

NAME = "folder"
DESCRIPTION = "generic: SRC/<class>/<clip> or SRC/<split>/<class>/<clip>"
DEFAULT_ON_ERROR = "raise"
SPLITS = ("train", "valid", "test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="dataset name (default: folder name)")


def load(root: Path, name: str | None = None) -> Collection:
    root = Path(root)
    if not root.is_dir():
        raise RecipeError(f"expected a folder of class folders at {root}")
    top = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    has_splits = bool(top) and all(p.name in SPLITS for p in top)
    split_dirs = [(p.name, p) for p in top] if has_splits else [("train", root)]
    vocab = sorted({c.name for _, d in split_dirs for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")})
    if not vocab:
        raise RecipeError(f"no class folders under {root}")
    index = {n: i for i, n in enumerate(vocab)}
    records = []
    for split, d in split_dirs:
        for cdir in sorted(c for c in d.iterdir() if c.is_dir() and c.name in index):
            for f in audio_files(cdir):
                rel = f.relative_to(root).as_posix()
                group = f.parent.relative_to(cdir).as_posix()
                records.append(Record(key=safe_key(rel), source=rel, path=f, labels=[index[cdir.name]],
                                      split=split, group="" if group == "." else group))
    if not records:
        raise RecipeError(f"no audio files under {root}")
    return Collection(name=name or root.name, classes=vocab, records=records, multi_label=False,
                      info={"recipe": NAME, "source": root.name,
                            "split_rule": "split folders" if has_splits else "all train"})
