"""`shardgen features`: the demo pack -> shards with a cached fp16 log-mel per sample, read back as bytes.

The parity bound: the cached value c is the float32 log-mel x (dB) rounded to float16, whose relative
step is 2^-11 (10 stored mantissa bits, round to nearest), so |c - x| <= 2^-11 |x| + ABS, where ABS
(1e-4 dB) covers values near 0 (fp16 subnormals step by 2^-24) and float32 round-off between a clip
computed alone and in a batch (measured 5e-9 dB on this machine). A wrong hop or mel count misses it
by dB, which the tests check too.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from shardgen.cli import main
from shardgen.tarfmt import index_of
from shardgen.verify import verify
from shardgen.writer import MANIFEST
from tests.conftest import read_shards
from wds_audio.device.stats import SETTINGS
from wds_audio.signal.features import LogMel

SR, N_MELS, HOP, N_FFT = 16000, 64, 160, 1024
REL, ABS = 2.0 ** -11, 1e-4
ROOT = Path(__file__).resolve().parents[2]


def within_fp16(cached: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Where ``cached`` is ``x`` rounded to float16 (the bound of the module docstring)."""
    x = x.astype(np.float64)
    return np.abs(cached.astype(np.float64) - x) <= REL * np.abs(x) + ABS


@pytest.fixture(scope="module")
def mel(demo_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mel") / "out"
    assert main(["features", str(demo_shards), str(out), "--n-mels", str(N_MELS), "--hop-length", str(HOP),
                 "--no-progress"]) == 0
    return out


def _reference(members: dict[str, bytes], **kw) -> np.ndarray:
    x, sr = sf.read(io.BytesIO(members["flac"]), dtype="float32", always_2d=True)
    assert sr == SR
    args = dict(sample_rate=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)
    args.update(kw)
    with torch.no_grad():
        return LogMel(**args)(torch.from_numpy(x.mean(axis=1))[None])[0].numpy()


def test_same_shards_members_and_counts_plus_a_feature_member(demo_shards: Path, mel: Path) -> None:
    before, after = read_shards(demo_shards), read_shards(mel)
    assert sorted(before) == sorted(after)
    for key, members in before.items():
        got = after[key]
        assert set(got) == set(members) | {"logmel.npy"}
        for ext, data in members.items():  # audio, json, labels, cls: byte for byte
            assert got[ext] == data, (key, ext)
        x = np.load(io.BytesIO(got["logmel.npy"]))
        meta = json.loads(members["json"])
        n = int(round(meta["duration"] * meta["sample_rate"]))
        assert x.dtype == np.float16 and x.shape == (N_MELS, n // HOP + 1)
    m0, m1 = (json.loads((d / MANIFEST).read_text()) for d in (demo_shards, mel))
    assert m1["splits"].keys() == m0["splits"].keys()
    for name, sp in m0["splits"].items():
        got = m1["splits"][name]
        assert (got["samples"], got["class_counts"], got["folds"]) == (sp["samples"], sp["class_counts"], sp["folds"])
        assert [s["path"] for s in got["shards"]] == [s["path"] for s in sp["shards"]]
    assert m1["classes"] == m0["classes"] and m1["codec"] == m0["codec"]


def test_dataset_json_records_the_settings_and_each_shard(mel: Path) -> None:
    m = json.loads((mel / MANIFEST).read_text())
    f = m["features"]
    assert {k: f[k] for k in SETTINGS} == {"kind": "logmel", "sample_rate": SR, "n_fft": N_FFT, "win_length": N_FFT,
                                           "hop_length": HOP, "n_mels": N_MELS, "f_min": 0.0, "f_max": SR / 2,
                                           "mel_scale": "htk"}
    assert (f["member"], f["dtype"], f["audio"]) == ("logmel.npy", "float16", "kept")
    import wds_audio

    fe = wds_audio.Frontend(sample_rate=SR, n_mels=N_MELS, hop_length=HOP)
    assert {k: f[k] for k in SETTINGS} == fe.feature_settings()  # the Frontend's own vocabulary and values
    for sp in m["splits"].values():
        for s in sp["shards"]:
            data = (mel / s["path"]).read_bytes()
            assert len(data) == s["bytes"] and hashlib.sha256(data).hexdigest() == s["sha256"]
            assert (mel / s["index"]).read_text() == index_of(data)
    assert verify(str(mel), progress=False, out=io.StringIO()) == []
    assert not list(mel.rglob("*.tmp-*"))


@pytest.mark.numeric
def test_cached_values_are_the_float32_logmel_rounded_to_fp16(mel: Path) -> None:
    samples = read_shards(mel)
    checked = 0
    for key, members in list(samples.items())[:40]:
        if "flac" not in members:
            continue
        ref = _reference(members)
        cached = np.load(io.BytesIO(members["logmel.npy"]))
        assert cached.shape == ref.shape
        ok = within_fp16(cached, ref)
        assert ok.all(), (key, float(np.abs(cached - ref).max()))
        checked += 1
    assert checked >= 30


@pytest.mark.numeric
@pytest.mark.parametrize("wrong", [{"hop_length": HOP + 1}, {"n_mels": N_MELS + 1}, {"n_fft": 2 * N_FFT}])
def test_the_bound_fails_on_other_settings(mel: Path, wrong: dict) -> None:
    """The bound is tight: features computed with a hop one sample longer, one more mel band or another
    n_fft break it on nearly every value (compared where their shapes overlap)."""
    members = next(m for m in read_shards(mel).values() if "flac" in m and len(m["flac"]) > 40_000)
    cached = np.load(io.BytesIO(members["logmel.npy"]))
    other = _reference(members, **wrong)
    f, t = min(cached.shape[0], other.shape[0]), min(cached.shape[1], other.shape[1])
    assert within_fp16(cached[:f, :t], other[:f, :t]).mean() < 0.1  # measured: 0.4 % (hop), 0.5 % (mels), 0 (n_fft)


def test_drop_audio_keeps_everything_else(demo_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "lean"
    assert main(["features", str(demo_shards), str(out), "--n-mels", "32", "--hop-length", "320", "--drop-audio",
                 "--splits", "train", "--no-progress"]) == 0
    m = json.loads((out / MANIFEST).read_text())
    assert list(m["splits"]) == ["train"] and m["codec"] is None and m["features"]["audio"] == "dropped"
    before = read_shards(demo_shards)
    for key, members in read_shards(out).items():
        assert set(members) == set(before[key]) - {"flac"} | {"logmel.npy"}
        assert members["json"] == before[key]["json"]
    assert verify(str(out), progress=False, out=io.StringIO()) == []
    base = json.loads((demo_shards / MANIFEST).read_text())["splits"]["train"]["bytes"]
    assert m["splits"]["train"]["bytes"] < base
    assert main(["features", str(out), str(tmp_path / "again"), "--no-progress"]) == 2  # nothing to compute from
    assert not (tmp_path / "again").exists()


def test_features_of_a_features_pack_replace_the_member(demo_shards: Path, mel: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    assert main(["features", str(mel), str(out), "--n-mels", "40", "--splits", "valid", "--no-progress"]) == 0
    before = read_shards(demo_shards)
    for key, members in read_shards(out).items():
        assert set(members) == set(before[key]) | {"logmel.npy"}
        assert np.load(io.BytesIO(members["logmel.npy"])).shape[0] == 40
    assert json.loads((out / MANIFEST).read_text())["features"]["n_mels"] == 40


def test_threads_give_the_same_bytes(demo_shards: Path, mel: Path, tmp_path: Path) -> None:
    out = tmp_path / "threads"
    assert main(["features", str(demo_shards), str(out), "--n-mels", str(N_MELS), "--hop-length", str(HOP),
                 "--threads", "2", "--no-progress"]) == 0
    a, b = (json.loads((d / MANIFEST).read_text()) for d in (mel, out))
    assert [s["sha256"] for sp in a["splits"].values() for s in sp["shards"]] == \
           [s["sha256"] for sp in b["splits"].values() for s in sp["shards"]]


def test_refusals(demo_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["features", str(demo_shards), str(demo_shards), "--no-progress", "--overwrite"]) == 2
    assert "OUT is DATASET" in capsys.readouterr().err
    assert main(["features", str(demo_shards), str(out), "--f-max", "9000", "--no-progress"]) == 2
    assert "bad STFT/mel settings" in capsys.readouterr().err and not out.exists()
    assert main(["features", str(demo_shards), str(out), "--splits", "nope", "--no-progress"]) == 2
    assert "no split(s) ['nope']" in capsys.readouterr().err
    out.mkdir()
    (out / "something").write_text("x")
    assert main(["features", str(demo_shards), str(out), "--no-progress"]) == 2
    assert "not empty; use --overwrite" in capsys.readouterr().err
    assert main(["features", str(tmp_path / "nothing"), str(tmp_path / "o2"), "--no-progress"]) == 2
    assert "cannot be read" in capsys.readouterr().err


def test_a_failed_run_leaves_no_dataset_json(demo_shards: Path, tmp_path: Path, monkeypatch) -> None:
    import shardgen.features as features
    import wds_audio
    from wds_audio.pipeline.catalog import CatalogError

    real, calls = features.clip_features, []

    def failing(mel, x):
        calls.append(1)
        if len(calls) == 40:
            raise RuntimeError("disk on fire")
        return real(mel, x)

    monkeypatch.setattr(features, "clip_features", failing)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk on fire"):
        features.make_features(str(demo_shards), str(out), features.FeatureOptions(progress=False))
    assert not (out / MANIFEST).exists()
    assert list(out.rglob("*.tar")) and not list(out.rglob("*.tmp-*"))  # whole shards only, the partial one gone
    with pytest.raises(CatalogError):
        wds_audio.loader(str(out), batch_size=4, sample_rate=SR, clip_seconds=1.0, features="cached")


def test_a_killed_run_never_looks_complete(demo_shards: Path, tmp_path: Path) -> None:
    """SIGKILL mid-run (no cleanup runs): a temporary tar is left, no dataset.json; a rerun with
    --overwrite removes the temporaries and completes."""
    out = tmp_path / "out"
    slow = ("import sys, time, shardgen.features as f\n"
            "real = f.clip_features\n"
            "n = [0]\n"
            "def slow(mel, x):\n"
            "    n[0] += 1\n"
            "    if n[0] > 20: time.sleep(0.5)\n"
            "    return real(mel, x)\n"
            "f.clip_features = slow\n"
            "from shardgen.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.Popen([sys.executable, "-c", slow, "features", str(demo_shards), str(out), "--no-progress"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(out.rglob("*.tar")) and time.monotonic() < deadline:  # a whole shard, then mid-shard
            assert proc.poll() is None, "the run ended before it was killed"
            time.sleep(0.1)
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / MANIFEST).exists()
    assert list(out.rglob("*.tmp-*"))  # the shard being written, under its temporary name
    assert main(["features", str(demo_shards), str(out), "--overwrite", "--splits", "valid", "--no-progress"]) == 0
    assert (out / MANIFEST).exists() and not list(out.rglob("*.tmp-*"))
    assert not list((out / "train").glob("*.tar"))  # the killed run's shards went with --overwrite
