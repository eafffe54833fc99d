"""shardgen.writer: format v1 on real bytes - determinism, atomicity, resume, round trip."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds

from shardgen.recipes import get
from shardgen.tarfmt import index_of
from shardgen.writer import JOURNAL, MANIFEST, PackError, PackOptions, pack
from tests.conftest import write_tone


def _digest_tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_bytes_whatever_the_workers(demo_src: Path, tmp_path: Path) -> None:
    col = get("csv").load(demo_src)
    a = pack(col, tmp_path / "a", PackOptions(workers=1, max_shard_samples=16, progress=False))
    b = pack(col, tmp_path / "b", PackOptions(workers=2, max_shard_samples=16, progress=False))
    assert a.manifest == b.manifest
    assert _digest_tree(tmp_path / "a") == _digest_tree(tmp_path / "b")
    assert len(_digest_tree(tmp_path / "a")) > 6


def test_shards_are_the_bytes_tarfile_writes(tmp_path: Path) -> None:
    """The writer lays out members itself (header, data, NULs to the block, the end blocks and the
    record padding): a tar rebuilt from the same members with tarfile.addfile is the same bytes,
    also for the longest keys allowed (recipes make keys ASCII: a class 'café' gives 'caf_')."""
    from shardgen.tarfmt import FORMAT, member_info

    src = tmp_path / "src"
    write_tone(src / "café" / ("x" * 84 + ".wav"), 0.3, freq=300)  # key of 90 characters
    for i, sec in enumerate((0.2, 0.3, 0.25)):
        write_tone(src / "dog" / f"d{i}.wav", sec, sr=1000 * (i + 8), seed=i)
    out = tmp_path / "out"
    pack(get("folder").load(src), out, PackOptions(sample_rate=16000, progress=False))
    m = json.loads((out / MANIFEST).read_text())
    (shard,) = m["splits"]["train"]["shards"]
    written = (out / shard["path"]).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(written)) as t:
        members = [(i.name, t.extractfile(i).read()) for i in t.getmembers()]
    assert max(len(k) for k, _ in members) > 90  # 90-character key + ".labels"
    unpadded = sum(512 + -len(d) % 512 + len(d) for _, d in members) + 1024
    assert unpadded % tarfile.RECORDSIZE and not written.endswith(bytes(tarfile.RECORDSIZE))  # the padding is tested
    rebuilt = io.BytesIO()
    with tarfile.open(fileobj=rebuilt, mode="w", format=FORMAT) as t:
        for name, data in members:
            t.addfile(member_info(name, len(data)), io.BytesIO(data))
    assert len(members) == 4 * 4 and rebuilt.getvalue() == written
    assert hashlib.sha256(written).hexdigest() == shard["sha256"] and len(written) == shard["bytes"]


def test_member_headers_are_tarfiles() -> None:
    """member_header patches one header for names of up to 100 bytes: the bytes of TarInfo.tobuf for
    random names of 1-120 characters and sizes on, off and beyond the 512-byte blocks and the
    11-digit octal field (those and long names take tobuf's own path)."""
    import random

    from shardgen.tarfmt import FORMAT, member_header, member_info

    rnd = random.Random(0)
    for _ in range(3000):
        name = "".join(rnd.choice("abcdefghij_.0123456789/") for _ in range(rnd.randint(1, 120)))
        size = rnd.choice([0, 1, 511, 512, 513, rnd.randint(0, 10**9), 8**11 - 1, 8**11])
        assert member_header(name, size) == member_info(name, size).tobuf(FORMAT, tarfile.ENCODING, "surrogateescape")


def test_manifest_describes_shards(demo_shards: Path, demo_src: Path) -> None:
    m = json.loads((demo_shards / MANIFEST).read_text())
    rows = (demo_src / "metadata.csv").read_text().splitlines()[1:]
    assert m["format_version"] == 1 and m["codec"] == "flac" and m["sample_rate"] == 16000
    assert sum(sp["samples"] for sp in m["splits"].values()) == len(rows)
    for split, sp in m["splits"].items():
        for s in sp["shards"]:
            data = (demo_shards / s["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == s["sha256"] and len(data) == s["bytes"]
            assert s["path"].startswith(f"{split}/{s['group']}-") and s["samples"] <= 16
            with tarfile.open(fileobj=io.BytesIO(data)) as tf:
                names = tf.getnames()
                assert all(tf.getmember(n).mtime == 0 and tf.getmember(n).uid == 0 for n in names)
            assert len({n.split(".")[0] for n in names}) == s["samples"]
            assert (demo_shards / s["index"]).read_text() == index_of(data)
    assert m["splits"]["train"]["folds"] == [1, 2, 3, 4] and m["splits"]["valid"]["folds"] == [5]
    assert m["folds"] == [1, 2, 3, 4, 5]
    assert not list(demo_shards.rglob("*.tmp-*")) and not (demo_shards / JOURNAL).exists()


def test_round_trip_labels_metadata_and_audio(demo_shards: Path, demo_src: Path) -> None:
    m = json.loads((demo_shards / MANIFEST).read_text())
    classes = m["classes"]
    rows = {r.split(",")[0]: r.split(",") for r in (demo_src / "metadata.csv").read_text().splitlines()[1:]}
    urls = [str(demo_shards / s["path"]) for sp in m["splits"].values() for s in sp["shards"]]
    seen = 0
    for sample in wds.WebDataset(urls, shardshuffle=False):
        meta = json.loads(sample["json"])
        path, labels, split, fold, group, layers = rows[meta["source"]]
        names = [n for n in labels.split(";") if n]
        assert sorted(classes.index(n) for n in names) == meta["labels"]
        hot = np.frombuffer(sample["labels"], dtype=np.uint8)
        assert hot.shape == (len(classes),) and list(np.flatnonzero(hot)) == meta["labels"]
        assert (meta["split"], meta["fold"] or "", meta["group"], meta["layers"]) == (split, fold and int(fold) or "", group, layers)
        x, sr = sf.read(io.BytesIO(sample["flac"]), dtype="float32")
        ref, _ = sf.read(demo_src / path, dtype="float32")
        np.testing.assert_array_equal(x, ref)  # FLAC at the target rate is kept as is: lossless
        assert sr == 16000 and abs(meta["duration"] - len(x) / sr) < 1e-6
        assert "cls" not in sample or int(sample["cls"]) == meta["labels"][0]
        seen += 1
    assert seen == len(rows)


def test_multi_label_has_no_cls_and_single_label_has_cls(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for c, f in (("dog", 300), ("cat", 600)):
        for i in range(2):
            write_tone(src / c / f"{c}{i}.wav", 0.2, freq=f, seed=i)
    out = tmp_path / "out"
    pack(get("folder").load(src), out, PackOptions(progress=False))
    m = json.loads((out / MANIFEST).read_text())
    assert m["classes"] == ["cat", "dog"] and not m["multi_label"]
    samples = list(wds.WebDataset(str(out / m["splits"]["train"]["shards"][0]["path"]), shardshuffle=False))
    assert sorted((s["__key__"], s["cls"]) for s in samples) == [
        ("cat_cat0", b"0"), ("cat_cat1", b"0"), ("dog_dog0", b"1"), ("dog_dog1", b"1")]
    from shardgen.writer import write_order
    assert [s["__key__"] for s in samples] == sorted((s["__key__"] for s in samples), key=write_order)
    assert all("wav" in s for s in samples)  # 16-bit PCM WAV at the target rate is kept as WAV


def test_resample_downmix_and_transcode(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tone(src / "a" / "stereo44.flac", 0.5, sr=44100, channels=2, freq=1000)
    write_tone(src / "a" / "mp3.mp3", 0.5, sr=16000, freq=1000, fmt="MP3")
    write_tone(src / "b" / "float.wav", 0.5, sr=16000, subtype="FLOAT", freq=1000)
    write_tone(src / "b" / "pcm16.wav", 0.5, sr=16000, subtype="PCM_16", freq=1000)
    out = tmp_path / "out"
    pack(get("folder").load(src), out, PackOptions(sample_rate=16000, codec="wav", progress=False))
    m = json.loads((out / MANIFEST).read_text())
    samples = {s["__key__"]: s for s in wds.WebDataset(str(out / m["splits"]["train"]["shards"][0]["path"]), shardshuffle=False)}
    assert set(samples) == {"a_stereo44", "a_mp3", "b_float", "b_pcm16"}
    for s in samples.values():
        assert "wav" in s and "mp3" not in s
        info = sf.info(io.BytesIO(s["wav"]))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        x, _ = sf.read(io.BytesIO(s["wav"]))
        peak = np.argmax(np.abs(np.fft.rfft(x * np.hanning(len(x))))) * 16000 / len(x)
        assert abs(peak - 1000) < 10
    assert samples["b_pcm16"]["wav"] == (src / "b" / "pcm16.wav").read_bytes()  # kept byte for byte


def test_bad_input_raises_naming_the_file_or_is_skipped_and_listed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tone(src / "a" / "good.wav", 0.2)
    (src / "a" / "garbage.wav").write_bytes(b"RIFF\x00\x00not audio at all")
    sf.write(src / "a" / "empty.wav", np.zeros((0,), np.float32), 16000)
    col = get("folder").load(src)
    with pytest.raises(PackError, match=r"empty\.wav \(key a_empty\): zero-length clip"):
        pack(col, tmp_path / "out1", PackOptions(progress=False))
    res = pack(col, tmp_path / "out2", PackOptions(on_error="skip", progress=False))
    where = {p.where.split(" ")[0]: p.reason for p in res.problems}
    assert any(w.endswith("garbage.wav") for w in where)
    assert any(w.endswith("empty.wav") and "zero-length" in r for w, r in where.items())
    assert res.manifest["splits"]["train"]["samples"] == 1
    assert {Path(p["where"].split(" ")[0]).name for p in res.manifest["skipped"]} == {"garbage.wav", "empty.wav"}


def test_duplicate_keys_and_bad_labels(tmp_path: Path) -> None:
    from shardgen.records import Collection, Record

    f = write_tone(tmp_path / "x.wav", 0.1)
    recs = [Record("k1", "x.wav", f, [0], "train"), Record("k1", "y.wav", f, [0], "train"),
            Record("k2", "z.wav", f, [5], "train")]
    col = Collection("t", ["a", "b"], recs)
    with pytest.raises(PackError, match="duplicate key 'k1'"):
        pack(col, tmp_path / "o1", PackOptions(progress=False))
    res = pack(col, tmp_path / "o2", PackOptions(on_error="skip", progress=False))
    assert [p.reason for p in res.problems][0].startswith("duplicate key")
    assert "outside [0, 2)" in res.problems[1].reason
    assert res.manifest["splits"]["train"]["samples"] == 1


def test_refuses_non_empty_output_without_resume_or_overwrite(demo_src: Path, tmp_path: Path) -> None:
    col = get("csv").load(demo_src)
    pack(col, tmp_path, PackOptions(max_shard_samples=64, progress=False))
    with pytest.raises(PackError, match="not empty"):
        pack(col, tmp_path, PackOptions(max_shard_samples=64, progress=False))
    pack(col, tmp_path, PackOptions(max_shard_samples=64, overwrite=True, progress=False))


def test_size_target_respected(demo_src: Path, tmp_path: Path) -> None:
    res = pack(get("csv").load(demo_src), tmp_path, PackOptions(max_shard_bytes=2_000_000, progress=False))
    shards = [s for sp in res.manifest["splits"].values() for s in sp["shards"]]
    # a shard only exceeds the target when a single sample is larger than it
    assert all(s["bytes"] <= 2_000_000 + 10240 or s["samples"] == 1 for s in shards)
    assert len(shards) > 5


def _kill_pack_midway(src: Path, out: Path) -> None:
    """Start a real `shardgen pack` process and SIGKILL it once some shards are complete."""
    cmd = [sys.executable, "-m", "shardgen.cli", "pack", "--recipe", "csv", str(src), str(out),
           "--max-shard-samples", "8", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[2])
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.rglob("*.tar"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_resume_after_kill_gives_identical_output(demo_src: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    col = get("csv").load(demo_src)
    pack(col, ref, PackOptions(max_shard_samples=8, progress=False))
    out = tmp_path / "out"
    _kill_pack_midway(demo_src, out)
    assert not (out / MANIFEST).exists()
    complete = list(out.rglob("*.tar"))
    assert complete  # some shards were renamed into place before the kill...
    for t in complete:  # ...and every file that looks complete is complete
        assert tarfile.open(t).getnames()
    # damage one complete shard: resume must notice (sha256) and rewrite it
    victim = sorted(complete)[0]
    victim.write_bytes(victim.read_bytes()[:-1000])
    res = pack(col, out, PackOptions(max_shard_samples=8, resume=True, progress=False))
    assert res.kept_shards >= len(complete) - 1
    assert _digest_tree(out) == _digest_tree(ref)


def test_resume_with_other_options_is_refused(demo_src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _kill_pack_midway(demo_src, out)
    col = get("csv").load(demo_src)
    with pytest.raises(PackError, match="other input or options"):
        pack(col, out, PackOptions(max_shard_samples=9, resume=True, progress=False))


def test_full_disk_leaves_only_complete_shards(demo_src: Path, tmp_path: Path, monkeypatch) -> None:
    """An OSError mid-shard (as from a full disk) leaves no partial file that looks complete."""
    import shardgen.writer as w

    calls = {"n": 0}
    real_add = w._Shard.add

    def failing_add(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 40:
            raise OSError(28, "No space left on device")
        return real_add(self, *a, **k)

    monkeypatch.setattr(w._Shard, "add", failing_add)
    out = tmp_path / "out"
    with pytest.raises(OSError):
        pack(get("csv").load(demo_src), out, PackOptions(max_shard_samples=16, progress=False))
    assert not list(out.rglob("*.tmp-*")) and not (out / MANIFEST).exists()
    for t in out.rglob("*.tar"):
        assert t.with_suffix(".idx").exists() and tarfile.open(t).getnames()
    monkeypatch.setattr(w._Shard, "add", real_add)
    ref = tmp_path / "ref"
    pack(get("csv").load(demo_src), ref, PackOptions(max_shard_samples=16, progress=False))
    pack(get("csv").load(demo_src), out, PackOptions(max_shard_samples=16, resume=True, progress=False))
    assert _digest_tree(out) == _digest_tree(ref)


def test_idx_equals_dali_wds2idx(demo_shards: Path, tmp_path: Path) -> None:
    wds2idx = shutil.which("wds2idx", path=str(Path(sys.executable).parent))
    if wds2idx is None:
        pytest.skip("DALI's wds2idx is not installed")
    shard = next(demo_shards.rglob("*.tar"))
    subprocess.run([wds2idx, str(shard), str(tmp_path / "ref.idx")], check=True, capture_output=True)
    assert (tmp_path / "ref.idx").read_bytes() == shard.with_suffix(".idx").read_bytes()
