"""shardgen verify catches damage: flipped byte, truncated tar, missing member, stale index."""
from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from shardgen.cli import main
from shardgen.verify import verify
from shardgen.writer import MANIFEST


@pytest.fixture
def dataset(demo_shards: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    shutil.copytree(demo_shards, out)
    return out


def _first_shard(ds: Path) -> tuple[Path, dict]:
    m = json.loads((ds / MANIFEST).read_text())
    s = m["splits"]["train"]["shards"][0]
    return ds / s["path"], s


def test_clean_dataset_passes(dataset: Path, capsys) -> None:
    assert verify(str(dataset), progress=False) == []
    assert main(["verify", str(dataset)]) == 0
    assert "OK" in capsys.readouterr().out


def test_flipped_byte_is_caught(dataset: Path) -> None:
    path, s = _first_shard(dataset)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    problems = verify(str(dataset), progress=False)
    assert any(s["path"] in p and "sha256 mismatch" in p for p in problems)
    assert main(["verify", str(dataset)]) == 1


def test_truncated_tar_is_caught(dataset: Path) -> None:
    path, s = _first_shard(dataset)
    path.write_bytes(path.read_bytes()[: s["bytes"] // 2])
    problems = verify(str(dataset), progress=False)
    assert any(s["path"] in p and "not a complete tar" in p for p in problems)
    assert any("bytes, dataset.json says" in p for p in problems)


def test_missing_member_is_caught_by_key(dataset: Path) -> None:
    path, s = _first_shard(dataset)
    src = tarfile.open(path)
    members = src.getmembers()
    victim = next(m for m in members if m.name.endswith(".labels"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as dst:
        for m in members:
            if m.name != victim.name:
                dst.addfile(m, src.extractfile(m))
    path.write_bytes(buf.getvalue())
    key = victim.name.split(".")[0]
    problems = verify(str(dataset), progress=False)
    assert f"{s['path']}: {key}: no labels member" in problems
    assert any("index" in p and "does not match" in p for p in problems)


def test_undecodable_clip_is_caught(dataset: Path) -> None:
    path, s = _first_shard(dataset)
    src = tarfile.open(path)
    buf = io.BytesIO()
    victim = None
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if victim is None and m.name.endswith(".flac"):
                victim, data = m.name, b"fLaC" + b"\x00" * (len(data) - 4)
            dst.addfile(m, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    problems = verify(str(dataset), progress=False)
    assert any(victim.split(".")[0] in p and "does not decode" in p for p in problems)


def test_missing_manifest(tmp_path: Path) -> None:
    problems = verify(str(tmp_path), progress=False)
    assert problems and "dataset.json: cannot read" in problems[0]
