"""Source layer without servers: local files, file://, pipe:, errors, metrics, backoff, prefetch.

Remote reads with injected faults are in tests/integration/test_http_faults.py and test_s3.py.
"""
from __future__ import annotations

import hashlib
import http.client
import importlib.util
import io
import pickle
import random
import tarfile
import threading
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from wds_audio.io.open import open_shard, open_url, read_bytes
from wds_audio.io.options import SourceError, SourceMetrics, SourceOptions, redact, scheme_of
from wds_audio.io.prefetch import prefetch
from wds_audio.io.request import CheckedVersions
from wds_audio.io.retry import reason_of
from wds_audio.io.retry import _retriable  # the retry policy is worth testing directly


def write_tar(path: Path, keys: list[str]) -> bytes:
    """A small webdataset-style tar (key.wav + key.json per sample) written to ``path``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for i, key in enumerate(keys):
            for ext, data in (("wav", bytes([i % 256]) * (3000 + 7 * i)), ("json", b'{"key": "%s"}' % key.encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def tar_keys(f) -> list[str]:
    keys: list[str] = []
    with tarfile.open(fileobj=f, mode="r|") as tf:
        for m in tf:
            key = m.name.split(".", 1)[0]
            if not keys or keys[-1] != key:
                keys.append(key)
    return keys


@pytest.fixture
def shard(tmp_path: Path) -> tuple[Path, bytes, list[str]]:
    keys = [f"clip-{i:03d}" for i in range(12)]
    p = tmp_path / "train" / "fold1-000000.tar"
    p.parent.mkdir()
    return p, write_tar(p, keys), keys


# ---- local files and pipes ----------------------------------------------------------------------


def test_local_path_and_file_url_give_the_same_tar(shard) -> None:
    path, data, keys = shard
    m = SourceMetrics()
    with open_shard(str(path), metrics=m) as f:
        assert tar_keys(f) == keys
    assert read_bytes(path.as_uri()) == data  # file:// with an absolute path
    with open_url(str(path)) as f:
        assert f.read() == data
    assert m["opens"] == 1


def test_file_url_is_percent_decoded(tmp_path: Path) -> None:
    p = tmp_path / "a b%c.tar"
    p.write_bytes(b"payload")
    assert p.as_uri().endswith("a%20b%25c.tar")
    assert read_bytes(p.as_uri()) == b"payload"


def test_missing_local_file_names_the_path(tmp_path: Path) -> None:
    m = SourceMetrics()
    with pytest.raises(SourceError, match="cannot open .*nope.tar") as err:
        open_shard(str(tmp_path / "nope.tar"), metrics=m)
    assert err.value.retries == 0 and m["failed_shards"] == 1


def test_local_size_must_match_the_manifest(shard) -> None:
    path, data, _ = shard
    with pytest.raises(SourceError, match=f"{len(data)} bytes, dataset.json says {len(data) + 1}"):
        open_shard(str(path), expected_bytes=len(data) + 1)


def test_local_checksum_only_when_asked(shard) -> None:
    path, data, keys = shard
    good, bad = hashlib.sha256(data).hexdigest(), "0" * 64
    with open_shard(str(path), expected_sha256=bad) as f:  # local files are trusted by default
        assert f.read() == data
    opts = SourceOptions(verify_local=True)
    with open_shard(str(path), options=opts, expected_sha256=good) as f:
        assert tar_keys(f) == keys
    with open_shard(str(path), options=opts, expected_sha256=bad) as f:
        with pytest.raises(SourceError, match="sha256 mismatch"):
            f.read()


def test_pipe_reads_a_command_output(shard) -> None:
    path, data, keys = shard
    with open_shard(f"pipe:cat '{path}'") as f:
        assert tar_keys(f) == keys
    assert read_bytes(f"pipe:cat '{path}'") == data


def test_pipe_failure_is_an_error_at_end_of_stream() -> None:
    with open_shard("pipe:printf abc; exit 3") as f:
        with pytest.raises(SourceError, match="status 3"):
            f.read()


def test_pipe_closed_early_does_not_hang() -> None:
    t0 = time.monotonic()
    with open_shard("pipe:yes") as f:
        assert f.read(10) == b"y\ny\ny\ny\ny\n"
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("start,length", [(0, 100), (1536, 5000), (1536, None), (7, 0)])
def test_byte_ranges_of_local_files_and_pipes(shard, start: int, length: int | None) -> None:
    path, data, _ = shard
    end = None if length is None else start + length
    for url in (str(path), path.as_uri(), f"pipe:cat '{path}'"):
        with open_shard(url, start=start, length=length) as f:
            assert f.read() == data[start:end], url


def test_range_beyond_the_end_is_an_error(shard) -> None:
    path, data, _ = shard
    with pytest.raises(SourceError, match=f"asked of a file of {len(data)} bytes"):
        open_shard(str(path), start=len(data) - 10, length=11)
    with pytest.raises(ValueError, match="start and length must be >= 0"):
        open_shard(str(path), start=-1)


# ---- schemes and errors -------------------------------------------------------------------------


@pytest.mark.parametrize("url,scheme", [
    ("data/train/a.tar", ""), ("/abs/a.tar", ""), ("C:\\data\\a.tar", ""), ("file:///a.tar", "file"),
    ("http://h/a.tar", "http"), ("https://h/a.tar", "https"), ("s3://b/a.tar", "s3"), ("gs://b/a.tar", "gs"),
    ("pipe:curl -s http://h/a.tar", "pipe"),
])
def test_scheme_of(url: str, scheme: str) -> None:
    assert scheme_of(url) == scheme


def test_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="ftp://host/a.tar: unsupported URL scheme 'ftp'"):
        open_shard("ftp://host/a.tar")


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed")
def test_gs_without_gcsfs_names_the_package() -> None:
    with pytest.raises(ImportError, match="gcsfs"):
        open_shard("gs://bucket/train/a.tar")


def test_error_messages_hide_credentials() -> None:
    url = "https://user:secret@host/train/a.tar?X-Amz-Signature=deadbeef"
    assert redact(url) == "https://host/train/a.tar?…"
    err = SourceError(url, "http 503", 4, 1234)
    assert str(err) == "https://host/train/a.tar?…: http 503 (after 4 retries) at byte 1234"
    assert "secret" not in str(err) and "deadbeef" not in str(err)


def test_source_error_survives_pickling() -> None:
    # DataLoader workers send exceptions to the main process by pickling them.
    err = pickle.loads(pickle.dumps(SourceError("http://h/a.tar", "timeout", 3, 99)))
    assert (err.url, err.reason, err.retries, err.offset) == ("http://h/a.tar", "timeout", 3, 99)


def _client_error(status: int):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": str(status), "Message": "x"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


def _translated(status: int) -> OSError:
    """What s3fs raises: an OSError whose cause is botocore's ClientError."""
    try:
        try:
            raise _client_error(status)
        except Exception as e:
            raise OSError(5, "translated") from e
    except OSError as outer:
        return outer


@pytest.mark.parametrize("make,reason,retriable", [
    (lambda: TimeoutError("timed out"), "timeout", True),
    (lambda: urllib.error.URLError(TimeoutError("timed out")), "timeout", True),
    (lambda: ConnectionResetError(104, "reset"), "reset", True),
    (lambda: http.client.RemoteDisconnected("closed"), "reset", True),
    (lambda: ConnectionRefusedError(111, "refused"), "refused", True),
    (lambda: http.client.IncompleteRead(b"", 10), "truncated", True),
    (lambda: _translated(503), "http 503", True),
    (lambda: _translated(429), "http 429", True),
    (lambda: _translated(403), "http 403", False),
    (lambda: FileNotFoundError("bucket/key"), "not found", False),
    (lambda: PermissionError("denied"), "permission denied", False),
])
def test_failures_are_labelled_and_classified(make, reason: str, retriable: bool) -> None:
    e = make()
    assert reason_of(e) == reason
    assert _retriable(e) is retriable


def test_missing_credentials_are_not_retried() -> None:
    from botocore.exceptions import NoCredentialsError

    assert not _retriable(NoCredentialsError())


# ---- options and metrics ------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{"timeout_s": 0}, {"retries": -1}, {"prefetch": -1}, {"chunk_bytes": 100},
                                    {"cache_bytes": 0}, {"backoff_s": -1}, {"verify_remote": "sometimes"}])
def test_invalid_options_are_rejected(kwargs) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SourceOptions(**kwargs)


def test_verify_remote_takes_a_mode_or_a_bool() -> None:
    assert SourceOptions().verify_remote == "once"
    assert SourceOptions(verify_remote=True).verify_remote == "always"
    assert SourceOptions(verify_remote=False).verify_remote == "never"


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    opts = SourceOptions(backoff_s=0.1, max_backoff_s=1.0)
    rng = random.Random(0)
    for retry, full in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        waits = [opts.backoff(retry, rng) for _ in range(200)]
        assert all(full / 2 <= w <= full for w in waits)
        assert max(waits) - min(waits) > full / 4  # really jittered


def test_metrics_are_exact_under_threads_and_merge_across_processes() -> None:
    m = SourceMetrics()

    def work() -> None:
        for _ in range(5000):
            m.add("bytes_read", 3)
            m.add_retry("timeout")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    d = m.as_dict()
    assert d["bytes_read"] == 60000 and d["retries"] == {"timeout": 20000} and d["retries_total"] == 20000
    copy = pickle.loads(pickle.dumps(m))  # what a DataLoader worker would send back
    copy.add_retry("http 503")
    m.merge(copy.as_dict())
    assert m["bytes_read"] == 120000 and m.retries() == {"timeout": 40000, "http 503": 1}


# ---- prefetch -----------------------------------------------------------------------------------


class Opener:
    """Opens in-memory shards, failing for chosen urls, and records what it opened."""

    def __init__(self, fail: set[str] = frozenset(), delay: float = 0.0) -> None:
        self.fail, self.delay = fail, delay
        self.opened: list[io.BytesIO] = []
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, url: str) -> io.BytesIO:
        with self.lock:
            self.calls.append(url)
        time.sleep(self.delay)
        if url in self.fail:
            raise SourceError(url, "http 503", 2)
        f = io.BytesIO(url.encode())
        self.opened.append(f)
        return f


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetch_keeps_order_and_delivers_errors_in_place(depth: int) -> None:
    urls = [f"u{i}" for i in range(8)]
    opener = Opener(fail={"u2", "u5"})
    got = [(u, f if isinstance(f, Exception) else f.read().decode()) for u, f in prefetch(urls, opener, depth)]
    assert [u for u, _ in got] == urls
    for u, item in got:
        if u in ("u2", "u5"):
            assert isinstance(item, SourceError) and item.url == u
        else:
            assert item == u


def wait_for(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_prefetch_runs_ahead_by_depth_only() -> None:
    opener = Opener()
    it = prefetch([f"u{i}" for i in range(10)], opener, depth=2)
    next(it)  # holding u0: the thread may open u1 and u2, no more
    wait_for(lambda: len(opener.calls) >= 3)
    time.sleep(0.1)
    assert opener.calls == ["u0", "u1", "u2"]
    next(it)
    wait_for(lambda: len(opener.calls) >= 4)
    time.sleep(0.1)
    assert len(opener.calls) == 4
    it.close()


def test_prefetch_hides_open_latency() -> None:
    opener, m = Opener(delay=0.1), SourceMetrics()
    for _, f in prefetch([f"u{i}" for i in range(6)], opener, depth=2, metrics=m):
        time.sleep(0.1)  # "consuming" a shard takes as long as opening one
    # Sequential opening would wait 6 x 0.1 s; with prefetch mainly the first open is waited for.
    assert m["prefetch_wait_s"] < 0.35


def test_leaving_prefetch_early_stops_the_thread_and_closes_unused_shards() -> None:
    opener = Opener()
    before = set(threading.enumerate())  # prefetch threads of earlier tests in this process are not ours
    for _, taken in prefetch([f"u{i}" for i in range(10)], opener, depth=3):
        break
    wait_for(lambda: not any(t.name.startswith("wds-audio-prefetch") for t in set(threading.enumerate()) - before))
    assert len(opener.opened) <= 4
    # all but the one handed out (the threads may open u1 before u0)
    assert all(f.closed for f in opener.opened if f is not taken) and not taken.closed


def test_prefetch_reraises_a_failing_url_iterable() -> None:
    def urls():
        yield "u0"
        raise RuntimeError("manifest listing failed")

    it = prefetch(urls(), Opener(), depth=2)
    assert next(it)[0] == "u0"
    with pytest.raises(RuntimeError, match="manifest listing failed"):
        next(it)


def test_memory_reader_reads_seeks_and_closes() -> None:
    from wds_audio.io.open import MemoryReader

    data = bytes(range(256)) * 10
    f = MemoryReader(bytearray(data))
    assert f.read(3) == data[:3] and f.tell() == 3
    buf = bytearray(5)
    assert f.readinto(buf) == 5 and bytes(buf) == data[3:8]
    assert f.seek(-2, 2) == len(data) - 2 and f.read() == data[-2:] and f.read(10) == b""
    f.seek(0)
    assert f.read() == data
    with f:
        pass
    assert f.closed


def test_presigned_urls_are_reused_then_renewed_before_they_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    from wds_audio.io import s3

    class FakeFs:
        def __init__(self) -> None:
            self.signed: list[tuple[str, int]] = []

        def sign(self, url: str, expiration: int) -> str:
            self.signed.append((url, expiration))
            return f"https://bucket.example/{url[5:]}?sig={len(self.signed)}"

    now = [1000.0]
    monkeypatch.setattr(s3.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(s3, "_PRESIGNED", {})
    fs = FakeFs()
    first = s3._presigned(fs, "s3://b/k.tar")
    now[0] += s3._PRESIGN_S / 2 - 1
    assert s3._presigned(fs, "s3://b/k.tar") == first and len(fs.signed) == 1
    now[0] += 2  # past half of its lifetime: a new signature
    assert s3._presigned(fs, "s3://b/k.tar") != first and fs.signed[-1] == ("s3://b/k.tar", s3._PRESIGN_S)


# ---- checked versions (verify_remote="once") ----------------------------------------------------


def _add_in_child(slots: torch.Tensor, fps: list[int]) -> None:
    table = CheckedVersions(slots.numpy())
    for fp in fps:
        table.add(fp)


def test_checked_versions_process_local_and_in_a_shared_table() -> None:
    fp = [CheckedVersions.fingerprint(f"http://h/s{i}.tar", '"e1"', "ab" * 32) for i in range(50)]
    assert len(set(fp)) == 50 and 0 not in fp
    assert fp[0] != CheckedVersions.fingerprint("http://h/s0.tar", '"e2"', "ab" * 32)  # a new version
    local = CheckedVersions()
    local.add(fp[0])
    assert fp[0] in local and fp[1] not in local
    # another process writes into shared memory; this one sees it (as DataLoader workers do)
    slots = torch.zeros(256, dtype=torch.int64).share_memory_()
    child = torch.multiprocessing.get_context("spawn").Process(target=_add_in_child, args=(slots, fp[:40]))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    shared = CheckedVersions(slots.numpy())
    assert all(f in shared for f in fp[:40]) and not any(f in shared for f in fp[40:])


def test_a_full_table_forgets_rather_than_misreports() -> None:
    """A table with fewer slots than versions keeps what fits; every answer it gives is true."""
    table = CheckedVersions(np.zeros(8, dtype=np.int64))
    fp = [CheckedVersions.fingerprint(f"u{i}", '"e"', "00" * 32) for i in range(30)]
    for f in fp:
        table.add(f)
        assert f in table  # the latest is always kept
    assert 0 < sum(f in table for f in fp) <= 8
    assert not any(CheckedVersions.fingerprint(f"v{i}", '"e"', "00" * 32) in table for i in range(100))
