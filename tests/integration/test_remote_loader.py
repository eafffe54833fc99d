"""Remote shards through ``wds_audio.loader``: faults on every shard, skips, S3, the cache.

tests/integration/test_http_faults.py checks the source layer alone; here the whole CPU
pipeline (plan -> ranged slice reads with prefetch -> decode -> crop -> batch) runs over a
server that injects a fault into every shard, and each epoch is compared batch for batch with
the fault-free epoch read from local disk with the same seed.
"""
from __future__ import annotations

import json
import re
import shutil
import tarfile
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch

import wds_audio
from wds_audio.io.options import SourceOptions
from wds_audio.pipeline.samples import SampleError

from .conftest import S3, s3_env
from .faultserver import Fault, FaultServer

pytestmark = pytest.mark.integration

# Short timeouts so a stall or a slow header costs half a second, not thirty.
OPTS = SourceOptions(timeout_s=0.5, retries=3, backoff_s=0.01, max_backoff_s=0.05)
# Folds 1-2 of the demo set: 4 shards of 16, 8, 16, 5 clips, cut into slices by 8 streams.
LOADER = dict(split="train", folds=[1, 2], batch_size=4, sample_rate=16000, clip_seconds=1.0, seed=3)
CUT = 1000  # bytes into a response before a fault: smaller than any slice (one sample is > 50 kB)

Epoch = list[tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


def epoch_of(batches: Any) -> Epoch:
    """Every batch as (keys, audio, targets, lengths, valid), copied out of the loader's buffers."""
    return [(b.keys, b.audio.clone(), b.targets.clone(), b.lengths.clone(), b.valid.clone()) for b in batches]


def run_epoch(source: str, **kw: Any) -> tuple[Epoch, dict[str, Any]]:
    """Every batch of epoch 0 (see epoch_of), and the loader's metrics."""
    loader = wds_audio.loader(source, **{**LOADER, **kw})
    batches = epoch_of(loader)
    assert len(batches) == len(loader)
    return batches, loader.metrics()


def assert_same(got: Epoch, want: Epoch) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g[0] == w[0], f"batch {i}: keys differ"
        for name, a, b in zip(("audio", "targets", "lengths", "valid"), g[1:], w[1:]):
            assert torch.equal(a, b), f"batch {i}: {name} differs"


def train_shards(root: Path) -> list[dict[str, Any]]:
    """dataset.json's entries of the shards the loader reads (LOADER's split and folds)."""
    shards = json.loads((root / "dataset.json").read_text())["splits"][LOADER["split"]]["shards"]
    return [s for s in shards if s["fold"] in LOADER["folds"]]


def tar_keys(path: Path) -> list[str]:
    with tarfile.open(path) as tf:
        return list(dict.fromkeys(m.name.split(".", 1)[0] for m in tf.getmembers() if m.isreg()))


def tar_requests(srv: FaultServer) -> dict[str, int]:
    return {p: n for p, n in srv.requests.items() if p.endswith(".tar")}


@pytest.fixture(scope="module")
def local(demo_shards: Path) -> dict[bool, Epoch]:
    """The fault-free epoch from local disk, per ``training``, with the keys it must hold."""
    out = {}
    for training in (False, True):
        out[training], m = run_epoch(str(demo_shards), training=training)
        assert m["skipped"] == {}
    everything = sorted(k for s in train_shards(demo_shards) for k in tar_keys(demo_shards / s["path"]))
    # Evaluation: each key once (fill-ins marked invalid); training: as many keys as slots.
    assert sorted(k for b in out[False] for k, v in zip(b[0], b[4]) if v) == everything
    assert set(k for b in out[True] for k in b[0]) == set(everything)
    return out


# Each fault with the read timeout it runs under. Where a timeout is not the fault, it is long:
# on a loaded 2-core CI host a response can take more than half a second to start, and a
# spurious timeout there would retry a request that the fault never touched (that is how the
# stall case once counted 3 resumes of 4). Where it is the fault, it is short but still well
# above such a delay, and the fault lasts well past it.
FAULTS = {
    "reset": (Fault(reset_after=CUT), "reset", 1, 10.0),
    "503x2": (Fault(status=503, times=2), "http 503", 2, 10.0),
    "500": (Fault(status=500), "http 500", 1, 10.0),
    "stall": (Fault(stall_after=CUT, stall_s=10.0), "timeout", 1, 1.5),
    "truncated": (Fault(truncate_after=CUT), "truncated", 1, 10.0),
    # latency past timeout_s: the request is retried
    "slow-headers": (Fault(latency_s=3.0), "timeout", 1, 1.0),
}


# Each fast fault in evaluation (num_workers=0) and training (num_workers=2); the two that cost
# a timeout per shard once each, to keep the file fast.
CASES = [(k, t) for k in ("reset", "503x2", "500", "truncated") for t in (False, True)]
CASES += [("stall", True), ("slow-headers", False)]


@pytest.mark.parametrize("kind,training", CASES, ids=[f"{k}-{'train-workers2' if t else 'eval-workers0'}" for k, t in CASES])
def test_a_fault_in_every_shard_gives_the_fault_free_epoch(fault_server: FaultServer, demo_shards: Path,
                                                           local: dict[bool, Epoch], kind: str,
                                                           training: bool) -> None:
    fault, reason, per_shard, timeout_s = FAULTS[kind]
    fault_server.add_fault("*.tar", fault)  # the first request(s) of every shard
    got, m = run_epoch(fault_server.base, training=training, num_workers=2 if training else 0,
                       source_options=replace(OPTS, timeout_s=timeout_s))
    assert_same(got, local[training])
    n = len(train_shards(demo_shards))
    assert set(tar_requests(fault_server)) == {s["path"] for s in train_shards(demo_shards)}
    assert m["skipped"] == {} and m["source"]["failed_shards"] == 0
    assert m["source"]["retries"] == {reason: n * per_shard}
    if fault.truncate_after is not None:
        assert m["source"]["resumes"] == n  # each cut request went on from the byte it had reached
    if fault.stall_after is not None:
        # Each stalled request went on from the byte it had reached. On a loaded host a response can
        # start later than the timeout, so its retry starts where it began: count from the server's log.
        # The stalled request is the one the server gave the fault to (several streams may ask for
        # one shard at once, and the log may list them in another order); its retry asks for the
        # same end.
        resumed = 0
        for s in train_shards(demo_shards):
            reqs = [_range(r) for p, r, _ in fault_server.log if p == s["path"]]
            (start, end), = [_range(r) for p, r in fault_server.faulted if p == s["path"]]
            later = list(reqs)
            later.remove((start, end))
            retry = next((r for r in later if r[1] == end and start <= r[0] <= start + CUT), None)
            assert retry is not None, (s["path"], (start, end), reqs)  # never past the bytes sent
            resumed += retry[0] > start
        assert m["source"]["resumes"] == resumed >= 1


def _range(header: str | None) -> tuple[int, int | None]:
    """(start, end) of a Range header; (0, None) for none."""
    if not header:
        return 0, None
    a, _, b = header[len("bytes="):].partition("-")
    return int(a), int(b) if b else None


def test_retries_during_prefetch_are_all_reported(fault_server: FaultServer, demo_shards: Path) -> None:
    # One stream, one clip per batch: while the prefetch thread waits out the timeout of the next
    # shard, the current shard's clips go out as batches.
    kw = dict(training=False, streams=1, batch_size=1)
    want, _ = run_epoch(str(demo_shards), **kw)
    fault_server.add_fault("*.tar", Fault(latency_s=3.0))  # past the timeout; see FAULTS
    got, m = run_epoch(fault_server.base, **kw, source_options=replace(OPTS, timeout_s=1.0))
    assert_same(got, want)
    assert m["source"]["retries"] == {"timeout": len(train_shards(demo_shards))}


def test_latency_on_every_request(fault_server: FaultServer, local: dict[bool, Epoch]) -> None:
    fault_server.latency_s = 0.02  # manifest, indexes and every slice: slower, but nothing retried
    got, m = run_epoch(fault_server.base, training=True, num_workers=2, source_options=OPTS)
    assert_same(got, local[True])
    assert m["source"]["retries"] == {} and m["skipped"] == {}
    assert len(tar_requests(fault_server)) == len(train_shards(fault_server.root))


def _lost_counts(messages: list[str]) -> int:
    return sum(int(n) for msg in messages for n in re.findall(r"\((\d+) sample\(s\) of samples", msg))


def _fail_one_shard(srv: FaultServer, root: Path, workers: int) -> tuple[dict[str, Any], Epoch, dict[str, Any]]:
    """An evaluation epoch in which the largest shard answers 503 to every request."""
    bad = max(train_shards(root), key=lambda s: s["samples"])
    srv.add_fault(bad["path"], Fault(status=503, times=None))
    opts = SourceOptions(timeout_s=0.5, retries=1, backoff_s=0.01)
    got, m = run_epoch(srv.base, training=False, num_workers=workers, source_options=opts)
    return bad, got, m


@pytest.mark.parametrize("workers", [0, 2])
def test_a_shard_that_keeps_failing_is_skipped_and_reported(fault_server: FaultServer, demo_shards: Path,
                                                            local: dict[bool, Epoch], workers: int) -> None:
    bad, got, m = _fail_one_shard(fault_server, demo_shards, workers)
    assert set(m["skipped"]) == {"shard_error"} and m["skipped_keys"]
    assert all(msg.startswith(f"{fault_server.url(bad['path'])}: ") and "http 503 (after 1 retries)" in msg
               for msg in m["skipped_keys"])
    assert _lost_counts(m["skipped_keys"]) == bad["samples"]
    assert m["source"]["failed_shards"] >= 1 and set(m["source"]["retries"]) == {"http 503"}
    # The other shards arrive whole, each sample once, with the same audio as from local disk.
    bad_keys = set(tar_keys(demo_shards / bad["path"]))
    ref = {k: (a[:n], t) for b in local[False] for k, a, t, n, v in zip(*b[:4], b[4]) if v}
    seen = [(k, a[:n], t) for b in got for k, a, t, n, v in zip(*b[:4], b[4]) if v]
    assert sorted(k for k, _, _ in seen) == sorted(set(ref) - bad_keys)
    for k, a, t in seen:
        assert torch.equal(a, ref[k][0]) and torch.equal(t, ref[k][1]), k
    assert len(got) == len(local[False])  # the plan's batch count holds: lost samples became fill-ins


def test_skipped_counts_the_clips_of_a_failed_shard(fault_server: FaultServer, demo_shards: Path) -> None:
    bad, _, m = _fail_one_shard(fault_server, demo_shards, 0)
    assert m["skipped"] == {"shard_error": bad["samples"]} and m["skipped_total"] == bad["samples"]


def test_on_error_raise_stops_at_the_failing_shard(fault_server: FaultServer, demo_shards: Path) -> None:
    bad = train_shards(demo_shards)[0]
    fault_server.add_fault(bad["path"], Fault(reset_after=0, times=None))
    loader = wds_audio.loader(fault_server.base, **LOADER, training=False, on_error="raise",
                              source_options=SourceOptions(timeout_s=0.5, retries=1, backoff_s=0.01))
    with pytest.raises(SampleError, match=re.escape(bad["path"]) + r": reset \(after 1 retries\)"):
        for _ in loader:
            pass


def test_the_s3_endpoint_gives_the_local_epoch(s3: S3, local: dict[bool, Epoch]) -> None:
    got, m = run_epoch(s3.prefix, training=True, num_workers=2, source_options=OPTS)
    assert_same(got, local[True])
    assert m["source"]["retries"] == {} and m["skipped"] == {}
    assert m["source"]["bytes_read"] >= sum(s["bytes"] for s in train_shards(s3.local))


@pytest.fixture
def fake_s3(serve: Any, demo_shards: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultServer]:
    """The fault server as an S3 endpoint: bucket = the dataset's directory name."""
    srv = serve(demo_shards.parent)
    for k, v in s3_env(srv.base).items():
        monkeypatch.setenv(k, v)
    yield srv


def test_faults_under_s3_give_the_local_epoch(fake_s3: FaultServer, demo_shards: Path,
                                              local: dict[bool, Epoch]) -> None:
    bucket = demo_shards.name
    fake_s3.add_fault(f"{bucket}/*.tar", Fault(status=503))  # the first request (HEAD or GET) of every shard
    got, m = run_epoch(f"s3://{bucket}", training=False, source_options=OPTS)
    assert_same(got, local[False])
    assert m["source"]["retries"] == {"http 503": len(train_shards(demo_shards))} and m["skipped"] == {}


def _cached_file(cache: Path, rel: str) -> Path:
    [path] = [p for p in cache.iterdir() if p.name.endswith("-" + Path(rel).name)]
    return path


def test_second_epoch_reads_the_cache_and_a_corrupt_shard_is_fetched_again(
        fault_server: FaultServer, demo_shards: Path, tmp_path: Path) -> None:
    # One stream in evaluation and 45 clips in 9 batches of 5: every slice is a whole shard (no
    # fill-ins), which is what the cache stores.
    kw = dict(training=False, streams=1, batch_size=5)
    want, _ = run_epoch(str(demo_shards), **kw)
    opts = SourceOptions(timeout_s=0.5, retries=3, backoff_s=0.01, cache_dir=str(tmp_path / "cache"))
    shards = train_shards(demo_shards)
    assert sum(s["samples"] for s in shards) % 5 == 0
    fault_server.add_fault("*.tar", Fault(reset_after=CUT))  # the fill itself resumes
    first, m1 = run_epoch(fault_server.base, **kw, source_options=opts)
    assert tar_requests(fault_server) == {s["path"]: 2 for s in shards}  # fault + resume, once per shard
    assert (m1["source"]["cache_misses"], m1["source"]["cache_hits"]) == (len(shards), 0)

    second, m2 = run_epoch(fault_server.base, **kw, source_options=opts)
    assert tar_requests(fault_server) == {s["path"]: 2 for s in shards}  # nothing new from the server
    assert (m2["source"]["cache_misses"], m2["source"]["cache_hits"]) == (0, len(shards))

    victim = _cached_file(tmp_path / "cache", shards[2]["path"])
    data = bytearray(victim.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4096] = b"\xff" * 4096  # garbage in the middle, same size
    victim.write_bytes(bytes(data))
    third, m3 = run_epoch(fault_server.base, **kw, source_options=opts)
    assert tar_requests(fault_server) == {s["path"]: 2 + (s is shards[2]) for s in shards}
    assert m3["source"]["cache_corrupt"] == 1 and m3["skipped"] == {}
    for got in (first, second, third):
        assert_same(got, want)


def test_the_cache_also_serves_partial_slices(fault_server: FaultServer, local: dict[bool, Epoch],
                                              tmp_path: Path) -> None:
    # Default streams in training: shards are cut at random rotation points and between streams.
    opts = SourceOptions(timeout_s=0.5, retries=3, backoff_s=0.01, cache_dir=str(tmp_path / "cache"))
    first, _ = run_epoch(fault_server.base, training=True, num_workers=2, source_options=opts)
    before = tar_requests(fault_server)
    second, m = run_epoch(fault_server.base, training=True, num_workers=2, source_options=opts)
    assert_same(first, local[True])
    assert_same(second, local[True])
    assert tar_requests(fault_server) == before, "the second epoch fetched shards from the server again"
    assert m["source"]["cache_misses"] == 0


@pytest.mark.parametrize("fault,reason", [(Fault(truncate_after=CUT), "truncated"), (Fault(reset_after=CUT), "reset")])
def test_slices_too_big_to_prefetch_are_streamed_and_still_resumed(fault_server: FaultServer, demo_shards: Path,
                                                                   local: dict[bool, Epoch], fault: Fault,
                                                                   reason: str) -> None:
    """prefetch_bytes below every slice: slices are opened ahead and streamed, not held in memory;
    a body cut short in each is resumed at the byte reached."""
    from dataclasses import replace

    fault_server.add_fault("*.tar", fault)
    got, m = run_epoch(fault_server.base, training=True, num_workers=2,
                       source_options=replace(OPTS, prefetch=4, prefetch_bytes=4096))
    assert_same(got, local[True])
    n = len(train_shards(demo_shards))
    assert m["source"]["retries"] == {reason: n}
    if reason == "truncated":  # the CUT bytes arrived: every retry continues from them
        assert m["source"]["resumes"] == n
    else:  # an RST makes the kernel drop bytes the client had not read yet (a stream opened ahead)
        assert m["source"]["resumes"] <= n


def test_a_shard_cut_at_its_rotation_point_is_one_whole_request(fault_server: FaultServer, demo_shards: Path) -> None:
    """Training reads each shard as [r, n) then [0, r): one whole-shard GET (sha256-checked), not two ranges."""
    from wds_audio.pipeline.shards import ShardReader, fetch_groups

    kw = dict(training=True, streams=1, num_workers=0)
    want, _ = run_epoch(str(demo_shards), **kw)
    loader = wds_audio.loader(fault_server.base, **{**LOADER, **kw}, source_options=OPTS)
    slices = loader.plan(0).streams[0].slices
    groups = fetch_groups(ShardReader(loader.catalog, OPTS), slices)
    pairs = [g for g in groups if len(g) == 2]
    assert len(pairs) >= 2  # the demo folds have shards cut at a rotation point
    fault_server.clear()
    got = epoch_of(loader)
    assert_same(got, want)
    tars = [(p, rng) for p, rng, status in fault_server.log if p.endswith(".tar")]
    assert len(tars) == len(groups) < len(slices)  # one request per group
    assert sum(rng is None for _, rng in tars) >= len(pairs)  # the pairs: whole GETs


@pytest.mark.parametrize("verify", ["once", "always", "never"])
def test_a_shard_changed_on_the_server_is_caught_by_its_sha256_unless_turned_off(
        serve: Callable[[Path], FaultServer], demo_shards: Path, tmp_path: Path, verify: str) -> None:
    """One byte of a clip changed on the server (same size): with verify_remote "once" (the
    default: nothing has read it before) or "always" the whole-shard read fails its sha256, is
    fetched once more, then skipped and counted; with "never", the bytes are used as they come."""
    root = tmp_path / demo_shards.name
    shutil.copytree(demo_shards, root)
    victim = root / train_shards(root)[0]["path"]
    with tarfile.open(victim) as tf:
        member = next(m for m in tf.getmembers() if m.name.endswith((".flac", ".wav")))
    data = bytearray(victim.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0x55
    victim.write_bytes(bytes(data))
    srv = serve(root)
    _, m = run_epoch(srv.base, training=True, streams=1, num_workers=0,
                     source_options=replace(OPTS, verify_remote=verify))
    src = m["source"]
    if verify != "never":
        assert src["retries"].get("checksum") == 1 and src["failed_shards"] == 1
        assert sum(m["skipped"].values()) >= train_shards(root)[0]["samples"]
    else:
        assert "checksum" not in src["retries"] and src["failed_shards"] == 0


def test_the_first_batch_waits_only_for_the_fetches_it_reads(fault_server: FaultServer) -> None:
    """A worker's streams fetch through one queue, most needed first: until the first batch is made,
    only the groups that batch reads are requested (each stream used to start its own fetches at
    once, and the first batch shared the transfer and the CPU with all of them)."""
    from wds_audio.pipeline.shards import ShardReader, fetch_groups
    from wds_audio.pipeline.shuffle import read_batch

    kw = dict(training=True, streams=4, num_workers=0)
    opts = replace(OPTS, timeout_s=5, prefetch=4)
    loader = wds_audio.loader(fault_server.base, **{**LOADER, **kw}, source_options=opts)
    groups = fetch_groups(ShardReader(loader.catalog, opts), loader.plan(0).streams[0].slices)
    starts = [sum(len(sl) for g in groups[:i] for sl in g) for i in range(len(groups))]
    wanted = [g for g, o in zip(groups, starts) if read_batch(o, loader.cfg) == 0]
    assert 0 < len(wanted) < sum(len(fetch_groups(ShardReader(loader.catalog, opts), s.slices))
                                 for s in loader.plan(0).streams)
    fault_server.clear()
    fault_server.latency_s = 0.4  # a fetch started after the first batch is logged 0.4 s later
    it = iter(loader)
    first = next(it)
    served = [p for p, _, status in fault_server.log if p.endswith(".tar")]
    it.close()
    assert len(first) == LOADER["batch_size"]
    assert len(served) == len(wanted)


def _epochs(loader: Any, epochs: list[int]) -> list[Epoch]:
    out = []
    for e in epochs:
        if e != loader.epoch:
            loader.set_epoch(e)
        out.append(epoch_of(loader))
    return out


def _settled_tar_requests(srv: FaultServer) -> Counter[tuple[str, str | None]]:
    """(path, Range) of every tar request answered so far, once no more have come for 0.3 s."""
    import time

    n, since = -1, time.monotonic()
    while time.monotonic() - since < 0.3:
        if len(srv.log) != n:
            n, since = len(srv.log), time.monotonic()
        time.sleep(0.01)
    return Counter((p, rng) for p, rng, _ in list(srv.log) if p.endswith(".tar"))


def test_persistent_workers_fetch_the_next_epochs_first_batch_before_it_begins(
        fault_server: FaultServer, demo_shards: Path) -> None:
    """A persistent worker that has made its last batch opens the next epoch's streams: that
    epoch's first reads are requested before it is iterated, and it is the same epoch, batch for
    batch, with no read made twice. An epoch other than the next (set_epoch) drops them."""
    kw = dict(training=True, num_workers=2, streams=4)
    want = _epochs(wds_audio.loader(str(demo_shards), **{**LOADER, **kw}), [0, 1, 5])
    reads = []  # the requests of epochs 0, 1, 2 from workers that end with each epoch (nothing read ahead)
    for e in range(3):
        fault_server.clear()
        _epochs(wds_audio.loader(fault_server.base, **{**LOADER, **kw}, source_options=OPTS), [e])
        reads.append(_settled_tar_requests(fault_server))
    fault_server.clear()
    loader = wds_audio.loader(fault_server.base, **{**LOADER, **kw}, persistent_workers=True, source_options=OPTS)
    got = _epochs(loader, [0])
    ahead = _settled_tar_requests(fault_server) - reads[0]
    assert ahead and not ahead - reads[1], f"epoch 1 read ahead: {ahead}"
    got += _epochs(loader, [1])
    ahead = _settled_tar_requests(fault_server) - reads[0] - reads[1]
    assert ahead and not ahead - reads[2], f"more than epoch 1 and epoch 2's first reads: {ahead}"
    got += _epochs(loader, [5])  # not the epoch opened ahead (2): those reads are dropped
    for g, w in zip(got, want):
        assert_same(g, w)
    assert loader.metrics()["skipped"] == {}


def test_a_stream_on_its_own_fetches_through_a_queue_of_its_own(fault_server: FaultServer, demo_shards: Path) -> None:
    """stream_batches without an opened source (outside the loader): its remote reads still go
    ahead through a FetchQueue of its own, and it gives the local stream's batches."""
    from wds_audio.pipeline.stream import stream_batches

    def batches(source: str, **kw: Any) -> tuple[Epoch, Any]:
        loader = wds_audio.loader(source, **{**LOADER, "streams": 2, "num_workers": 0}, **kw)
        got = epoch_of(stream_batches(loader.cfg, loader.catalog, loader.plan(0).streams[1], epoch=0, rank=0))
        return got, loader

    want, _ = batches(str(demo_shards))
    fault_server.clear()
    fault_server.add_fault("*.tar", Fault(reset_after=CUT))
    got, _ = batches(fault_server.base, source_options=OPTS)
    assert_same(got, want)
    assert tar_requests(fault_server)  # read over HTTP, every first request cut and resumed


@pytest.mark.parametrize("persistent", [False, True])
def test_workers_share_which_shards_they_have_checked(fault_server: FaultServer, demo_shards: Path,
                                                      persistent: bool) -> None:
    """verify_remote="once": a shard version hashed by one DataLoader worker is not hashed again by
    another, nor by the next epoch's workers when they are not persistent (one table in shared
    memory for the loader's workers); every epoch still equals local disk."""
    kw = {**LOADER, "training": True, "streams": 2}
    loader = wds_audio.loader(fault_server.base, **kw, num_workers=2, persistent_workers=persistent,
                              source_options=OPTS)
    want = wds_audio.loader(str(demo_shards), **kw)
    for epoch in range(4):
        got = epoch_of(loader)
        assert_same(got, epoch_of(want))
    whole = [p for p, rng, status in fault_server.log if p.endswith(".tar") and rng is None and status == 200]
    src = loader.metrics()["source"]
    assert len(set(whole)) >= 2 and len(whole) >= 2 * len(set(whole))
    if persistent:
        # the read-ahead after the last epoch is not reported (no batch carries it), and a worker's
        # read-ahead may hash a shard the other worker is hashing at that moment
        assert src["sha256_checked"] + src["sha256_skipped"] <= len(whole)
        assert src["sha256_skipped"] >= 1 and src["sha256_checked"] < 2 * len(set(whole))
    else:  # one worker hashed each shard; every other read of it, by any worker, was not hashed
        assert src["sha256_checked"] == len(set(whole))
        assert src["sha256_skipped"] == len(whole) - len(set(whole))


def test_the_next_epoch_is_read_ahead_once_this_epochs_reads_have_all_started(fault_server: FaultServer) -> None:
    """A persistent worker starts the next epoch's first reads as soon as every read of its current
    epoch has been started, before its last batch: started after the last batch, they ran into the
    next epoch's first batch."""
    from wds_audio.pipeline.loader import run_streams

    loader = wds_audio.loader(fault_server.base, **{**LOADER, "training": True, "streams": 4, "num_workers": 0},
                              source_options=OPTS)
    plan = loader.plan(0)
    made: list[int] = []
    when: list[tuple[int, int]] = []
    fired = lambda: when.append((len(made), sum(p.endswith(".tar") for p, _, _ in fault_server.log)))  # noqa: E731
    for b in run_streams(loader.cfg, loader.catalog, plan, list(range(len(plan.streams))), 0, fetched=fired):
        made.append(b.index)
    tars = sum(p.endswith(".tar") for p, _, _ in fault_server.log)
    assert len(when) == 1 and 0 < when[0][0] < len(made) == plan.batches
    assert when[0][1] >= tars - OPTS.prefetch  # at most the fetches still running had not reached the server
