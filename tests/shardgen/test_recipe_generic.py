"""The generic recipes: csv (any metadata table) and folder (one sub-folder per class)."""
from __future__ import annotations

from pathlib import Path

import pytest

from shardgen.recipes import get
from shardgen.records import RecipeError
from tests.conftest import write_tone


def test_csv_columns_extras_multilabel_and_problems(tmp_path: Path) -> None:
    for name in ("a.wav", "b.flac", "sub/c.ogg"):
        write_tone(tmp_path / name, 0.1)
    (tmp_path / "metadata.csv").write_text(
        "path,labels,split,fold,group,speaker\r\n"
        "a.wav,dog;cat,train,1,g1,alice\r\n"
        "b.flac,cat,valid,,g2,bob\r\n"
        "sub/c.ogg,,noise,,g3,\r\n"
        "missing.wav,dog,train,2,g4,carol\r\n"
        "a.wav,horse,train,1,g1,dave\r\n"
        "b.flac,cat,train,x,g2,eve")  # no final newline
    col = get("csv").load(tmp_path)
    assert col.classes == ["cat", "dog", "horse"] and col.multi_label
    recs = {r.key: r for r in reversed(col.records)}  # first occurrence wins
    assert [r.key for r in col.records].count("a") == 2  # the duplicate row is the writer's to reject
    assert set(recs) == {"a", "b", "sub_c"}
    assert recs["a"].labels == [0, 1] and recs["a"].fold == 1 and recs["a"].extra == {"speaker": "alice"}
    assert (recs["b"].split, recs["b"].fold, recs["b"].group) == ("valid", None, "g2")
    assert recs["sub_c"].labels == [] and recs["sub_c"].split == "noise"
    where = {p.where.rsplit(":", 1)[1]: p.reason for p in col.problems}
    assert "not found" in where["5"] and "fold 'x'" in where["7"]
    assert col.info["split_rule"]


def test_csv_vocabulary_file_and_unknown_label(tmp_path: Path) -> None:
    write_tone(tmp_path / "a.wav", 0.1)
    (tmp_path / "classes.txt").write_text("dog\ncat\n")
    (tmp_path / "metadata.csv").write_text("path,labels\na.wav,cat\na.wav,bird\n")
    col = get("csv").load(tmp_path)
    assert col.classes == ["dog", "cat"] and col.records[0].labels == [1]
    assert col.problems[0].where.endswith("metadata.csv:3") and "bird" in col.problems[0].reason


def test_csv_wrong_root_and_wrong_columns(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="expected metadata.csv"):
        get("csv").load(tmp_path)
    (tmp_path / "metadata.csv").write_text("file,label\n")
    with pytest.raises(RecipeError, match=r"missing column\(s\) \['path'\]"):
        get("csv").load(tmp_path)


def test_folder_with_and_without_split_level(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    write_tone(flat / "dog" / "x.wav", 0.1)
    write_tone(flat / "dog" / "session1" / "y.flac", 0.1)
    write_tone(flat / "cat" / "z.ogg", 0.1)
    col = get("folder").load(flat)
    assert col.classes == ["cat", "dog"] and not col.multi_label
    recs = {r.key: r for r in col.records}
    assert recs["dog_session1_y"].group == "session1" and recs["dog_x"].group == ""
    assert {r.split for r in col.records} == {"train"} and recs["cat_z"].labels == [0]

    split = tmp_path / "split"
    write_tone(split / "train" / "dog" / "a.wav", 0.1)
    write_tone(split / "valid" / "cat" / "b.wav", 0.1)
    write_tone(split / "test" / "dog" / "c.mp3", 0.1, fmt="MP3")
    col = get("folder").load(split)
    assert col.classes == ["cat", "dog"]
    assert {r.key: r.split for r in col.records} == {"train_dog_a": "train", "valid_cat_b": "valid", "test_dog_c": "test"}


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="no class folders"):
        get("folder").load(tmp_path)
    (tmp_path / "dog").mkdir()
    with pytest.raises(RecipeError, match="no audio files"):
        get("folder").load(tmp_path)
