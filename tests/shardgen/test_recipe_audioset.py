"""audioset recipe: hand-written metadata in Google's format, and trees built from the real segment CSVs."""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from shardgen import cli
from shardgen.recipes import audioset, get
from shardgen.records import RecipeError
from shardgen.writer import PackOptions, pack
from tests.conftest import write_tone
from tests.conftest import read_shards

LABELS = [
    "index,mid,display_name",
    '0,/m/09x0r,"Speech"',
    '1,/m/05zppz,"Male speech, man speaking"',
    '2,/m/04rlf,"Music"',
    '3,/m/0jbk,"Animal"',
    '4,/m/0bt9lr,"Dog"',
    '5,/t/dd00088,"Gush"',
]
HEADER = [
    "# Segments csv created Sun Mar  5 10:54:31 2017",
    "# num_ytids=4, num_segs=4, num_unique_labels=5, num_positive_labels=8",
    "# YTID, start_seconds, end_seconds, positive_labels",
]
BALANCED = [
    '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"',
    '--ZhevVpy1s, 50.000, 60.000, "/m/04rlf"',
    'Yx3ae_Ckd9E, 0.000, 10.000, "/m/09x0r,/m/05zppz,/m/04rlf,/m/0jbk,/m/0bt9lr"',
    'zzD_oVgzKMc, 30.000, 40.000, "/m/0bt9lr,/m/0jbk"',
]
EVAL = [
    '--4gqARaEJE, 0.000, 10.000, "/m/0jbk,/m/0bt9lr"',
    '-0RWZT-miFs, 420.000, 430.000, "/m/04rlf"',
]
# balanced clips in four naming styles (one per clip), eval clips PANNs-style in a sub-folder
BALANCED_FILES = ["balanced_train/--PJHxphWEs.wav", "balanced_train/Y--ZhevVpy1s.flac",
                  "balanced_train/Yx3ae_Ckd9E_0.000.ogg", "balanced_train/zzD_oVgzKMc_30000_40000.wav"]
EVAL_FILES = ["audios/eval_segments/part00/Y--4gqARaEJE.wav", "audios/eval_segments/part01/Y-0RWZT-miFs.wav"]


def write_lines(path: Path, lines: list[str], eol: str = "\n", final_newline: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((eol.join(lines) + (eol if final_newline else "")).encode())
    return path


def make_tree(root: Path, balanced: list[str] = BALANCED, ev: list[str] = EVAL,
              files: list[str] = BALANCED_FILES + EVAL_FILES, eol: str = "\n", final_newline: bool = True) -> Path:
    write_lines(root / "class_labels_indices.csv", LABELS, eol, final_newline)
    write_lines(root / "balanced_train_segments.csv", HEADER + balanced, eol, final_newline)
    write_lines(root / "eval_segments.csv", HEADER + ev, eol, final_newline)
    for i, rel in enumerate(files):
        write_tone(root / rel, seconds=0.1, sr=8000, freq=250 + 60 * i)
    return root


def hot(labels: list[int], n: int = 6) -> list[int]:
    return [int(i in labels) for i in range(n)]


def test_tiny_tree_file_names_splits_and_multi_hot(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "audioset")
    c = audioset.load(root)
    assert c.problems == [] and c.multi_label
    assert c.classes == ["Speech", "Male speech, man speaking", "Music", "Animal", "Dog", "Gush"]
    assert c.split_counts() == {"balanced_train": 4, "eval": 2}
    by = {r.key: r for r in c.records}
    assert {k: by[k].source for k in by} == {
        "--PJHxphWEs": "balanced_train/--PJHxphWEs.wav", "--ZhevVpy1s": "balanced_train/Y--ZhevVpy1s.flac",
        "Yx3ae_Ckd9E": "balanced_train/Yx3ae_Ckd9E_0.000.ogg",
        "zzD_oVgzKMc": "balanced_train/zzD_oVgzKMc_30000_40000.wav",
        "--4gqARaEJE": "audios/eval_segments/part00/Y--4gqARaEJE.wav",
        "-0RWZT-miFs": "audios/eval_segments/part01/Y-0RWZT-miFs.wav"}
    assert hot(by["--ZhevVpy1s"].labels) == [0, 0, 1, 0, 0, 0]          # 1 label
    assert hot(by["--PJHxphWEs"].labels) == [1, 0, 0, 0, 0, 1]          # 2 labels
    assert hot(by["Yx3ae_Ckd9E"].labels) == [1, 1, 1, 1, 1, 0]          # 5 labels
    r = by["-0RWZT-miFs"]
    assert (r.split, r.fold, r.group) == ("eval", None, "-0RWZT-miFs")
    assert r.extra == {"start_seconds": 420.0, "end_seconds": 430.0, "mids": ["/m/04rlf"]}
    assert r.start is None and r.end is None  # local files already hold the segment
    assert c.info["source"] == ["class_labels_indices.csv", "balanced_train_segments.csv", "eval_segments.csv"]
    assert c.info["options"]["audio_dir"] == {"balanced_train": "balanced_train", "eval": "audios/eval_segments"}
    assert c.info["availability"]["eval"] == {"listed": 2, "present": 2, "missing": 0,
                                              "audio_dir": "audios/eval_segments"}


def test_crlf_and_missing_final_newline_parse_the_same(tmp_path: Path) -> None:
    a = audioset.load(make_tree(tmp_path / "a"))
    b = audioset.load(make_tree(tmp_path / "b", eol="\r\n", final_newline=False))
    strip = lambda c: [(r.key, r.labels, r.split, r.extra) for r in c.records]  # noqa: E731
    assert strip(a) == strip(b) and b.problems == [] and a.classes == b.classes


def test_file_name_forms() -> None:
    assert audioset.ytid_of("--PJHxphWEs") == "--PJHxphWEs"
    assert audioset.ytid_of("Y--PJHxphWEs") == "--PJHxphWEs"
    assert audioset.ytid_of("Yx3ae_Ckd9E") == "Yx3ae_Ckd9E"      # a YTID that starts with Y
    assert audioset.ytid_of("YYx3ae_Ckd9E_0") == "Yx3ae_Ckd9E"
    assert audioset.ytid_of("zzD_oVgzKMc_30.000_40.000") == "zzD_oVgzKMc"
    assert audioset.ytid_of("zzD_oVgzKMc_30") == "zzD_oVgzKMc"
    assert audioset.ytid_of("zzD_oVgzKMc-30") is None
    assert audioset.ytid_of("short") is None and audioset.ytid_of("notes_about_it") is None


def test_missing_clips_one_summary_then_each_clip(tmp_path: Path) -> None:
    files = [f for f in BALANCED_FILES if "zzD" not in f and "Yx3" not in f] + EVAL_FILES
    root = make_tree(tmp_path / "as", files=files)
    c = audioset.load(root)
    table = root / "balanced_train_segments.csv"
    assert str(c.problems[0]) == (f"{table}: 2 of 4 listed clips (50.0%) are missing locally under "
                                  f"{root / 'balanced_train'} (availability drift); packing the 2 present")
    tail = f"missing locally: no audio file named by this YTID under {root / 'balanced_train'}"
    assert [str(p) for p in c.problems[1:]] == [f"{table}:6: clip Yx3ae_Ckd9E {tail}",
                                                f"{table}:7: clip zzD_oVgzKMc {tail}"]
    assert c.split_counts() == {"balanced_train": 2, "eval": 2}
    assert c.info["availability"]["balanced_train"] == {"listed": 4, "present": 2, "missing": 2,
                                                        "audio_dir": "balanced_train"}


def test_bad_rows_duplicates_and_unlisted_files(tmp_path: Path) -> None:
    balanced = BALANCED + [
        'abcdefghijk, 0.000, 10.000, "/m/09x0r,/m/zzzzz"',     # 8: unknown MID
        'abcdefghijl, 0.000, 10.000',                          # 9: 3 fields
        'tooshort, 0.000, 10.000, "/m/09x0r"',                 # 10: bad YTID
        'abcdefghijm, 10.000, 10.000, "/m/09x0r"',             # 11: start not before end
        'abcdefghijn, ten, 20.000, "/m/09x0r"',                # 12: not a number
        '--PJHxphWEs, 0.000, 10.000, "/m/04rlf"',              # 13: duplicate YTID
        'abcdefghijo, 0.000, 10.000, ""',                      # 14: no labels
    ]
    files = BALANCED_FILES + EVAL_FILES + ["balanced_train/Y--PJHxphWEs.flac", "balanced_train/QQQQQQQQQQQ.wav",
                                           "balanced_train/readme_clip.wav", "balanced_train/abcdefghijk.wav"]
    root = make_tree(tmp_path / "as", balanced=balanced, files=files)
    (root / "balanced_train" / "notes.txt").write_text("not audio")
    c = audioset.load(root)
    table = root / "balanced_train_segments.csv"
    got = {p.where: p.reason for p in c.problems}
    assert got[f"{table}:8"] == "unknown label(s) ['/m/zzzzz'] (not in class_labels_indices.csv)"
    assert got[f"{table}:9"].startswith("malformed row: 3 fields, expected 4")
    assert got[f"{table}:10"] == "YTID 'tooshort' is not 11 characters of [A-Za-z0-9_-]"
    assert got[f"{table}:11"] == "start 10.000 is not before end 10.000"
    assert got[f"{table}:12"] == "start/end 'ten', '20.000' are not numbers"
    assert got[f"{table}:13"] == "duplicate YTID --PJHxphWEs (also line 4)"
    assert got[f"{table}:14"] == "no labels"
    bt = root / "balanced_train"
    assert got[str(bt / "Y--PJHxphWEs.flac")] == "second audio file for YTID --PJHxphWEs (using --PJHxphWEs.wav)"
    assert got[str(bt / "QQQQQQQQQQQ.wav")] == "audio file not listed in balanced_train_segments.csv"
    assert got[str(bt / "readme_clip.wav")] == "audio file not listed in balanced_train_segments.csv"
    # the clip of a bad row (line 8) is not reported a second time as unlisted
    assert str(bt / "abcdefghijk.wav") not in got
    assert len(c.problems) == 10 and c.split_counts() == {"balanced_train": 4, "eval": 2}


def test_segment_selection_and_audio_dir_overrides(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "as")
    assert audioset.load(root, segments="eval").split_counts() == {"eval": 2}
    assert audioset.load(root, segments=["balanced_train"]).split_counts() == {"balanced_train": 4}
    with pytest.raises(RecipeError, match="expected unbalanced_train_segments.csv under"):
        audioset.load(root, segments="all")
    with pytest.raises(RecipeError, match=r"unknown split\(s\) \['train'\]"):
        audioset.load(root, segments="train,eval")
    # an unbalanced CSV without an audio folder is left out by default, fatal when asked for
    write_lines(root / "unbalanced_train_segments.csv", HEADER + ['abcdefghijk, 0.000, 10.000, "/m/09x0r"'])
    assert audioset.load(root).split_counts() == {"balanced_train": 4, "eval": 2}
    with pytest.raises(RecipeError, match=r"no audio folder for unbalanced_train under .*--audio-dir"):
        audioset.load(root, segments="unbalanced_train")
    elsewhere = write_tone(tmp_path / "ub_audio" / "abcdefghijk_0.wav", seconds=0.1, sr=8000).parent
    c = audioset.load(root, segments="unbalanced_train", audio_dir=[f"unbalanced_train={elsewhere}"])
    assert [(r.key, r.source, r.split) for r in c.records] == [
        ("abcdefghijk", str(elsewhere / "abcdefghijk_0.wav"), "unbalanced_train")]
    with pytest.raises(RecipeError, match="--audio-dir expects SPLIT=DIR"):
        audioset.load(root, audio_dir=["valid=x"])
    with pytest.raises(RecipeError, match="--audio-dir eval=nowhere: no folder at"):
        audioset.load(root, audio_dir=["eval=nowhere"])


def test_wrong_root_and_meta_dir(tmp_path: Path) -> None:
    make_tree(tmp_path / "audioset")
    with pytest.raises(RecipeError, match=r"expected class_labels_indices.csv under .*did you mean .*audioset"):
        audioset.load(tmp_path)
    # PANNs keeps the CSVs in metadata/ and the clips in audios/<split>_segments/
    panns = tmp_path / "panns"
    for name in ("class_labels_indices.csv", "eval_segments.csv"):
        (panns / "metadata").mkdir(parents=True, exist_ok=True)
        (tmp_path / "audioset" / name).rename(panns / "metadata" / name)
    for f in EVAL_FILES:
        (panns / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "audioset" / f).rename(panns / f)
    with pytest.raises(RecipeError, match="add --meta-dir metadata"):
        audioset.load(panns)
    assert audioset.load(panns, meta_dir="metadata").split_counts() == {"eval": 2}
    (panns / "audios" / "eval_segments").rename(panns / "audios" / "other")
    with pytest.raises(RecipeError, match="no split has both its segment CSV"):
        audioset.load(panns, meta_dir="metadata")
    write_lines(panns / "metadata" / "class_labels_indices.csv", ["index,mid,display_name", '1,/m/09x0r,"Speech"'])
    with pytest.raises(RecipeError, match=r"class_labels_indices.csv:2: expected index 0"):
        audioset.load(panns, meta_dir="metadata")


def test_pack_tiny_tree_and_read_back(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = pack(audioset.load(make_tree(tmp_path / "src")), out, PackOptions(sample_rate=8000, progress=False))
    m = json.loads((out / "dataset.json").read_text())
    assert result.problems == [] and m["multi_label"] and m["num_classes"] == 6
    assert {k: v["samples"] for k, v in m["splits"].items()} == {"balanced_train": 4, "eval": 2}
    assert m["splits"]["balanced_train"]["class_counts"] == [2, 1, 2, 2, 2, 1]
    assert m["recipe"]["availability"]["balanced_train"]["present"] == 4
    samples = read_shards(out)
    assert sorted(samples) == sorted(["--PJHxphWEs", "--ZhevVpy1s", "Yx3ae_Ckd9E", "zzD_oVgzKMc",
                                      "--4gqARaEJE", "-0RWZT-miFs"])
    s = samples["Yx3ae_Ckd9E"]
    assert set(s) == {"ogg", "json", "labels"}  # an OGG already at the target rate is stored as is
    assert np.frombuffer(s["labels"], np.uint8).tolist() == [1, 1, 1, 1, 1, 0]
    meta = json.loads(s["json"])
    assert (meta["split"], meta["group"], meta["start_seconds"], meta["mids"][-1], meta["source"]) == (
        "balanced_train", "Yx3ae_Ckd9E", 0.0, "/m/0bt9lr", "balanced_train/Yx3ae_Ckd9E_0.000.ogg")


def test_cli_segments_audio_dir_and_strict(tmp_path: Path) -> None:
    files = [f for f in BALANCED_FILES if "zzD" not in f] + EVAL_FILES
    root = make_tree(tmp_path / "src", files=files)
    assert get("audioset") is audioset
    rc = cli.main(["pack", "--recipe", "audioset", str(root), str(tmp_path / "o"), "--sample-rate", "8000",
                   "--no-progress", "--segments", "eval", "--audio-dir", "eval=audios/eval_segments"])
    m = json.loads((tmp_path / "o" / "dataset.json").read_text())
    assert rc == 0 and list(m["splits"]) == ["eval"] and m["skipped"] == []
    assert m["recipe"]["options"]["segments"] == ["eval"]
    rc = cli.main(["pack", "--recipe", "audioset", str(root), str(tmp_path / "all"), "--sample-rate", "8000",
                   "--no-progress"])
    m = json.loads((tmp_path / "all" / "dataset.json").read_text())
    assert rc == 0 and m["splits"]["balanced_train"]["samples"] == 3 and len(m["skipped"]) == 2
    assert "1 of 4 listed clips (25.0%) are missing locally" in m["skipped"][0]["reason"]
    assert cli.main(["pack", "--recipe", "audioset", str(root), str(tmp_path / "strict"), "--strict",
                     "--no-progress"]) == 2


# --- trees built from the real metadata (skipped when ../shared is absent) ---

def real_tree(shared: Path, root: Path) -> Path:
    """The real CSVs in a temp root; eval audio for every row, balanced audio for every 40th row."""
    src = shared / "datasets-meta" / "audioset"
    root.mkdir(parents=True)
    for name in ("class_labels_indices.csv", "balanced_train_segments.csv", "eval_segments.csv"):
        (root / name).write_bytes((src / name).read_bytes())
    tone = write_tone(root / "tone.wav", seconds=0.05, sr=8000)
    for split, every, pattern in (("eval", 1, "Y{}.wav"), ("balanced_train", 40, "{}_{}.wav")):
        (root / split).mkdir()
        rows = [line.split(", ") for line in (root / f"{split}_segments.csv").read_text().splitlines()
                if not line.startswith("#")]
        for ytid, start, *_ in rows[::every]:
            os.link(tone, root / split / pattern.format(ytid, start))
    tone.unlink()
    return root


def header_count(path: Path) -> int:
    return int(re.search(r"num_segs=(\d+)", path.read_text()[:300]).group(1))


def test_real_metadata_counts_known_rows_and_availability(shared: Path, tmp_path: Path) -> None:
    root = real_tree(shared, tmp_path / "audioset")
    c = audioset.load(root)
    n_eval, n_bal = header_count(root / "eval_segments.csv"), header_count(root / "balanced_train_segments.csv")
    assert (n_eval, n_bal) == (20371, 22160)
    present_bal = len(range(0, n_bal, 40))
    assert c.split_counts() == {"balanced_train": present_bal, "eval": n_eval}
    assert len(c.classes) == 527 and c.classes[:2] == ["Speech", "Male speech, man speaking"]
    assert c.info["availability"]["balanced_train"] == {"listed": n_bal, "present": present_bal,
                                                        "missing": n_bal - present_bal, "audio_dir": "balanced_train"}
    # one summary, then one problem per missing clip, nothing else
    assert c.problems[0].reason.startswith(f"{n_bal - present_bal} of {n_bal} listed clips")
    assert len(c.problems) == 1 + n_bal - present_bal
    assert all("missing locally" in p.reason for p in c.problems)
    by = {r.key: r for r in c.records}
    r = by["--PJHxphWEs"]  # first balanced row: /m/09x0r,/t/dd00088
    assert (r.split, r.group, r.extra["start_seconds"], r.extra["end_seconds"]) == ("balanced_train", "--PJHxphWEs",
                                                                                     30.0, 40.0)
    assert [c.classes[i] for i in r.labels] == ["Speech", "Gush"]
    assert r.source == "balanced_train/--PJHxphWEs_30.000.wav"
    one = by["--BfvyPmVMo"]
    assert (one.split, one.extra["mids"], [c.classes[i] for i in one.labels]) == ("eval", ["/m/03l9g"], ["Hammer"])
    many = by["--4gqARaEJE"]
    assert many.extra["mids"] == ["/m/068hy", "/m/07q6cd_", "/m/0bt9lr", "/m/0jbk"] and len(many.labels) == 4
    assert Counter(len(r.labels) for r in c.records if r.split == "eval")[11] == 3  # the most-labelled rows
    assert sum(r.extra["mids"] == [] for r in c.records) == 0


def test_real_metadata_pack_a_few_and_wrong_root(shared: Path, tmp_path: Path) -> None:
    root = real_tree(shared, tmp_path / "audioset")
    with pytest.raises(RecipeError, match="did you mean"):
        audioset.load(tmp_path)
    full = audioset.load(root, segments="balanced_train")
    full.records = full.records[:5]
    full.problems = full.problems[:3]
    out = tmp_path / "out"
    result = pack(full, out, PackOptions(sample_rate=8000, on_error="skip", progress=False))
    m = json.loads((out / "dataset.json").read_text())
    assert m["splits"]["balanced_train"]["samples"] == 5 and m["num_classes"] == 527
    assert len(result.problems) == 3 and "availability drift" in m["skipped"][0]["reason"]
    for key, s in read_shards(out).items():
        labels = np.flatnonzero(np.frombuffer(s["labels"], np.uint8)).tolist()
        assert labels == json.loads(s["json"])["labels"] and len(s["labels"]) == 527
