"""nsynth: NSynth musical notes, 4-s clips at 16 kHz, with official train/valid/test folders.

Layout (nsynth-{train,valid,test}.jsonwav.tar.gz unpacked side by side)::

    SRC/nsynth-train/examples.json        {"<note_str>": {"pitch": 49, "velocity": 25,
    SRC/nsynth-train/audio/<note_str>.wav      "instrument_family_str": "bass", "qualities": [0, 1, ...], ...}}
    SRC/nsynth-valid/...                  same; any of the three folders may be absent
    SRC/nsynth-test/...

(the publisher's json is written with ``", "`` line ends; any valid JSON is read).
Splits: nsynth-train -> ``train``, nsynth-valid -> ``valid``, nsynth-test -> ``test``.
group = ``instrument_str`` (all notes of one instrument); each json keeps pitch, velocity,
instrument_str, qualities_str, instrument_family_str and instrument_source_str.

``--label`` picks the single-label target:
``instrument_family`` (default; 11 classes bass, brass, flute, guitar, keyboard, mallet,
organ, reed, string, synth_lead, vocal in NSynth's index order), ``instrument_source``
(acoustic, electronic, synthetic), ``pitch`` (128 classes, index = MIDI note, names C-1 ... G9
with C4 = 60) or ``instrument`` (the instrument_str names found, sorted).
``--qualities`` instead makes a 10-dim multi-label vector from the ``qualities`` field
(bright, dark, distortion, fast_decay, long_release, multiphonic, nonlinear_env, percussive,
reverb, tempo-synced); notes without any quality have no label.

Example::

    shardgen pack --recipe nsynth ~/datasets/nsynth out/nsynth_family --workers 8
    shardgen pack --recipe nsynth ~/datasets/nsynth out/nsynth_pitch --label pitch
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..records import Collection, Problem, Record, RecipeError, safe_key
from ._common import did_you_mean, read_json, unlisted

NAME = "nsynth"
DESCRIPTION = "NSynth (nsynth-*/examples.json + audio/): instrument family/source, pitch, instrument or qualities"
DEFAULT_ON_ERROR = "skip"
SPLITS = {"train": "nsynth-train", "valid": "nsynth-valid", "test": "nsynth-test"}
FAMILIES = ["bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string",
            "synth_lead", "vocal"]
SOURCES = ["acoustic", "electronic", "synthetic"]
QUALITIES = ["bright", "dark", "distortion", "fast_decay", "long_release", "multiphonic", "nonlinear_env",
             "percussive", "reverb", "tempo-synced"]
NOTE_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
PITCHES = [f"{NOTE_NAMES[m % 12]}{m // 12 - 1}" for m in range(128)]
LABELS = ("instrument_family", "instrument_source", "pitch", "instrument")
FIELDS = ("note_str", "pitch", "velocity", "instrument_str", "instrument_family", "instrument_family_str",
          "instrument_source", "instrument_source_str", "qualities", "qualities_str")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--label", choices=LABELS, default="instrument_family",
                        help="single-label target (default instrument_family)")
    parser.add_argument("--qualities", action="store_true",
                        help="label with the 10 note qualities (multi-label) instead of --label")


def load(root: Path, label: str = "instrument_family", qualities: bool = False) -> Collection:
    """Read NSynth as its archives unpack.

    Example:
        >>> c = load(Path("nsynth"), label="instrument_source")   # doctest: +SKIP
        >>> r = next(r for r in c.records if r.group == "bass_synthetic_068")  # doctest: +SKIP
        >>> c.classes, c.classes[r.labels[0]]                                  # doctest: +SKIP
        (['acoustic', 'electronic', 'synthetic'], 'synthetic')
    """
    if label not in LABELS:
        raise RecipeError(f"--label must be one of {LABELS}, got {label!r}")
    root = Path(root)
    tables = {split: root / folder / "examples.json" for split, folder in SPLITS.items()
              if (root / folder / "examples.json").is_file()}
    if not tables:
        raise RecipeError(f"expected nsynth-train/examples.json, nsynth-valid/examples.json or "
                          f"nsynth-test/examples.json under {root}; {_hint(root)}")
    problems: list[Problem] = []
    notes, named = {}, {}
    for split, path in tables.items():
        notes[split], named[split] = _checked_notes(path, problems)
    classes = _vocabulary(label, qualities, notes)
    index = {name: i for i, name in enumerate(classes)}
    records = []
    for split, entries in notes.items():
        folder = SPLITS[split]
        for note in entries:
            source = f"{folder}/audio/{note['note_str']}.wav"
            if not (root / source).is_file():
                problems.append(Problem(f"{tables[split]}:{note['note_str']}", f"audio file {source} not found"))
                continue
            records.append(_record(root, source, split, note, _labels(note, label, qualities, index)))
        audio = root / folder / "audio"
        if audio.is_dir():
            listed = {audio / f"{name}.wav" for name in named[split]}  # rejected entries are reported already
            problems += unlisted(audio, listed, f"{folder}/examples.json")
    target = "qualities" if qualities else label
    return Collection(
        name=f"nsynth_{target}", classes=classes, records=records, multi_label=qualities, problems=problems,
        info={"recipe": NAME, "source": [f"{SPLITS[s]}/examples.json" for s in tables],
              "split_rule": "official folders nsynth-train/valid/test", "label": target,
              "options": {"label": label, "qualities": qualities}})


def _hint(root: Path) -> str:
    hint = did_you_mean(root, "nsynth-*/examples.json")
    if hint:
        return hint
    if (root / "examples.json").is_file():
        return f"SRC must be the folder holding {root.name}/, i.e. {root.parent}"
    return "SRC must be the folder into which the nsynth-*.jsonwav.tar.gz archives were unpacked"


def _checked_notes(path: Path, problems: list[Problem]) -> tuple[list[dict[str, Any]], list[str]]:
    """The entries of one examples.json that are complete and consistent, in note_str order,
    and the names of all its entries."""
    data = read_json(path, dict, "a JSON object of notes by note_str")
    good = []
    for name in sorted(data):
        reason = _note_problem(name, data[name])
        if reason is None:
            good.append(data[name])
        else:
            problems.append(Problem(f"{path}:{name}", reason))
    return good, list(data)


def _note_problem(name: str, note: Any) -> str | None:
    """Why one examples.json entry cannot be used, or None."""
    if not isinstance(note, dict):
        return f"malformed entry: expected an object, got {type(note).__name__}"
    missing = [f for f in FIELDS if f not in note]
    if missing:
        return f"malformed entry: missing field(s) {missing}"
    if note["note_str"] != name:
        return f"note_str {note['note_str']!r} differs from its key"
    if not isinstance(note["pitch"], int) or not 0 <= note["pitch"] < 128:
        return f"pitch {note['pitch']!r} is not a MIDI note 0-127"
    if not _indexed(FAMILIES, note["instrument_family"], note["instrument_family_str"]):
        return (f"unknown label: instrument_family {note['instrument_family']!r} / "
                f"{note['instrument_family_str']!r} is not one of {FAMILIES} at its index")
    if not _indexed(SOURCES, note["instrument_source"], note["instrument_source_str"]):
        return (f"unknown label: instrument_source {note['instrument_source']!r} / "
                f"{note['instrument_source_str']!r} is not one of {SOURCES} at its index")
    q = note["qualities"]
    if not isinstance(q, list) or len(q) != len(QUALITIES) or any(v not in (0, 1) for v in q):
        return f"qualities {q!r} is not a list of {len(QUALITIES)} zeros and ones"
    if not isinstance(note["qualities_str"], list) or \
            set(note["qualities_str"]) != {QUALITIES[i] for i, v in enumerate(q) if v}:
        return f"qualities_str {note['qualities_str']!r} does not match qualities {q!r}"
    return None


def _indexed(names: list[str], index: Any, name: Any) -> bool:
    return isinstance(index, int) and 0 <= index < len(names) and names[index] == name


def _vocabulary(label: str, qualities: bool, notes: dict[str, list[dict[str, Any]]]) -> list[str]:
    if qualities:
        return list(QUALITIES)
    if label == "instrument":
        return sorted({n["instrument_str"] for entries in notes.values() for n in entries})
    return {"instrument_family": FAMILIES, "instrument_source": SOURCES, "pitch": PITCHES}[label][:]


def _labels(note: dict[str, Any], label: str, qualities: bool, index: dict[str, int]) -> list[int]:
    if qualities:
        return [i for i, v in enumerate(note["qualities"]) if v]
    if label == "instrument":
        return [index[note["instrument_str"]]]
    return [note[label]]  # family, source and pitch are already the class index


def _record(root: Path, source: str, split: str, note: dict[str, Any], labels: list[int]) -> Record:
    keep = ("pitch", "velocity", "instrument_str", "qualities_str", "instrument_family_str", "instrument_source_str")
    return Record(key=safe_key(source), source=source, path=root / source, labels=labels, split=split,
                  group=note["instrument_str"], extra={k: note[k] for k in keep})
