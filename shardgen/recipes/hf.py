"""hf: a dataset saved locally with the Hugging Face ``datasets`` library (no hub access).

Layout: SRC is one of::

    SRC/dataset_dict.json + SRC/<split>/...       DatasetDict.save_to_disk (one folder per split)
    SRC/state.json + SRC/data-00000-of-0000N.arrow Dataset.save_to_disk (split --split, default train)
    SRC/**/<split>-00000-of-0000N.parquet          parquet files, e.g. a hub repo's data/ folder
    SRC/**/<split>/<n>.parquet                     (the parquet-converter layout), or one .parquet file

with an ``Audio`` column (a struct of encoded ``bytes`` and ``path``). Parquet files named
otherwise belong to ``--split`` (default train). Split names validation/val/dev become
``valid``. Embedded audio bytes are packed as they are (Record.audio); rows holding only a
path are read from that path (absolute, or relative to the file's folder).

Labels: ``--label-column`` (repeatable; default ``label``, else the only ClassLabel column).
Class names come from the ClassLabel feature when present, else from ``--class-names-column``
(a parallel string column, e.g. ESC-50's target + category), else the sorted string values
or the integers 0..max. A list column (e.g. ``List(ClassLabel)``) gives a multi-label
dataset; several label columns give one multi-label vector with names ``<column>:<name>``
and the column boundaries in dataset.json (recipe.label_groups).
``--split-column`` / ``--fold-column`` / ``--group-column`` take split, fold and leakage
group from columns; ``--source-column`` names each clip (default: ``<split>/<stored audio
path>``, or ``<split>/<row number>`` when no path is stored). Every other scalar column is
kept in each json. Rows without a label, with an unknown one or with unreadable audio are
reported as ``<file>:row <n>``. Embedded audio is held in memory until packed.

Example (the ESC-50 copy on the hub: filename, fold, target, category, esc10, src_file, take, audio)::

    shardgen pack --recipe hf esc50_hf/ out/esc50 --label-column target --class-names-column category \\
        --fold-column fold --group-column src_file --source-column filename
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..records import Collection, Problem, Record, RecipeError, safe_key

NAME = "hf"
DESCRIPTION = "Hugging Face datasets saved locally (save_to_disk or parquet with an Audio column)"
DEFAULT_ON_ERROR = "skip"
SPLIT_NAMES = {"validation": "valid", "val": "valid", "dev": "valid"}
HUB_PARQUET = re.compile(r"^(?P<split>[A-Za-z0-9_.]+?)-\d{5}-of-\d{5}\.parquet$")
KNOWN_SPLITS = {"train", "test", "valid", "validation", "val", "dev", "eval"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--label-column", action="append", dest="label_columns", metavar="NAME",
                        help="label column (repeat for several; default: label, or the only ClassLabel column)")
    parser.add_argument("--class-names-column", help="string column naming the classes of an integer label column")
    parser.add_argument("--audio-column", help="the Audio column (default: detected)")
    parser.add_argument("--split-column", help="column holding each row's split (default: the saved split)")
    parser.add_argument("--fold-column", help="column holding each row's integer fold")
    parser.add_argument("--group-column", help="column holding each row's leakage group (speaker, source file)")
    parser.add_argument("--source-column", help="column naming each clip (default: the audio's stored path)")
    parser.add_argument("--split", default="train", help="split of a single Dataset or unnamed parquet files")
    parser.add_argument("--name", help="dataset name (default: folder name)")


@dataclass
class Part:
    """One table of rows from one saved split or parquet file."""

    split: str
    where: str
    base: Path
    table: Any  # pyarrow.Table
    features: Any  # datasets.Features


def load(root: Path, label_columns: list[str] | None = None, class_names_column: str | None = None,
         audio_column: str | None = None, split_column: str | None = None, fold_column: str | None = None,
         group_column: str | None = None, source_column: str | None = None, split: str = "train",
         name: str | None = None) -> Collection:
    """Read a locally saved Hugging Face dataset.

    Example:
        >>> c = load(Path("esc50_hf"), label_columns=["target"], class_names_column="category",
        ...          fold_column="fold", group_column="src_file", source_column="filename")  # doctest: +SKIP
        >>> c.classes[:2], sorted({r.fold for r in c.records})                              # doctest: +SKIP
        (['dog', 'rooster'], [1, 2, 3, 4, 5])
    """
    root = Path(root)
    parts = read_parts(root, split)
    features = parts[0].features
    audio = audio_column or _audio_column(features, root)
    columns = label_columns or [_default_label_column(features, root)]
    for col in [audio, *columns, class_names_column, split_column, fold_column, group_column, source_column]:
        if col is not None and col not in features:
            raise RecipeError(f"{parts[0].where}: no column {col!r}; columns are {list(features)}")
    problems: list[Problem] = []
    vocabs = [label_vocabulary(parts, c, class_names_column if len(columns) == 1 else None, problems)
              for c in columns]
    multi = len(columns) > 1 or any(v.is_list for v in vocabs)
    classes, offsets = _merge(columns, vocabs)
    used = {audio, *columns, split_column, fold_column, group_column, source_column}
    records: list[Record] = []
    seen: dict[str, str] = {}
    for part in parts:
        for i, row in enumerate(_rows(part.table)):
            where = f"{part.where}:row {i}"
            try:
                labels = sorted({offsets[k] + x for k, (c, v) in enumerate(zip(columns, vocabs))
                                 for x in v.indices(row.get(c))})
                rec = _record(row, part, i, labels, audio, split_column, fold_column, group_column,
                              source_column, used)
            except ValueError as e:
                problems.append(Problem(where, str(e)))
                continue
            if rec.key in seen:
                problems.append(Problem(where, f"duplicate clip name {rec.source!r} (also {seen[rec.key]}); "
                                               "name clips with --source-column"))
                continue
            seen[rec.key] = where
            records.append(rec)
    info = {"recipe": NAME, "source": sorted({p.where for p in parts}),
            "split_rule": f"column {split_column}" if split_column else "the saved splits",
            "options": {"label_columns": columns, "class_names_column": class_names_column,
                        "audio_column": audio, "split_column": split_column, "fold_column": fold_column,
                        "group_column": group_column, "source_column": source_column, "split": split}}
    if len(columns) > 1:
        info["label_groups"] = {c: [offsets[k], offsets[k] + len(v.names)] for k, (c, v) in
                                enumerate(zip(columns, vocabs))}
    return Collection(name=name or (root.stem if root.is_file() else root.name), classes=classes,
                      records=records, multi_label=multi, problems=problems, info=info)


# ---------------------------------------------------------------- reading tables

def _datasets():
    try:
        import datasets
    except ImportError as e:  # an optional dependency: only this recipe needs it
        raise RecipeError("the hf recipe needs the Hugging Face `datasets` package (pip install datasets)") from e
    return datasets


def split_name(name: str) -> str:
    return SPLIT_NAMES.get(name, name)


def read_parts(root: Path, default_split: str) -> list[Part]:
    """Every table under ``root`` with its split, in a fixed order."""
    ds = _datasets()
    if root.is_dir() and (root / "dataset_dict.json").is_file():
        saved = ds.load_from_disk(str(root))
        return [_saved_part(saved[s], split_name(s), root / s) for s in sorted(saved)]
    if root.is_dir() and (root / "state.json").is_file():
        return [_saved_part(ds.load_from_disk(str(root)), split_name(default_split), root)]
    files = [root] if root.is_file() and root.suffix == ".parquet" else \
        sorted(root.rglob("*.parquet")) if root.is_dir() else []
    if not files:
        raise RecipeError(f"expected a Hugging Face dataset at {root}: dataset_dict.json or state.json "
                          f"(save_to_disk) or .parquet files; none found")
    return [_parquet_part(f, root, default_split) for f in files]


def _saved_part(dataset: Any, split: str, folder: Path) -> Part:
    return Part(split, str(folder), folder, dataset.with_format("arrow")[:], dataset.features)


def _parquet_part(path: Path, root: Path, default_split: str) -> Part:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, memory_map=True)
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError for damaged files
        raise RecipeError(f"{path}: not a readable parquet file ({e})") from e
    m = HUB_PARQUET.match(path.name)
    if m:
        split = m["split"]
    elif path != root and path.parent.name in KNOWN_SPLITS:
        split = path.parent.name
    else:
        split = default_split
    return Part(split_name(split), str(path), path.parent, table,
                _datasets().Features.from_arrow_schema(table.schema))


def _rows(table: Any):
    for batch in table.to_batches(max_chunksize=256):
        yield from batch.to_pylist()


def _audio_column(features: Any, root: Path) -> str:
    Audio = _datasets().Audio
    found = [c for c, f in features.items() if isinstance(f, Audio)]
    found = found or [c for c, f in features.items() if isinstance(f, dict) and set(f) == {"bytes", "path"}]
    if len(found) != 1:
        raise RecipeError(f"{root}: expected one Audio column, found {found or 'none'} among {list(features)}; "
                          "name it with --audio-column")
    return found[0]


def _default_label_column(features: Any, root: Path) -> str:
    if "label" in features:
        return "label"
    ClassLabel = _datasets().ClassLabel
    found = [c for c, f in features.items() if isinstance(f, ClassLabel)]
    if len(found) != 1:
        raise RecipeError(f"{root}: no 'label' column and {len(found)} ClassLabel columns {found}; "
                          f"name the label column with --label-column (columns: {list(features)})")
    return found[0]


# ---------------------------------------------------------------- labels

@dataclass
class Vocabulary:
    """Class names of one label column and how to turn its values into indices."""

    column: str
    names: list[str]
    is_list: bool
    by_int: bool  # values are integer indices (ClassLabel or int column) rather than names

    def indices(self, value: Any) -> list[int]:
        values = value if self.is_list else [value]
        if value is None or (self.is_list and not isinstance(value, list)):
            raise ValueError(f"no label in column {self.column!r}")
        out = []
        for v in values:
            if self.by_int:
                if not isinstance(v, int) or not 0 <= v < len(self.names):
                    raise ValueError(f"unknown label {v!r} in column {self.column!r} "
                                     f"(expected 0..{len(self.names) - 1})")
                out.append(v)
            elif v not in self._index:
                raise ValueError(f"unknown label {v!r} in column {self.column!r}")
            else:
                out.append(self._index[v])
        return out

    def __post_init__(self) -> None:
        self._index = {n: i for i, n in enumerate(self.names)}


def label_vocabulary(parts: list[Part], column: str, names_column: str | None,
                     problems: list[Problem]) -> Vocabulary:
    """Names from the ClassLabel feature, a parallel names column, or the values themselves."""
    ClassLabel = _datasets().ClassLabel
    feature = parts[0].features[column]
    inner = getattr(feature, "feature", None)
    is_list = inner is not None
    label = inner if is_list else feature
    if isinstance(label, ClassLabel):
        return Vocabulary(column, list(label.names), is_list, True)
    values = [v for p in parts for v in p.table.column(column).to_pylist()]
    flat = [x for v in values if v is not None for x in (v if is_list else [v])]
    if all(isinstance(x, str) for x in flat):
        if names_column:
            raise RecipeError(f"--class-names-column needs an integer label column; {column!r} holds strings")
        return Vocabulary(column, sorted(set(flat)), is_list, False)
    if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in flat):
        raise RecipeError(f"{parts[0].where}: label column {column!r} holds neither class names nor "
                          "non-negative integers")
    size = max(flat, default=-1) + 1
    if names_column is None or is_list:
        return Vocabulary(column, [str(i) for i in range(size)], is_list, True)
    return Vocabulary(column, _names_from_column(parts, column, names_column, size, problems), False, True)


def _names_from_column(parts: list[Part], column: str, names_column: str, size: int,
                       problems: list[Problem]) -> list[str]:
    """Class i is named by the names column of the rows labelled i (they must agree)."""
    names: dict[int, str] = {}
    for part in parts:
        labels = part.table.column(column).to_pylist()
        texts = part.table.column(names_column).to_pylist()
        for i, (label, text) in enumerate(zip(labels, texts)):
            if label is None:
                continue
            if label in names and names[label] != text:
                problems.append(Problem(f"{part.where}:row {i}", f"{names_column} {text!r} differs from "
                                                                 f"{names[label]!r} for {column} {label}"))
            names.setdefault(label, str(text))
    return [names.get(i, str(i)) for i in range(size)]


def _merge(columns: list[str], vocabs: list[Vocabulary]) -> tuple[list[str], list[int]]:
    if len(vocabs) == 1:
        return list(vocabs[0].names), [0]
    classes, offsets = [], []
    for col, v in zip(columns, vocabs):
        offsets.append(len(classes))
        classes += [f"{col}:{n}" for n in v.names]
    return classes, offsets


# ---------------------------------------------------------------- records

def _record(row: dict[str, Any], part: Part, i: int, labels: list[int], audio: str, split_column: str | None,
            fold_column: str | None, group_column: str | None, source_column: str | None,
            used: set[str | None]) -> Record:
    """One clip, or ValueError saying what is wrong with the row."""
    cell = row.get(audio) or {}
    data, stored = cell.get("bytes"), cell.get("path")
    path = None
    if not data:
        if not stored:
            raise ValueError(f"no audio bytes and no path in column {audio!r}")
        path = Path(stored) if Path(stored).is_absolute() else part.base / stored
        if not path.is_file():
            raise ValueError(f"audio not embedded and file {stored} not found")
    if source_column:
        source = str(row.get(source_column) or "")
    else:
        # save_to_disk keeps only base names, which may repeat across splits: prefix the split
        name = Path(stored).name if stored and Path(stored).is_absolute() else stored
        source = f"{part.split}/{name or f'{i:06d}'}"
    split = part.split
    if split_column:
        if not row.get(split_column):  # a row with no split cannot be placed
            raise ValueError(f"empty split in column {split_column!r}")
        split = split_name(str(row[split_column]))
    fold = None
    if fold_column:
        fold = row.get(fold_column)
        if isinstance(fold, str) and fold.strip().lstrip("-").isdigit():
            fold = int(fold)
        if not isinstance(fold, int) or isinstance(fold, bool):
            raise ValueError(f"fold {row.get(fold_column)!r} in column {fold_column!r} is not an integer")
    extra = {k: v for k, v in row.items()
             if k not in used and (v is None or isinstance(v, (str, int, float, bool)))}
    return Record(key=safe_key(source), source=source, path=path, labels=labels, split=split, fold=fold,
                  group=str(row.get(group_column) or "") if group_column else "", extra=extra,
                  audio=bytes(data) if data else None)
