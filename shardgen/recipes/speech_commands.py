"""speech_commands: Google Speech Commands v0.02 (35 words) or v0.01 (30 words), 1-s clips.

Layout (speech_commands_v0.02.tar.gz, or v0.01, unpacks to)::

    SRC/<word>/<speaker>_nohash_<n>.wav   e.g. yes/0a7c2a8d_nohash_0.wav (1 s, 16 kHz)
    SRC/validation_list.txt               one <word>/<file>.wav per line
    SRC/testing_list.txt                  (real copies may lack the final newline)
    SRC/_background_noise_/*.wav          six long noise recordings (+ README.md)

The version is detected from the word folders (any of backward, follow, forward, learn,
visual -> v0.02, else v0.01) or forced with ``--version``. Splits: ``valid`` and ``test``
from the two lists, every other clip ``train``; group = the speaker hash (the part before
``_nohash_``); each json keeps ``speaker``, ``utterance`` and ``word``.

``--task words`` (default): one class per word of the version (35 or 30, sorted).
``--task kws12``: yes, no, up, down, left, right, on, off, stop, go, _unknown_ (every other
word), _silence_. As in the TensorFlow reference recipe, each split gets
ceil(``--silence-percent`` (10) % x its clips of the 10 command words) ``_silence_`` clips:
1-s windows of the background-noise files, taken round-robin over the files in name order,
each starting at a uniformly drawn millisecond from a generator seeded by
(``--seed``, split name) - the same every run. To keep splits apart, train windows lie in
the first 80 % of each file, valid in the next 10 %, test in the last 10 %. ``_unknown_``
keeps every clip of the other words (rebalance when reading).

``_background_noise_`` also becomes a ``noise`` split (unless ``--no-noise``): every file
cut into consecutive 1-s windows (start/end in the json), no labels, for noise mixing.

Example::

    shardgen pack --recipe speech_commands speech_commands_v0.02 out/sc35
    shardgen pack --recipe speech_commands speech_commands_v0.02 out/kws12 --task kws12
"""
from __future__ import annotations

import argparse
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import soundfile as sf

from ..records import Collection, Problem, Record, RecipeError, require_file, safe_key
from ._common import did_you_mean, read_text

NAME = "speech_commands"
DESCRIPTION = "Speech Commands v0.02/v0.01: 35/30 words or --task kws12; list-file splits, group = speaker"
DEFAULT_ON_ERROR = "skip"

WORDS_V1 = ("bed", "bird", "cat", "dog", "down", "eight", "five", "four", "go", "happy", "house",
            "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven", "sheila", "six",
            "stop", "three", "tree", "two", "up", "wow", "yes", "zero")
ADDED_V2 = ("backward", "follow", "forward", "learn", "visual")
WORDS = {"v0.01": sorted(WORDS_V1), "v0.02": sorted(WORDS_V1 + ADDED_V2)}
COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
KWS12 = list(COMMANDS) + ["_unknown_", "_silence_"]
NOISE_DIR = "_background_noise_"
LISTS = {"valid": "validation_list.txt", "test": "testing_list.txt"}
# Disjoint parts of each noise file that _silence_ windows of a split are drawn from.
SILENCE_REGIONS = {"train": (0.0, 0.8), "valid": (0.8, 0.9), "test": (0.9, 1.0)}
TASKS = ("words", "kws12")
VERSIONS = ("auto", "v0.01", "v0.02")
CLIP = re.compile(r"^(?P<speaker>.+?)_nohash_(?P<n>\d+)\.wav$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=TASKS, default="words",
                        help="words: one class per word (default); kws12: 10 commands + _unknown_ + _silence_")
    parser.add_argument("--version", choices=VERSIONS, default="auto", help="dataset version (default: detect)")
    parser.add_argument("--silence-percent", type=float, default=10.0,
                        help="kws12: _silence_ clips per split, as a percentage of its command-word clips")
    parser.add_argument("--seed", type=int, default=0, help="kws12: seed of the _silence_ window offsets")
    parser.add_argument("--no-noise", action="store_true", help="do not add the background-noise 'noise' split")


def load(root: Path, task: str = "words", version: str = "auto", silence_percent: float = 10.0,
         seed: int = 0, no_noise: bool = False) -> Collection:
    """Read Speech Commands as its archive unpacks.

    Example:
        >>> c = load(Path("speech_commands_v0.02"), task="kws12")   # doctest: +SKIP
        >>> c.classes[-2:], c.split_counts()["valid"]   # 9,981 listed clips + 371 _silence_  # doctest: +SKIP
        (['_unknown_', '_silence_'], 10352)
    """
    if task not in TASKS:
        raise RecipeError(f"--task must be one of {TASKS}, got {task!r}")
    root = Path(root)
    lists = {split: require_file(root, name, _hint(root, name)) for split, name in LISTS.items()}
    tree = word_folders(root)
    version = detect_version(root, tree, version)
    problems: list[Problem] = []
    assigned = read_split_lists(root, lists, problems)
    vocab = KWS12 if task == "kws12" else WORDS[version]
    label_of = _labeller(task, vocab)
    records = clip_records(root, tree, WORDS[version], lambda rel: assigned.get(rel, "train"), label_of, problems)
    noise = noise_files(root, problems)
    if task == "kws12":
        records += silence_records(noise, _command_counts(records), silence_percent, seed,
                                   SILENCE_REGIONS, vocab.index("_silence_"), problems)
    if not no_noise:
        records += noise_records(noise)
    return Collection(
        name=f"speech_commands_{version}" + ("_kws12" if task == "kws12" else ""), classes=list(vocab),
        records=records, multi_label=False, problems=problems,
        info={"recipe": NAME, "version": version,
              "source": [LISTS["valid"], LISTS["test"], "<word>/*.wav", f"{NOISE_DIR}/*.wav"],
              "split_rule": "valid/test from validation_list.txt/testing_list.txt, the rest train"
                            + ("" if no_noise else f"; {NOISE_DIR} cut into 1-s windows as split noise")
                            + (f"; _silence_ = ceil({silence_percent}% of command clips) 1-s noise windows "
                               f"per split, regions {SILENCE_REGIONS}" if task == "kws12" else ""),
              "options": {"task": task, "version": version, "silence_percent": silence_percent,
                          "seed": seed, "no_noise": no_noise}})


# ---------------------------------------------------------------- tree and lists

def _hint(root: Path, name: str) -> str:
    return did_you_mean(root, name) or "SRC must be the unpacked speech_commands_v0.0x folder holding the word folders and list files"


def word_folders(root: Path) -> dict[str, Path]:
    """Word folder name -> folder (every visible folder but _background_noise_)."""
    found = {p.name: p for p in sorted(root.iterdir())
             if p.is_dir() and p.name != NOISE_DIR and not p.name.startswith(".")}
    if not found:
        raise RecipeError(f"no word folders (yes/, no/, ...) under {root}")
    return found


def detect_version(root: Path, tree: dict[str, Path], version: str = "auto") -> str:
    """'v0.02' when a word only v0.02 has is present, else 'v0.01' (or the forced version)."""
    if version not in VERSIONS:
        raise RecipeError(f"--version must be one of {VERSIONS}, got {version!r}")
    if version != "auto":
        return version
    return "v0.02" if any(w in tree for w in ADDED_V2) else "v0.01"


def read_split_lists(root: Path, lists: dict[str, Path], problems: list[Problem]) -> dict[str, str]:
    """Clip path -> split for every line of the list files that names an existing clip."""
    assigned: dict[str, str] = {}
    where_of: dict[str, str] = {}
    for split, path in lists.items():
        for line, rel in enumerate(read_text(path).split("\n"), start=1):
            rel = rel.strip()
            if not rel:
                continue
            where = f"{path}:{line}"
            if rel.count("/") != 1 or not rel.endswith(".wav"):
                problems.append(Problem(where, f"malformed entry {rel!r}: expected <word>/<file>.wav"))
            elif rel in assigned:
                problems.append(Problem(where, f"{rel} is also listed at {where_of[rel]}"))
            elif not (root / rel).is_file():
                problems.append(Problem(where, f"listed clip {rel} not found"))
            else:
                assigned[rel], where_of[rel] = split, where
    return assigned


def _labeller(task: str, vocab: list[str]):
    index = {w: i for i, w in enumerate(vocab)}
    if task == "kws12":
        return lambda word: index.get(word, index["_unknown_"])
    return lambda word: index[word]


def clip_records(root: Path, tree: dict[str, Path], words: Iterable[str], split_of, label_of,
                 problems: list[Problem], prefix: str = "") -> list[Record]:
    """One record per <word>/<speaker>_nohash_<n>.wav; unknown folders and names are problems.

    ``split_of(rel)`` gives the split of a clip, or None to leave it out (SUPERB's discarded
    bucket); ``prefix`` is put before ``rel`` in ``source`` (e.g. a separate test archive).
    """
    known = set(words)
    records: list[Record] = []
    for word, folder in tree.items():
        clips = sorted(folder.glob("*.wav"))
        if word not in known:
            problems.append(Problem(str(folder), f"folder {word!r} is not one of the known words; "
                                                 f"its {len(clips)} clip(s) are not packed"))
            continue
        for path in clips:
            rel = f"{word}/{path.name}"
            m = CLIP.match(path.name)
            if m is None:
                problems.append(Problem(str(path), "file name is not <speaker>_nohash_<n>.wav"))
                continue
            split = split_of(rel)
            if split is None:
                continue
            source = prefix + rel
            records.append(Record(
                key=safe_key(source), source=source, path=path, labels=[label_of(word)], split=split,
                group=m["speaker"], extra={"speaker": m["speaker"], "utterance": int(m["n"]), "word": word}))
    return records


# ---------------------------------------------------------------- background noise

@dataclass(frozen=True)
class NoiseFile:
    source: str
    path: Path
    seconds: float


def noise_files(root: Path, problems: list[Problem]) -> list[NoiseFile]:
    """The readable background-noise WAVs with their durations (header only), in name order."""
    folder = root / NOISE_DIR
    if not folder.is_dir():
        problems.append(Problem(str(folder), f"{NOISE_DIR}/ not found: no noise split and no _silence_ clips"))
        return []
    found = []
    for path in sorted(folder.glob("*.wav")):
        try:
            info = sf.info(str(path))
        except Exception as e:  # soundfile raises several types for unreadable headers
            problems.append(Problem(str(path), f"background noise does not open ({e})"))
            continue
        found.append(NoiseFile(f"{NOISE_DIR}/{path.name}", path, info.frames / info.samplerate))
    return found


def noise_records(files: list[NoiseFile]) -> list[Record]:
    """Consecutive 1-s windows of every noise file, split ``noise``, no labels."""
    records = []
    for f in files:
        for i in range(int(f.seconds)):
            records.append(_window(f, f"-noise-{i:04d}", "noise", [], float(i)))
    return records


def _window(f: NoiseFile, suffix: str, split: str, labels: list[int], start: float) -> Record:
    end = round(start + 1.0, 3)
    return Record(key=safe_key(f.source) + suffix, source=f.source, path=f.path, labels=labels, split=split,
                  group=Path(f.source).stem, extra={"start": start, "end": end}, start=start, end=end)


def _command_counts(records: list[Record]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        if r.extra.get("word") in COMMANDS:
            counts[r.split] = counts.get(r.split, 0) + 1
    return counts


def silence_records(files: list[NoiseFile], command_counts: dict[str, int], percent: float, seed: int,
                    regions: dict[str, tuple[float, float]], label: int, problems: list[Problem]) -> list[Record]:
    """ceil(percent % of each split's command clips) 1-s windows from that split's region of the files."""
    records = []
    for split, (lo, hi) in regions.items():
        count = math.ceil(command_counts.get(split, 0) * percent / 100)
        usable = [f for f in files if (hi - lo) * f.seconds >= 1.0]
        if count and not usable:
            problems.append(Problem(f"{NOISE_DIR}/", f"no noise file has 1 s in the {split} region "
                                                     f"({lo:.0%}-{hi:.0%}): {count} _silence_ clip(s) missing"))
            continue
        # crc32 gives each split its own stream, stable across runs and Python versions
        rng = np.random.default_rng([seed, zlib.crc32(split.encode())])
        for k in range(count):
            f = usable[k % len(usable)]
            first, last = lo * f.seconds, hi * f.seconds - 1.0
            start = math.floor((first + rng.random() * (last - first)) * 1000) / 1000  # whole ms, inside
            records.append(_window(f, f"-silence-{split}-{k:05d}", split, [label], start))
    return records
