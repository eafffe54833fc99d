"""esc50 recipe: hand-written trees in the publisher's format, and trees built from the real esc50.csv."""
from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from shardgen import cli
from shardgen.recipes import esc50, get
from shardgen.records import RecipeError
from shardgen.writer import PackOptions, pack
from tests.conftest import write_tone
from tests.conftest import read_shards

HEADER = "filename,fold,target,category,esc10,src_file,take"
ROWS = [
    "1-100032-A-0.wav,1,0,dog,True,100032,A",
    "1-100038-A-14.wav,1,14,chirping_birds,False,100038,A",
    "2-102414-A-17.wav,2,17,pouring_water,False,102414,A",
    "3-141240-B-44.wav,3,44,engine,False,141240,B",
    "4-181286-A-10.wav,4,10,rain,True,181286,A",
    "5-103415-A-41.wav,5,41,chainsaw,True,103415,A",
]


def make_tree(root: Path, rows: list[str], eol: str = "\n", final_newline: bool = True,
              audio_for: list[str] | None = None) -> Path:
    """ESC-50-master layout: meta/esc50.csv + audio/<filename> (0.1-s tones)."""
    (root / "meta").mkdir(parents=True, exist_ok=True)
    text = eol.join([HEADER, *rows]) + (eol if final_newline else "")
    (root / "meta" / "esc50.csv").write_bytes(text.encode())
    names = audio_for if audio_for is not None else [r.split(",")[0] for r in rows]
    for i, name in enumerate(names):
        write_tone(root / "audio" / name, seconds=0.1, sr=8000, freq=200 + 50 * i)
    return root


def test_tiny_tree_folds_labels_groups(tmp_path: Path) -> None:
    c = esc50.load(make_tree(tmp_path / "ESC-50-master", ROWS))
    assert c.problems == []
    assert c.classes == esc50.CLASSES and len(c.classes) == 50 and not c.multi_label
    by = {r.source: r for r in c.records}
    assert sorted(by) == sorted(f"audio/{r.split(',')[0]}" for r in ROWS)
    r = by["audio/3-141240-B-44.wav"]
    assert (r.key, r.labels, r.split, r.fold, r.group) == ("audio_3-141240-B-44", [44], "train", 3, "141240")
    assert r.extra == {"take": "B", "target": 44, "esc10": False}
    assert r.path == tmp_path / "ESC-50-master" / "audio" / "3-141240-B-44.wav"
    assert {x.split for x in c.records} == {"train"}
    assert sorted(x.fold for x in c.records) == [1, 1, 2, 3, 4, 5]
    assert c.info == {"recipe": "esc50", "source": "meta/esc50.csv",
                      "split_rule": "official folds 1-5 from the fold column; every clip split train",
                      "options": {"subset": "esc50"}}


def test_crlf_and_missing_final_newline_parse_the_same(tmp_path: Path) -> None:
    a = esc50.load(make_tree(tmp_path / "a", ROWS))
    b = esc50.load(make_tree(tmp_path / "b", ROWS, eol="\r\n", final_newline=False))
    strip = lambda c: [(r.key, r.labels, r.fold, r.group, r.extra) for r in c.records]  # noqa: E731
    assert strip(a) == strip(b) and b.problems == []


def test_esc10_subset_reindexes_in_target_order(tmp_path: Path) -> None:
    c = esc50.load(make_tree(tmp_path / "t", ROWS), subset="esc10")
    assert c.name == "esc10" and c.classes == esc50.ESC10
    labels = {r.source: c.classes[r.labels[0]] for r in c.records}
    assert labels == {"audio/1-100032-A-0.wav": "dog", "audio/4-181286-A-10.wav": "rain",
                      "audio/5-103415-A-41.wav": "chainsaw"}
    assert {r.source: r.labels for r in c.records}["audio/5-103415-A-41.wav"] == [9]
    # non-ESC-10 rows are left out by choice, not reported; their audio is still "listed"
    assert c.problems == []


def test_bad_rows_and_unlisted_audio_are_reported_by_file_and_line(tmp_path: Path) -> None:
    rows = ROWS + [
        "1-115545-A-48.wav,1,48,fireworks,False,115545,A",     # 8: audio missing
        "1-17367-A-10.wav,1,10,dog,False,17367,A",              # 9: category does not match target
        "1-19111-A-24.wav,1,24,coughing",                       # 10: 4 fields
        "1-26806-A-1.wav,6,1,rooster,True,26806,A",             # 11: fold 6
        "1-100032-A-0.wav,1,0,dog,True,100032,A",               # 12: duplicate of line 2
        "1-30226-A-0.wav,1,77,dog,True,30226,A",                # 13: target out of range
    ]
    present = [r.split(",")[0] for r in rows if not r.startswith("1-115545")] + ["9-999-A-0.wav"]
    root = make_tree(tmp_path / "t", rows, audio_for=present)
    c = esc50.load(root)
    table = root / "meta" / "esc50.csv"
    got = {p.where: p.reason for p in c.problems}
    assert "audio file audio/1-115545-A-48.wav not found" == got[f"{table}:8"]
    assert "does not match target 10 ('rain')" in got[f"{table}:9"]
    assert got[f"{table}:10"].startswith("malformed row: 4 fields, expected 7")
    assert "fold '6'" in got[f"{table}:11"]
    assert got[f"{table}:12"] == f"duplicate filename 1-100032-A-0.wav (also {table}:2)"
    assert "target '77'" in got[f"{table}:13"]
    assert got[str(root / "audio" / "9-999-A-0.wav")] == "audio file not listed in meta/esc50.csv"
    assert len(c.problems) == 7 and len(c.records) == len(ROWS)


def test_wrong_root_names_the_expected_file(tmp_path: Path) -> None:
    make_tree(tmp_path / "ESC-50-master", ROWS)
    with pytest.raises(RecipeError, match=r"expected meta/esc50.csv under .*did you mean .*ESC-50-master"):
        esc50.load(tmp_path)
    (tmp_path / "other" / "meta").mkdir(parents=True)
    (tmp_path / "other" / "meta" / "esc50.csv").write_text(HEADER + "\n")
    with pytest.raises(RecipeError, match="expected audio/"):
        esc50.load(tmp_path / "other")
    (tmp_path / "cols" / "meta").mkdir(parents=True)
    (tmp_path / "cols" / "audio").mkdir()
    (tmp_path / "cols" / "meta" / "esc50.csv").write_text("filename,fold,category\nx.wav,1,dog\n")
    with pytest.raises(RecipeError, match=r"esc50.csv: missing column\(s\) \['target'"):
        esc50.load(tmp_path / "cols")


def test_pack_tiny_tree_and_read_back(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", ROWS)
    out = tmp_path / "out"
    result = pack(esc50.load(root), out, PackOptions(sample_rate=8000, progress=False))
    m = json.loads((out / "dataset.json").read_text())
    assert m["classes"] == esc50.CLASSES and m["recipe"]["source"] == "meta/esc50.csv"
    assert m["folds"] == [1, 2, 3, 4, 5] and m["splits"]["train"]["samples"] == 6
    assert sorted(p.name for p in (out / "train").glob("*.tar")) == [f"fold{i}-000000.tar" for i in range(1, 6)]
    samples = read_shards(out)
    s = samples["audio_5-103415-A-41"]
    meta = json.loads(s["json"])
    assert (meta["labels"], meta["fold"], meta["group"], meta["source"], meta["take"]) == (
        [41], 5, "103415", "audio/5-103415-A-41.wav", "A")
    assert s["cls"] == b"41"
    assert np.flatnonzero(np.frombuffer(s["labels"], np.uint8)).tolist() == [41] and len(s["labels"]) == 50
    # a 16-bit WAV already at the target rate is stored as is: the same samples come back
    assert set(s) == {"wav", "cls", "json", "labels"}
    wave, sr = sf.read(root / "audio" / "5-103415-A-41.wav", dtype="int16")
    packed, psr = sf.read(io.BytesIO(s["wav"]), dtype="int16")
    assert psr == sr == 8000 and np.array_equal(packed, wave)
    assert result.problems == []


def test_cli_subset_option_and_strict(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", ROWS + ["1-115545-A-48.wav,1,48,fireworks,False,115545,A"],
                     audio_for=[r.split(",")[0] for r in ROWS])
    assert get("esc50") is esc50
    rc = cli.main(["pack", "--recipe", "esc50", str(root), str(tmp_path / "o10"), "--sample-rate", "8000",
                   "--no-progress", "--subset", "esc10"])
    m = json.loads((tmp_path / "o10" / "dataset.json").read_text())
    assert rc == 0 and m["classes"] == esc50.ESC10 and m["splits"]["train"]["samples"] == 3
    assert m["skipped"] == [] and m["recipe"]["options"] == {"subset": "esc10"}
    rc = cli.main(["pack", "--recipe", "esc50", str(root), str(tmp_path / "o50"), "--sample-rate", "8000",
                   "--no-progress"])
    m = json.loads((tmp_path / "o50" / "dataset.json").read_text())
    assert rc == 0 and [s["where"].rsplit(":", 1)[1] for s in m["skipped"]] == ["8"]
    assert cli.main(["pack", "--recipe", "esc50", str(root), str(tmp_path / "strict"), "--strict",
                     "--no-progress"]) == 2


# --- trees built from the real esc50.csv (skipped when ../shared is absent) ---

def real_tree(shared: Path, root: Path, drop: tuple[str, ...] = ()) -> tuple[Path, list[dict[str, str]]]:
    """The real meta/esc50.csv (copied into a temp tree) + one tiny valid WAV per row."""
    src = shared / "datasets-meta" / "esc50" / "meta" / "esc50.csv"
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "esc50.csv").write_bytes(src.read_bytes())
    rows = list(csv.DictReader(src.open(newline="")))
    tone = write_tone(root / "tone.wav", seconds=0.05, sr=8000).read_bytes()
    (root / "tone.wav").unlink()
    (root / "audio").mkdir()
    for row in rows:
        if row["filename"] not in drop:
            (root / "audio" / row["filename"]).write_bytes(tone)
    return root, rows


def test_real_metadata_folds_groups_and_counts(shared: Path, tmp_path: Path) -> None:
    root, rows = real_tree(shared, tmp_path / "ESC-50-master")
    c = esc50.load(root)
    assert c.problems == [] and len(c.records) == 2000
    assert Counter(r.fold for r in c.records) == {f: 400 for f in range(1, 6)}
    assert Counter(r.split for r in c.records) == {"train": 2000}
    # the fixed vocabulary is exactly the target -> category map of the real file
    assert sorted({(int(r["target"]), r["category"]) for r in rows}) == list(enumerate(esc50.CLASSES))
    assert Counter(r.labels[0] for r in c.records) == {i: 40 for i in range(50)}
    by = {r.source: r for r in c.records}
    known = {"audio/1-100032-A-0.wav": (1, [0], "100032", "A"),
             "audio/1-100210-B-36.wav": (1, [36], "100210", "B"),
             "audio/5-9032-A-0.wav": (5, [0], "9032", "A")}
    for source, want in known.items():
        r = by[source]
        assert (r.fold, r.labels, r.group, r.extra["take"]) == want
    # every row's fold, target and src_file are carried over
    assert all((by[f"audio/{r['filename']}"].fold, by[f"audio/{r['filename']}"].labels[0],
                by[f"audio/{r['filename']}"].group) == (int(r["fold"]), int(r["target"]), r["src_file"])
               for r in rows)


def test_real_metadata_esc10(shared: Path, tmp_path: Path) -> None:
    root, rows = real_tree(shared, tmp_path / "ESC-50-master")
    c = esc50.load(root, subset="esc10")
    assert c.problems == [] and len(c.records) == 400
    assert Counter(r.fold for r in c.records) == {f: 80 for f in range(1, 6)}
    assert Counter(c.classes[r.labels[0]] for r in c.records) == {n: 40 for n in esc50.ESC10}
    assert {r["category"] for r in rows if r["esc10"] == "True"} == set(esc50.ESC10)


def test_real_metadata_missing_and_unlisted_reported(shared: Path, tmp_path: Path) -> None:
    root, _ = real_tree(shared, tmp_path / "ESC-50-master", drop=("1-100038-A-14.wav", "5-9032-A-0.wav"))
    (root / "audio" / "extra-clip.wav").write_bytes((root / "audio" / "1-100032-A-0.wav").read_bytes())
    c = esc50.load(root)
    table = root / "meta" / "esc50.csv"
    assert sorted(str(p) for p in c.problems) == sorted([
        f"{table}:3: audio file audio/1-100038-A-14.wav not found",
        f"{table}:2001: audio file audio/5-9032-A-0.wav not found",
        f"{root / 'audio' / 'extra-clip.wav'}: audio file not listed in meta/esc50.csv"])
    assert len(c.records) == 1998
    with pytest.raises(RecipeError, match="expected meta/esc50.csv"):
        esc50.load(tmp_path)


@pytest.mark.slow
def test_full_size_trees_benchmark_quick(shared: Path, tmp_path: Path) -> None:
    """Opt-in (-m slow): benchmarks/recipes.py --quick packs all 2,000 ESC-50 and 8,732 UrbanSound8K rows."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    results = tmp_path / "recipes.md"
    run = subprocess.run([sys.executable, str(repo / "benchmarks" / "recipes.py"), "--quick", "--tmp", str(tmp_path),
                          "--results", str(results)], capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [line.split("|") for line in results.read_text().splitlines() if line.startswith("| esc50")
            or line.startswith("| urbansound8k")]
    assert [(r[1].strip(), int(r[2]), r[3].strip()) for r in rows] == [
        ("esc50", 2000, "5 x 400"), ("urbansound8k", 8732, "10 (official counts)")]
