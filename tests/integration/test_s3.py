"""s3:// through s3fs, reached as a user reaches AWS (AWS_ENDPOINT_URL + credentials in the
environment): a moto server for the real S3 API, and the fault server posing as an S3 endpoint
(path-style GET/HEAD) to inject faults under s3fs's ranged GETs."""
from __future__ import annotations

import hashlib
import json
import multiprocessing
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import pytest

from wds_audio.io import request as io_request
from wds_audio.io.open import fetch_shard, open_shard, read_bytes
from wds_audio.io.options import SourceError, SourceMetrics, SourceOptions
from wds_audio.io.prefetch import prefetch

from .conftest import S3, s3_env
from .faultserver import Fault, FaultServer
from .shards import shards, tar_keys

pytestmark = pytest.mark.integration

# Small chunks: every shard takes many ranged GETs, so the stitching of ranges is exercised.
OPTS = SourceOptions(timeout_s=0.5, retries=3, backoff_s=0.01, max_backoff_s=0.05, chunk_bytes=64 << 10)


def local_keys(root: Path, rel: str) -> list[str]:
    with open(root / rel, "rb") as f:
        return tar_keys(f)


def test_remote_manifest_and_every_shard(s3: S3) -> None:
    m = SourceMetrics()
    opts = SourceOptions(timeout_s=2, retries=1, chunk_bytes=256 << 10)
    raw = read_bytes(f"{s3.prefix}/dataset.json", options=opts, metrics=m)
    assert raw == (s3.local / "dataset.json").read_bytes()
    entries = [s for sp in json.loads(raw)["splits"].values() for s in sp["shards"]]
    for s in entries:
        with open_shard(f"{s3.prefix}/{s['path']}", options=opts, metrics=m, expected_bytes=s["bytes"],
                        expected_sha256=s["sha256"]) as f:
            assert tar_keys(f) == local_keys(s3.local, s["path"])
    assert m["bytes_read"] == len(raw) + sum(s["bytes"] for s in entries)
    assert m["opens"] == 1 + len(entries) and m.retries() == {}


def test_byte_range_of_an_object(s3: S3) -> None:
    entry = max(shards(s3.local), key=lambda s: s["bytes"])
    data = (s3.local / entry["path"]).read_bytes()
    start, length = 100_000, 150_001  # spans three 64 KiB GETs, ends off a chunk boundary
    with open_shard(f"{s3.prefix}/{entry['path']}", options=OPTS, start=start, length=length) as f:
        assert f.read() == data[start:start + length]


@pytest.mark.parametrize("presign,hashed", [(True, 1), (False, 3)])
def test_verify_once_trusts_the_etag_of_a_checked_object(s3: S3, presign: bool, hashed: int,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Through presigned GETs moto's ETag (the object's MD5) identifies the checked version, so
    later whole reads are not hashed again; through s3fs there is no ETag, so every read is."""
    monkeypatch.setattr(io_request, "_CHECKED", io_request.CheckedVersions())  # other tests of this process read the same objects
    entry = max(shards(s3.local), key=lambda s: s["bytes"])
    data = (s3.local / entry["path"]).read_bytes()
    url, m = f"{s3.prefix}/{entry['path']}", SourceMetrics()
    opts = SourceOptions(timeout_s=2, retries=1, s3_presign=presign)
    for _ in range(3):
        with fetch_shard(url, options=opts, metrics=m, expected_bytes=entry["bytes"],
                         expected_sha256=entry["sha256"]) as f:
            assert f.read() == data
    assert (m["sha256_checked"], m["sha256_skipped"]) == (hashed, 3 - hashed)


def test_prefetch_into_the_cache(s3: S3, tmp_path: Path) -> None:
    opts = SourceOptions(timeout_s=2, retries=1, cache_dir=str(tmp_path / "cache"), cache_bytes=64 << 20)
    entries = {f"{s3.prefix}/{s['path']}": s for s in shards(s3.local)}
    m = SourceMetrics()

    def fetch(url: str) -> BinaryIO:
        return fetch_shard(url, options=opts, metrics=m, expected_sha256=entries[url]["sha256"])

    for _ in range(2):
        for url, f in prefetch(list(entries), fetch, depth=2):
            assert not isinstance(f, Exception), f
            with f:
                assert tar_keys(f) == local_keys(s3.local, entries[url]["path"])
    assert m["cache_misses"] == len(entries) and m["cache_hits"] == len(entries)


def _read_in_child(url: str, sha: str, out: Any) -> None:
    try:
        with open_shard(url, options=OPTS, expected_sha256=sha) as f:
            out.put(("ok", hashlib.sha256(f.read()).hexdigest()))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        out.put(("error", repr(e)))


def test_a_forked_worker_reads_after_the_parent_used_s3(s3: S3) -> None:
    # DataLoader workers are forked after the main process read dataset.json through s3fs.
    read_bytes(f"{s3.prefix}/dataset.json", options=OPTS)
    entry = shards(s3.local)[0]
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    proc = ctx.Process(target=_read_in_child, args=(f"{s3.prefix}/{entry['path']}", entry["sha256"], out))
    proc.start()
    try:
        assert out.get(timeout=30) == ("ok", entry["sha256"])
    finally:
        proc.join(timeout=10)
    assert proc.exitcode == 0


def test_missing_object_is_not_retried(s3: S3) -> None:
    m = SourceMetrics()
    with pytest.raises(SourceError, match="demo/train/missing.tar: not found") as err:
        open_shard(f"{s3.prefix}/train/missing.tar", options=OPTS, metrics=m)
    assert err.value.retries == 0 and m.retries() == {}


@pytest.fixture(scope="module")
def fake_s3_server(demo_shards: Path) -> Iterator[FaultServer]:
    """The fault server as an S3 endpoint (bucket = the demo dataset's directory name); one per
    module, so the endpoint, and with it s3fs's client, stays the same from test to test."""
    with FaultServer(demo_shards.parent) as srv:
        yield srv


@pytest.fixture
def fake_s3(fake_s3_server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> FaultServer:
    fake_s3_server.clear()
    for k, v in s3_env(fake_s3_server.base).items():
        monkeypatch.setenv(k, v)
    return fake_s3_server


# the faults injected under both s3:// read paths
FAULTS = pytest.mark.parametrize("fault,reason", [
    (Fault(reset_after=20_000), "reset"),
    (Fault(truncate_after=20_000), "truncated"),
    (Fault(stall_after=20_000, stall_s=5.0), "timeout"),
    (Fault(status=503, times=2), "http 503"),
], ids=["reset", "truncated", "stall", "503x2"])


@FAULTS
def test_faults_under_s3fs_are_resumed(fake_s3: FaultServer, demo_shards: Path, fault: Fault, reason: str) -> None:
    entry = max(shards(demo_shards), key=lambda s: s["bytes"])
    key = f"{demo_shards.name}/{entry['path']}"
    # Fault the third ranged GET, so the stream has to resume in the middle of the object.
    fake_s3.add_fault(key, Fault(times=2))
    fake_s3.add_fault(key, fault)
    m = SourceMetrics()
    with open_shard(f"s3://{key}", options=replace(OPTS, s3_presign=False), metrics=m, expected_bytes=entry["bytes"],
                    expected_sha256=entry["sha256"]) as f:
        assert tar_keys(f) == local_keys(demo_shards, entry["path"])
    assert m.retries() == {reason: 2 if fault.status else 1}
    assert m["failed_shards"] == 0 and m["resumes"] >= 1
    assert fake_s3.log[2][1] == "bytes=131072-196607"  # the faulted request: third 64 KiB range


@FAULTS
def test_faults_under_presigned_gets_are_resumed(fake_s3: FaultServer, demo_shards: Path, fault: Fault,
                                                 reason: str) -> None:
    """The default s3:// path: one presigned GET for the object, resumed with a Range from where it broke."""
    entry = max(shards(demo_shards), key=lambda s: s["bytes"])
    key = f"{demo_shards.name}/{entry['path']}"
    fake_s3.add_fault(key, fault)
    m = SourceMetrics()
    with open_shard(f"s3://{key}", options=OPTS, metrics=m, expected_bytes=entry["bytes"],
                    expected_sha256=entry["sha256"]) as f:
        assert tar_keys(f) == local_keys(demo_shards, entry["path"])
    assert m.retries() == {reason: 2 if fault.status else 1} and m["failed_shards"] == 0
    assert all("X-Amz-Signature=" in q for p, q in fake_s3.queries if p == key)  # SigV4 presigned GETs
    if reason in ("truncated", "timeout"):  # bytes before the fault arrived: the retry asks for the rest
        assert m["resumes"] == 1 and fake_s3.log[-1][1].startswith("bytes=20000-")


def test_s3_shard_that_keeps_failing(fake_s3: FaultServer, demo_shards: Path) -> None:
    entry = max(shards(demo_shards), key=lambda s: s["bytes"])
    key = f"{demo_shards.name}/{entry['path']}"
    fake_s3.add_fault(key, Fault(status=503, times=None))
    m = SourceMetrics()
    with pytest.raises(SourceError) as err:
        open_shard(f"s3://{key}", options=OPTS, metrics=m, expected_bytes=entry["bytes"]).read()
    assert (err.value.reason, err.value.retries) == ("http 503", 3)
    assert fake_s3.requests[key] == 4 and m["failed_shards"] == 1
    assert "X-Amz" not in str(err.value) and str(err.value).startswith(f"s3://{key}")  # no presigned credentials


def test_metadata_is_one_get_without_a_head_and_survives_a_fault(fake_s3: FaultServer, demo_shards: Path) -> None:
    """dataset.json and .idx files are read whole: one request each, not HEAD + GET; a reset is retried."""
    from wds_audio.io.open import read_bytes

    key = f"{demo_shards.name}/dataset.json"
    want = (demo_shards / "dataset.json").read_bytes()
    assert read_bytes(f"s3://{key}", options=OPTS) == want
    assert fake_s3.requests[key] == 1  # one GET (the server counts HEADs too)
    fake_s3.clear()
    fake_s3.add_fault(key, Fault(reset_after=100))
    m = SourceMetrics()
    assert read_bytes(f"s3://{key}", options=OPTS, metrics=m) == want
    assert m.retries() == {"reset": 1} and fake_s3.requests[key] == 2


def test_a_store_refusing_presigned_urls_is_read_through_s3fs(fake_s3: FaultServer, demo_shards: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from wds_audio.io import s3

    monkeypatch.setattr(s3, "_PRESIGN_REFUSED", set())  # the fallback is remembered per process
    entry = max(shards(demo_shards), key=lambda s: s["bytes"])
    key = f"{demo_shards.name}/{entry['path']}"
    fake_s3.add_fault(key, Fault(status=403))  # the first request: the presigned GET
    m = SourceMetrics()
    for _ in range(2):
        with open_shard(f"s3://{key}", options=OPTS, metrics=m, expected_bytes=entry["bytes"],
                        expected_sha256=entry["sha256"]) as f:
            assert tar_keys(f) == local_keys(demo_shards, entry["path"])
    assert m.retries() == {} and m["failed_shards"] == 0
    queries = [q for p, q in fake_s3.queries if p == key]
    assert "X-Amz-Signature=" in queries[0] and not any("X-Amz-Signature=" in q for q in queries[1:])
