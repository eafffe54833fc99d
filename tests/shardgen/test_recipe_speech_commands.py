"""speech_commands recipe: hand-written trees in the archive's layout, and trees built from the real lists."""
from __future__ import annotations

import io
import json
import math
import os
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf

from shardgen import cli
from shardgen.recipes import get, speech_commands as sc
from shardgen.records import RecipeError
from shardgen.writer import PackOptions, pack
from tests.conftest import write_tone

CLIPS = [
    "yes/0a7c2a8d_nohash_0.wav", "yes/0a7c2a8d_nohash_1.wav", "yes/bb05582b_nohash_3.wav",
    "no/bb05582b_nohash_0.wav", "no/97f4c236_nohash_2.wav", "up/f2e59fea_nohash_3.wav",
    "cat/97f4c236_nohash_0.wav", "backward/fdb5155e_nohash_2.wav", "backward/dc75148d_nohash_0.wav",
]
VALID = ["no/97f4c236_nohash_2.wav", "cat/97f4c236_nohash_0.wav"]
TEST = ["yes/bb05582b_nohash_3.wav", "no/bb05582b_nohash_0.wav", "backward/fdb5155e_nohash_2.wav"]
NOISE = {"running_tap.wav": 3.4, "white_noise.wav": 2.5}  # seconds; real files are about 60 s


def make_tree(root: Path, clips: list[str] = CLIPS, valid: list[str] = VALID, test: list[str] = TEST,
              eol: str = "\n", noise: dict[str, float] | None = None) -> Path:
    """speech_commands_v0.0x layout: <word>/<speaker>_nohash_<n>.wav, two list files without a
    final newline (as real copies), _background_noise_/ with a README and long 16-kHz WAVs."""
    root.mkdir(parents=True, exist_ok=True)
    for i, rel in enumerate(clips):
        write_tone(root / rel, seconds=0.1, sr=16000, freq=300 + 40 * i, seed=i)
    (root / "validation_list.txt").write_bytes(eol.join(valid).encode())
    (root / "testing_list.txt").write_bytes(eol.join(test).encode())
    (root / "_background_noise_").mkdir(exist_ok=True)
    (root / "_background_noise_" / "README.md").write_text("noise files\n")
    for i, (name, seconds) in enumerate((NOISE if noise is None else noise).items()):
        write_tone(root / "_background_noise_" / name, seconds=seconds, sr=16000, freq=100 + 10 * i, seed=50 + i)
    return root


def test_words_task_splits_groups_and_version(tmp_path: Path) -> None:
    c = sc.load(make_tree(tmp_path / "speech_commands_v0.02"))
    assert c.problems == []
    assert c.info["version"] == "v0.02" and c.classes == sc.WORDS["v0.02"] and len(c.classes) == 35
    assert c.name == "speech_commands_v0.02" and not c.multi_label
    words = {r.source: r for r in c.records if r.split != "noise"}
    assert sorted(words) == sorted(CLIPS)
    assert {s for s, r in words.items() if r.split == "valid"} == set(VALID)
    assert {s for s, r in words.items() if r.split == "test"} == set(TEST)
    r = words["backward/dc75148d_nohash_0.wav"]
    assert (r.key, r.split, r.fold, r.group) == ("backward_dc75148d_nohash_0", "train", None, "dc75148d")
    assert c.classes[r.labels[0]] == "backward"
    assert r.extra == {"speaker": "dc75148d", "utterance": 0, "word": "backward"}
    assert words["no/bb05582b_nohash_0.wav"].group == words["yes/bb05582b_nohash_3.wav"].group == "bb05582b"
    assert all(c.classes[r.labels[0]] == r.source.split("/")[0] for r in words.values())


def test_noise_split_is_consecutive_one_second_windows(tmp_path: Path) -> None:
    c = sc.load(make_tree(tmp_path / "sc"))
    noise = [r for r in c.records if r.split == "noise"]
    # floor(3.4) + floor(2.5) windows, no labels, start/end on the record and in the json fields
    assert [(r.source, r.start, r.end) for r in noise] == [
        ("_background_noise_/running_tap.wav", 0.0, 1.0), ("_background_noise_/running_tap.wav", 1.0, 2.0),
        ("_background_noise_/running_tap.wav", 2.0, 3.0), ("_background_noise_/white_noise.wav", 0.0, 1.0),
        ("_background_noise_/white_noise.wav", 1.0, 2.0)]
    assert all(r.labels == [] and r.extra == {"start": r.start, "end": r.end} for r in noise)
    assert len({r.key for r in noise}) == 5 and noise[1].key == "_background_noise__running_tap-noise-0001"
    assert [r for r in sc.load(tmp_path / "sc", no_noise=True).records if r.split == "noise"] == []


def test_kws12_maps_words_and_draws_silence_per_split(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "sc", noise={"doing_the_dishes.wav": 12.0, "pink_noise.wav": 15.0})
    c = sc.load(root, task="kws12")
    assert c.classes == ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
                         "_unknown_", "_silence_"] and c.name == "speech_commands_v0.02_kws12"
    label = {r.source: c.classes[r.labels[0]] for r in c.records if r.split not in ("noise",)
             and "_background_noise_" not in r.source}
    assert label["cat/97f4c236_nohash_0.wav"] == label["backward/dc75148d_nohash_0.wav"] == "_unknown_"
    assert label["up/f2e59fea_nohash_3.wav"] == "up"
    silence = [r for r in c.records if r.labels == [11]]
    # command clips per split: train 3 (yes x2, up), valid 1 (no), test 2 (yes, no) -> ceil(10 %) = 1 each
    assert Counter(r.split for r in silence) == {"train": 1, "valid": 1, "test": 1}
    many = sc.load(root, task="kws12", silence_percent=300)
    silence = [r for r in many.records if r.labels == [11]]
    assert Counter(r.split for r in silence) == {"train": 9, "valid": 3, "test": 6}
    seconds = {"_background_noise_/doing_the_dishes.wav": 12.0, "_background_noise_/pink_noise.wav": 15.0}
    for r in silence:
        lo, hi = sc.SILENCE_REGIONS[r.split]
        d = seconds[r.source]
        assert lo * d <= r.start and r.end <= hi * d + 1e-9 and r.end - r.start == pytest.approx(1.0)
        assert r.start == round(r.start, 3) and r.group == Path(r.source).stem
    # round-robin over the files in name order
    train = [r.source for r in silence if r.split == "train"]
    assert train[:2] == sorted(seconds) and Counter(train) == {k: 5 - i for i, k in enumerate(sorted(seconds))}
    # deterministic for a seed, different for another
    again = sc.load(root, task="kws12", silence_percent=300)
    starts = lambda col: [r.start for r in col.records if r.labels == [11]]  # noqa: E731
    assert starts(again) == starts(many)
    assert starts(sc.load(root, task="kws12", silence_percent=300, seed=1)) != starts(many)
    assert many.problems == []


def test_kws12_reports_noise_too_short_for_a_split(tmp_path: Path) -> None:
    c = sc.load(make_tree(tmp_path / "sc"), task="kws12")  # 3.4-s and 2.5-s files: 10 % is under 1 s
    assert [(p.where, p.reason) for p in c.problems] == [
        ("_background_noise_/", "no noise file has 1 s in the valid region (80%-90%): 1 _silence_ clip(s) missing"),
        ("_background_noise_/", "no noise file has 1 s in the test region (90%-100%): 1 _silence_ clip(s) missing")]
    assert Counter(r.split for r in c.records if r.labels == [11]) == {"train": 1}


def test_v001_detected_from_the_words(tmp_path: Path) -> None:
    clips = [c for c in CLIPS if not c.startswith("backward/")]
    root = make_tree(tmp_path / "v1", clips=clips, test=[t for t in TEST if t in clips])
    c = sc.load(root)
    assert c.info["version"] == "v0.01" and c.classes == sc.WORDS["v0.01"] and len(c.classes) == 30
    assert c.problems == []
    # forcing v0.02 on it keeps the 35-class vocabulary
    assert len(sc.load(root, version="v0.02").classes) == 35


def test_problems_are_reported_by_file_and_line(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "sc", valid=VALID + ["yes/ffffffff_nohash_0.wav", "garbage line",
                                                     "no/97f4c236_nohash_2.wav"], eol="\r\n")
    write_tone(root / "notaword" / "0a7c2a8d_nohash_0.wav", seconds=0.1)
    write_tone(root / "yes" / "badname.wav", seconds=0.1)
    c = sc.load(root)
    got = {(Path(p.where).name, p.reason) for p in c.problems}
    assert got == {
        ("validation_list.txt:3", "listed clip yes/ffffffff_nohash_0.wav not found"),
        ("validation_list.txt:4", "malformed entry 'garbage line': expected <word>/<file>.wav"),
        ("validation_list.txt:5", f"no/97f4c236_nohash_2.wav is also listed at {root}/validation_list.txt:1"),
        ("notaword", "folder 'notaword' is not one of the known words; its 1 clip(s) are not packed"),
        ("badname.wav", "file name is not <speaker>_nohash_<n>.wav"),
    }
    assert len([r for r in c.records if r.split != "noise"]) == len(CLIPS)


def test_wrong_root_names_the_expected_file(tmp_path: Path) -> None:
    make_tree(tmp_path / "datasets" / "speech_commands_v0.02")
    with pytest.raises(RecipeError, match=r"expected validation_list.txt under .*datasets.*did you mean "
                                          r".*speech_commands_v0.02"):
        sc.load(tmp_path / "datasets")
    with pytest.raises(RecipeError, match="--task"):
        sc.load(tmp_path / "datasets" / "speech_commands_v0.02", task="kws35")


def test_pack_and_read_back(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "sc", noise={"running_tap.wav": 10.5, "white_noise.wav": 10.0})
    c = get("speech_commands").load(root, task="kws12", silence_percent=100)
    out = tmp_path / "out"
    result = pack(c, out, PackOptions(progress=False))
    m = result.manifest
    assert m["recipe"]["recipe"] == "speech_commands" and m["classes"] == c.classes
    assert {k: v["samples"] for k, v in m["splits"].items()} == c.split_counts()
    assert m["splits"]["noise"]["samples"] == 20 and result.problems == []
    seen = {}
    for split in m["splits"].values():
        for shard in split["shards"]:
            with tarfile.open(out / shard["path"]) as tf:
                members = {n: tf.extractfile(n).read() for n in tf.getnames()}
            for name, data in members.items():
                if name.endswith(".json"):
                    meta = json.loads(data)
                    key = name[:-5]
                    # 16-bit 16-kHz WAV sources are kept as they are, windows are re-encoded as FLAC
                    audio, sr = sf.read(io.BytesIO(members.get(key + ".wav") or members[key + ".flac"]))
                    seen[key] = (meta, members[key + ".labels"], members.get(key + ".cls"), len(audio), sr)
    meta, hot, cls, frames, sr = seen["cat_97f4c236_nohash_0"]
    assert meta["split"] == "valid" and meta["group"] == "97f4c236" and meta["word"] == "cat"
    assert cls == b"10" and hot == bytes([0] * 10 + [1, 0]) and frames == 1600
    meta, hot, cls, frames, sr = seen["_background_noise__running_tap-noise-0002"]
    assert meta["split"] == "noise" and meta["start"] == 2.0 and cls is None and hot == bytes(12)
    assert frames == sr == 16000  # a 1-s window cut from the long file
    sil = [v for k, v in seen.items() if "-silence-" in k]
    assert sil and all(v[2] == b"11" and v[3] == 16000 for v in sil)


def test_cli_pack_kws12(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_tree(tmp_path / "sc")
    rc = cli.main(["pack", "--recipe", "speech_commands", str(root), str(tmp_path / "out"), "--no-progress",
                   "--task", "kws12", "--no-noise"])
    assert rc == 0
    m = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert m["recipe"]["options"]["task"] == "kws12" and "noise" not in m["splits"]
    assert m["splits"]["valid"]["class_counts"][10] == 1  # cat -> _unknown_


# ---------------------------------------------------------------- real list files

def _tree_from_lists(shared: Path, version: str, root: Path, train: list[str]) -> tuple[Path, dict[str, list[str]]]:
    """Every clip the real list files name plus the given train clips, all hard links to one
    tiny real WAV (20,000 file writes would dominate the test's time)."""
    meta = shared / "datasets-meta" / "speechcommands" / version
    lists = {s: (meta / f).read_text().split() for s, f in sc.LISTS.items()}
    root.mkdir(parents=True)
    clip = write_tone(root.parent / "clip.wav", seconds=0.01, sr=16000, subtype="PCM_16")
    words = {rel.split("/")[0] for rels in lists.values() for rel in rels} | {t.split("/")[0] for t in train}
    for w in words:
        (root / w).mkdir()
    for rel in [*lists["valid"], *lists["test"], *train]:
        os.link(clip, root / rel)
    for split, f in sc.LISTS.items():
        (root / f).write_bytes((meta / f).read_bytes())
    (root / "_background_noise_").mkdir()
    write_tone(root / "_background_noise_" / "white_noise.wav", seconds=20.0, sr=16000)
    return root, lists


def test_real_v002_lists_counts_and_known_rows(shared: Path, tmp_path: Path) -> None:
    train = ["yes/00000001_nohash_0.wav", "visual/00000002_nohash_1.wav", "follow/00000002_nohash_0.wav"]
    root, lists = _tree_from_lists(shared, "v0.02", tmp_path / "sc2", train)
    assert (len(lists["valid"]), len(lists["test"])) == (9981, 11005)
    c = sc.load(root)
    assert c.problems == [] and c.info["version"] == "v0.02" and len(c.classes) == 35
    assert c.split_counts() == {"noise": 20, "test": 11005, "train": 3, "valid": 9981}
    by = {r.source: r for r in c.records}
    r = by["right/bb05582b_nohash_3.wav"]  # first line of testing_list.txt
    assert (r.split, r.group, c.classes[r.labels[0]]) == ("test", "bb05582b", "right")
    last = lists["test"][-1]  # the line without a final newline
    assert last == "four/8769c34c_nohash_3.wav" and by[last].split == "test"
    per_word = Counter(r.source.split("/")[0] for r in c.records if r.split == "valid")
    assert per_word == Counter(rel.split("/")[0] for rel in lists["valid"])
    assert per_word["backward"] == 153 and per_word["yes"] == 397
    # the lists keep speakers apart: no group is in two of train/valid/test
    splits_of = {}
    for rec in c.records:
        if rec.split != "noise":
            splits_of.setdefault(rec.group, set()).add(rec.split)
    assert all(len(s) == 1 for s in splits_of.values())
    k = sc.load(root, task="kws12")
    commands = Counter(rec.split for rec in k.records if rec.extra.get("word") in sc.COMMANDS)
    silence = Counter(rec.split for rec in k.records if rec.labels == [11])
    assert silence == {s: math.ceil(commands[s] / 10) for s in ("train", "valid", "test")}
    assert Counter(k.classes[rec.labels[0]] for rec in k.records if rec.split == "valid")["_unknown_"] == \
        sum(n for w, n in per_word.items() if w not in sc.COMMANDS)


def test_real_v001_lists_detect_version(shared: Path, tmp_path: Path) -> None:
    root, lists = _tree_from_lists(shared, "v0.01", tmp_path / "sc1", [])
    c = sc.load(root, no_noise=True)
    assert c.info["version"] == "v0.01" and len(c.classes) == 30 and c.problems == []
    assert c.split_counts() == {"test": len(lists["test"]), "valid": len(lists["valid"])} == \
        {"test": 6835, "valid": 6798}
