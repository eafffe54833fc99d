"""ShardCache: verified fills, corrupt entries refetched, LRU under a byte budget, stale
temporaries cleaned, and two processes sharing one cache never reading a partial file."""
from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from wds_audio.io.cache import TMP_PREFIX, ChecksumMismatch, ShardCache, _host_tag, safe_name
from wds_audio.io.options import SourceMetrics


def payload(url: str, size: int = 1000) -> bytes:
    return random.Random(url).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Filler:
    """A fill function that writes the url's payload and counts how often it was called."""

    def __init__(self, data: bytes) -> None:
        self.data, self.calls = data, 0

    def __call__(self, out) -> None:
        self.calls += 1
        out.write(self.data[: len(self.data) // 2])
        out.write(self.data[len(self.data) // 2:])


def published(cache: ShardCache) -> set[str]:
    return {e.path.name for e in cache.entries()}


def test_miss_then_hit_reads_the_same_bytes(tmp_path: Path) -> None:
    cache, m = ShardCache(tmp_path), SourceMetrics()
    url = "s3://bucket/train/fold1-000000.tar"
    data = payload(url, 50_000)
    fill = Filler(data)
    with cache.open(url, sha(data), fill, expected_bytes=len(data), metrics=m) as f:
        assert f.read() == data
    with cache.open(url, sha(data), fill, expected_bytes=len(data), metrics=m) as f:
        assert f.read() == data
    assert fill.calls == 1
    assert (m["cache_misses"], m["cache_hits"]) == (1, 1)
    assert published(cache) == {safe_name(url)}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
@pytest.mark.parametrize("known_size", [True, False])
def test_corrupt_cached_shard_is_detected_and_fetched_again(tmp_path: Path, damage: str, known_size: bool) -> None:
    cache, m = ShardCache(tmp_path), SourceMetrics()
    url = "http://host/train/a.tar"
    data = payload(url, 20_000)
    fill = Filler(data)
    size = len(data) if known_size else None
    cache.open(url, sha(data), fill, expected_bytes=size).close()
    path = cache.path_for(url)
    if damage == "garbage":
        path.write_bytes(os.urandom(len(data)))  # same size: only the checksum can tell
    else:
        path.write_bytes(data[: len(data) // 3])
    with cache.open(url, sha(data), fill, expected_bytes=size, metrics=m) as f:
        assert f.read() == data
    assert fill.calls == 2
    assert m["cache_corrupt"] == 1 and m["cache_misses"] == 1
    assert path.read_bytes() == data


def test_fill_with_wrong_bytes_publishes_nothing(tmp_path: Path) -> None:
    cache = ShardCache(tmp_path)
    url = "http://host/train/a.tar"
    data = payload(url)
    with pytest.raises(ChecksumMismatch, match="a.tar") as err:
        cache.open(url, sha(data), Filler(data[:-1] + b"x"))
    assert err.value.expected == sha(data) and err.value.size == len(data)
    assert published(cache) == set()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_failing_fill_propagates_and_leaves_no_temporary(tmp_path: Path) -> None:
    cache = ShardCache(tmp_path)

    def fill(out) -> None:
        out.write(b"partial")
        raise ConnectionResetError("network gone")

    with pytest.raises(ConnectionResetError):
        cache.open("http://host/a.tar", sha(b"whatever"), fill)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".locks"]


def test_lru_eviction_keeps_the_cache_under_its_budget(tmp_path: Path) -> None:
    cache, m = ShardCache(tmp_path, max_bytes=2500), SourceMetrics()
    urls = [f"http://host/train/{c}.tar" for c in "abc"]
    for u in urls[:2]:
        cache.open(u, sha(payload(u)), Filler(payload(u)), metrics=m).close()
    cache.open(urls[0], sha(payload(urls[0])), Filler(b""), metrics=m).close()  # a hit makes `a` recent
    cache.open(urls[2], sha(payload(urls[2])), Filler(payload(urls[2])), metrics=m).close()
    assert published(cache) == {safe_name(urls[0]), safe_name(urls[2])}  # `b` was least recently used
    assert cache.total_bytes() <= 2500
    assert m["cache_evictions"] == 1 and m["cache_evicted_bytes"] == 1000


def test_eviction_does_not_disturb_an_open_reader(tmp_path: Path) -> None:
    cache = ShardCache(tmp_path, max_bytes=10_000)
    url = "http://host/a.tar"
    data = payload(url, 8000)
    f = cache.open(url, sha(data), Filler(data))
    assert cache.evict(10_000) == 1 and published(cache) == set()
    assert f.read() == data  # the open file outlives its directory entry
    f.close()


def test_shard_larger_than_the_budget_is_served_but_not_kept(tmp_path: Path) -> None:
    cache, m = ShardCache(tmp_path, max_bytes=500), SourceMetrics()
    url = "http://host/a.tar"
    data = payload(url, 2000)
    with cache.open(url, sha(data), Filler(data), metrics=m) as f:
        assert f.read() == data
    assert published(cache) == set() and m["cache_too_big"] == 1


@pytest.mark.parametrize("url", [
    "http://host/x/..%2F..%2Fetc%2Fpasswd",
    "http://host/../../etc/passwd?X-Amz-Signature=abc/def",
    "s3://bucket/.hidden",
    "http://host/",
    "pipe:cat /etc/passwd > /tmp/x",
])
def test_cache_names_stay_inside_the_directory(tmp_path: Path, url: str) -> None:
    cache = ShardCache(tmp_path)
    data = payload(url)
    cache.open(url, sha(data), Filler(data)).close()
    path = cache.path_for(url)
    assert path.parent == tmp_path and path.is_file()
    assert "/" not in path.name and not path.name.startswith(".")
    assert safe_name(url) != safe_name(url + "x")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_are_cleaned(tmp_path: Path) -> None:
    host = _host_tag()
    dead = tmp_path / f"{TMP_PREFIX}{host}.{_dead_pid()}.0001.abc-a.tar"
    old_foreign = tmp_path / f"{TMP_PREFIX}ffffffff.1.0002.abc-b.tar"
    fresh_foreign = tmp_path / f"{TMP_PREFIX}ffffffff.1.0003.abc-c.tar"
    live_mine = tmp_path / f"{TMP_PREFIX}{host}.{os.getpid()}.0004.abc-d.tar"
    for p in (dead, old_foreign, fresh_foreign, live_mine):
        p.write_bytes(b"partial")
    hour_ago = time.time() - 3600
    os.utime(old_foreign, (hour_ago, hour_ago))
    ShardCache(tmp_path, stale_s=600)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)) == \
        sorted([fresh_foreign.name, live_mine.name])


# Subprocesses load cache.py by path: importing the wds_audio package would pull in torch.
_IMPORT_CACHE = """
import importlib.util, sys
_spec = importlib.util.spec_from_file_location("cache_under_test", sys.argv[1])
cache_mod = sys.modules["cache_under_test"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cache_mod)
ShardCache = cache_mod.ShardCache
"""
CACHE_PY = str(Path(__file__).resolve().parents[3] / "wds_audio" / "io" / "cache.py")

_SLOW_FILL = _IMPORT_CACHE + """
import time
def fill(out):
    out.write(b"x" * 1000)
    out.flush()
    print("filling", flush=True)
    time.sleep(60)
ShardCache(sys.argv[2]).open("http://host/a.tar", "0" * 64, fill)
"""


def test_temporary_of_a_killed_fill_is_cleaned(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_FILL, CACHE_PY, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "filling"
        assert [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    cache = ShardCache(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]
    assert published(cache) == set()


# Each process opens random shards of a small set through one cache with room for two, so
# fills, hits and evictions interleave; every read must give the exact bytes.
_WORKER = _IMPORT_CACHE + textwrap.dedent("""
    import hashlib, random, time

    cache_dir, seed, rounds = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    urls = [f"http://host/train/shard-{i}.tar" for i in range(5)]
    data = {u: random.Random(u).randbytes(60_000) for u in urls}
    # verify_hits=False: the checksum must not be what hides a partial file
    cache = ShardCache(cache_dir, max_bytes=130_000, verify_hits=False)
    rng = random.Random(seed)

    def filler(u):
        def fill(out):
            d = data[u]
            for i in range(0, len(d), 10_000):
                out.write(d[i:i + 10_000])
                time.sleep(0.001)  # a slow network widens every race window
        return fill

    bad = 0
    for _ in range(rounds):
        u = rng.choice(urls)
        with cache.open(u, hashlib.sha256(data[u]).hexdigest(), filler(u)) as f:
            bad += f.read() != data[u]
    print(bad)
""")


def test_two_processes_sharing_a_cache_never_read_a_partial_file(tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, CACHE_PY, str(tmp_path), str(seed), "40"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err
        assert out.strip() == "0"
    cache = ShardCache(tmp_path, max_bytes=130_000)
    assert cache.total_bytes() <= 130_000
    for e in cache.entries():  # whatever is left is complete
        assert e.size == 60_000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]
