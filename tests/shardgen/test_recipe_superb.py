"""superb recipe: ks (Speech Commands v0.01 with SUPERB's hash split) and ic (Fluent Speech Commands)."""
from __future__ import annotations

import hashlib
import json
import math
import os
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from shardgen import cli
from shardgen.recipes import superb
from shardgen.records import RecipeError
from shardgen.writer import PackOptions, pack
from tests.conftest import write_tone


def reference_bucket(speaker: str) -> str:
    """The rule as the Speech Commands README states it, written out independently: the
    speaker hash's SHA-1, as an integer, modulo 2**27, scaled to [0, 100] by 2**27 - 1."""
    value = int.from_bytes(hashlib.sha1(speaker.encode()).digest(), "big") % 2 ** 27
    percent = value * 100 / (2 ** 27 - 1)
    return "valid" if percent < 10 else "discarded" if percent < 20 else "train"


# speakers taken from the real v0.01 lists: 8b775397 is in validation_list.txt,
# 2aa787cf in testing_list.txt; 0a7c2a8d is in neither (a training speaker)
KS_CLIPS = ["yes/8b775397_nohash_0.wav", "cat/8b775397_nohash_1.wav", "yes/2aa787cf_nohash_0.wav",
            "no/0a7c2a8d_nohash_0.wav", "no/0a7c2a8d_nohash_1.wav", "wow/0a7c2a8d_nohash_0.wav",
            "stop/0a7c2a8d_nohash_2.wav"]
KS_TEST = ["yes/0c40e715_nohash_0.wav", "_unknown_/0c40e715_nohash_1.wav", "_silence_/silence_0001.wav"]


def make_ks(root: Path, clips: list[str] = KS_CLIPS, noise_seconds: float = 20.0) -> Path:
    """speech_commands_v0.01 layout (the list files are there but SUPERB does not read them)."""
    for i, rel in enumerate(clips):
        write_tone(root / rel, seconds=0.1, sr=16000, freq=300 + 30 * i, seed=i)
    (root / "validation_list.txt").write_text("cat/8b775397_nohash_1.wav")
    (root / "testing_list.txt").write_text("yes/2aa787cf_nohash_0.wav")
    write_tone(root / "_background_noise_" / "exercise_bike.wav", seconds=noise_seconds, sr=16000, seed=9)
    return root


def make_ks_test(root: Path, clips: list[str] = KS_TEST) -> Path:
    """speech_commands_test_set_v0.01 layout: one folder per class, _silence_ and _unknown_ included."""
    for i, rel in enumerate(clips):
        write_tone(root / rel, seconds=0.1, sr=16000, freq=500 + 30 * i, seed=20 + i)
    return root


def test_hash_rule_matches_the_reference() -> None:
    speakers = ["8b775397", "2aa787cf", "0a7c2a8d"] + [f"{i:08x}" for i in range(0, 4000, 7)]
    got = [superb.ks_split(f"yes/{s}_nohash_0.wav") or "discarded" for s in speakers]
    assert got == [reference_bucket(s) for s in speakers]
    assert got[:3] == ["valid", "discarded", "train"]
    share = Counter(got[3:])
    assert 0.05 < share["valid"] / len(got[3:]) < 0.15 and 0.05 < share["discarded"] / len(got[3:]) < 0.15


def test_ks_splits_labels_and_test_set(tmp_path: Path) -> None:
    root = make_ks(tmp_path / "speech_commands_v0.01")
    test_root = make_ks_test(tmp_path / "speech_commands_test_set_v0.01")
    c = superb.load(root, test_root=test_root)
    assert c.problems == [] and c.name == "superb_ks" and c.classes == superb.KWS12
    words = {r.source: (r.split, c.classes[r.labels[0]], r.group) for r in c.records if r.extra.get("word")}
    assert words == {
        # the list files say valid/test for these; SUPERB's hash says valid / left out
        "yes/8b775397_nohash_0.wav": ("valid", "yes", "8b775397"),
        "cat/8b775397_nohash_1.wav": ("valid", "_unknown_", "8b775397"),
        "no/0a7c2a8d_nohash_0.wav": ("train", "no", "0a7c2a8d"),
        "no/0a7c2a8d_nohash_1.wav": ("train", "no", "0a7c2a8d"),
        "wow/0a7c2a8d_nohash_0.wav": ("train", "_unknown_", "0a7c2a8d"),
        "stop/0a7c2a8d_nohash_2.wav": ("train", "stop", "0a7c2a8d"),
        "speech_commands_test_set_v0.01/yes/0c40e715_nohash_0.wav": ("test", "yes", "0c40e715"),
        "speech_commands_test_set_v0.01/_unknown_/0c40e715_nohash_1.wav": ("test", "_unknown_", "0c40e715"),
        "speech_commands_test_set_v0.01/_silence_/silence_0001.wav": ("test", "_silence_", "silence_0001"),
    }
    assert c.info["discarded"] == 1 and c.info["options"]["test_root"] == str(test_root)
    test_keys = [r.key for r in c.records if r.split == "test"]
    assert "speech_commands_test_set_v0_01_yes_0c40e715_nohash_0" in test_keys
    # command clips: train 3 (no x2, stop) -> 1 silence window, valid 1 (yes) -> 1
    silence = [r for r in c.records if r.labels == [11] and r.split != "test"]
    assert Counter(r.split for r in silence) == {"train": 1, "valid": 1}
    for r in silence:
        lo, hi = superb.KS_SILENCE_REGIONS[r.split]
        assert 20 * lo <= r.start and r.end <= 20 * hi + 1e-9 and r.source == "_background_noise_/exercise_bike.wav"
    assert not any(r.split == "noise" for r in c.records)


def test_ks_silence_percent_and_missing_test_root(tmp_path: Path) -> None:
    c = superb.load(make_ks(tmp_path / "sc"), silence_percent=200)
    assert Counter(r.split for r in c.records if r.labels == [11]) == {"train": 6, "valid": 2}
    assert [(p.where, p.reason) for p in c.problems] == [
        ("--test-root", "not given: the SUPERB test split (speech_commands_test_set_v0.01) is not packed")]


def test_ks_bad_input(tmp_path: Path) -> None:
    root = make_ks(tmp_path / "data" / "speech_commands_v0.01")
    with pytest.raises(RecipeError, match=r"expected the Speech Commands v0.01 word folders .*did you mean "
                                          r".*speech_commands_v0.01"):
        superb.load(tmp_path / "data")
    with pytest.raises(RecipeError, match=r"--test-root: expected class folders"):
        superb.load(root, test_root=tmp_path / "data")
    test_root = make_ks_test(tmp_path / "t", KS_TEST + ["maybe/0c40e715_nohash_2.wav"])
    c = superb.load(root, test_root=test_root)
    assert [(Path(p.where).name, p.reason) for p in c.problems] == [
        ("maybe", "unknown label: folder 'maybe' is not one of the 12 classes; its 1 clip(s) are not packed")]
    write_tone(root / "visual" / "0a7c2a8d_nohash_0.wav", seconds=0.1)
    with pytest.raises(RecipeError, match=r"defined on Speech Commands v0.01.*\['visual'\]"):
        superb.load(root)
    with pytest.raises(RecipeError, match="--task"):
        superb.load(root, task="asr")


def test_real_v001_lists_hash_rule_reproduces_the_publisher_split(shared: Path, tmp_path: Path) -> None:
    """SUPERB's rule is the one that generated the v0.01 lists: on every listed clip, its dev set
    is validation_list.txt and its discarded bucket is testing_list.txt."""
    meta = shared / "datasets-meta" / "speechcommands" / "v0.01"
    lists = {s: (meta / f).read_text().split() for s, f in (("valid", "validation_list.txt"),
                                                              ("test", "testing_list.txt"))}
    root = tmp_path / "speech_commands_v0.01"
    root.mkdir()
    clip = write_tone(tmp_path / "clip.wav", seconds=0.01, sr=16000)
    train = [f"{w}/{s:08x}_nohash_0.wav" for w in ("yes", "house") for s in range(1, 41)]
    for rel in lists["valid"] + lists["test"] + train:
        (root / rel).parent.mkdir(exist_ok=True)
        os.link(clip, root / rel)  # hard links: thousands of file writes would dominate the test
    write_tone(root / "_background_noise_" / "pink_noise.wav", seconds=30.0, sr=16000)
    c = superb.load(root, test_root=make_ks_test(tmp_path / "test"))
    by_split: dict[str, set[str]] = {}
    for r in c.records:
        if r.extra.get("word") and r.split != "test":
            by_split.setdefault(r.split, set()).add(r.source)
    assert by_split["valid"] - set(train) == set(lists["valid"]) and len(lists["valid"]) == 6798
    assert not (by_split["train"] & set(lists["valid"] + lists["test"]))
    extra = Counter(reference_bucket(rel.split("/")[1].split("_")[0]) for rel in train)
    assert c.info["discarded"] == len(lists["test"]) + extra["discarded"] == 6835 + extra["discarded"]
    assert len(by_split["train"]) == extra["train"] and len(by_split["valid"]) == 6798 + extra["valid"]
    commands = Counter(r.split for r in c.records if r.extra.get("word") in superb.KWS12[:10] and r.split != "test")
    assert Counter(r.split for r in c.records if r.labels == [11] and r.split != "test") == \
        {s: math.ceil(n / 10) for s, n in commands.items()}
    groups: dict[str, set[str]] = {}
    for r in c.records:
        if r.extra.get("word") and r.split != "test":
            groups.setdefault(r.group, set()).add(r.split)
    assert all(len(s) == 1 for s in groups.values())


# ---------------------------------------------------------------- ic

HEADER = ",path,speakerId,transcription,action,object,location"
TRAIN = [
    "0,wavs/speakers/2BqVo8kVB2Skwgyb/0a3129c0-4474-11e9-a9a5-5dbec3b8816a.wav,2BqVo8kVB2Skwgyb,"
    "Change language,change language,none,none",
    "1,wavs/speakers/2BqVo8kVB2Skwgyb/0ee42a80-4474-11e9-a9a5-5dbec3b8816a.wav,2BqVo8kVB2Skwgyb,"
    "Resume,activate,music,none",
    '2,wavs/speakers/2ojo7YRL7Gck83Z3/1a2b3c40-4474-11e9-a9a5-5dbec3b8816a.wav,2ojo7YRL7Gck83Z3,'
    '"Lights on, in the kitchen",activate,lights,kitchen',
    "3,wavs/speakers/2ojo7YRL7Gck83Z3/1a2b3c41-4474-11e9-a9a5-5dbec3b8816a.wav,2ojo7YRL7Gck83Z3,"
    "Turn up the heat,increase,heat,none",
]
VALID = [
    "0,wavs/speakers/35v28XaVEns4WXOv/5a2b3c40-4474-11e9-a9a5-5dbec3b8816a.wav,35v28XaVEns4WXOv,"
    "Lights on,activate,lights,none",
    "1,wavs/speakers/35v28XaVEns4WXOv/5a2b3c41-4474-11e9-a9a5-5dbec3b8816a.wav,35v28XaVEns4WXOv,"
    "Music on,activate,music,none",
]
TEST = [
    "0,wavs/speakers/4aGjX3AG5xcxeL7a/7a2b3c40-4474-11e9-a9a5-5dbec3b8816a.wav,4aGjX3AG5xcxeL7a,"
    "Kitchen lights on,activate,lights,kitchen",
]


def make_fsc(root: Path, train: list[str] = TRAIN, valid: list[str] = VALID, test: list[str] = TEST,
             eol: str = "\n", skip_audio: tuple[str, ...] = ()) -> Path:
    """fluent_speech_commands_dataset layout: data/*_data.csv (pandas-written) + wavs/speakers/."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("valid", valid), ("test", test)):
        (root / "data" / f"{name}_data.csv").write_bytes((eol.join([HEADER, *rows]) + eol).encode())
        for i, row in enumerate(rows):
            rel = row.split(",")[1]
            if rel.endswith(".wav") and rel not in skip_audio:
                write_tone(root / rel, seconds=0.1, sr=16000, freq=250 + 25 * i, seed=i)
    return root


def test_ic_intent_labels(tmp_path: Path) -> None:
    c = superb.load(make_fsc(tmp_path / "fsc", eol="\r\n"), task="ic")
    assert c.name == "superb_ic" and not c.multi_label
    assert c.classes == ["activate|lights|kitchen", "activate|music|none", "change language|none|none",
                         "increase|heat|none"]
    by = {r.source.rsplit("/", 1)[1][:8]: r for r in c.records}
    r = by["1a2b3c40"]
    assert (r.split, r.group, c.classes[r.labels[0]]) == ("train", "2ojo7YRL7Gck83Z3", "activate|lights|kitchen")
    assert r.extra == {"speaker": "2ojo7YRL7Gck83Z3", "transcription": "Lights on, in the kitchen",
                       "action": "activate", "object": "lights", "location": "kitchen",
                       "intent": "activate|lights|kitchen"}
    assert r.key == "wavs_speakers_2ojo7YRL7Gck83Z3_1a2b3c40-4474-11e9-a9a5-5dbec3b8816a"
    assert (by["5a2b3c41"].split, by["5a2b3c41"].labels) == ("valid", [1])
    assert (by["7a2b3c40"].split, by["7a2b3c40"].labels) == ("test", [0])
    # "activate|lights|none" never occurs in train_data.csv
    assert [(Path(p.where).name, p.reason) for p in c.problems] == [
        ("valid_data.csv:2", "unknown label(s) ['activate|lights|none']: not in train_data.csv")]
    assert c.split_counts() == {"test": 1, "train": 4, "valid": 1}


def test_ic_label_groups(tmp_path: Path) -> None:
    c = superb.load(make_fsc(tmp_path / "fsc"), task="ic", label_groups=True)
    assert c.multi_label and c.problems == []
    # each slot's values in order of first appearance in train_data.csv
    assert c.classes == ["action:change language", "action:activate", "action:increase",
                         "object:none", "object:music", "object:lights", "object:heat",
                         "location:none", "location:kitchen"]
    assert c.info["label_groups"] == {"action": [0, 3], "object": [3, 7], "location": [7, 9]}
    by = {r.source.rsplit("/", 1)[1][:8]: r for r in c.records}
    assert [c.classes[i] for i in by["5a2b3c40"].labels] == ["action:activate", "object:lights", "location:none"]
    assert all(len(r.labels) == 3 for r in c.records) and len(c.records) == 7
    out = tmp_path / "out"
    pack(c, out, PackOptions(progress=False))
    m = json.loads((out / "dataset.json").read_text())
    assert m["multi_label"] and m["recipe"]["label_groups"] == c.info["label_groups"]
    with tarfile.open(out / m["splits"]["test"]["shards"][0]["path"]) as tf:
        members = {n: tf.extractfile(n).read() for n in tf.getnames()}
    key = "wavs_speakers_4aGjX3AG5xcxeL7a_7a2b3c40-4474-11e9-a9a5-5dbec3b8816a"
    assert members[key + ".labels"] == bytes([0, 1, 0, 0, 0, 1, 0, 0, 1]) and key + ".cls" not in members
    assert json.loads(members[key + ".json"])["intent"] == "activate|lights|kitchen"


def test_ic_bad_rows_missing_and_unlisted_audio(tmp_path: Path) -> None:
    missing = TRAIN[3].split(",")[1]
    root = make_fsc(tmp_path / "fsc", train=TRAIN + ["4,wavs/speakers/x/y.wav,x,Hi"], skip_audio=(missing,))
    write_tone(root / "wavs" / "speakers" / "zz" / "stray.wav", seconds=0.1)
    c = superb.load(root, task="ic")
    got = [(Path(p.where).name, p.reason) for p in c.problems]
    assert got == [
        ("train_data.csv:5", f"audio file {missing} not found"),
        ("train_data.csv:6", "malformed row: empty or missing ['action', 'object', 'location']"),
        ("valid_data.csv:2", "unknown label(s) ['activate|lights|none']: not in train_data.csv"),
        ("stray.wav", "audio file not listed in data/*_data.csv"),
    ]
    with pytest.raises(RecipeError, match=r"expected data/train_data.csv under .*did you mean .*fsc"):
        superb.load(tmp_path, task="ic")


def test_cli_pack_ic(tmp_path: Path) -> None:
    root = make_fsc(tmp_path / "fsc")
    rc = cli.main(["pack", "--recipe", "superb", str(root), str(tmp_path / "out"), "--no-progress", "--task", "ic"])
    assert rc == 0
    m = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert {k: v["samples"] for k, v in m["splits"].items()} == {"test": 1, "train": 4, "valid": 1}
    assert m["skipped"] == [{"where": f"{root}/data/valid_data.csv:2",
                             "reason": "unknown label(s) ['activate|lights|none']: not in train_data.csv"}]
    with tarfile.open(tmp_path / "out" / m["splits"]["train"]["shards"][0]["path"]) as tf:
        names = tf.getnames()
        cls = {n: tf.extractfile(n).read() for n in names if n.endswith(".cls")}
    assert sorted(cls.values()) == [b"0", b"1", b"2", b"3"]
