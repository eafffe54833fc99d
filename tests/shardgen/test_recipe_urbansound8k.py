"""urbansound8k recipe: hand-written CRLF trees, and trees built from the real UrbanSound8K.csv."""
from __future__ import annotations

import csv
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from shardgen import cli
from shardgen.recipes import urbansound8k as us8k
from shardgen.records import RecipeError
from tests.conftest import write_tone

HEADER = "slice_file_name,fsID,start,end,salience,fold,classID,class"
ROWS = [
    "100032-3-0-0.wav,100032,0,0.317551,1,5,3,dog_bark",
    "100263-2-0-117.wav,100263,58.5,62.5,1,5,2,children_playing",
    "100263-2-0-121.wav,100263,60.5,64.5,1,5,2,children_playing",
    "102305-6-0-0.wav,102305,0,2.61161,1,1,6,gun_shot",
    "99812-1-4-0.wav,99812,242.691902,246.197885,2,7,1,car_horn",
    "7383-3-0-0.wav,7383,0,4,1,10,3,dog_bark",
]
# the real official slice counts per fold (UrbanSound8K.csv)
FOLD_COUNTS = {1: 873, 2: 888, 3: 925, 4: 990, 5: 936, 6: 823, 7: 838, 8: 806, 9: 816, 10: 837}


def make_tree(root: Path, rows: list[str], audio_for: list[str] | None = None) -> Path:
    """UrbanSound8K layout: metadata/UrbanSound8K.csv (CRLF, as shipped) + audio/fold<N>/<slice>."""
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    (root / "metadata" / "UrbanSound8K.csv").write_bytes(("\r\n".join([HEADER, *rows]) + "\r\n").encode())
    rels = audio_for if audio_for is not None else [f"fold{r.split(',')[5]}/{r.split(',')[0]}" for r in rows]
    for i, rel in enumerate(rels):
        write_tone(root / "audio" / rel, seconds=0.1, sr=8000, freq=300 + 40 * i)
    (root / "audio" / "fold1" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # shipped in the real archive
    return root


def test_tiny_tree_folds_labels_groups_extra(tmp_path: Path) -> None:
    c = us8k.load(make_tree(tmp_path / "UrbanSound8K", ROWS))
    assert c.problems == [] and c.classes == us8k.CLASSES and not c.multi_label
    by = {r.source: r for r in c.records}
    r = by["audio/fold5/100263-2-0-117.wav"]
    assert (r.key, r.labels, r.split, r.fold, r.group) == ("audio_fold5_100263-2-0-117", [2], "train", 5, "100263")
    assert r.extra == {"fsID": "100263", "start": 58.5, "end": 62.5, "salience": 1}
    assert r.start is None and r.end is None  # slices are already cut: start/end are provenance only
    assert by["audio/fold7/99812-1-4-0.wav"].extra["salience"] == 2
    assert Counter(x.fold for x in c.records) == {5: 3, 1: 1, 7: 1, 10: 1}
    assert c.info["source"] == "metadata/UrbanSound8K.csv" and c.info["recipe"] == "urbansound8k"


def test_bad_rows_and_unlisted_audio_are_reported(tmp_path: Path) -> None:
    rows = ROWS + [
        "101415-3-0-2.wav,101415,1,5,1,1,3,dog_bark",           # 8: audio missing
        "102102-3-0-0.wav,102102,0,0.5,1,1,4,dog_bark",         # 9: class does not match classID
        "102103-3-0-0.wav,102103,0,0.5,1,11,3,dog_bark",        # 10: fold 11
        "102104-3-0-0.wav,102104,0,0.5,3,1,3,dog_bark",         # 11: salience 3
        "102105-3-0-0.wav,102105,2,1,1,1,3,dog_bark",           # 12: end before start
        "102106-3-0-0.wav,102106,0,0.5,1,1",                    # 13: 6 fields
        "100032-3-0-0.wav,100032,0,0.317551,1,5,3,dog_bark",    # 14: duplicate of line 2
    ]
    rels = [f"fold{r.split(',')[5]}/{r.split(',')[0]}" for r in ROWS]
    rels += ["fold1/102102-3-0-0.wav", "fold1/102104-3-0-0.wav", "fold1/102105-3-0-0.wav",
             "fold2/102106-3-0-0.wav", "fold3/stray.wav"]
    root = make_tree(tmp_path / "t", rows, audio_for=rels)
    c = us8k.load(root)
    table = root / "metadata" / "UrbanSound8K.csv"
    got = {p.where: p.reason for p in c.problems}
    assert got[f"{table}:8"] == "audio file audio/fold1/101415-3-0-2.wav not found"
    assert "class 'dog_bark' does not match classID 4 ('drilling')" in got[f"{table}:9"]
    assert "fold '11'" in got[f"{table}:10"]
    assert "salience '3'" in got[f"{table}:11"]
    assert "start/end '2'/'1'" in got[f"{table}:12"]
    assert got[f"{table}:13"].startswith("malformed row: 6 fields, expected 8")
    assert got[f"{table}:14"] == f"duplicate slice_file_name 100032-3-0-0.wav (also {table}:2)"
    # the malformed row names no fold, so its file in fold2 is unlisted too; .DS_Store is not audio
    assert got[str(root / "audio" / "fold3" / "stray.wav")] == "audio file not listed in metadata/UrbanSound8K.csv"
    assert got[str(root / "audio" / "fold2" / "102106-3-0-0.wav")].startswith("audio file not listed")
    assert len(c.problems) == 9 and len(c.records) == len(ROWS)


def test_wrong_root(tmp_path: Path) -> None:
    make_tree(tmp_path / "UrbanSound8K", ROWS)
    with pytest.raises(RecipeError, match=r"expected metadata/UrbanSound8K.csv under .*did you mean .*UrbanSound8K"):
        us8k.load(tmp_path)
    with pytest.raises(RecipeError, match="expected metadata/UrbanSound8K.csv"):
        us8k.load(tmp_path / "UrbanSound8K" / "audio")


def test_pack_tiny_tree_and_read_back(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", ROWS)
    out = tmp_path / "out"
    assert cli.main(["pack", "--recipe", "urbansound8k", str(root), str(out), "--sample-rate", "16000",
                     "--no-progress"]) == 0
    m = json.loads((out / "dataset.json").read_text())
    assert m["classes"] == us8k.CLASSES and m["folds"] == [1, 5, 7, 10] and m["skipped"] == []
    assert m["splits"]["train"]["class_counts"] == [0, 1, 2, 2, 0, 0, 1, 0, 0, 0]
    with tarfile.open(out / "train" / "fold5-000000.tar") as tf:
        names = tf.getnames()
        meta = json.loads(tf.extractfile("audio_fold5_100032-3-0-0.json").read())
        hot = np.frombuffer(tf.extractfile("audio_fold5_100032-3-0-0.labels").read(), np.uint8)
        cls = tf.extractfile("audio_fold5_100032-3-0-0.cls").read()
    assert len(names) == 3 * 4  # flac (resampled 8 -> 16 kHz), cls, json, labels per slice
    assert (meta["fold"], meta["group"], meta["fsID"], meta["salience"], meta["end"]) == (5, "100032", "100032", 1, 0.317551)
    assert meta["sample_rate"] == 16000 and abs(meta["duration"] - 0.1) < 1e-3
    assert cls == b"3" and np.flatnonzero(hot).tolist() == [3] and hot.size == 10


# --- trees built from the real UrbanSound8K.csv (skipped when ../shared is absent) ---

def real_tree(shared: Path, root: Path, drop: tuple[str, ...] = ()) -> tuple[Path, list[dict[str, str]]]:
    src = shared / "datasets-meta" / "urbansound8k" / "metadata" / "UrbanSound8K.csv"
    (root / "metadata").mkdir(parents=True)
    (root / "metadata" / "UrbanSound8K.csv").write_bytes(src.read_bytes())
    rows = list(csv.DictReader(src.open(newline="")))
    tone = write_tone(root / "tone.wav", seconds=0.05, sr=8000).read_bytes()
    (root / "tone.wav").unlink()
    for f in range(1, 11):
        (root / "audio" / f"fold{f}").mkdir(parents=True)
    for row in rows:
        if row["slice_file_name"] not in drop:
            (root / "audio" / f"fold{row['fold']}" / row["slice_file_name"]).write_bytes(tone)
    return root, rows


def test_real_metadata_folds_groups_and_counts(shared: Path, tmp_path: Path) -> None:
    root, rows = real_tree(shared, tmp_path / "UrbanSound8K")
    assert (root / "metadata" / "UrbanSound8K.csv").read_bytes().count(b"\r\n") == 8733  # really CRLF
    c = us8k.load(root)
    assert c.problems == [] and len(c.records) == 8732
    assert Counter(r.fold for r in c.records) == FOLD_COUNTS
    assert sorted({(int(r["classID"]), r["class"]) for r in rows}) == list(enumerate(us8k.CLASSES))
    assert Counter(r.extra["salience"] for r in c.records) == {1: 5702, 2: 3030}
    by = {r.source: r for r in c.records}
    r = by["audio/fold5/100032-3-0-0.wav"]
    assert (r.fold, r.labels, r.group, r.extra) == (5, [3], "100032", {"fsID": "100032", "start": 0.0,
                                                                       "end": 0.317551, "salience": 1})
    r = by["audio/fold7/99812-1-6-0.wav"]
    assert (r.fold, r.labels, r.group, r.extra["salience"], r.extra["start"]) == (7, [1], "99812", 2, 332.289233)
    assert len({r.group for r in c.records}) == len({row["fsID"] for row in rows})
    # the official folds keep a freesound recording together except for 5 recordings; the group
    # (fsID) lets a reader see that leakage, it is the publisher's data and not a problem
    folds_of: dict[str, set[int]] = {}
    for x in c.records:
        folds_of.setdefault(x.group, set()).add(x.fold)
    assert {g: f for g, f in folds_of.items() if len(f) > 1} == {
        "106905": {1, 8}, "132016": {1, 4}, "176638": {1, 4}, "180937": {1, 9}, "77751": {2, 7}}


def test_real_metadata_missing_and_unlisted_reported(shared: Path, tmp_path: Path) -> None:
    root, _ = real_tree(shared, tmp_path / "UrbanSound8K", drop=("100032-3-0-0.wav",))
    (root / "audio" / "fold3" / "100032-3-0-0.wav").write_bytes((root / "audio" / "fold7" / "99812-1-6-0.wav").read_bytes())
    c = us8k.load(root)
    table = root / "metadata" / "UrbanSound8K.csv"
    assert [str(p) for p in c.problems] == [
        f"{table}:2: audio file audio/fold5/100032-3-0-0.wav not found",
        f"{root / 'audio' / 'fold3' / '100032-3-0-0.wav'}: audio file not listed in metadata/UrbanSound8K.csv"]
    assert len(c.records) == 8731 and Counter(r.fold for r in c.records)[5] == 935
