"""tau_scenes recipe: hand-written tab-separated trees, and trees built from the real TAU 2019 metadata."""
from __future__ import annotations

import csv
import io
import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from shardgen.recipes import tau_scenes as tau
from shardgen.records import RecipeError
from shardgen.writer import PackOptions, pack
from tests.conftest import write_tone

META = [
    ("audio/airport-lisbon-1000-40000-a.wav", "airport", "lisbon-1000"),
    ("audio/bus-lyon-1001-40001-a.wav", "bus", "lyon-1001"),
    ("audio/bus-lyon-1001-40002-a.wav", "bus", "lyon-1001"),
    ("audio/park-vienna-104-2996-a.wav", "park", "vienna-104"),
    ("audio/street_pedestrian-lyon-1162-44093-a.wav", "street_pedestrian", "lyon-1162"),
    ("audio/metro-prague-1163-44094-a.wav", "metro", "prague-1163"),
    ("audio/airport-milan-1061-40085-a.wav", "airport", "milan-1061"),
]
TRAIN = [0, 1, 2, 3]
EVALUATE = [4, 5]  # META[6] is in no list: unused by the setup


def tsv(path: Path, header: list[str], rows: list[tuple[str, ...]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("\t".join(r) for r in [tuple(header), *rows]) + "\n")


def make_tree(root: Path, meta=META, train=TRAIN, evaluate=EVALUATE, skip_audio: tuple[int, ...] = ()) -> Path:
    """TAU 2019 development layout: meta.csv + evaluation_setup/fold1_{train,evaluate,test}.csv + audio/."""
    tsv(root / "meta.csv", ["filename", "scene_label", "identifier", "source_label"],
        [(f, s, i, "a") for f, s, i in meta])
    tsv(root / "evaluation_setup" / "fold1_train.csv", ["filename", "scene_label"], [meta[i][:2] for i in train])
    tsv(root / "evaluation_setup" / "fold1_evaluate.csv", ["filename", "scene_label"], [meta[i][:2] for i in evaluate])
    tsv(root / "evaluation_setup" / "fold1_test.csv", ["filename"], [meta[i][:1] for i in evaluate])
    for i, (f, _, _) in enumerate(meta):
        if i not in skip_audio:
            write_tone(root / f, seconds=0.1, sr=8000, channels=2, freq=250 + 30 * i)  # stereo like the real clips
    return root


def test_tiny_tree_splits_groups_extra(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "TAU-urban-acoustic-scenes-2019-development")
    c = tau.load(root)
    assert c.classes == tau.CLASSES and not c.multi_label
    assert c.split_counts() == {"test": 2, "train": 4}
    by = {r.source: r for r in c.records}
    r = by["audio/bus-lyon-1001-40002-a.wav"]
    assert (r.key, r.labels, r.split, r.fold, r.group) == ("audio_bus-lyon-1001-40002-a", [1], "train", None, "lyon-1001")
    assert r.extra == {"city": "lyon", "location": "lyon-1001", "device": "a"}
    assert by["audio/metro-prague-1163-44094-a.wav"].split == "test"
    assert [str(p) for p in c.problems] == [
        f"{root / 'meta.csv'}:8: audio/airport-milan-1061-40085-a.wav is in no fold-1 list (unused by the official setup)"]
    assert c.info["split_rule"] == "fold1_train -> train, fold1_evaluate -> test, unused clips reported"


def test_eval_split_and_unused_split_options(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "t")
    c = tau.load(root, eval_split="valid", unused_split="unused")
    assert c.split_counts() == {"train": 4, "unused": 1, "valid": 2} and c.problems == []
    assert c.info["options"] == {"eval_split": "valid", "unused_split": "unused"}
    with pytest.raises(RecipeError, match="would mix"):
        tau.load(root, unused_split="train")


def test_bad_rows_are_reported(tmp_path: Path) -> None:
    meta = META + [
        ("audio/tram-paris-5-1-a.wav", "tramway", "paris-5"),          # 9: unknown scene
        ("audio/park-paris-6-1-a.wav", "park", "paris-7"),             # 10: identifier disagrees with name
        ("audio/bus-lyon-1001-40001-a.wav", "bus", "lyon-1001"),       # 11: duplicate of line 3
    ]
    root = make_tree(tmp_path / "t", meta=meta, train=TRAIN + [5], skip_audio=(3,))
    with (root / "meta.csv").open("a") as f:
        f.write("audio/short-row.wav\tpark\n")                         # 12: 2 fields
    with (root / "evaluation_setup" / "fold1_evaluate.csv").open("a") as f:
        f.write("audio/bus-lyon-1001-40001-a.wav\tpark\n")            # evaluate:4: label differs
        f.write("audio/nowhere-x-1-1-a.wav\tpark\n")                  # evaluate:5: not in meta
    with (root / "evaluation_setup" / "fold1_test.csv").open("a") as f:
        f.write("audio/extra-test-1-1-a.wav\n")                       # test:4: not in evaluate
    write_tone(root / "audio" / "unlisted-x-1-1-a.wav", seconds=0.1, sr=8000)
    c = tau.load(root)
    m, ev, te = root / "meta.csv", root / tau.EVALUATE, root / tau.TEST
    got = {str(p) for p in c.problems}
    assert got == {
        f"{m}:5: audio file audio/park-vienna-104-2996-a.wav not found",
        f"{m}:8: audio/airport-milan-1061-40085-a.wav is in no fold-1 list (unused by the official setup)",
        f"{m}:9: unknown label 'tramway'",
        f"{m}:10: file name park-paris-6-1-a.wav does not match scene 'park', identifier 'paris-7', device 'a'",
        f"{m}:11: duplicate filename audio/bus-lyon-1001-40001-a.wav (also {m}:3)",
        f"{m}:12: malformed row: 2 fields, expected 4 (tab-separated filename, scene_label, identifier, source_label)",
        f"{ev}:3: audio/metro-prague-1163-44094-a.wav is already in split 'train'",
        f"{ev}:4: label 'park' differs from meta.csv ('bus')",
        f"{ev}:5: audio/nowhere-x-1-1-a.wav is not a usable clip of meta.csv",
        f"{te}:4: audio/extra-test-1-1-a.wav is not in {tau.EVALUATE}",
        f"{te.parent / 'fold1_evaluate.csv'}: audio/bus-lyon-1001-40001-a.wav is not in {tau.TEST}",
        f"{te.parent / 'fold1_evaluate.csv'}: audio/nowhere-x-1-1-a.wav is not in {tau.TEST}",
        f"{root / 'audio' / 'unlisted-x-1-1-a.wav'}: audio file not listed in meta.csv",
        f"{root / 'audio' / 'tram-paris-5-1-a.wav'}: audio file not listed in meta.csv",
        f"{root / 'audio' / 'park-paris-6-1-a.wav'}: audio file not listed in meta.csv",
    }
    assert c.split_counts() == {"test": 1, "train": 4}  # vienna has no audio; prague went to train


def test_wrong_root(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "TAU-urban-acoustic-scenes-2019-development")
    with pytest.raises(RecipeError, match=r"expected meta.csv under .*did you mean .*2019-development"):
        tau.load(tmp_path)
    (root / tau.TRAIN).unlink()
    with pytest.raises(RecipeError, match=r"expected evaluation_setup/fold1_train.csv under"):
        tau.load(root)


@pytest.mark.numeric
def test_pack_tiny_tree_and_read_back(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src")
    out = tmp_path / "out"
    result = pack(tau.load(root, eval_split="valid"), out, PackOptions(sample_rate=8000, on_error="skip", progress=False))
    m = json.loads((out / "dataset.json").read_text())
    assert m["classes"] == tau.CLASSES and m["folds"] == [] and m["groups"] == {"train": 3, "valid": 2}
    assert {k: v["samples"] for k, v in m["splits"].items()} == {"train": 4, "valid": 2}
    assert m["recipe"]["options"]["eval_split"] == "valid" and len(m["skipped"]) == 1
    assert [p.where for p in result.problems] == [f"{root / 'meta.csv'}:8"]
    with tarfile.open(out / "valid" / "all-000000.tar") as tf:
        key = "audio_street_pedestrian-lyon-1162-44093-a"
        meta = json.loads(tf.extractfile(f"{key}.json").read())
        audio = tf.extractfile(f"{key}.flac").read()
        hot = np.frombuffer(tf.extractfile(f"{key}.labels").read(), np.uint8)
    assert (meta["split"], meta["group"], meta["city"], meta["device"], meta["labels"]) == (
        "valid", "lyon-1162", "lyon", "a", [7])
    assert np.flatnonzero(hot).tolist() == [7]
    # stereo source -> mono FLAC holding the channel mean (16-bit rounding tolerance)
    src, _ = sf.read(root / meta["source"], dtype="float32")
    got, sr = sf.read(io.BytesIO(audio), dtype="float32")
    assert sr == 8000 and got.ndim == 1 and np.allclose(got, src.mean(axis=1), atol=2 / 32768)


# --- trees built from the real TAU 2019 development metadata (skipped when ../shared is absent) ---

# per-scene train / test segments and locations from the publisher's README statistics table
README_TRAIN = [911, 928, 902, 897, 946, 945, 896, 924, 942, 894]
README_TEST = [421, 415, 433, 435, 386, 387, 441, 429, 402, 436]


@pytest.fixture(scope="module")
def real_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """14,400 tiny WAVs named by the real meta.csv + the real fold-1 lists (shared by this module)."""
    from tests.conftest import SHARED

    src = SHARED / "datasets-meta" / "tau2019" / "TAU-urban-acoustic-scenes-2019-development"
    if not src.is_dir():
        pytest.skip("../shared is not present")
    tmp_path = tmp_path_factory.mktemp("tau-real")
    root = tmp_path / "TAU-urban-acoustic-scenes-2019-development"
    (root / "evaluation_setup").mkdir(parents=True)
    shutil.copy(src / "meta.csv", root / "meta.csv")
    for name in ("fold1_train.csv", "fold1_evaluate.csv", "fold1_test.csv"):
        shutil.copy(src / "evaluation_setup" / name, root / "evaluation_setup" / name)
    tone = write_tone(tmp_path / "tone.wav", seconds=0.05, sr=8000).read_bytes()
    (root / "audio").mkdir()
    with open(root / "meta.csv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            (root / row["filename"]).write_bytes(tone)
    return root


def test_real_metadata_splits_counts_groups(real_tree: Path) -> None:
    c = tau.load(real_tree)
    assert c.split_counts() == {"test": 4185, "train": 9185}
    for split, want in (("train", README_TRAIN), ("test", README_TEST)):
        counts = Counter(r.labels[0] for r in c.records if r.split == split)
        assert [counts[i] for i in range(10)] == want
    # README: 325 training and 149 test locations, none on both sides; Milan only in test
    train_loc = {r.group for r in c.records if r.split == "train"}
    test_loc = {r.group for r in c.records if r.split == "test"}
    assert (len(train_loc), len(test_loc), train_loc & test_loc) == (325, 149, set())
    assert not any(r.extra["city"] == "milan" for r in c.records if r.split == "train")
    by = {r.source: r for r in c.records}
    r = by["audio/airport-lisbon-1000-40000-a.wav"]
    assert (r.split, r.labels, r.group, r.extra) == ("train", [0], "lisbon-1000",
                                                     {"city": "lisbon", "location": "lisbon-1000", "device": "a"})
    r = by["audio/street_pedestrian-lyon-1162-44093-a.wav"]
    assert (r.split, r.labels, r.group) == ("test", [7], "lyon-1162")
    # the unused clips (README: 1,030 segments) are each reported against their meta.csv row
    assert len(c.problems) == 1030
    assert all("unused by the official setup" in p.reason and p.where.startswith(str(real_tree / "meta.csv:"))
               for p in c.problems)
    assert "audio/airport-milan-1061-40085-a.wav" in {p.reason.split(" ")[0] for p in c.problems}


def test_real_metadata_unused_split_and_missing_audio(real_tree: Path) -> None:
    clip = real_tree / "audio" / "bus-lyon-1001-40001-a.wav"
    data = clip.read_bytes()
    clip.unlink()
    try:
        c = tau.load(real_tree, eval_split="valid", unused_split="unused")
    finally:
        clip.write_bytes(data)  # the tree is shared by this module
    assert c.split_counts() == {"train": 9184, "unused": 1030, "valid": 4185}
    assert [str(p) for p in c.problems] == [
        f"{real_tree / 'meta.csv'}:3: audio file audio/bus-lyon-1001-40001-a.wav not found"]
