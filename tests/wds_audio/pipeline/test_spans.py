"""wds_audio.pipeline.spans: local clips held as their place in the shard, against the bytes themselves."""
from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import pytest
import torch

import wds_audio
from wds_audio.io.options import SourceError, SourceOptions
from wds_audio.pipeline.catalog import Catalog
from wds_audio.pipeline.plan import Slice
from wds_audio.pipeline.reservoir import sample_nbytes
from wds_audio.pipeline.samples import AUDIO_EXTS
from wds_audio.pipeline.shards import ShardReader
from wds_audio.pipeline.spans import _FILES, OPEN_FILES, Span, identity, read_span, with_bytes
from wds_audio.pipeline.rebalance import Rebalance

pytestmark = pytest.mark.numeric  # decoded audio compared bit for bit: also run by `make test-isa`


def _tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isreg()}  # type: ignore[union-attr]


def _catalog(src: Path, **options) -> Catalog:
    return Catalog.open(str(src), "train", None, None, SourceOptions(**options))


@pytest.mark.parametrize("verify", [False, True])
@pytest.mark.parametrize("part", ["whole", "slice"])
def test_spans_name_the_same_bytes_as_the_tar(demo_shards: Path, verify: bool, part: str) -> None:
    cat = _catalog(demo_shards, verify_local=verify)
    reader = ShardReader(cat, SourceOptions(verify_local=verify), by_reference=AUDIO_EXTS)
    shard = cat.shards[0]
    ref = _tar_members(Path(shard.url))
    sl = Slice(0, 0, shard.samples) if part == "whole" else Slice(0, 3, shard.samples - 2)
    got = list(reader.read(sl))
    assert len(got) == len(sl)
    spans = 0
    for s in got:
        for ext, v in s.items():
            if ext.startswith("__"):
                continue
            if ext in AUDIO_EXTS:
                assert isinstance(v, Span) and v.path == os.path.abspath(shard.url)
                spans += 1
            else:
                assert isinstance(v, bytes)  # labels and json stay in memory: rebalancing reads them
        full = with_bytes(s)
        assert {f"{s['__key__']}.{e}": full[e] for e in full if not e.startswith("__")} == \
            {n: b for n, b in ref.items() if n.split(".", 1)[0] == s["__key__"]}
    assert spans == len(sl)


def test_a_whole_shard_check_still_sees_the_bytes_kept_as_spans(demo_shards: Path, tmp_path: Path) -> None:
    src = tmp_path / "ds"
    shutil.copytree(demo_shards, src)
    cat = _catalog(src)
    path = Path(cat.shards[0].url)
    data = bytearray(path.read_bytes())
    with tarfile.open(path) as tf:
        audio = next(m for m in tf.getmembers() if m.name.endswith((".flac", ".wav")))
    data[audio.offset_data + audio.size // 2] ^= 0xFF  # inside a clip: its CRC would catch it only when decoded
    path.write_bytes(bytes(data))
    reader = ShardReader(cat, SourceOptions(verify_local=True), by_reference=AUDIO_EXTS)
    with pytest.raises(SourceError, match="sha256 mismatch"):
        list(reader.read(Slice(0, 0, cat.shards[0].samples)))


def test_without_local_spans_the_reader_holds_bytes(demo_shards: Path) -> None:
    cat = _catalog(demo_shards)
    reader = ShardReader(cat, SourceOptions(local_spans=False), by_reference=AUDIO_EXTS)
    assert all(isinstance(v, bytes) for s in reader.read(Slice(0, 0, 4)) for k, v in s.items() if not k.startswith("__"))


def test_a_replaced_or_rewritten_file_is_an_error_not_other_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"0123456789")
    span = Span(str(path), identity(os.stat(path)), 2, 5)
    assert read_span(span) == b"23456"
    new = tmp_path / "b.bin"
    new.write_bytes(b"abcdefghij")
    os.replace(new, path)  # another inode under the same name
    assert read_span(span) == b"23456"  # through the descriptor still open on the file that was read
    _FILES.close()  # as when it is the least recently used of more than OPEN_FILES
    with pytest.raises(OSError, match="changed after it was read"):
        read_span(span)
    span = Span(str(path), identity(os.stat(path)), 2, 5)
    assert read_span(span) == b"cdefg"
    st = os.stat(path)
    with open(path, "r+b") as f:  # rewritten in place: the modification time moves on
        f.write(b"X")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with pytest.raises(OSError, match="changed after it was read"):
        read_span(span)


def test_open_descriptors_stay_bounded(tmp_path: Path) -> None:
    spans = []
    for i in range(OPEN_FILES + 5):
        p = tmp_path / f"{i}.bin"
        p.write_bytes(bytes([i]) * 4)
        spans.append(Span(str(p), identity(os.stat(p)), 1, 2))
    assert [read_span(s) for s in spans + spans] == [bytes([i]) * 2 for i in range(OPEN_FILES + 5)] * 2
    assert len(_FILES.fds) == OPEN_FILES


def test_a_span_whose_bytes_begin_otherwise_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"0123456789")
    ident = identity(os.stat(path))
    assert read_span(Span(str(path), ident, 2, 5, b"23")) == b"23456"
    with pytest.raises(OSError, match="do not begin as they did"):
        read_span(Span(str(path), ident, 3, 5, b"23"))


def test_a_slice_read_without_its_index_names_the_right_bytes(demo_shards: Path, tmp_path: Path) -> None:
    src = tmp_path / "ds"
    shutil.copytree(demo_shards, src)
    for idx in src.rglob("*.idx"):
        idx.unlink()  # read from the shard's start, skipping the samples before the slice
    cat = _catalog(src)
    path = Path(cat.shards[1].url)
    ref = _tar_members(path)
    reader = ShardReader(cat, SourceOptions(), by_reference=AUDIO_EXTS)
    got = list(reader.read(Slice(1, 5, cat.shards[1].samples)))
    assert len(got) == cat.shards[1].samples - 5
    for s in got:
        full = with_bytes(s)
        assert {f"{s['__key__']}.{e}": full[e] for e in full if not e.startswith("__")} == \
            {n: b for n, b in ref.items() if n.split(".", 1)[0] == s["__key__"]}


def test_a_span_past_the_end_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"0123")
    with pytest.raises(OSError, match="2 of 5 bytes"):
        read_span(Span(str(path), identity(os.stat(path)), 2, 5))


def test_a_span_weighs_its_bytes_in_the_reservoir_budget(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(bytes(100))
    span = Span(str(path), identity(os.stat(path)), 0, 100)
    assert sample_nbytes({"flac": span, "labels": b"\1\0"}) == sample_nbytes({"flac": read_span(span), "labels": b"\1\0"}) == 102


def _epoch(loader) -> list:
    return [(b.keys, b.audio.clone(), b.targets.clone(), b.lengths.clone()) for b in loader]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("rebalance", [False, True])
def test_loader_batches_are_the_same_with_spans_or_bytes(demo_shards: Path, workers: int, rebalance: bool) -> None:
    def epoch(spans: bool) -> list:
        reb = Rebalance("uniform", buffer_bytes=1 << 20, max_reuse=4) if rebalance else None
        return _epoch(wds_audio.loader(str(demo_shards), split="train", batch_size=8, sample_rate=16000,
                                       clip_seconds=1.0, seed=3, num_workers=workers, rebalance=reb,
                                       source_options=SourceOptions(local_spans=spans)))
    a, b = epoch(True), epoch(False)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x[0] == y[0] and all(torch.equal(p, q) for p, q in zip(x[1:], y[1:]))


def test_a_shard_replaced_mid_epoch_costs_only_its_held_clips_counted(demo_shards: Path, tmp_path: Path) -> None:
    src = tmp_path / "ds"
    shutil.copytree(demo_shards, src)
    loader = wds_audio.loader(str(src), split="train", batch_size=8, sample_rate=16000, clip_seconds=1.0, seed=3,
                              streams=1, shuffle_buffer=64)
    it = iter(loader)
    next(it)  # the stream's buffer now holds clips of the first shards as spans
    for tar in sorted(src.rglob("*.tar")):
        copy = tar.with_suffix(".new")
        shutil.copyfile(tar, copy)
        os.replace(copy, tar)  # the same bytes, another file: what was checked is not what is there now
    rest = list(it)
    m = loader.metrics()
    assert len(rest) == len(loader) - 1
    assert m["skipped"].get("read_error", 0) > 0
    assert any("changed after it was read" in k for k in m["skipped_keys"])
