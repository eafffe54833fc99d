"""csv: any dataset described by one CSV file.

Layout::

    SRC/metadata.csv           (or SRC is the CSV file itself)
    SRC/<path as in the CSV>   audio (wav, flac, ogg, mp3), relative to the CSV's folder

Columns: ``path`` (required), ``labels`` (class names separated by ``;``, may be empty),
``split`` (default ``train``), ``fold`` (integer, may be empty), ``group`` (e.g. speaker or
source recording, kept for leakage-free splitting). Any other column is kept in each
sample's json. The vocabulary is ``--classes FILE`` (one name per line, in index order),
else ``classes.txt`` beside the CSV when present, else the sorted label names found; the dataset is multi-label when any row has more
than one label, or with ``--multi-label``.

Splits for data that has none: ``--split-by COLUMN`` names the group that must stay whole
(speaker, artist, recording location); ``--valid-fraction``/``--test-fraction`` then make
splits train/valid/test, or ``--folds K`` a grouped K-fold (split train, folds 1..K), stratified
by label and seeded (``--split-seed``, default 0). ``--split-by path`` makes each clip its own
group. The group lands in each sample's json as ``group``, and dataset.json's ``recipe.split``
says how the splits were made. A CSV whose split or fold column has values is refused with
these options (remove or empty those columns): shardgen never silently re-splits a published split.

Examples::

    shardgen pack --recipe csv data/mysounds out/mysounds --sample-rate 16000
    shardgen pack --recipe csv data/mysounds out/mysounds --split-by speaker --valid-fraction 0.2 --test-fraction 0.1
    shardgen pack --recipe csv data/mysounds out/mysounds --split-by artist --folds 5 --split-seed 1
"""
from __future__ import annotations

import argparse
from pathlib import Path

import csv
import io

from .. import splits
from ..records import Collection, Problem, Record, RecipeError, label_index, safe_key
from ._common import read_csv, read_text

NAME = "csv"
DESCRIPTION = "generic: metadata.csv with path, labels (;-separated), split, fold, group"
DEFAULT_ON_ERROR = "raise"
REQUIRED = ("path",)
CORE = ("path", "labels", "split", "fold", "group")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--csv-file", default="metadata.csv", help="CSV name inside SRC (default metadata.csv)")
    parser.add_argument("--classes", type=Path, help="file with one class name per line, in index order")
    parser.add_argument("--multi-label", action="store_true", help="treat as multi-label even if no row has 2 labels")
    parser.add_argument("--name", help="dataset name (default: folder name)")
    splits.add_arguments(parser, "column whose value must stay in one split: speaker, artist, recording "
                                 "location... ('path': every clip its own group); with --valid-fraction/"
                                 "--test-fraction or --folds")


def load(root: Path, csv_file: str = "metadata.csv", classes: Path | None = None,
         multi_label: bool = False, name: str | None = None, split_by: str | None = None,
         valid_fraction: float = 0.0, test_fraction: float = 0.0, folds: int | None = None,
         split_seed: int = 0) -> Collection:
    root = Path(root)
    grouping = splits.SplitOptions(split_by, valid_fraction, test_fraction, folds, split_seed)
    grouping.check()
    table = root if root.is_file() else root / csv_file
    if not table.is_file():
        raise RecipeError(f"expected {csv_file} in {root} (not found at {table})")
    base = table.parent
    rows = read_csv(table, required=REQUIRED)
    if grouping.active:
        _check_grouping(table, rows, grouping)
    names = [[x.strip() for x in (row.get("labels") or "").split(";") if x.strip()] for row in rows]
    if classes is None and (base / "classes.txt").is_file():
        classes = base / "classes.txt"
    if classes is not None:
        vocab = [x.strip() for x in read_text(Path(classes)).split("\n") if x.strip()]
    else:
        vocab = sorted({n for row in names for n in row})
    index = label_index(vocab)
    records, problems = [], []
    for i, (row, labels) in enumerate(zip(rows, names), start=2):  # row 1 is the header
        where = f"{table}:{i}"
        rel = row.get("path") or ""
        unknown = [n for n in labels if n not in index]
        fold = (row.get("fold") or "").strip()
        if not rel:
            problems.append(Problem(where, "empty path"))
        elif unknown:
            problems.append(Problem(where, f"unknown label(s) {unknown}"))
        elif fold and not fold.lstrip("-").isdigit():
            problems.append(Problem(where, f"fold {fold!r} is not an integer"))
        elif not (base / rel).is_file():
            problems.append(Problem(where, f"audio file {rel} not found"))
        elif grouping.active and not (row.get(split_by) or "").strip():
            problems.append(Problem(where, f"empty {split_by!r} (the --split-by column): no group to split by"))
        else:
            extra = {k: v for k, v in row.items() if k not in CORE and k is not None}
            group = (row.get("group") or "").strip()
            if grouping.active and split_by != "group":
                if group:
                    extra["csv_group"] = group  # the CSV's own group column, kept beside the split group
                group = (row.get(split_by) or "").strip()
            records.append(Record(
                key=safe_key(rel), source=rel, path=base / rel, labels=sorted({index[n] for n in labels}),
                split=(row.get("split") or "train").strip(), fold=int(fold) if fold else None,
                group=group, extra=extra))
    info = {"recipe": NAME, "source": str(table.name), "split_rule": "split and fold columns of the CSV"}
    if grouping.active:
        if records:
            records = splits.apply(records, grouping, f"column {split_by!r}")
        info.update(split_rule=grouping.rule(), split=grouping.describe())
    return Collection(
        name=name or base.name, classes=vocab, records=records,
        multi_label=multi_label or any(len(x) > 1 for x in names), problems=problems, info=info)


def _check_grouping(table: Path, rows: list[dict[str, str]], grouping: splits.SplitOptions) -> None:
    """The --split-by column exists, and no split or fold column of the CSV is in use."""
    header = next(csv.reader(io.StringIO(read_text(table))), [])
    columns = [c.strip() for c in header]
    if grouping.by not in columns:
        raise RecipeError(f"--split-by {grouping.by}: {table.name} has no column {grouping.by!r}; "
                          f"its columns: {', '.join(columns)}")
    asked = f"--split-by {grouping.by} " + (f"--folds {grouping.folds}" if grouping.folds is not None else
                                            "--valid-fraction/--test-fraction")
    for col in ("split", "fold"):
        used = sorted({(row.get(col) or "").strip() for row in rows} - {""})
        if used:
            shown = ", ".join(used[:5]) + (f", ... ({len(used)} values)" if len(used) > 5 else "")
            raise RecipeError(f"{table.name} already has a {col!r} column in use ({shown}) and {asked} would "
                              f"replace it: remove or empty the split and fold columns to let shardgen make "
                              f"the splits, or drop {asked.split()[0]} to keep the CSV's own")
