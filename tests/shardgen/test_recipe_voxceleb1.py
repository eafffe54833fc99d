"""voxceleb1 recipe: hand-written trees in the publisher's format, and a tree from the real vox1_meta.csv."""
from __future__ import annotations

import json
import os
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from shardgen import cli
from shardgen.recipes import voxceleb1 as vox
from shardgen.records import RecipeError
from tests.conftest import write_tone

META = ["VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet",
        "id10001\tA.J._Buckley\tm\tIreland\tdev",
        "id10002\tA.R._Rahman\tm\tIndia\tdev",
        "id10270\tEddie_Izzard\tm\tUK\ttest"]
IDEN = ["1 id10001/1zcIwhmdeo4/00001.wav", "1 id10001/1zcIwhmdeo4/00002.wav", "2 id10001/7w0IBEWc9Qw/00001.wav",
        "3 id10001/Y8hIVOBuels/00001.wav", "1 id10002/0_laIeN-Q44/00001.wav", "3 id10002/6WO410QOeuo/00001.wav",
        "1 id10270/5r0dWxy17C8/00001.wav", "2 id10270/5r0dWxy17C8/00002.wav"]


def make_tree(root: Path, meta: list[str] = META, iden: list[str] = IDEN, eol: str = "\n",
              skip_audio: tuple[str, ...] = ()) -> Path:
    """vox1_meta.csv + iden_split.txt + wav/<speaker>/<video>/<nnnnn>.wav (0.1-s tones)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "vox1_meta.csv").write_bytes((eol.join(meta) + eol).encode())
    (root / "iden_split.txt").write_bytes((eol.join(iden) + eol).encode())
    for i, line in enumerate(iden):
        rel = line.split()[-1]
        if rel.endswith(".wav") and rel not in skip_audio:
            write_tone(root / "wav" / rel, seconds=0.1, sr=16000, freq=200 + 30 * i, seed=i)
    return root


def test_identification_splits_groups_and_extra(tmp_path: Path) -> None:
    c = vox.load(make_tree(tmp_path / "vox1"))
    assert c.problems == [] and c.classes == ["id10001", "id10002", "id10270"] and not c.multi_label
    assert c.name == "voxceleb1_identification"
    by = {r.source: r for r in c.records}
    r = by["wav/id10001/7w0IBEWc9Qw/00001.wav"]
    assert (r.key, r.labels, r.split, r.fold, r.group) == ("wav_id10001_7w0IBEWc9Qw_00001", [0], "valid", None,
                                                           "7w0IBEWc9Qw")
    assert r.extra == {"speaker": "id10001", "video": "7w0IBEWc9Qw", "name": "A.J._Buckley", "gender": "m",
                       "nationality": "Ireland"}
    assert {s: x.split for s, x in by.items() if x.extra["speaker"] == "id10270"} == {
        "wav/id10270/5r0dWxy17C8/00001.wav": "train", "wav/id10270/5r0dWxy17C8/00002.wav": "valid"}
    assert c.split_counts() == {"test": 2, "train": 4, "valid": 2}
    assert c.info["split_rule"].startswith("iden_split.txt")


def test_verification_uses_the_set_column(tmp_path: Path) -> None:
    c = vox.load(make_tree(tmp_path / "vox1"), task="verification")
    assert c.problems == [] and c.name == "voxceleb1_verification"
    assert Counter((r.extra["speaker"], r.split) for r in c.records) == {
        ("id10001", "train"): 4, ("id10002", "train"): 2, ("id10270", "test"): 2}
    assert all(r.group == r.extra["speaker"] and c.classes[r.labels[0]] == r.group for r in c.records)


def test_excel_quoted_crlf_meta_parses_the_same(tmp_path: Path) -> None:
    quoted = ['"' + line.replace("\t", '"\t"') + '"' for line in META]
    a = vox.load(make_tree(tmp_path / "a"))
    b = vox.load(make_tree(tmp_path / "b", meta=quoted, eol="\r\n"))
    strip = lambda c: [(r.key, r.labels, r.split, r.group, r.extra) for r in c.records]  # noqa: E731
    assert strip(a) == strip(b) and b.problems == []


def test_problems_by_file_and_line(tmp_path: Path) -> None:
    meta = META + ["id10003\tAamir_Khan\tm\tIndia\ttesto", "id10004\tAaron_Tveit\tm", "id10002\tdup\tm\tUSA\tdev"]
    iden = IDEN + ["1 id10009/abc/00001.wav", "4 id10001/1zcIwhmdeo4/00003.wav", "1 id10002/0_laIeN-Q44/00002.wav"]
    root = make_tree(tmp_path / "vox1", meta=meta, iden=iden, skip_audio=("id10002/0_laIeN-Q44/00002.wav",))
    write_tone(root / "wav" / "id10001" / "stray.wav", seconds=0.1)
    c = vox.load(root)
    got = [(Path(p.where).name, p.reason) for p in c.problems]
    assert got == [
        ("vox1_meta.csv:5", "Set 'testo' is not dev or test"),
        ("vox1_meta.csv:6", "malformed row: expected 5 tab-separated fields"),
        ("vox1_meta.csv:7", "speaker id10002 appears twice"),
        ("iden_split.txt:9", "unknown label: speaker id10009 is not in vox1_meta.csv"),
        ("iden_split.txt:10", "malformed line '4 id10001/1zcIwhmdeo4/00003.wav': expected "
                              "'<1|2|3> id<n>/<video>/<n>.wav'"),
        ("iden_split.txt:11", "audio file wav/id10002/0_laIeN-Q44/00002.wav not found"),
        ("00003.wav", "audio file not listed in iden_split.txt"),
        ("stray.wav", "audio file not listed in iden_split.txt"),
    ]
    assert len(c.records) == len(IDEN)
    v = vox.load(root, task="verification")
    assert [(Path(p.where).name, p.reason) for p in v.problems][3:] == [
        ("id10009", "unknown label: speaker id10009 is not in vox1_meta.csv; its 1 clip(s) are not packed"),
        ("stray.wav", "audio file not listed in the wav/<speaker>/<video>/<n>.wav layout")]


def test_wrong_root_and_missing_iden_split(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data" / "voxceleb1")
    with pytest.raises(RecipeError, match=r"expected vox1_meta.csv at .*data/vox1_meta.csv.*did you mean .*voxceleb1"):
        vox.load(tmp_path / "data")
    (root / "iden_split.txt").rename(tmp_path / "iden.txt")
    with pytest.raises(RecipeError, match=r"expected iden_split.txt .*--task verification"):
        vox.load(root)
    assert len(vox.load(root, iden_split=tmp_path / "iden.txt").records) == len(IDEN)
    (root / "wav").rename(root / "audio")
    with pytest.raises(RecipeError, match=r"expected wav/<speaker>/<video>/\*.wav under"):
        vox.load(root, task="verification")


def test_pack_and_read_back(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "vox1")
    out = tmp_path / "out"
    assert cli.main(["pack", "--recipe", "voxceleb1", str(root), str(out), "--no-progress"]) == 0
    m = json.loads((out / "dataset.json").read_text())
    assert m["classes"] == ["id10001", "id10002", "id10270"] and m["recipe"]["recipe"] == "voxceleb1"
    assert {k: v["samples"] for k, v in m["splits"].items()} == {"test": 2, "train": 4, "valid": 2}
    assert m["splits"]["train"]["class_counts"] == [2, 1, 1]
    with tarfile.open(out / m["splits"]["test"]["shards"][0]["path"]) as tf:
        members = {n: tf.extractfile(n).read() for n in tf.getnames()}
    meta = json.loads(members["wav_id10002_6WO410QOeuo_00001.json"])
    assert (meta["source"], meta["group"], meta["gender"], meta["nationality"]) == (
        "wav/id10002/6WO410QOeuo/00001.wav", "6WO410QOeuo", "m", "India")
    assert members["wav_id10002_6WO410QOeuo_00001.cls"] == b"1"
    assert members["wav_id10002_6WO410QOeuo_00001.labels"] == bytes([0, 1, 0])


def test_real_meta_1251_speakers(shared: Path, tmp_path: Path) -> None:
    """A tree for every speaker of the real vox1_meta.csv (two videos, three utterances each)."""
    real = shared / "datasets-meta" / "voxceleb1" / "vox1_meta.csv"
    rows = [line.split("\t") for line in real.read_text().splitlines()[1:]]
    root = tmp_path / "vox1"
    clip = write_tone(tmp_path / "clip.wav", seconds=0.01, sr=16000)
    iden = []
    for sid, *_ in rows:
        for v, video in enumerate(("vidA0000000", "vidB0000000")):
            (root / "wav" / sid / video).mkdir(parents=True)
            for n in range(1, 3 - v):  # 2 utterances in the first video, 1 in the second
                rel = f"{sid}/{video}/{n:05d}.wav"
                os.link(clip, root / "wav" / rel)  # hard links keep 3,753 files cheap
                iden.append(f"{1 if v == 0 else 3} {rel}")
    (root / "iden_split.txt").write_text("\n".join(iden))  # no final newline
    c = vox.load(root, meta=real)
    assert c.problems == [] and len(c.classes) == 1251 and c.classes[0] == "id10001" and c.classes[-1] == "id11251"
    assert c.split_counts() == {"test": 1251, "train": 2502}
    by = {r.source: r for r in c.records}
    r = by["wav/id11251/vidB0000000/00001.wav"]
    assert (r.split, r.labels, r.group, r.extra["name"], r.extra["gender"], r.extra["nationality"]) == (
        "test", [1250], "vidB0000000", "Zulay_Henao", "f", "USA")
    v = vox.load(root, task="verification", meta=real)
    sets = Counter(line.split("\t")[4] for line in real.read_text().splitlines()[1:])
    assert sets == {"dev": 1211, "test": 40}
    assert v.split_counts() == {"train": 3 * 1211, "test": 3 * 40}
    assert by["wav/id10001/vidA0000000/00001.wav"].extra == {
        "speaker": "id10001", "video": "vidA0000000", "name": "A.J._Buckley", "gender": "m", "nationality": "Ireland"}
    assert {r.split for r in v.records if r.group == "id10270"} == {"test"}
