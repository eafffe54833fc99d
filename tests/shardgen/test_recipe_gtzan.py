"""gtzan recipe: hand-written trees and split lists, and trees built from the real published lists."""
from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from shardgen import cli
from shardgen.recipes import gtzan
from shardgen.records import RecipeError
from tests.conftest import write_tone

LISTS = {
    "train": ["blues/blues.00001.wav", "jazz/jazz.00054.wav", "rock/rock.00099.wav", "jazz/jazz.00010.wav"],
    "valid": ["classical/classical.00002.wav"],
    "test": ["blues/blues.00012.wav", "hiphop/hiphop.00003.wav"],
}
CLIPS = ["blues/blues.00001", "blues/blues.00012", "jazz/jazz.00054", "jazz/jazz.00010", "rock/rock.00099",
         "classical/classical.00002", "hiphop/hiphop.00003", "pop/pop.00007"]


def write_lists(folder: Path, rule: str = "filtered", lists: dict[str, list[str]] = LISTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, entries in lists.items():
        (folder / f"{split}_{rule}.txt").write_text("".join(e + "\n" for e in entries))
    return folder


def make_tree(root: Path, audio_dir: str = "genres_original", ext: str = ".wav", clips: list[str] = CLIPS) -> Path:
    """GTZAN layout: <audio_dir>/<genre>/<genre>.000NN<ext>; jazz.00054 holds undecodable bytes."""
    for i, clip in enumerate(clips):
        path = root / audio_dir / (clip + ext)
        if clip == "jazz/jazz.00054":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 7)  # truncated header
        else:
            write_tone(path, seconds=0.2, sr=8000, freq=220 + 40 * i)
    return root


def test_filtered_lists_on_wav_copy(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "gtzan")
    splits = write_lists(tmp_path / "lists")
    c = gtzan.load(root, split="filtered", splits=splits)
    assert c.classes == gtzan.GENRES and not c.multi_label
    assert c.split_counts() == {"test": 2, "train": 3, "valid": 1}
    by = {r.source: r for r in c.records}
    r = by["genres_original/blues/blues.00012.wav"]
    assert (r.key, r.labels, r.split, r.fold, r.group) == ("genres_original_blues_blues_00012", [0], "test", None, "")
    assert by["genres_original/rock/rock.00099.wav"].labels == [9]
    assert by["genres_original/classical/classical.00002.wav"].split == "valid"
    assert [str(p) for p in c.problems] == [
        f"{splits / 'train_filtered.txt'}:2: known-corrupt GTZAN excerpt (does not decode), skipped",
        f"{root / 'genres_original' / 'pop' / 'pop.00007.wav'}: audio file not in "
        "train_filtered.txt, valid_filtered.txt, test_filtered.txt"]
    assert c.info["options"] == {"split": "filtered", "splits": str(splits)}
    assert c.info["split_rule"].startswith("filtered lists: train_filtered.txt -> train")


def test_stratified_lists_on_original_au_layout_default_splits_dir(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "gtzan", audio_dir="genres", ext=".au")
    lists = {"train": ["pop/pop.00007.wav", "blues/blues.00001.wav"], "valid": ["jazz/jazz.00010.wav"],
             "test": ["rock/rock.00099.wav"]}
    write_lists(root, "stratified", lists)  # --splits defaults to SRC
    c = gtzan.load(root, split="stratified")
    assert {r.source: r.split for r in c.records} == {
        "genres/pop/pop.00007.au": "train", "genres/blues/blues.00001.au": "train",
        "genres/jazz/jazz.00010.au": "valid", "genres/rock/rock.00099.au": "test"}
    reasons = {Path(p.where).name: p.reason for p in c.problems}
    assert reasons["jazz.00054.au"] == "known-corrupt GTZAN excerpt (does not decode), skipped"
    assert reasons["blues.00012.au"].startswith("audio file not in train_stratified.txt")
    assert len(c.problems) == 4  # jazz.00054 + blues.00012, classical.00002, hiphop.00003 unlisted


def test_bad_entries_are_reported(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "gtzan")
    lists = {"train": ["blues/blues.00001.wav", "not a path", "polka/polka.00001.wav", "blues/jazz.00010.wav"],
             "valid": ["blues/blues.00001.wav", "country/country.00042.wav"],
             "test": ["", "rock/rock.00099.wav"]}
    splits = write_lists(tmp_path / "l", lists=lists)
    c = gtzan.load(root, splits=splits)
    got = {p.where: p.reason for p in c.problems}
    tr, va = splits / "train_filtered.txt", splits / "valid_filtered.txt"
    assert got[f"{tr}:2"] == "malformed entry 'not a path': expected <genre>/<genre>.000NN.wav"
    assert got[f"{tr}:3"].startswith("unknown label: 'polka/polka.00001.wav'")
    assert got[f"{tr}:4"].startswith("unknown label: 'blues/jazz.00010.wav'")
    assert got[f"{va}:1"] == f"blues/blues.00001.wav is listed twice (also {tr}:1)"
    assert got[f"{va}:2"] == "audio file genres_original/country/country.00042.wav (or .au) not found"
    assert c.split_counts() == {"test": 1, "train": 1}  # the blank line of test_filtered.txt is skipped


def test_wrong_root_and_missing_lists(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "gtzan")
    with pytest.raises(RecipeError, match=r"expected genres/ or genres_original/ under .*did you mean .*gtzan\?"):
        gtzan.load(tmp_path, splits=write_lists(tmp_path / "l"))
    with pytest.raises(RecipeError, match=r"did you mean .*gtzan\? \(SRC is the folder above genres/\)"):
        gtzan.load(root / "genres_original", splits=tmp_path / "l")
    with pytest.raises(RecipeError, match=r"expected train_stratified.txt, valid_stratified.txt, test_stratified.txt "
                                          r"in .*GTZAN ships no splits, pass --splits DIR"):
        gtzan.load(root, split="stratified", splits=tmp_path / "l")


@pytest.mark.numeric
def test_pack_and_read_back_via_cli(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "gtzan", audio_dir="genres", ext=".au")
    splits = write_lists(tmp_path / "lists")
    out = tmp_path / "out"
    rc = cli.main(["pack", "--recipe", "gtzan", str(root), str(out), "--splits", str(splits), "--split", "filtered",
                   "--sample-rate", "8000", "--no-progress"])
    assert rc == 0
    m = json.loads((out / "dataset.json").read_text())
    assert m["classes"] == gtzan.GENRES and m["recipe"]["options"]["split"] == "filtered"
    assert {k: v["samples"] for k, v in m["splits"].items()} == {"test": 2, "train": 3, "valid": 1}
    assert [Path(s["where"]).name for s in m["skipped"]] == ["train_filtered.txt:2", "pop.00007.au"]
    with tarfile.open(out / "test" / "all-000000.tar") as tf:
        meta = json.loads(tf.extractfile("genres_hiphop_hiphop_00003.json").read())
        flac = tf.extractfile("genres_hiphop_hiphop_00003.flac").read()
        assert tf.extractfile("genres_hiphop_hiphop_00003.cls").read() == b"4"
    assert (meta["source"], meta["labels"], meta["split"]) == ("genres/hiphop/hiphop.00003.au", [4], "test")
    # .au (not a keepable container) is re-encoded to FLAC with the same samples
    src, _ = sf.read(root / "genres" / "hiphop" / "hiphop.00003.au", dtype="float32")
    got, sr = sf.read(io.BytesIO(flac), dtype="float32")
    assert sr == 8000 and np.allclose(got, src, atol=1 / 32768)
    # --strict refuses the reported problems
    assert cli.main(["pack", "--recipe", "gtzan", str(root), str(tmp_path / "o2"), "--splits", str(splits),
                     "--strict", "--no-progress"]) == 2


# --- trees built from the real published split lists (skipped when ../shared is absent) ---

@pytest.fixture
def real_tree(shared: Path, tmp_path: Path) -> tuple[Path, Path]:
    """All 1,000 GTZAN names as tiny WAVs (jazz.00054 damaged) + the real list folder."""
    clips = [f"{g}/{g}.{i:05d}" for g in gtzan.GENRES for i in range(100)]
    tone = write_tone(tmp_path / "tone.wav", seconds=0.05, sr=8000).read_bytes()
    root = tmp_path / "gtzan"
    for g in gtzan.GENRES:
        (root / "genres_original" / g).mkdir(parents=True)
    for clip in clips:
        (root / "genres_original" / f"{clip}.wav").write_bytes(tone if clip != "jazz/jazz.00054" else tone[:30])
    return root, shared / "datasets-meta" / "gtzan" / "gtzan"


def test_real_filtered_lists(real_tree: tuple[Path, Path]) -> None:
    root, lists = real_tree
    c = gtzan.load(root, split="filtered", splits=lists)
    # 443 / 197 / 290 listed; jazz.00054 is in train_filtered.txt and is skipped
    assert c.split_counts() == {"test": 290, "train": 442, "valid": 197}
    test_genres = Counter(gtzan.GENRES[r.labels[0]] for r in c.records if r.split == "test")
    assert test_genres == {"blues": 31, "classical": 31, "country": 30, "disco": 29, "hiphop": 27,
                           "jazz": 27, "metal": 27, "pop": 30, "reggae": 26, "rock": 32}
    by = {r.source: r.split for r in c.records}
    assert by["genres_original/blues/blues.00012.wav"] == "test"
    assert by["genres_original/blues/blues.00000.wav"] == "valid"
    assert by["genres_original/blues/blues.00029.wav"] == "train"
    corrupt = [p for p in c.problems if "known-corrupt" in p.reason]
    assert [p.where for p in corrupt] == [f"{lists / 'train_filtered.txt'}:253"]
    unlisted = [p for p in c.problems if "not in train_filtered.txt" in p.reason]
    assert len(unlisted) == 70 and len(c.problems) == 71  # 1,000 - 930 listed
    assert not {Path(p.where).stem for p in unlisted} & {Path(r.source).stem for r in c.records}


def test_real_stratified_lists(real_tree: tuple[Path, Path]) -> None:
    root, lists = real_tree
    c = gtzan.load(root, split="stratified", splits=lists)
    assert c.split_counts() == {"test": 250, "train": 499, "valid": 250}
    for split in ("valid", "test"):
        assert Counter(r.labels[0] for r in c.records if r.split == split) == {i: 25 for i in range(10)}
    assert [str(p) for p in c.problems] == [
        f"{lists / 'train_stratified.txt'}:275: known-corrupt GTZAN excerpt (does not decode), skipped"]
    by = {r.source: r.split for r in c.records}
    assert (by["genres_original/blues/blues.00000.wav"], by["genres_original/blues/blues.00005.wav"],
            by["genres_original/blues/blues.00004.wav"]) == ("train", "test", "valid")
