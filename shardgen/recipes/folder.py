"""folder: one sub-folder per class.

Layout::

    SRC/<class>/<clip>                 everything is split "train"
    SRC/<class>/<sub/folders>/<clip>   group = the sub-folder path below the class folder
    SRC/<split>/<class>/<clip>         when the first level is named train/valid/test

Clips may be wav, flac, ogg or mp3. Classes are the class folder names, sorted.

Splits for data that has none: ``--split-by REGEX`` finds each clip's group (a speaker,
artist, recording location) in the clip's path below its class folder, e.g. ``alice_take1.wav``
or ``alice/take1.wav``; the group is the first capture group (the whole match when the pattern
has none), so the same speaker in two class folders is one group. ``--valid-fraction``/
``--test-fraction`` then make splits train/valid/test, or ``--folds K`` a grouped K-fold (split
train, folds 1..K), stratified by label and seeded (``--split-seed``, default 0). A clip whose
path does not match is a problem (listed; fatal unless ``--on-error skip``). Refused when SRC
already has train/valid/test folders. dataset.json's ``recipe.split`` says how the splits were made.

Examples::

    shardgen pack --recipe folder data/my_classes out/my_classes --workers 4
    shardgen pack --recipe folder data/my_classes out/my_classes --split-by '^([^_]+)_' --valid-fraction 0.2
    shardgen pack --recipe folder data/my_classes out/my_classes --split-by '^([^/]+)/' --folds 5  # sub-folder
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from .. import splits
from ..records import Collection, Problem, Record, RecipeError, safe_key
from ._common import audio_files

NAME = "folder"
DESCRIPTION = "generic: SRC/<class>/<clip> or SRC/<split>/<class>/<clip>"
DEFAULT_ON_ERROR = "raise"
SPLITS = ("train", "valid", "test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="dataset name (default: folder name)")
    splits.add_arguments(parser, "regular expression searched in each clip's path below its class folder; "
                                 "its first capture group is the clip's group (speaker, artist, location), "
                                 "e.g. '^([^_]+)_' (file name prefix) or '^([^/]+)/' (first sub-folder)",
                        metavar="REGEX")


def load(root: Path, name: str | None = None, split_by: str | None = None, valid_fraction: float = 0.0,
         test_fraction: float = 0.0, folds: int | None = None, split_seed: int = 0) -> Collection:
    root = Path(root)
    grouping = splits.SplitOptions(split_by, valid_fraction, test_fraction, folds, split_seed)
    grouping.check()
    pattern = None
    if grouping.active:
        try:
            pattern = re.compile(split_by)
        except re.error as e:
            raise RecipeError(f"--split-by {split_by!r} is not a regular expression: {e}") from None
    if not root.is_dir():
        raise RecipeError(f"expected a folder of class folders at {root}")
    top = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    has_splits = bool(top) and all(p.name in SPLITS for p in top)
    split_dirs = [(p.name, p) for p in top] if has_splits else [("train", root)]
    vocab = sorted({c.name for _, d in split_dirs for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")})
    if not vocab:
        raise RecipeError(f"no class folders under {root}")
    if grouping.active and has_splits:
        raise RecipeError(f"{root} already has split folders ({', '.join(p.name for p in top)}) and "
                          f"--split-by would replace them: move the class folders up to SRC to let shardgen "
                          f"make the splits, or drop --split-by to keep these")
    index = {n: i for i, n in enumerate(vocab)}
    records, problems = [], []
    for split, d in split_dirs:
        for cdir in sorted(c for c in d.iterdir() if c.is_dir() and c.name in index):
            for f in audio_files(cdir):
                rel = f.relative_to(root).as_posix()
                group = f.parent.relative_to(cdir).as_posix()
                group = "" if group == "." else group
                if pattern is not None:
                    below = f.relative_to(cdir).as_posix()
                    m = pattern.search(below)
                    group = (m.group(1 if pattern.groups else 0) or "") if m else ""
                    if not group:
                        why = "matches it with an empty group" if m else "does not match it"
                        problems.append(Problem(str(f), f"{below!r} (path below class folder {cdir.name!r}) "
                                                        f"gives no group: --split-by {split_by!r} {why}"))
                        continue
                records.append(Record(key=safe_key(rel), source=rel, path=f, labels=[index[cdir.name]],
                                      split=split, group=group))
    if not records and not problems:
        raise RecipeError(f"no audio files under {root}")
    if pattern is not None and not records:
        raise RecipeError(f"--split-by {split_by!r} finds a group in no clip path "
                          f"(e.g. {problems[0].where}); the pattern is searched in the path below the class folder")
    info = {"recipe": NAME, "source": root.name, "split_rule": "split folders" if has_splits else "all train"}
    if grouping.active:
        records = splits.apply(records, grouping, f"--split-by {split_by!r}")
        info.update(split_rule=grouping.rule(), split=grouping.describe())
    return Collection(name=name or root.name, classes=vocab, records=records, multi_label=False,
                      problems=problems, info=info)
