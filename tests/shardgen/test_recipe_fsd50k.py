"""fsd50k recipe: hand-written trees in the publisher's format, and trees built from the real ground truth."""
from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from shardgen import cli
from shardgen.recipes import fsd50k, get
from shardgen.records import RecipeError
from shardgen.writer import PackOptions, pack
from tests.conftest import write_tone
from tests.conftest import read_shards

# A 6-class vocabulary in vocabulary.csv's format (no header: index,name,mid).
VOCAB = [
    "0,Bark,/m/05tny_",
    "1,Dog,/m/0bt9lr",
    "2,Domestic_animals_and_pets,/m/068hy",
    "3,Animal,/m/0jbk",
    "4,Music,/m/04rlf",
    "5,Zipper_(clothing),/m/01s0vc",
]
DEV = [
    "fname,labels,mids,split",
    '64760,"Music","/m/04rlf",train',
    '16399,"Bark,Dog","/m/05tny_,/m/0bt9lr",train',
    '16401,"Bark,Dog,Domestic_animals_and_pets,Animal","/m/05tny_,/m/0bt9lr,/m/068hy,/m/0jbk",val',
    '21914,"Zipper_(clothing)","/m/01s0vc",train',
]
EVAL = [
    "fname,labels,mids",
    '37199,"Dog,Animal","/m/0bt9lr,/m/0jbk"',
    '175151,"Zipper_(clothing),Music","/m/01s0vc,/m/04rlf"',
]
CLIPS_INFO = {"64760": {"title": "guitarras_63.wav", "license": "http://creativecommons.org/licenses/by/3.0/",
                        "uploader": "casualsamples", "tags": ["guitar"], "description": "electric guitar"},
              "16399": {"uploader": "dogwalker", "license": "http://creativecommons.org/publicdomain/zero/1.0/"}}


def write_lines(path: Path, lines: list[str], eol: str = "\n", final_newline: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((eol.join(lines) + (eol if final_newline else "")).encode())


def make_tree(root: Path, dev: list[str] = DEV, ev: list[str] = EVAL, eol: str = "\n",
              final_newline: bool = True, audio: dict[str, list[str]] | None = None) -> Path:
    """FSD50K layout: ground-truth CSVs + <fname>.wav tones in the two audio folders."""
    gt = root / "FSD50K.ground_truth"
    write_lines(gt / "vocabulary.csv", VOCAB, eol, final_newline)
    write_lines(gt / "dev.csv", dev, eol, final_newline)
    write_lines(gt / "eval.csv", ev, eol, final_newline)
    if audio is None:
        audio = {"dev": [r.split(",")[0] for r in dev[1:]], "eval": [r.split(",")[0] for r in ev[1:]]}
    for i, part in enumerate(("dev", "eval")):
        (root / f"FSD50K.{part}_audio").mkdir(parents=True, exist_ok=True)
        for j, fname in enumerate(audio[part]):
            write_tone(root / f"FSD50K.{part}_audio" / f"{fname}.wav", seconds=0.1, sr=8000,
                       freq=300 + 40 * j + 500 * i)
    return root


def hot(labels: list[int], n: int) -> list[int]:
    v = [0] * n
    for i in labels:
        v[i] = 1
    return v


def test_tiny_tree_splits_and_multi_hot(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "FSD50K")
    c = fsd50k.load(root)
    assert c.problems == [] and c.multi_label and c.name == "fsd50k"
    assert c.classes == [v.split(",")[1] for v in VOCAB]
    assert c.split_counts() == {"eval": 2, "train": 3, "valid": 1}
    by = {r.extra["fname"]: r for r in c.records}
    # 1, 2 and 4 labels -> multi-hot over the vocabulary's index order
    assert hot(by["64760"].labels, 6) == [0, 0, 0, 0, 1, 0]
    assert hot(by["16399"].labels, 6) == [1, 1, 0, 0, 0, 0]
    assert hot(by["16401"].labels, 6) == [1, 1, 1, 1, 0, 0]
    assert hot(by["175151"].labels, 6) == [0, 0, 0, 0, 1, 1]
    r = by["16401"]
    assert (r.key, r.source, r.split, r.fold, r.group) == (
        "FSD50K_dev_audio_16401", "FSD50K.dev_audio/16401.wav", "valid", None, "")
    assert r.extra == {"fname": "16401", "mids": ["/m/05tny_", "/m/0bt9lr", "/m/068hy", "/m/0jbk"]}
    assert by["37199"].split == "eval" and by["37199"].path == root / "FSD50K.eval_audio" / "37199.wav"
    assert c.info == {"recipe": "fsd50k", "source": ["FSD50K.ground_truth/vocabulary.csv",
                                                     "FSD50K.ground_truth/dev.csv",
                                                     "FSD50K.ground_truth/eval.csv"],
                      "split_rule": "dev.csv split column (train -> train, val -> valid); eval.csv -> eval",
                      "options": {"part": "all"}}


def test_crlf_and_missing_final_newline_parse_the_same(tmp_path: Path) -> None:
    a = fsd50k.load(make_tree(tmp_path / "a"))
    b = fsd50k.load(make_tree(tmp_path / "b", eol="\r\n", final_newline=False))
    strip = lambda c: [(r.key, r.labels, r.split, r.extra) for r in c.records]  # noqa: E731
    assert strip(a) == strip(b) and b.problems == [] and a.classes == b.classes


def test_uploader_from_clips_info_is_the_group(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "FSD50K")
    (root / "FSD50K.metadata").mkdir()
    (root / "FSD50K.metadata" / "dev_clips_info_FSD50K.json").write_text(json.dumps(CLIPS_INFO, indent=4))
    by = {r.extra["fname"]: r for r in fsd50k.load(root).records}
    assert by["64760"].group == "casualsamples"
    assert by["64760"].extra["license"] == "http://creativecommons.org/licenses/by/3.0/"
    assert by["16399"].group == "dogwalker" and by["16399"].extra["uploader"] == "dogwalker"
    assert by["21914"].group == "" and "uploader" not in by["21914"].extra  # not in the info file
    assert by["37199"].group == ""  # no eval_clips_info file


def test_part_option_reads_one_half(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "FSD50K")
    assert fsd50k.load(root, part="eval").split_counts() == {"eval": 2}
    assert fsd50k.load(root, part="dev").split_counts() == {"train": 3, "valid": 1}


def test_bad_rows_and_unlisted_audio_are_reported_by_file_and_line(tmp_path: Path) -> None:
    dev = DEV + [
        '500,"Music","/m/04rlf",train',                    # 6: audio missing
        '501,"Cat","/m/01yrx",train',                      # 7: unknown label
        '502,"Dog,Bark","/m/05tny_,/m/0bt9lr",train',      # 8: mids in the wrong order
        '503,"Dog",train',                                 # 9: 3 fields
        '504,"Dog","/m/0bt9lr",test',                      # 10: split not train/val
        '16399,"Dog","/m/0bt9lr",val',                     # 11: duplicate fname
        '505,"","",train',                                 # 12: no labels
    ]
    present = [r.split(",")[0] for r in dev[1:] if not r.startswith("500,")] + ["999"]
    root = make_tree(tmp_path / "t", dev=dev, audio={"dev": present, "eval": ["37199", "175151"]})
    c = fsd50k.load(root)
    table = root / "FSD50K.ground_truth" / "dev.csv"
    got = {p.where: p.reason for p in c.problems}
    assert got[f"{table}:6"] == "audio file FSD50K.dev_audio/500.wav not found"
    assert got[f"{table}:7"] == "unknown label(s) ['Cat'] (not in vocabulary.csv)"
    assert got[f"{table}:8"].startswith("mids ['/m/05tny_', '/m/0bt9lr'] do not match")
    assert got[f"{table}:9"].startswith("malformed row: 3 fields, expected 4")
    assert got[f"{table}:10"] == "split 'test' is not train or val"
    assert got[f"{table}:11"] == "duplicate fname 16399 (also line 3)"
    assert got[f"{table}:12"] == "no labels"
    unlisted = str(root / "FSD50K.dev_audio" / "999.wav")
    assert got[unlisted] == "audio file not listed in FSD50K.ground_truth/dev.csv"
    assert len(c.problems) == 8 and c.split_counts() == {"eval": 2, "train": 3, "valid": 1}


def test_wrong_root_and_broken_vocabulary(tmp_path: Path) -> None:
    make_tree(tmp_path / "FSD50K")
    with pytest.raises(RecipeError, match=r"expected FSD50K.ground_truth/vocabulary.csv under .*did you mean .*FSD50K"):
        fsd50k.load(tmp_path)
    root = make_tree(tmp_path / "noaudio")
    for p in (root / "FSD50K.eval_audio").iterdir():
        p.unlink()
    (root / "FSD50K.eval_audio").rmdir()
    with pytest.raises(RecipeError, match="expected FSD50K.eval_audio/"):
        fsd50k.load(root)
    assert fsd50k.load(root, part="dev").split_counts() == {"train": 3, "valid": 1}
    write_lines(root / "FSD50K.ground_truth" / "vocabulary.csv", ["0,Bark,/m/05tny_", "2,Dog,/m/0bt9lr"])
    with pytest.raises(RecipeError, match=r"vocabulary.csv:2: expected 'index,name,mid' with index 1"):
        fsd50k.load(root, part="dev")
    write_lines(root / "FSD50K.ground_truth" / "dev.csv", ["fname,labels", "1,Bark"])
    write_lines(root / "FSD50K.ground_truth" / "vocabulary.csv", VOCAB)
    with pytest.raises(RecipeError, match=r"dev.csv: missing column\(s\) \['mids', 'split'\]"):
        fsd50k.load(root, part="dev")


def test_pack_tiny_tree_and_read_back(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = pack(fsd50k.load(make_tree(tmp_path / "src")), out, PackOptions(sample_rate=8000, progress=False))
    m = json.loads((out / "dataset.json").read_text())
    assert m["multi_label"] and m["num_classes"] == 6 and result.problems == []
    assert {k: v["samples"] for k, v in m["splits"].items()} == {"eval": 2, "train": 3, "valid": 1}
    assert m["splits"]["train"]["class_counts"] == [1, 1, 0, 0, 1, 1]
    samples = read_shards(out)
    s = samples["FSD50K_dev_audio_16401"]
    assert set(s) == {"wav", "json", "labels"}  # multi-label: no .cls
    assert np.frombuffer(s["labels"], np.uint8).tolist() == [1, 1, 1, 1, 0, 0]
    meta = json.loads(s["json"])
    assert (meta["labels"], meta["split"], meta["source"], meta["fname"]) == (
        [0, 1, 2, 3], "valid", "FSD50K.dev_audio/16401.wav", "16401")
    assert abs(meta["duration"] - 0.1) < 1e-3


def test_cli_part_and_strict(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", dev=DEV + ['500,"Music","/m/04rlf",train'],
                     audio={"dev": [r.split(",")[0] for r in DEV[1:]], "eval": ["37199", "175151"]})
    assert get("fsd50k") is fsd50k
    rc = cli.main(["pack", "--recipe", "fsd50k", str(root), str(tmp_path / "o"), "--sample-rate", "8000",
                   "--no-progress", "--part", "eval"])
    m = json.loads((tmp_path / "o" / "dataset.json").read_text())
    assert rc == 0 and list(m["splits"]) == ["eval"] and m["recipe"]["options"] == {"part": "eval"}
    rc = cli.main(["pack", "--recipe", "fsd50k", str(root), str(tmp_path / "all"), "--sample-rate", "8000",
                   "--no-progress"])
    m = json.loads((tmp_path / "all" / "dataset.json").read_text())
    assert rc == 0 and [s["where"].rsplit(":", 1)[1] for s in m["skipped"]] == ["6"]
    assert cli.main(["pack", "--recipe", "fsd50k", str(root), str(tmp_path / "strict"), "--strict",
                     "--no-progress"]) == 2


# --- trees built from the real ground truth excerpts (skipped when ../shared is absent) ---

def real_tree(shared: Path, root: Path, drop: tuple[str, ...] = ()) -> Path:
    """The real vocabulary.csv and the dev/eval excerpts as dev.csv/eval.csv, one tiny WAV per row."""
    src = shared / "datasets-meta" / "fsd50k" / "FSD50K.ground_truth"
    gt = root / "FSD50K.ground_truth"
    gt.mkdir(parents=True)
    for name, saved in (("vocabulary.csv", "vocabulary.csv"), ("dev.csv", "dev.csv.head"),
                        ("eval.csv", "eval.csv.head")):
        (gt / name).write_bytes((src / saved).read_bytes())
    tone = write_tone(root / "tone.wav", seconds=0.05, sr=8000)
    for part in ("dev", "eval"):
        (root / f"FSD50K.{part}_audio").mkdir()
        for row in csv.DictReader((gt / f"{part}.csv").open(newline="")):
            if row["fname"] not in drop:
                os.link(tone, root / f"FSD50K.{part}_audio" / f"{row['fname']}.wav")
    tone.unlink()
    return root


def test_real_metadata_splits_counts_and_known_rows(shared: Path, tmp_path: Path) -> None:
    root = real_tree(shared, tmp_path / "FSD50K")
    c = fsd50k.load(root)
    assert c.problems == [] and len(c.classes) == 200
    assert c.classes[:2] == ["Accelerating_and_revving_and_vroom", "Accordion"]
    assert c.classes[199] == "Zipper_(clothing)"
    dev = list(csv.DictReader((root / "FSD50K.ground_truth" / "dev.csv").open(newline="")))
    ev = list(csv.DictReader((root / "FSD50K.ground_truth" / "eval.csv").open(newline="")))
    want = Counter({"train": 0, "val": 0}) + Counter(r["split"] for r in dev)
    assert c.split_counts() == {"eval": len(ev), "train": want["train"], "valid": want["val"]}
    assert (len(ev), want["train"], want["val"]) == (50, 87, 8)
    index = {n: i for i, n in enumerate(c.classes)}
    by = {r.extra["fname"]: r for r in c.records}
    guitar = ["Electric_guitar", "Guitar", "Plucked_string_instrument", "Musical_instrument", "Music"]
    assert by["64760"].split == "train" and by["64760"].labels == sorted(index[n] for n in guitar)
    # every row's label names map to its multi-hot vector; the longest row has many labels
    for row, split in [(r, r["split"]) for r in dev] + [(r, "eval") for r in ev]:
        rec = by[row["fname"]]
        assert [c.classes[i] for i in rec.labels] == sorted(row["labels"].split(","), key=index.__getitem__)
        assert rec.split == {"val": "valid"}.get(split, split)
        assert rec.extra["mids"] == row["mids"].split(",")
    assert max(len(r.labels) for r in c.records) == 14


def test_real_metadata_missing_unlisted_and_wrong_root(shared: Path, tmp_path: Path) -> None:
    root = real_tree(shared, tmp_path / "FSD50K", drop=("16399", "37199"))
    (root / "FSD50K.eval_audio" / "1.wav").write_bytes((root / "FSD50K.eval_audio" / "175151.wav").read_bytes())
    c = fsd50k.load(root)
    gt = root / "FSD50K.ground_truth"
    assert sorted(str(p) for p in c.problems) == sorted([
        f"{gt / 'dev.csv'}:3: audio file FSD50K.dev_audio/16399.wav not found",
        f"{gt / 'eval.csv'}:2: audio file FSD50K.eval_audio/37199.wav not found",
        f"{root / 'FSD50K.eval_audio' / '1.wav'}: audio file not listed in FSD50K.ground_truth/eval.csv"])
    assert len(c.records) == 95 + 50 - 2
    with pytest.raises(RecipeError, match="did you mean"):
        fsd50k.load(tmp_path)
