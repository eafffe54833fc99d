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

Example::

    shardgen pack --recipe csv data/mysounds out/mysounds --sample-rate 16000
"""
from __future__ import annotations

import argparse
from pathlib import Path

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


def load(root: Path, csv_file: str = "metadata.csv", classes: Path | None = None,
         multi_label: bool = False, name: str | None = None) -> Collection:
    root = Path(root)
    table = root if root.is_file() else root / csv_file
    if not table.is_file():
        raise RecipeError(f"expected {csv_file} in {root} (not found at {table})")
    base = table.parent
    rows = read_csv(table, required=REQUIRED)
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
        else:
            extra = {k: v for k, v in row.items() if k not in CORE and k is not None}
            records.append(Record(
                key=safe_key(rel), source=rel, path=base / rel, labels=sorted({index[n] for n in labels}),
                split=(row.get("split") or "train").strip(), fold=int(fold) if fold else None,
                group=(row.get("group") or "").strip(), extra=extra))
    return Collection(
        name=name or base.name, classes=vocab, records=records,
        multi_label=multi_label or any(len(x) > 1 for x in names), problems=problems,
        info={"recipe": NAME, "source": str(table.name), "split_rule": "split and fold columns of the CSV"})
