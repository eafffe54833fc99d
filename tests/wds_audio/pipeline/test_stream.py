"""wds_audio.pipeline.shards: the tar reader, against Python's tarfile: every format, long names, damage."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

import numpy as np

from wds_audio.pipeline.config import LoaderConfig
from wds_audio.pipeline.shards import iter_members

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


@pytest.mark.parametrize("size,initial", [(256, 32), (10, 32), (64, 1), (1, 1)])
def test_shuffle_reads_counts_what_the_shuffle_buffer_has_read(size: int, initial: int) -> None:
    from wds_audio.pipeline.shuffle import shuffle, shuffle_reads

    read = 0

    def source(n: int):
        nonlocal read
        for i in range(n):
            read += 1
            yield i

    n = 600
    for k, _ in enumerate(shuffle(source(n), size, np.random.default_rng(0), initial)):
        if read == n:  # draining: nothing more to read
            break
        assert read == shuffle_reads(k, size, initial), f"sample {k}"


def test_read_batch_is_the_batch_being_made_when_a_sample_is_read() -> None:
    from wds_audio.pipeline.shuffle import read_batch, shuffle_reads

    train = LoaderConfig(source="x", batch_size=4, sample_rate=16000, training=True, shuffle_buffer=16)
    for offset in range(200):
        b = read_batch(offset, train)
        first_yield = b * 4  # the batch's first sample: the offset was not read before the batch began...
        assert shuffle_reads(first_yield + 3, 16, 4) > offset  # ...and is read by its last sample
        assert b == 0 or shuffle_reads(first_yield - 1, 16, 4) <= offset
    assert read_batch(8, train, skip_batches=1) == 0  # counted after the batches skipped on resume
    evaluation = LoaderConfig(source="x", batch_size=4, sample_rate=16000, training=False)
    assert [read_batch(o, evaluation) for o in (0, 3, 4, 11)] == [0, 0, 1, 2]
