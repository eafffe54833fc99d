"""superb: the SUPERB benchmark's keyword spotting (ks) and intent classification (ic) data.

``--task ks`` (default): Speech Commands v0.01, 12 classes yes, no, up, down, left, right,
on, off, stop, go, _unknown_, _silence_, split as s3prl's SUPERB recipe does. Layout::

    SRC/<word>/<speaker>_nohash_<n>.wav        speech_commands_v0.01.tar.gz unpacked
    SRC/_background_noise_/*.wav
    TEST/<class>/<clip>.wav                     speech_commands_test_set_v0.01.tar.gz unpacked,
                                                given with --test-root; class folders are the 12 classes

Train/valid: p = (int(sha1(speaker hash), 16) mod 2**27) * 100 / (2**27 - 1); p < 10 ->
``valid`` (SUPERB's dev), 10 <= p < 20 -> left out (SUPERB discards it; the count is in
dataset.json), else ``train``. validation_list.txt/testing_list.txt are not read. Words
other than the 10 commands -> _unknown_. _silence_: ceil(``--silence-percent`` (10) % of
each split's command clips) 1-s windows of the background-noise files, round-robin over the
files, offsets drawn from a generator seeded by (``--seed``, split); train windows from the
first 90 % of each file, valid from the last 10 % (SUPERB crops the whole files at random
every epoch; fixed windows make shards reproducible). ``test`` = every clip of TEST with
its folder's class; its source is ``speech_commands_test_set_v0.01/<class>/<clip>``.
group = the speaker hash.

``--task ic``: Fluent Speech Commands. Layout (fluent_speech_commands.zip unpacks to)::

    SRC/data/train_data.csv, valid_data.csv, test_data.csv
          columns: (unnamed index), path, speakerId, transcription, action, object, location
    SRC/wavs/speakers/<speakerId>/<uuid>.wav    the csv's path column, relative to SRC

Splits train/valid/test from the three files; group = speakerId. Label = the intent
``action|object|location`` (single-label; vocabulary = the intents of train_data.csv, sorted;
an intent of valid/test missing from train is reported). ``--label-groups``: a multi-label
vector over the slot values instead, ``action:<v>`` then ``object:<v>`` then ``location:<v>``,
each slot's values in order of first appearance in train_data.csv (SUPERB's indices); every
clip has exactly one label per group and the group boundaries are in dataset.json
(recipe.label_groups: name -> [start, end)).

Example::

    shardgen pack --recipe superb speech_commands_v0.01 out/superb_ks --test-root speech_commands_test_set_v0.01
    shardgen pack --recipe superb fluent_speech_commands_dataset out/superb_ic --task ic --label-groups
"""
from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

from ..records import Collection, Problem, Record, RecipeError, require_file, safe_key
from ._common import read_csv, unlisted
from .speech_commands import (ADDED_V2, KWS12, NOISE_DIR, WORDS, _command_counts, clip_records,
                              noise_files, silence_records, word_folders)

NAME = "superb"
DESCRIPTION = "SUPERB ks (Speech Commands v0.01, 12 classes, hash split) or ic (Fluent Speech Commands intents)"
DEFAULT_ON_ERROR = "skip"
TASKS = ("ks", "ic")

# ---- ks
MAX_PER_CLASS = 2 ** 27 - 1  # the constant of the Speech Commands paper's which_set rule
TEST_NAME = "speech_commands_test_set_v0.01"
KS_SILENCE_REGIONS = {"train": (0.0, 0.9), "valid": (0.9, 1.0)}
NOHASH = re.compile(r"^(?P<speaker>.+?)_nohash_")

# ---- ic
IC_SPLITS = {"train": "data/train_data.csv", "valid": "data/valid_data.csv", "test": "data/test_data.csv"}
SLOTS = ("action", "object", "location")
IC_COLUMNS = ("path", "speakerId") + SLOTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=TASKS, default="ks", help="ks: keyword spotting (default); ic: intents")
    parser.add_argument("--test-root", type=Path, help="ks: the unpacked speech_commands_test_set_v0.01 folder")
    parser.add_argument("--silence-percent", type=float, default=10.0,
                        help="ks: _silence_ clips per split, as a percentage of its command-word clips")
    parser.add_argument("--seed", type=int, default=0, help="ks: seed of the _silence_ window offsets")
    parser.add_argument("--label-groups", action="store_true",
                        help="ic: multi-label action+object+location vector instead of one intent class")


def load(root: Path, task: str = "ks", test_root: Path | None = None, silence_percent: float = 10.0,
         seed: int = 0, label_groups: bool = False) -> Collection:
    """Read the SUPERB ks or ic source data.

    Example:
        >>> c = load(Path("speech_commands_v0.01"), test_root=Path("speech_commands_test_set_v0.01"))  # doctest: +SKIP
        >>> c.classes[-2:], sorted(c.split_counts())                                                # doctest: +SKIP
        (['_unknown_', '_silence_'], ['test', 'train', 'valid'])
    """
    if task == "ks":
        return load_ks(Path(root), test_root, silence_percent, seed)
    if task == "ic":
        return load_ic(Path(root), label_groups)
    raise RecipeError(f"--task must be one of {TASKS}, got {task!r}")


# ---------------------------------------------------------------- ks

def hash_percentage(speaker: str) -> float:
    """Where a speaker falls in [0, 100] under the Speech Commands / SUPERB hash rule."""
    value = int(hashlib.sha1(speaker.encode("utf-8")).hexdigest(), 16)
    return (value % (MAX_PER_CLASS + 1)) * (100.0 / MAX_PER_CLASS)


def ks_split(rel: str) -> str | None:
    """valid (p < 10), None (10 <= p < 20: discarded by SUPERB) or train, for <word>/<file>.wav."""
    m = NOHASH.match(rel.rsplit("/", 1)[-1])
    p = hash_percentage(m["speaker"] if m else rel.rsplit("/", 1)[-1])
    return "valid" if p < 10 else None if p < 20 else "train"


def load_ks(root: Path, test_root: Path | None, silence_percent: float, seed: int) -> Collection:
    if not (root / "yes").is_dir():
        raise RecipeError(f"expected the Speech Commands v0.01 word folders (yes/, no/, ...) under {root} "
                          f"(not found at {root / 'yes'}); {_ks_hint(root)}")
    tree = word_folders(root)
    newer = sorted(w for w in ADDED_V2 if w in tree)
    if newer:
        raise RecipeError(f"{root}: SUPERB ks is defined on Speech Commands v0.01, but found v0.02 word "
                          f"folder(s) {newer}")
    index = {c: i for i, c in enumerate(KWS12)}
    problems: list[Problem] = []
    discarded: list[str] = []

    def split_of(rel: str) -> str | None:
        split = ks_split(rel)
        if split is None:
            discarded.append(rel)
        return split

    records = clip_records(root, tree, WORDS["v0.01"], split_of,
                           lambda w: index.get(w, index["_unknown_"]), problems)
    records += silence_records(noise_files(root, problems), _command_counts(records), silence_percent, seed,
                               KS_SILENCE_REGIONS, index["_silence_"], problems)
    if test_root is None:
        problems.append(Problem("--test-root", f"not given: the SUPERB test split ({TEST_NAME}) is not packed"))
    else:
        records += ks_test_records(Path(test_root), index, problems)
    return Collection(
        name="superb_ks", classes=list(KWS12), records=records, multi_label=False, problems=problems,
        info={"recipe": NAME, "task": "ks",
              "source": ["<word>/*.wav", f"{NOISE_DIR}/*.wav", f"{TEST_NAME}/<class>/*.wav"],
              "split_rule": "SUPERB: sha1(speaker) percentage < 10 valid, < 20 discarded, else train; "
                            f"test = {TEST_NAME}; _silence_ = ceil({silence_percent}% of command clips) "
                            f"1-s noise windows per split, regions {KS_SILENCE_REGIONS}",
              "discarded": len(discarded),
              "options": {"task": "ks", "test_root": str(test_root) if test_root else None,
                          "silence_percent": silence_percent, "seed": seed}})


def _ks_hint(root: Path) -> str:
    below = sorted(p.parent for p in root.glob("*/yes")) if root.is_dir() else []
    if below:
        return f"did you mean {below[0]}?"
    return "SRC must be the unpacked speech_commands_v0.01 folder"


def ks_test_records(test_root: Path, index: dict[str, int], problems: list[Problem]) -> list[Record]:
    """Every clip of the separate test archive, labelled by its class folder."""
    if not test_root.is_dir() or not (test_root / "yes").is_dir():
        raise RecipeError(f"--test-root: expected class folders yes/, no/, ..., _silence_/ under {test_root} "
                          f"(not found at {test_root / 'yes'})")
    records = []
    for folder in sorted(p for p in test_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        clips = sorted(folder.glob("*.wav"))
        if folder.name not in index:
            problems.append(Problem(str(folder), f"unknown label: folder {folder.name!r} is not one of the 12 "
                                                 f"classes; its {len(clips)} clip(s) are not packed"))
            continue
        for path in clips:
            source = f"{TEST_NAME}/{folder.name}/{path.name}"
            m = NOHASH.match(path.name)
            records.append(Record(key=safe_key(source), source=source, path=path, labels=[index[folder.name]],
                                  split="test", group=m["speaker"] if m else path.stem,
                                  extra={"word": folder.name}))
    return records


# ---------------------------------------------------------------- ic

def load_ic(root: Path, label_groups: bool) -> Collection:
    tables = {split: require_file(root, rel, _ic_hint(root, rel)) for split, rel in IC_SPLITS.items()}
    rows = {split: read_csv(path, required=IC_COLUMNS) for split, path in tables.items()}
    if label_groups:
        classes, groups = slot_vocabulary(rows["train"])
    else:
        classes, groups = sorted({intent(r) for r in rows["train"] if _complete(r)}), None
    index = {c: i for i, c in enumerate(classes)}
    records: list[Record] = []
    problems: list[Problem] = []
    listed: set[Path] = set()
    for split, table in tables.items():
        for line, row in enumerate(rows[split], start=2):  # line 1 is the header
            where = f"{table}:{line}"
            if row.get("path"):
                listed.add(root / row["path"])
            names = _ic_labels(row, label_groups)
            reason = _ic_problem(row, names, index, root)
            if reason is not None:
                problems.append(Problem(where, reason))
                continue
            records.append(Record(
                key=safe_key(row["path"]), source=row["path"], path=root / row["path"],
                labels=sorted(index[n] for n in names), split=split, group=row["speakerId"],
                extra={"speaker": row["speakerId"], "transcription": row.get("transcription", ""),
                       **{s: row[s] for s in SLOTS}, "intent": intent(row)}))
    if (root / "wavs").is_dir():
        problems += unlisted(root / "wavs", listed, "data/*_data.csv")
    info = {"recipe": NAME, "task": "ic", "source": list(IC_SPLITS.values()),
            "split_rule": "train/valid/test from data/{train,valid,test}_data.csv",
            "label": "action+object+location slot values (multi-label)" if label_groups
                     else "intent action|object|location",
            "options": {"task": "ic", "label_groups": label_groups}}
    if groups is not None:
        info["label_groups"] = groups
    return Collection(name="superb_ic", classes=classes, records=records, multi_label=label_groups,
                      problems=problems, info=info)


def _ic_hint(root: Path, rel: str) -> str:
    below = sorted(root.glob(f"*/{rel}")) if root.is_dir() else []
    if below:
        return f"did you mean {below[0].parents[1]}?"
    return "SRC must be the unpacked fluent_speech_commands_dataset folder (data/ and wavs/)"


def intent(row: dict[str, str]) -> str:
    return "|".join(row.get(s) or "" for s in SLOTS)


def _complete(row: dict) -> bool:
    return None not in row and all(row.get(c) for c in IC_COLUMNS)


def slot_vocabulary(train: list[dict[str, str]]) -> tuple[list[str], dict[str, list[int]]]:
    """``slot:value`` names, slot by slot, values in first-appearance order; slot -> [start, end)."""
    classes: list[str] = []
    groups: dict[str, list[int]] = {}
    for slot in SLOTS:
        start = len(classes)
        for row in train:
            name = f"{slot}:{row.get(slot)}"
            if _complete(row) and name not in classes[start:]:
                classes.append(name)
        groups[slot] = [start, len(classes)]
    return classes, groups


def _ic_labels(row: dict[str, str], label_groups: bool) -> list[str]:
    if label_groups:
        return [f"{s}:{row.get(s)}" for s in SLOTS]
    return [intent(row)]


def _ic_problem(row: dict, names: list[str], index: dict[str, int], root: Path) -> str | None:
    """Why a Fluent Speech Commands row cannot be used, or None."""
    if not _complete(row):
        missing = [c for c in IC_COLUMNS if not row.get(c)]
        extra = f", {len(row[None])} extra field(s)" if None in row else ""
        return f"malformed row: empty or missing {missing}{extra}"
    unknown = [n for n in names if n not in index]
    if unknown:
        return f"unknown label(s) {unknown}: not in train_data.csv"
    if not (root / row["path"]).is_file():
        return f"audio file {row['path']} not found"
    return None
