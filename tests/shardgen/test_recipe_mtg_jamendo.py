"""mtg_jamendo recipe: hand-written split TSVs in the publisher's format, and the real split-0 files."""
from __future__ import annotations

import io
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from shardgen import cli
from shardgen.recipes import get, mtg_jamendo as mtg
from shardgen.records import RecipeError
from shardgen.writer import PackOptions, pack
from tests.conftest import write_tone
from tests.conftest import read_shards

HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"
TRAIN = [
    "track_0000948\tartist_000087\talbum_000149\t48/948.mp3\t212.7\tmood/theme---background",
    "track_0003346\tartist_000517\talbum_000521\t46/3346.mp3\t195.0\tmood/theme---calm\tmood/theme---melodic",
    "track_0081018\tartist_008004\talbum_007421\t18/81018.mp3\t239.3\tmood/theme---documentary\tmood/theme---dream"
    "\tmood/theme---emotional\tmood/theme---meditative\tmood/theme---nature\tmood/theme---relaxing",
]
VALID = ["track_0003347\tartist_000518\talbum_000522\t47/3347.mp3\t201.8\tmood/theme---calm\tmood/theme---dream"]
TEST = ["track_0111026\tartist_004116\talbum_013948\t26/111026.mp3\t244.3\tmood/theme---calm\tmood/theme---relaxing"]
TAGS = ["mood/theme---background", "mood/theme---calm", "mood/theme---documentary", "mood/theme---dream",
        "mood/theme---emotional", "mood/theme---meditative", "mood/theme---melodic", "mood/theme---nature",
        "mood/theme---relaxing"]


def write_split(root: Path, parts: dict[str, list[str]], prefix: str = "autotagging_moodtheme", index: int = 0,
                eol: str = "\r\n", final_newline: bool = True) -> None:
    d = root / "data" / "splits" / f"split-{index}"
    d.mkdir(parents=True, exist_ok=True)
    for part, rows in parts.items():
        (d / f"{prefix}-{part}.tsv").write_bytes((eol.join([HEADER, *rows]) + (eol if final_newline else "")).encode())


def make_tree(root: Path, train: list[str] = TRAIN, valid: list[str] = VALID, test: list[str] = TEST,
              audio_for: list[str] | None = None, audio_sub: str = "audio", **fmt) -> Path:
    write_split(root, {"train": train, "validation": valid, "test": test}, **fmt)
    paths = audio_for if audio_for is not None else [r.split("\t")[3] for r in train + valid + test]
    for i, rel in enumerate(paths):
        write_tone(root / audio_sub / rel, seconds=0.2, sr=16000, freq=400 + 100 * i)
    return root


def test_tiny_tree_splits_groups_and_multi_hot(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "mtg-jamendo-dataset")
    c = mtg.load(root, subset="moodtheme")
    assert c.problems == [] and c.multi_label and c.classes == TAGS and c.name == "mtg_jamendo_moodtheme"
    assert c.split_counts() == {"test": 1, "train": 3, "valid": 1}
    by = {r.extra["track_id"]: r for r in c.records}
    assert [c.classes[i] for i in by["track_0000948"].labels] == ["mood/theme---background"]        # 1 tag
    assert [c.classes[i] for i in by["track_0003346"].labels] == ["mood/theme---calm", "mood/theme---melodic"]
    assert [int(i in by["track_0081018"].labels) for i in range(9)] == [0, 0, 1, 1, 1, 1, 0, 1, 1]  # 6 tags
    r = by["track_0003347"]
    assert (r.key, r.source, r.split, r.fold, r.group) == ("47_3347", "47/3347.mp3", "valid", None, "artist_000518")
    assert r.extra == {"track_id": "track_0003347", "artist_id": "artist_000518", "album_id": "album_000522",
                       "listed_duration": 201.8, "audio_variant": "full"}
    assert r.path == root / "audio" / "47" / "3347.mp3"
    assert c.info == {"recipe": "mtg_jamendo",
                      "source": [f"data/splits/split-0/autotagging_moodtheme-{p}.tsv"
                                 for p in ("train", "validation", "test")],
                      "split_rule": "official split-0: train -> train, validation -> valid, test -> test",
                      "options": {"subset": "moodtheme", "split_index": 0, "audio_dir": "audio"}}


def test_line_endings_and_low_quality_audio(tmp_path: Path) -> None:
    a = mtg.load(make_tree(tmp_path / "a"), subset="moodtheme")
    low = [r.split("\t")[3].replace(".mp3", ".low.mp3") for r in TRAIN + VALID + TEST]
    b = mtg.load(make_tree(tmp_path / "b", eol="\n", final_newline=False, audio_for=low, audio_sub="lowq"),
                 subset="moodtheme", audio_dir="lowq")
    strip = lambda c: [(r.key, r.source, r.labels, r.split, r.group) for r in c.records]  # noqa: E731
    assert strip(a) == strip(b) and b.problems == []
    assert {r.extra["audio_variant"] for r in b.records} == {"low"}
    assert b.records[0].path.name.endswith(".low.mp3")


def test_subset_and_split_index_choose_the_files(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "mtg")
    genre = ["track_0000241\tartist_000005\talbum_000033\t41/241.mp3\t340.1\tgenre---rock"]
    write_split(root, {"train": genre, "validation": [], "test": []}, prefix="autotagging_genre", index=3)
    write_tone(root / "audio" / "41" / "241.mp3", seconds=0.2, sr=16000)
    c = mtg.load(root, subset="genre", split_index=3)
    assert c.classes == ["genre---rock"] and c.split_counts() == {"train": 1}
    assert c.info["source"][0] == "data/splits/split-3/autotagging_genre-train.tsv"
    with pytest.raises(RecipeError, match=r"expected data/splits/split-0/autotagging_top50tags-train.tsv"):
        mtg.load(root)
    with pytest.raises(RecipeError, match=r"split-1.*check --split-index"):
        mtg.load(root, subset="moodtheme", split_index=1)


def test_bad_rows_and_missing_audio_are_reported(tmp_path: Path) -> None:
    train = TRAIN + [
        "track_0000001\tartist_000001\talbum_000001\t01/1.mp3\t100.0\tmood/theme---calm",    # 5: no audio
        "track_0000002\tartist_000001\talbum_000001\t02/2.mp3\tlong\tmood/theme---calm",     # 6: duration
        "track_0000003\tartist_000001\talbum_000001\t03/3.mp3\t100.0",                        # 7: no tags
        "track_0000004\tartist_000001",                                                       # 8: 2 fields
        "track_0000005\tartist_000001\talbum_000001\t05/5.wav\t100.0\tmood/theme---calm",    # 9: not mp3
        "track_0000006\tartist_000001\talbum_000001\t06/6.mp3\t100.0\tcalm",                 # 10: bare tag
    ]
    test = TEST + ["track_0000948\tartist_000087\talbum_000149\t48/948.mp3\t212.7\tmood/theme---calm"]  # dup
    audio = [r.split("\t")[3] for r in TRAIN + VALID + TEST]
    root = make_tree(tmp_path / "mtg", train=train, test=test, audio_for=audio)
    c = mtg.load(root, subset="moodtheme")
    d = root / "data" / "splits" / "split-0"
    train_tsv, test_tsv = d / "autotagging_moodtheme-train.tsv", d / "autotagging_moodtheme-test.tsv"
    got = {p.where: p.reason for p in c.problems}
    assert got[f"{train_tsv}:5"] == f"audio file 01/1.mp3 (or its .low.mp3) not found under {root / 'audio'}"
    assert got[f"{train_tsv}:6"] == "DURATION 'long' is not a number"
    assert got[f"{train_tsv}:7"] == "no tags"
    assert got[f"{train_tsv}:8"].startswith("malformed row: 2 fields")
    assert got[f"{train_tsv}:9"] == "PATH '05/5.wav' is not an .mp3 path"
    assert got[f"{train_tsv}:10"] == "tag(s) ['calm'] are not <category>---<tag>"
    assert got[f"{test_tsv}:3"] == f"duplicate TRACK_ID track_0000948 (also {train_tsv}:2)"
    assert len(c.problems) == 7 and c.split_counts() == {"test": 1, "train": 3, "valid": 1}
    # the tag of the row with missing audio still belongs to the vocabulary (it is in the split files)
    assert c.classes == TAGS


def test_wrong_root_header_and_audio_dir(tmp_path: Path) -> None:
    make_tree(tmp_path / "mtg-jamendo-dataset")
    with pytest.raises(RecipeError, match=r"expected data/splits/split-0/autotagging_moodtheme-train.tsv under "
                                          r".*did you mean .*mtg-jamendo-dataset"):
        mtg.load(tmp_path, subset="moodtheme")
    with pytest.raises(RecipeError, match="expected the audio folder at .*--audio-dir"):
        mtg.load(tmp_path / "mtg-jamendo-dataset", subset="moodtheme", audio_dir="audio-low")
    root = make_tree(tmp_path / "hdr")
    tsv = root / "data" / "splits" / "split-0" / "autotagging_moodtheme-test.tsv"
    tsv.write_text("TRACK_ID,ARTIST_ID,ALBUM_ID,PATH,DURATION,TAGS\n")
    with pytest.raises(RecipeError, match="autotagging_moodtheme-test.tsv: expected the header TRACK_ID"):
        mtg.load(root, subset="moodtheme")


def test_pack_tiny_tree_and_read_back(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = pack(mtg.load(make_tree(tmp_path / "src"), subset="moodtheme"), out,
                  PackOptions(sample_rate=16000, progress=False))
    m = json.loads((out / "dataset.json").read_text())
    assert result.problems == [] and m["classes"] == TAGS and m["multi_label"]
    assert {k: v["samples"] for k, v in m["splits"].items()} == {"test": 1, "train": 3, "valid": 1}
    assert m["groups"] == {"test": 1, "train": 3, "valid": 1}
    s = read_shards(out)["18_81018"]
    assert set(s) == {"flac", "json", "labels"}
    assert np.frombuffer(s["labels"], np.uint8).tolist() == [0, 0, 1, 1, 1, 1, 0, 1, 1]
    meta = json.loads(s["json"])
    assert (meta["group"], meta["split"], meta["source"], meta["album_id"], meta["listed_duration"]) == (
        "artist_008004", "train", "18/81018.mp3", "album_007421", 239.3)
    assert abs(meta["duration"] - 0.2) < 0.06  # the packed audio's length, not the listed one
    x, sr = sf.read(io.BytesIO(s["flac"]))  # the third clip was written as a 600 Hz tone
    assert sr == 16000 and abs(np.argmax(np.abs(np.fft.rfft(x))) * sr / len(x) - 600) < 10


def test_cli_options_and_strict(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", audio_for=[r.split("\t")[3] for r in TRAIN + VALID])
    assert get("mtg_jamendo") is mtg
    rc = cli.main(["pack", "--recipe", "mtg_jamendo", str(root), str(tmp_path / "o"), "--no-progress",
                   "--subset", "moodtheme", "--split-index", "0", "--audio-dir", "audio"])
    m = json.loads((tmp_path / "o" / "dataset.json").read_text())
    assert rc == 0 and "test" not in m["splits"] and len(m["skipped"]) == 1
    assert m["skipped"][0]["where"].endswith("autotagging_moodtheme-test.tsv:2")
    assert cli.main(["pack", "--recipe", "mtg_jamendo", str(root), str(tmp_path / "strict"), "--strict",
                     "--no-progress", "--subset", "moodtheme"]) == 2


# --- the real split-0 files (skipped when ../shared is absent) ---

def real_tree(shared: Path, root: Path, subset: str, every: int) -> tuple[Path, dict[str, list[list[str]]]]:
    """SRC/data -> the real data folder; one tiny MP3 hard-linked at every ``every``-th PATH."""
    root.mkdir(parents=True)
    (root / "data").symlink_to(shared / "datasets-meta" / "mtg-jamendo" / "data")
    tone = write_tone(root / "tone.mp3", seconds=0.05, sr=16000)
    rows: dict[str, list[list[str]]] = {}
    for part in ("train", "validation", "test"):
        text = (root / "data" / "splits" / "split-0" / f"{mtg.SUBSETS[subset]}-{part}.tsv").read_text()
        rows[part] = [line.rstrip("\r").split("\t") for line in text.split("\n")[1:] if line.strip()]
        for fields in rows[part][::every]:
            (root / "audio" / fields[3]).parent.mkdir(parents=True, exist_ok=True)
            os.link(tone, root / "audio" / fields[3])
    tone.unlink()
    return root, rows


def test_real_moodtheme_split0_counts_groups_and_known_rows(shared: Path, tmp_path: Path) -> None:
    root, rows = real_tree(shared, tmp_path / "mtg-jamendo-dataset", "moodtheme", every=1)
    c = mtg.load(root, subset="moodtheme")
    assert c.problems == []
    assert c.split_counts() == {"train": len(rows["train"]), "valid": len(rows["validation"]),
                                "test": len(rows["test"])} == {"train": 9949, "valid": 3802, "test": 4231}
    published = (root / "data" / "tags" / "moodtheme_split.txt").read_text().split()
    assert c.classes == sorted(published) and len(c.classes) == 56
    by = {r.extra["track_id"]: r for r in c.records}
    r = by["track_0000948"]
    assert (r.split, r.group, r.key, r.extra["listed_duration"]) == ("train", "artist_000087", "48_948", 212.7)
    assert [c.classes[i] for i in r.labels] == ["mood/theme---background"]
    assert [c.classes[i] for i in by["track_0003346"].labels] == ["mood/theme---calm", "mood/theme---melodic"]
    assert len(by["track_0081018"].labels) == 6
    # every row's tag columns give its multi-hot vector, and the split keeps artists apart
    for part, split in mtg.PARTS.items():
        for fields in rows[part]:
            rec = by[fields[0]]
            assert (rec.split, rec.group) == (split, fields[1])
            assert [c.classes[i] for i in rec.labels] == sorted(fields[5:])
    artists = {s: {r.group for r in c.records if r.split == s} for s in ("train", "valid", "test")}
    assert not (artists["train"] & artists["valid"]) and not (artists["train"] & artists["test"])
    assert not (artists["valid"] & artists["test"])


def test_real_instrument_split0_partial_audio_and_top50_tags(shared: Path, tmp_path: Path) -> None:
    root, rows = real_tree(shared, tmp_path / "mtg", "instrument", every=50)
    c = mtg.load(root, subset="instrument")
    n = {p: len(r) for p, r in rows.items()}
    present = {mtg.PARTS[p]: len(range(0, n[p], 50)) for p in n}
    assert c.split_counts() == dict(sorted(present.items())) and len(c.classes) == 40
    assert len(c.problems) == sum(n.values()) - sum(present.values())
    assert Counter(p.reason.split(" ")[0] for p in c.problems) == {"audio": len(c.problems)}
    assert all(t.startswith("instrument---") for t in c.classes)
    top50 = mtg.load(root, subset="top50tags", audio_dir="audio")  # same audio folder, other subset
    assert top50.classes == sorted((root / "data" / "tags" / "top50.txt").read_text().split())
    with pytest.raises(RecipeError, match="did you mean"):
        mtg.load(tmp_path, subset="instrument")
