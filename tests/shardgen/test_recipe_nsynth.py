"""nsynth recipe: hand-written examples.json trees in the publisher's style, and the real excerpt."""
from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from shardgen import cli
from shardgen.recipes import nsynth
from shardgen.records import RecipeError
from shardgen.writer import PackOptions, pack
from tests.conftest import write_tone


def note(name: str, family: int, source: int, qualities: list[int], note_id: int = 1) -> dict:
    """One examples.json entry with the publisher's fields; pitch/velocity from the note name."""
    instrument, pitch, velocity = name.rsplit("-", 2)
    q = [1 if i in qualities else 0 for i in range(10)]
    return {"qualities": q, "pitch": int(pitch), "note": note_id, "instrument_source_str": nsynth.SOURCES[source],
            "velocity": int(velocity), "instrument_str": instrument, "instrument": note_id % 1000,
            "sample_rate": 16000, "qualities_str": [nsynth.QUALITIES[i] for i in qualities],
            "instrument_source": source, "note_str": name, "instrument_family": family,
            "instrument_family_str": nsynth.FAMILIES[family]}


TRAIN = [note("bass_synthetic_068-049-025", 0, 2, [1]), note("guitar_acoustic_010-066-100", 3, 0, []),
         note("keyboard_electronic_001-021-127", 4, 1, [0, 3, 7])]
VALID = [note("organ_electronic_007-060-050", 6, 1, [8, 9])]
TEST = [note("vocal_synthetic_003-127-075", 10, 2, [5])]


def publisher_json(entries: list[dict]) -> str:
    """The Python-2 json style of the real files: 4-space indent and ", " at line ends."""
    return json.dumps({e["note_str"]: e for e in entries}, indent=4, separators=(", ", ": "))


def make_tree(root: Path, splits: dict[str, list[dict]] | None = None, skip_audio: tuple[str, ...] = ()) -> Path:
    splits = splits if splits is not None else {"train": TRAIN, "valid": VALID, "test": TEST}
    for split, entries in splits.items():
        folder = root / f"nsynth-{split}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "examples.json").write_text(publisher_json(entries))
        for i, e in enumerate(entries):
            if e["note_str"] not in skip_audio:
                write_tone(folder / "audio" / f"{e['note_str']}.wav", seconds=0.1, sr=16000, freq=220 + 40 * i, seed=i)
    return root


def test_instrument_family_default(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "nsynth")
    assert ", \n" in (root / "nsynth-train" / "examples.json").read_text()  # the publisher's style
    c = nsynth.load(root)
    assert c.problems == [] and c.classes == nsynth.FAMILIES and len(c.classes) == 11 and not c.multi_label
    by = {r.source: r for r in c.records}
    r = by["nsynth-train/audio/bass_synthetic_068-049-025.wav"]
    assert (r.key, r.labels, r.split, r.fold, r.group) == (
        "nsynth-train_audio_bass_synthetic_068-049-025", [0], "train", None, "bass_synthetic_068")
    assert r.extra == {"pitch": 49, "velocity": 25, "instrument_str": "bass_synthetic_068",
                       "qualities_str": ["dark"], "instrument_family_str": "bass",
                       "instrument_source_str": "synthetic"}
    assert c.classes[by["nsynth-valid/audio/organ_electronic_007-060-050.wav"].labels[0]] == "organ"
    assert by["nsynth-test/audio/vocal_synthetic_003-127-075.wav"].labels == [10]
    assert c.split_counts() == {"test": 1, "train": 3, "valid": 1}
    assert c.info["source"] == ["nsynth-train/examples.json", "nsynth-valid/examples.json",
                                "nsynth-test/examples.json"]


@pytest.mark.parametrize("label, expected", [
    ("instrument_source", {"bass_synthetic_068": "synthetic", "guitar_acoustic_010": "acoustic",
                           "keyboard_electronic_001": "electronic"}),
    ("pitch", {"bass_synthetic_068": "C#3", "guitar_acoustic_010": "F#4", "keyboard_electronic_001": "A0"}),
])
def test_source_and_pitch_labels(tmp_path: Path, label: str, expected: dict[str, str]) -> None:
    c = nsynth.load(make_tree(tmp_path / "n", {"train": TRAIN}), label=label)
    assert {r.group: c.classes[r.labels[0]] for r in c.records} == expected
    if label == "pitch":
        assert len(c.classes) == 128 and c.classes[60] == "C4" and c.classes[0] == "C-1" and c.classes[127] == "G9"
        assert {r.group: r.labels[0] for r in c.records}["bass_synthetic_068"] == 49


def test_instrument_label_is_sorted_names_seen(tmp_path: Path) -> None:
    c = nsynth.load(make_tree(tmp_path / "n"), label="instrument")
    assert c.classes == ["bass_synthetic_068", "guitar_acoustic_010", "keyboard_electronic_001",
                         "organ_electronic_007", "vocal_synthetic_003"]
    assert all(c.classes[r.labels[0]] == r.group for r in c.records)


def test_qualities_multi_hot_for_zero_one_and_many(tmp_path: Path) -> None:
    c = nsynth.load(make_tree(tmp_path / "n"), qualities=True)
    assert c.multi_label and c.classes == nsynth.QUALITIES and c.name == "nsynth_qualities"
    labels = {r.group: r.labels for r in c.records}
    assert labels["guitar_acoustic_010"] == []
    assert labels["bass_synthetic_068"] == [1]
    assert labels["keyboard_electronic_001"] == [0, 3, 7]
    assert labels["organ_electronic_007"] == [8, 9]
    out = tmp_path / "out"
    pack(c, out, PackOptions(progress=False))
    m = json.loads((out / "dataset.json").read_text())
    assert m["multi_label"] and m["splits"]["train"]["class_counts"] == [1, 1, 0, 1, 0, 0, 0, 1, 0, 0]
    with tarfile.open(out / m["splits"]["train"]["shards"][0]["path"]) as tf:
        members = {n: tf.extractfile(n).read() for n in tf.getnames()}
    key = "nsynth-train_audio_keyboard_electronic_001-021-127"
    assert members[key + ".labels"] == bytes([1, 0, 0, 1, 0, 0, 0, 1, 0, 0]) and key + ".cls" not in members
    meta = json.loads(members[key + ".json"])
    assert (meta["pitch"], meta["velocity"], meta["qualities_str"]) == (21, 127, ["bright", "fast_decay", "percussive"])
    assert members["nsynth-train_audio_guitar_acoustic_010-066-100.labels"] == bytes(10)


def test_problems_reported_by_file_and_note(tmp_path: Path) -> None:
    bad_family = dict(note("flute_acoustic_002-070-100", 2, 0, []), instrument_family_str="reed")
    no_pitch = {k: v for k, v in note("brass_acoustic_001-050-050", 1, 0, []).items() if k != "pitch"}
    bad_q = dict(note("reed_acoustic_011-040-075", 7, 0, [2]), qualities_str=["bright"])
    root = make_tree(tmp_path / "n", {"train": TRAIN + [bad_family, no_pitch, bad_q]},
                     skip_audio=("guitar_acoustic_010-066-100",))
    write_tone(root / "nsynth-train" / "audio" / "stray_note-001-001.wav", seconds=0.1)
    c = nsynth.load(root)
    got = [(p.where.split("nsynth-train/")[1], p.reason) for p in c.problems]
    assert got == [
        ("examples.json:brass_acoustic_001-050-050", "malformed entry: missing field(s) ['pitch']"),
        ("examples.json:flute_acoustic_002-070-100", "unknown label: instrument_family 2 / 'reed' is not one of "
                                                     f"{nsynth.FAMILIES} at its index"),
        ("examples.json:reed_acoustic_011-040-075", "qualities_str ['bright'] does not match qualities "
                                                    "[0, 0, 1, 0, 0, 0, 0, 0, 0, 0]"),
        ("examples.json:guitar_acoustic_010-066-100",
         "audio file nsynth-train/audio/guitar_acoustic_010-066-100.wav not found"),
        ("audio/stray_note-001-001.wav", "audio file not listed in nsynth-train/examples.json"),
    ]
    assert sorted(r.group for r in c.records) == ["bass_synthetic_068", "keyboard_electronic_001"]


def test_wrong_root(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data" / "nsynth", {"test": TEST})
    with pytest.raises(RecipeError, match=r"expected nsynth-train/examples.json.*did you mean .*data/nsynth"):
        nsynth.load(tmp_path / "data")
    with pytest.raises(RecipeError, match=r"SRC must be the folder holding nsynth-test/, i.e. .*data/nsynth"):
        nsynth.load(root / "nsynth-test")
    (root / "nsynth-test" / "examples.json").write_text('{"a": 1,')
    with pytest.raises(RecipeError, match=r"nsynth-test/examples.json: not valid JSON"):
        nsynth.load(root)
    with pytest.raises(RecipeError, match="--label"):
        nsynth.load(root, label="timbre")


def test_real_excerpt(shared: Path, tmp_path: Path) -> None:
    """The first three entries of the real nsynth-test/examples.json (Python-2 ", " style)."""
    src = shared / "datasets-meta" / "nsynth" / "nsynth-test" / "examples.head3.json"
    names = list(json.loads(src.read_text()))
    root = tmp_path / "nsynth"
    (root / "nsynth-test").mkdir(parents=True)
    shutil.copyfile(src, root / "nsynth-test" / "examples.json")
    for i, name in enumerate(names):
        write_tone(root / "nsynth-test" / "audio" / f"{name}.wav", seconds=0.2, sr=16000, freq=300 + 100 * i)
    fam = nsynth.load(root)
    assert fam.problems == [] and fam.split_counts() == {"test": 3}
    by = {r.group: r for r in fam.records}
    assert {g: fam.classes[r.labels[0]] for g, r in by.items()} == {
        "bass_synthetic_068": "bass", "keyboard_electronic_001": "keyboard", "guitar_acoustic_010": "guitar"}
    src_labels = nsynth.load(root, label="instrument_source")
    assert {r.group: src_labels.classes[r.labels[0]] for r in src_labels.records} == {
        "bass_synthetic_068": "synthetic", "keyboard_electronic_001": "electronic", "guitar_acoustic_010": "acoustic"}
    pitch = nsynth.load(root, label="pitch")
    assert {r.group: r.labels[0] for r in pitch.records} == {
        "bass_synthetic_068": 49, "keyboard_electronic_001": 21, "guitar_acoustic_010": 66}
    q = nsynth.load(root, qualities=True)
    assert {r.group: r.labels for r in q.records} == {
        "bass_synthetic_068": [1], "keyboard_electronic_001": [], "guitar_acoustic_010": []}
    bass = by["bass_synthetic_068"].extra
    assert bass["velocity"] == 25 and bass["qualities_str"] == ["dark"]
    out = tmp_path / "out"
    assert cli.main(["pack", "--recipe", "nsynth", str(root), str(out), "--no-progress", "--label", "pitch"]) == 0
    m = json.loads((out / "dataset.json").read_text())
    assert m["num_classes"] == 128 and m["splits"]["test"]["samples"] == 3
    with tarfile.open(out / m["splits"]["test"]["shards"][0]["path"]) as tf:
        cls = {n: tf.extractfile(n).read() for n in tf.getnames() if n.endswith(".cls")}
    assert cls == {"nsynth-test_audio_bass_synthetic_068-049-025.cls": b"49",
                   "nsynth-test_audio_guitar_acoustic_010-066-100.cls": b"66",
                   "nsynth-test_audio_keyboard_electronic_001-021-127.cls": b"21"}
