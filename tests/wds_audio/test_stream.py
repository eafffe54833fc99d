"""wds_audio.stream's tar reader against Python's tarfile: every format, long names, damage."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from wds_audio.stream import iter_members

LONG = "d" * 60 + "/" + "e" * 80 + ".json"


def _reference(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf.getmembers() if m.isreg()]  # type: ignore[union-attr]


def test_members_of_packed_shards_equal_tarfile(demo_shards: Path) -> None:
    shards = sorted(demo_shards.rglob("*.tar"))
    assert shards
    for path in shards:
        data = path.read_bytes()
        assert list(iter_members(io.BytesIO(data), str(path))) == _reference(data)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_and_non_ascii_names_in_every_format(fmt: int) -> None:
    names = ["a/b.flac", LONG, "x.labels"] + (["clé-ü.wav"] if fmt != tarfile.USTAR_FORMAT else [])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name in names:
            info = tarfile.TarInfo(name)
            payload = name.encode() * 3
            info.size = len(payload)
            t.addfile(info, io.BytesIO(payload))
    got = list(iter_members(io.BytesIO(buf.getvalue()), "mem"))
    assert got == _reference(buf.getvalue()) and [n for n, _ in got] == names


def test_a_damaged_header_is_an_error_not_a_member() -> None:
    block = bytearray(512)
    block[:5] = b"hello"
    block[148:156] = b"0000000\0"  # a checksum that does not match
    with pytest.raises(tarfile.TarError):
        list(iter_members(io.BytesIO(bytes(block) + bytes(1024)), "mem"))


def test_a_shard_cut_inside_a_member_is_a_read_error(demo_shards: Path) -> None:
    data = next(iter(sorted(demo_shards.rglob("*.tar")))).read_bytes()
    with pytest.raises(tarfile.ReadError, match="ends inside"):
        list(iter_members(io.BytesIO(data[:1500]), "cut.tar"))
