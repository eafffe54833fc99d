"""Shards over HTTP from a server that injects faults: for every fault the bytes read equal the
file's bytes and the tar gives the fault-free keys, the metrics count the retries, and a shard
that keeps failing raises SourceError with its reason after the configured retries."""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tarfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from wds_audio.io.open import fetch_shard, open_shard, read_bytes
from wds_audio.io.options import SourceError, SourceMetrics, SourceOptions
from wds_audio.io.prefetch import prefetch

from .faultserver import Fault, FaultServer
from .shards import shards, tar_keys

pytestmark = pytest.mark.integration

OPTS = SourceOptions(timeout_s=0.5, retries=3, backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture
def big(demo_shards: Path) -> dict[str, Any]:
    """The largest shard, with its local bytes and fault-free keys."""
    entry = dict(max(shards(demo_shards), key=lambda s: s["bytes"]))
    entry["data"] = (demo_shards / entry["path"]).read_bytes()
    with open(demo_shards / entry["path"], "rb") as f:
        entry["keys"] = tar_keys(f)
    assert entry["bytes"] > 600_000 and len(entry["keys"]) > 5
    return entry


def ranges(srv: FaultServer, path: str) -> list[int]:
    """The start offset of each request for ``path`` (0 for a request without Range)."""
    return [int(r[len("bytes="):].split("-")[0]) if r else 0 for p, r, _ in srv.log if p == path]


# The read timeout is long where a timeout is not the fault, so that a response slow to start on a
# loaded CI host is never retried as one; where it is the fault, the fault outlasts it well.
@pytest.mark.parametrize("fault,reason,requests,timeout_s", [
    (Fault(reset_after=300_000), "reset", 2, 10.0),
    (Fault(truncate_after=300_000), "truncated", 2, 10.0),
    (Fault(stall_after=300_000, stall_s=10.0), "timeout", 2, 1.5),
    (Fault(status=503, times=2), "http 503", 3, 10.0),
    (Fault(status=500), "http 500", 2, 10.0),
    (Fault(latency_s=0.2, times=None), None, 1, 10.0),
    (Fault(latency_s=3.0), "timeout", 2, 1.0),
], ids=["reset", "truncated", "stall", "503x2", "500", "latency", "no-headers"])
def test_each_fault_gives_the_same_bytes_and_keys(fault_server: FaultServer, big: dict[str, Any], fault: Fault,
                                                  reason: str | None, requests: int, timeout_s: float) -> None:
    fault_server.add_fault(big["path"], fault)
    m = SourceMetrics()
    opts = replace(OPTS, timeout_s=timeout_s)
    with open_shard(fault_server.url(big["path"]), options=opts, metrics=m, expected_bytes=big["bytes"],
                    expected_sha256=big["sha256"]) as f:
        assert tar_keys(f) == big["keys"]
    with open_shard(fault_server.url(big["path"]), options=opts, expected_sha256=big["sha256"]) as f:
        assert f.read() == big["data"]
    assert m.retries() == ({reason: 1 if reason != "http 503" else 2} if reason else {})
    assert fault_server.requests[big["path"]] == requests + 1
    starts = ranges(fault_server, big["path"])[:requests]
    if fault.truncate_after or fault.stall_after:
        # Every byte sent before the fault arrived, so the resume starts exactly there.
        assert starts == [0, 300_000] and m["resumes"] == 1
    elif fault.reset_after:
        # A reset may discard bytes still in the socket buffer: resume at or before the cut.
        assert 0 <= starts[1] <= 300_000
    else:
        assert set(starts) == {0}
    assert m["failed_shards"] == 0


def test_repeated_drops_still_make_progress(fault_server: FaultServer, big: dict[str, Any]) -> None:
    fault_server.add_fault(big["path"], Fault(truncate_after=150_000, times=None))
    needed = math.ceil(big["bytes"] / 150_000)
    opts = SourceOptions(timeout_s=0.5, retries=needed - 1, backoff_s=0.0)
    m = SourceMetrics()
    with open_shard(fault_server.url(big["path"]), options=opts, metrics=m, expected_sha256=big["sha256"]) as f:
        assert f.read() == big["data"]
    assert ranges(fault_server, big["path"]) == [150_000 * i for i in range(needed)]
    assert m.retries() == {"truncated": needed - 1} and m["resumes"] == needed - 1


def test_server_ignoring_range_on_resume(fault_server: FaultServer, big: dict[str, Any]) -> None:
    fault_server.add_fault(big["path"], Fault(truncate_after=300_000))
    fault_server.add_fault(big["path"], Fault(ignore_range=True, times=None))
    with open_shard(fault_server.url(big["path"]), options=OPTS, expected_sha256=big["sha256"]) as f:
        assert tar_keys(f) == big["keys"]
    assert [s for _, _, s in fault_server.log] == [200, 200]  # the second answer was the whole file


@pytest.mark.parametrize("fault,reason,timeout_s", [
    (Fault(status=503, times=None), "http 503", 10.0),
    (Fault(stall_after=0, stall_s=5.0, times=None), "timeout", 0.3),
    (Fault(reset_after=0, times=None), "reset", 10.0),
])
def test_a_shard_that_keeps_failing_raises_after_the_retries(fault_server: FaultServer, big: dict[str, Any],
                                                             fault: Fault, reason: str, timeout_s: float) -> None:
    fault_server.add_fault(big["path"], fault)
    opts = SourceOptions(timeout_s=timeout_s, retries=2, backoff_s=0.01)
    m = SourceMetrics()
    with pytest.raises(SourceError) as err:
        with open_shard(fault_server.url(big["path"]), options=opts, metrics=m) as f:
            f.read()
    assert (err.value.reason, err.value.retries) == (reason, 2)
    assert big["path"] in str(err.value) and "after 2 retries" in str(err.value)
    assert fault_server.requests[big["path"]] == 3
    assert m.retries() == {reason: 2} and m["failed_shards"] == 1


def test_not_found_is_not_retried(fault_server: FaultServer) -> None:
    m = SourceMetrics()
    with pytest.raises(SourceError, match="train/missing.tar: http 404") as err:
        open_shard(fault_server.url("train/missing.tar"), options=OPTS, metrics=m)
    assert err.value.retries == 0 and fault_server.requests["train/missing.tar"] == 1
    assert m.retries() == {} and m["failed_shards"] == 1


def test_wrong_size_or_checksum_is_reported(fault_server: FaultServer, big: dict[str, Any]) -> None:
    url = fault_server.url(big["path"])
    with pytest.raises(SourceError, match=f"object is {big['bytes']} bytes, dataset.json says 1000"):
        open_shard(url, options=OPTS, expected_bytes=1000)
    with open_shard(url, options=OPTS, expected_sha256="0" * 64) as f:
        with pytest.raises(SourceError, match="sha256 mismatch"):
            f.read()
    fault_server.clear()
    m = SourceMetrics()
    with pytest.raises(SourceError, match="sha256 mismatch"):
        fetch_shard(url, options=OPTS, metrics=m, expected_sha256="0" * 64)
    assert fault_server.requests[big["path"]] == 2  # fetched, then refetched once
    assert m.retries() == {"checksum": 1} and m["failed_shards"] == 1


def test_an_epoch_with_a_fault_in_every_shard_reads_every_key_once(fault_server: FaultServer,
                                                                    demo_shards: Path) -> None:
    entries = shards(demo_shards)
    expected = {}
    for s in entries:
        with open(demo_shards / s["path"], "rb") as f:
            expected[s["path"]] = tar_keys(f)
    fault_server.add_fault("dataset.json", Fault(status=503))
    for i, s in enumerate(entries):
        cut = s["bytes"] // 3
        kind = [Fault(reset_after=cut), Fault(truncate_after=cut), Fault(stall_after=cut, stall_s=5.0),
                Fault(status=503)][i % 4]
        fault_server.add_fault(s["path"], kind)
    m = SourceMetrics()
    manifest = json.loads(read_bytes(fault_server.url("dataset.json"), options=OPTS, metrics=m))
    assert [s["path"] for sp in manifest["splits"].values() for s in sp["shards"]] == [s["path"] for s in entries]

    def fetch(url: str) -> BinaryIO:
        s = by_url[url]
        return fetch_shard(url, options=OPTS, metrics=m, expected_bytes=s["bytes"], expected_sha256=s["sha256"])

    by_url = {fault_server.url(s["path"]): s for s in entries}
    got = {}
    for url, f in prefetch(list(by_url), fetch, depth=2, metrics=m):
        assert not isinstance(f, Exception), f
        with f:
            got[by_url[url]["path"]] = tar_keys(f)
    assert got == expected
    assert m["failed_shards"] == 0
    assert sum(m.retries().values()) == len(entries) + 1  # one per shard + dataset.json
    assert m["bytes_read"] >= sum(s["bytes"] for s in entries)


def sample_slice(root: Path, rel: str, first: int, count: int) -> tuple[int, int, list[str]]:
    """Byte range of samples ``first:first+count`` of a local tar (header of the first member
    to the header after the last), and their keys: what the loader reads with the DALI .idx."""
    starts: list[tuple[int, str]] = []
    with tarfile.open(root / rel, "r:") as tf:
        for m in tf.getmembers():
            key = m.name.split(".", 1)[0]
            if not starts or starts[-1][1] != key:
                starts.append((m.offset, key))
    return starts[first][0], starts[first + count][0], [k for _, k in starts[first:first + count]]


@pytest.mark.parametrize("extra", [None, Fault(ignore_range=True, times=None)], ids=["range", "range-ignored"])
def test_a_byte_range_is_asked_for_and_resumed_inside_it(fault_server: FaultServer, demo_shards: Path,
                                                         big: dict[str, Any], extra: Fault | None) -> None:
    start, end, keys = sample_slice(demo_shards, big["path"], 3, 5)
    fault_server.add_fault(big["path"], Fault(truncate_after=50_000))
    if extra:
        fault_server.add_fault(big["path"], extra)
    m = SourceMetrics()
    with open_shard(fault_server.url(big["path"]), options=OPTS, metrics=m, start=start, length=end - start,
                    expected_bytes=big["bytes"], expected_sha256=big["sha256"]) as f:
        data = f.read()
    assert data == big["data"][start:end]
    assert tar_keys(io.BytesIO(data)) == keys
    asked = [r for _, r, _ in fault_server.log]
    assert asked == [f"bytes={start}-{end - 1}", f"bytes={start + 50_000}-{end - 1}"]
    assert m.retries() == {"truncated": 1} and m["resumes"] == 1


def test_a_byte_range_from_the_cache(fault_server: FaultServer, demo_shards: Path, big: dict[str, Any],
                                     tmp_path: Path) -> None:
    start, end, keys = sample_slice(demo_shards, big["path"], 2, 4)
    opts = SourceOptions(timeout_s=0.5, cache_dir=str(tmp_path))
    for _ in range(2):
        with open_shard(fault_server.url(big["path"]), options=opts, start=start, length=end - start,
                        expected_sha256=big["sha256"]) as f:
            assert tar_keys(f) == keys
    assert fault_server.log == [(big["path"], None, 200)]  # the whole shard, once


def test_webdataset_reads_a_resumed_stream(fault_server: FaultServer, big: dict[str, Any]) -> None:
    from webdataset.tariterators import tar_file_iterator

    fault_server.add_fault(big["path"], Fault(reset_after=200_000))
    fault_server.add_fault(big["path"], Fault(truncate_after=250_000))
    with open_shard(fault_server.url(big["path"]), options=OPTS, expected_sha256=big["sha256"]) as f:
        names = [s["fname"] for s in tar_file_iterator(f)]
    with tarfile.open(fileobj=open(Path(fault_server.root) / big["path"], "rb"), mode="r|") as tf:
        assert names == [m.name for m in tf if m.isreg()]


def test_cache_fills_once_then_serves_from_disk(fault_server: FaultServer, big: dict[str, Any],
                                                tmp_path: Path) -> None:
    opts = SourceOptions(timeout_s=0.5, retries=3, backoff_s=0.01, cache_dir=str(tmp_path / "cache"),
                         cache_bytes=10 << 20)
    url = fault_server.url(big["path"])
    fault_server.add_fault(big["path"], Fault(reset_after=400_000))  # the fill itself resumes
    m = SourceMetrics()
    for _ in range(2):
        with open_shard(url, options=opts, metrics=m, expected_sha256=big["sha256"]) as f:
            assert tar_keys(f) == big["keys"]
    assert fault_server.requests[big["path"]] == 2  # one fill, resumed once; the second read was a hit
    assert (m["cache_misses"], m["cache_hits"], m.retries()) == (1, 1, {"reset": 1})

    cached = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    assert len(cached) == 1 and hashlib.sha256(cached[0].read_bytes()).hexdigest() == big["sha256"]
    cached[0].write_bytes(cached[0].read_bytes()[:1000])  # damaged on disk
    with fetch_shard(url, options=opts, metrics=m, expected_sha256=big["sha256"]) as f:
        assert f.read() == big["data"]
    assert m["cache_corrupt"] == 1 and fault_server.requests[big["path"]] == 3


def test_cache_never_publishes_a_shard_with_the_wrong_checksum(fault_server: FaultServer, big: dict[str, Any],
                                                               tmp_path: Path) -> None:
    opts = SourceOptions(timeout_s=0.5, retries=1, backoff_s=0.01, cache_dir=str(tmp_path))
    m = SourceMetrics()
    with pytest.raises(SourceError, match="sha256 mismatch"):
        open_shard(fault_server.url(big["path"]), options=opts, metrics=m, expected_sha256="f" * 64)
    assert m.retries() == {"checksum": 1} and fault_server.requests[big["path"]] == 2
    assert [p.name for p in tmp_path.iterdir()] == [".locks"]


# ---- verify_remote: each version of an object hashed once per process ----------------------------


def _read_whole(how: str, url: str, opts: SourceOptions, m: SourceMetrics, entry: dict[str, Any]) -> bytes:
    kw = dict(options=opts, metrics=m, expected_bytes=entry["bytes"],
              expected_sha256=hashlib.sha256(entry["data"]).hexdigest())
    with (fetch_shard if how == "fetch" else open_shard)(url, **kw) as f:
        return f.read()


@pytest.fixture
def own_copy(serve: Any, big: dict[str, Any], tmp_path: Path) -> tuple[FaultServer, Path]:
    """A server of its own with one copy of the big shard (the test rewrites it)."""
    path = tmp_path / "srv" / "a.tar"
    path.parent.mkdir()
    path.write_bytes(big["data"])
    return serve(path.parent), path


@pytest.mark.parametrize("how", ["fetch", "stream"])
def test_verify_once_hashes_each_version_of_an_object_once(own_copy: tuple[FaultServer, Path],
                                                           big: dict[str, Any], how: str) -> None:
    """verify_remote="once" (the default): the first whole read is hashed, later reads with the same
    strong ETag are not; a rewrite (new ETag) is hashed again and caught. Damage that keeps the ETag
    (bit rot: same size, same mtime) is only caught by "always", as documented."""
    srv, path = own_copy
    url, m = srv.url("a.tar"), SourceMetrics()
    once = replace(OPTS, verify_remote="once")
    assert SourceOptions().verify_remote == "once"
    for _ in range(3):
        assert _read_whole(how, url, once, m, big) == big["data"]
    assert (m["sha256_checked"], m["sha256_skipped"]) == (1, 2)

    bad = bytearray(big["data"])
    bad[len(bad) // 2] ^= 0x55
    mtime = path.stat().st_mtime_ns
    path.write_bytes(bytes(bad))
    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))  # rewritten: a new mtime, so a new ETag
    with pytest.raises(SourceError, match="sha256 mismatch"):
        _read_whole(how, url, once, m, big)

    os.utime(path, ns=(mtime, mtime))  # the same damage under the checked version's ETag
    assert _read_whole(how, url, once, SourceMetrics(), big) == bytes(bad)
    with pytest.raises(SourceError, match="sha256 mismatch"):
        _read_whole(how, url, replace(OPTS, verify_remote="always"), SourceMetrics(), big)


@pytest.mark.parametrize("etag", [None, "weak"])
def test_without_a_strong_etag_every_read_is_hashed(own_copy: tuple[FaultServer, Path], big: dict[str, Any],
                                                    etag: str | None) -> None:
    srv, _ = own_copy
    srv.etag = etag
    m = SourceMetrics()
    for how in ("fetch", "stream", "fetch"):
        assert _read_whole(how, srv.url("a.tar"), OPTS, m, big) == big["data"]
    assert (m["sha256_checked"], m["sha256_skipped"]) == (3, 0)


@pytest.mark.parametrize("mode,checked", [("always", 3), ("never", 0)])
def test_verify_always_and_never(own_copy: tuple[FaultServer, Path], big: dict[str, Any], mode: str,
                                 checked: int) -> None:
    srv, path = own_copy
    m = SourceMetrics()
    opts = replace(OPTS, verify_remote=mode)
    for how in ("fetch", "stream", "fetch"):
        assert _read_whole(how, srv.url("a.tar"), opts, m, big) == big["data"]
    assert (m["sha256_checked"], m["sha256_skipped"]) == (checked, 0)
    bad = bytearray(big["data"])
    bad[len(bad) // 2] ^= 0x55
    path.write_bytes(bytes(bad))
    for how in ("fetch", "stream"):
        if mode == "never":  # the bytes are used as they come
            assert _read_whole(how, srv.url("a.tar"), opts, m, big) == bytes(bad)
        else:
            with pytest.raises(SourceError, match="sha256 mismatch"):
                _read_whole(how, srv.url("a.tar"), opts, m, big)


def test_an_object_changed_between_a_drop_and_its_resume_is_not_spliced(own_copy: tuple[FaultServer, Path],
                                                                        big: dict[str, Any]) -> None:
    """The resume's ETag differs from the first response's: the read fails instead of joining the
    old object's head to the new one's tail, even under "once" and after a checked read."""
    srv, path = own_copy
    url, m = srv.url("a.tar"), SourceMetrics()
    assert _read_whole("stream", url, OPTS, m, big) == big["data"]
    srv.add_fault("a.tar", Fault(reset_after=100_000))
    srv.add_fault("a.tar", Fault(latency_s=0.6))  # the resume: answered (and its ETag taken) 0.6 s late
    new_version = threading.Timer(0.3, os.utime, (path,), {"ns": (path.stat().st_mtime_ns + 10**9,) * 2})
    new_version.start()  # same bytes, a new mtime: a new ETag, between the drop and the resume's answer
    try:
        with pytest.raises(SourceError, match="object changed while reading"):
            _read_whole("stream", url, OPTS, m, big)
    finally:
        new_version.join()
    assert [rng is not None for p, rng, _ in srv.log if p == "a.tar"] == [False, False, True]
