"""hf recipe: tiny datasets built with the Hugging Face `datasets` library in the test (no hub access)."""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # read at import: never reach the hub
datasets = pytest.importorskip("datasets")
from datasets import Audio, ClassLabel, Dataset, DatasetDict, List  # noqa: E402

from shardgen import cli  # noqa: E402
from shardgen.recipes import hf  # noqa: E402
from shardgen.records import RecipeError  # noqa: E402
from shardgen.writer import PackOptions, pack  # noqa: E402
from tests.conftest import write_tone  # noqa: E402

datasets.disable_progress_bars()

# rows in the layout of the ESC-50 copy on the hub
ESC = {
    "filename": ["1-100032-A-0.wav", "1-100038-A-14.wav", "2-102414-A-17.wav", "5-103415-A-41.wav"],
    "fold": [1, 1, 2, 5], "target": [0, 14, 17, 41],
    "category": ["dog", "chirping_birds", "pouring_water", "chainsaw"],
    "esc10": [True, False, False, True], "src_file": ["100032", "100038", "102414", "103415"],
    "take": ["A", "A", "A", "A"],
}


def wav_bytes(tmp: Path, i: int, sr: int = 16000) -> bytes:
    return write_tone(tmp / f"tone{i}.wav", seconds=0.1, sr=sr, freq=200 + 50 * i, seed=i,
                      subtype="PCM_16").read_bytes()


def esc_dataset(tmp: Path) -> Dataset:
    audio = [{"bytes": wav_bytes(tmp, i), "path": name} for i, name in enumerate(ESC["filename"])]
    return Dataset.from_dict({**ESC, "audio": audio}).cast_column("audio", Audio())


ESC_OPTIONS = dict(label_columns=["target"], class_names_column="category", fold_column="fold",
                   group_column="src_file", source_column="filename")


def test_esc50_hub_layout_parquet(tmp_path: Path) -> None:
    root = tmp_path / "esc50"
    esc_dataset(tmp_path).to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    c = hf.load(root, **ESC_OPTIONS)
    assert c.problems == [] and not c.multi_label and c.name == "esc50"
    # names from the category column, indexed by target; unseen indices keep their number
    assert len(c.classes) == 42 and c.classes[0] == "dog" and c.classes[14] == "chirping_birds"
    assert c.classes[41] == "chainsaw" and c.classes[1] == "1"
    by = {r.source: r for r in c.records}
    r = by["2-102414-A-17.wav"]
    assert (r.key, r.labels, r.split, r.fold, r.group) == ("2-102414-A-17", [17], "train", 2, "102414")
    assert r.extra == {"category": "pouring_water", "esc10": False, "take": "A"}
    assert r.path is None and r.audio == (tmp_path / "tone2.wav").read_bytes()
    assert sorted(x.fold for x in c.records) == [1, 1, 2, 5]
    assert c.info["source"] == [str(root / "data" / "train-00000-of-00001.parquet")]


@pytest.mark.numeric
def test_pack_and_read_back_audio_bytes(tmp_path: Path) -> None:
    root = tmp_path / "esc50"
    esc_dataset(tmp_path).to_parquet(str(root / "train-00000-of-00001.parquet"))
    out = tmp_path / "out"
    assert cli.main(["pack", "--recipe", "hf", str(root), str(out), "--no-progress", "--label-column", "target",
                     "--class-names-column", "category", "--fold-column", "fold", "--group-column", "src_file",
                     "--source-column", "filename", "--sample-rate", "8000"]) == 0
    m = json.loads((out / "dataset.json").read_text())
    assert m["splits"]["train"]["folds"] == [1, 2, 5] and m["classes"][17] == "pouring_water"
    assert m["recipe"]["options"]["label_columns"] == ["target"]
    with tarfile.open(out / "train" / "fold2-000000.tar") as tf:
        members = {n: tf.extractfile(n).read() for n in tf.getnames()}
    meta = json.loads(members["2-102414-A-17.json"])
    assert (meta["labels"], meta["fold"], meta["group"], meta["source"]) == ([17], 2, "102414", "2-102414-A-17.wav")
    assert members["2-102414-A-17.cls"] == b"17"
    # the embedded 16-kHz bytes were decoded and resampled to 8 kHz: same tone, same level
    stored, sr = sf.read(io.BytesIO(members["2-102414-A-17.flac"]))
    original, sr0 = sf.read(tmp_path / "tone2.wav")
    assert (sr, sr0, len(stored)) == (8000, 16000, 800)
    spectrum = np.abs(np.fft.rfft(stored))
    assert np.argmax(spectrum) * sr / len(stored) == pytest.approx(300.0, abs=10.0)  # tone at 200 + 50 * 2 Hz
    assert np.sqrt(np.mean(stored ** 2)) == pytest.approx(np.sqrt(np.mean(original ** 2)), rel=0.05)


def test_save_to_disk_dataset_dict_with_classlabel(tmp_path: Path) -> None:
    names = ["yes", "no", "up"]
    parts = {}
    for s, (split, labels) in enumerate({"train": [0, 1, 2], "validation": [1], "test": [2, 0]}.items()):
        audio = [{"bytes": wav_bytes(tmp_path, 10 * s + i), "path": f"{split}/{i}.wav"} for i in range(len(labels))]
        parts[split] = Dataset.from_dict({"audio": audio, "label": labels, "speaker": [f"s{s}"] * len(labels)}) \
            .cast_column("audio", Audio()).cast_column("label", ClassLabel(names=names))
    root = tmp_path / "kws"
    DatasetDict(parts).save_to_disk(str(root))
    c = hf.load(root, group_column="speaker")
    assert c.classes == names and c.problems == []
    assert c.split_counts() == {"test": 2, "train": 3, "valid": 1}
    by = {r.source: r for r in c.records}
    # save_to_disk keeps base names ("0.wav" in every split): the split prefix keeps them apart
    assert sorted(by) == ["test/0.wav", "test/1.wav", "train/0.wav", "train/1.wav", "train/2.wav", "valid/0.wav"]
    assert (by["valid/0.wav"].split, by["valid/0.wav"].labels, by["valid/0.wav"].group) == ("valid", [1], "s1")
    assert by["test/1.wav"].audio == (tmp_path / "tone21.wav").read_bytes() and by["test/1.wav"].key == "test_1"
    assert c.info["split_rule"] == "the saved splits"


def test_multi_label_list_of_classlabel_one_two_many(tmp_path: Path) -> None:
    tags = ["speech", "music", "dog", "car", "rain"]
    rows = [[2], [0, 1], [4, 3, 1, 0], []]
    audio = [{"bytes": wav_bytes(tmp_path, i), "path": f"clip{i}.wav"} for i in range(4)]
    ds = Dataset.from_dict({"audio": audio, "tags": rows}).cast_column("audio", Audio()) \
        .cast_column("tags", List(ClassLabel(names=tags)))
    root = tmp_path / "tagged"
    ds.save_to_disk(str(root))
    c = hf.load(root, label_columns=["tags"], split="eval")
    assert c.multi_label and c.classes == tags and c.problems == []
    assert {r.source: r.labels for r in c.records} == {
        "eval/clip0.wav": [2], "eval/clip1.wav": [0, 1], "eval/clip2.wav": [0, 1, 3, 4], "eval/clip3.wav": []}
    assert {r.split for r in c.records} == {"eval"}
    out = tmp_path / "out"
    pack(c, out, PackOptions(progress=False))
    with tarfile.open(out / "eval" / "all-000000.tar") as tf:
        hot = {n: tf.extractfile(n).read() for n in tf.getnames() if n.endswith(".labels")}
    assert hot == {"eval_clip0.labels": bytes([0, 0, 1, 0, 0]), "eval_clip1.labels": bytes([1, 1, 0, 0, 0]),
                   "eval_clip2.labels": bytes([1, 1, 0, 1, 1]), "eval_clip3.labels": bytes(5)}


def test_string_labels_split_column_and_several_label_columns(tmp_path: Path) -> None:
    audio = [{"bytes": wav_bytes(tmp_path, i), "path": f"u{i}.wav"} for i in range(4)]
    ds = Dataset.from_dict({"audio": audio, "action": ["activate", "increase", "activate", "deactivate"],
                            "object": ["lights", "heat", "music", "lights"],
                            "part": ["train", "train", "dev", "test"]}).cast_column("audio", Audio())
    root = tmp_path / "fsc.parquet"
    ds.to_parquet(str(root))
    c = hf.load(root, label_columns=["action"], split_column="part")
    assert c.classes == ["activate", "deactivate", "increase"] and c.name == "fsc"
    assert {r.source: (r.split, r.labels) for r in c.records} == {
        "train/u0.wav": ("train", [0]), "train/u1.wav": ("train", [2]), "train/u2.wav": ("valid", [0]),
        "train/u3.wav": ("test", [1])}
    assert c.records[0].extra == {"object": "lights"}
    both = hf.load(root, label_columns=["action", "object"], split_column="part")
    assert both.multi_label and both.classes == ["action:activate", "action:deactivate", "action:increase",
                                                 "object:heat", "object:lights", "object:music"]
    assert both.info["label_groups"] == {"action": [0, 3], "object": [3, 6]}
    assert [both.classes[i] for i in both.records[1].labels] == ["action:increase", "object:heat"]


def test_path_only_audio_and_bad_rows(tmp_path: Path) -> None:
    paths = [write_tone(tmp_path / "src" / f"c{i}.wav", seconds=0.1, sr=16000, seed=i) for i in range(3)]
    gone = write_tone(tmp_path / "gone.wav", seconds=0.1)  # datasets needs it while writing; removed below
    ds = Dataset.from_dict({"audio": [str(p) for p in paths] + [str(gone), str(paths[0])],
                            "label": [0, 1, None, 0, 1], "fold": ["1", "2", "3", "4", "x"]})
    ds = ds.cast_column("audio", Audio())
    root = tmp_path / "local"
    ds.to_parquet(str(root / "train-00000-of-00001.parquet"))  # to_parquet keeps paths, not bytes
    gone.unlink()
    c = hf.load(root, fold_column="fold")
    assert c.classes == ["0", "1"]
    assert [(r.source, r.path, r.audio, r.labels, r.fold) for r in c.records] == [
        ("train/c0.wav", paths[0], None, [0], 1), ("train/c1.wav", paths[1], None, [1], 2)]
    where = str(root / "train-00000-of-00001.parquet")
    assert [(p.where, p.reason) for p in c.problems] == [
        (f"{where}:row 2", "no label in column 'label'"),
        (f"{where}:row 3", "audio not embedded and file " + str(tmp_path / "gone.wav") + " not found"),
        (f"{where}:row 4", "fold 'x' in column 'fold' is not an integer"),
    ]
    dup = Dataset.from_dict({"audio": [str(paths[0]), str(paths[0])], "label": [0, 1]}).cast_column("audio", Audio())
    dup.to_parquet(str(tmp_path / "dup" / "x.parquet"))
    d = hf.load(tmp_path / "dup")
    assert [p.reason for p in d.problems] == [
        f"duplicate clip name 'train/c0.wav' (also {tmp_path}/dup/x.parquet:row 0); name clips with --source-column"]


def test_wrong_root_and_columns(tmp_path: Path) -> None:
    esc_dataset(tmp_path).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(RecipeError, match=r"expected a Hugging Face dataset at .*empty.*save_to_disk"):
        (tmp_path / "empty").mkdir()
        hf.load(tmp_path / "empty")
    with pytest.raises(RecipeError, match=r"no 'label' column and 0 ClassLabel columns.*--label-column"):
        hf.load(tmp_path / "saved")
    with pytest.raises(RecipeError, match=r"no column 'labels'; columns are \['filename'"):
        hf.load(tmp_path / "saved", label_columns=["labels"])
    with pytest.raises(RecipeError, match=r"label column 'esc10' holds neither"):
        hf.load(tmp_path / "saved", label_columns=["esc10"])
    c = hf.load(tmp_path / "saved", **ESC_OPTIONS)
    assert len(c.records) == 4 and c.problems == [] and c.records[0].audio is not None
