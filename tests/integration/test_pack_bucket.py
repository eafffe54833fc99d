"""shardgen pack straight into a bucket: moto's S3 API behind a proxy that drops uploads and answers 5xx.

Each object is uploaded whole by s3fs (PUT; multipart above s3fs's 50 MiB chunk, which these small
shards do not reach) and appears only when complete; dataset.json comes last. The bytes in the bucket
must equal a local pack, and wds_audio.loader must read the bucket back."""
from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import tarfile
import io
import time
from pathlib import Path
from typing import Iterator

import pytest

from shardgen.cli import main
from shardgen.parts import MergeError, merge
from shardgen.recipes import get
from shardgen.writer import MANIFEST, PackError, PackOptions, pack

from .conftest import moto_server
from .s3proxy import S3FaultProxy

pytestmark = pytest.mark.integration
BUCKET = "shardgen-out"
OPTS = dict(max_shard_samples=8, progress=False)
ROOT = Path(__file__).resolve().parents[2]
SECRET = "SECRET-key-never-printed-1234"


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with moto_server() as endpoint:
        import boto3

        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield endpoint


@pytest.fixture(scope="module")
def local(demo_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local")
    pack(get("csv").load(demo_src), out, PackOptions(**OPTS))
    return out


def _objects(prefix: str) -> dict[str, bytes]:
    import boto3

    c = boto3.client("s3")
    keys = [o["Key"] for page in c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/")
            for o in page.get("Contents", [])]
    return {k[len(prefix) + 1:]: c.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_back(url: str, local: Path) -> None:
    import wds_audio

    m = json.loads((local / MANIFEST).read_text())
    for split, sp in m["splits"].items():
        loader = wds_audio.loader(url, split=split, batch_size=4, sample_rate=16000, clip_seconds=None,
                                  training=False, num_workers=0)
        keys = [k for batch in loader for k, v in zip(batch.keys, batch.valid) if v]
        assert sorted(keys) == sorted(k for s in sp["shards"] for k in _tar_keys(local / s["path"]))


def _tar_keys(path: Path) -> list[str]:
    with tarfile.open(path) as tf:
        return sorted({n.split(".")[0] for n in tf.getnames()})


def test_faults_are_retried_and_the_bucket_equals_a_local_pack(moto: str, local: Path, demo_src: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with S3FaultProxy(moto) as proxy:
        proxy.add(f"/{BUCKET}/faults/train/*.tar", "drop", times=2)  # connection dropped mid-upload
        proxy.add(f"/{BUCKET}/faults/*.tar", 503)
        proxy.add(f"/{BUCKET}/faults/*.idx", 500)
        proxy.add(f"/{BUCKET}/faults/dataset.json", "drop")
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        pack(get("csv").load(demo_src), f"s3://{BUCKET}/faults", PackOptions(**OPTS))
    assert sorted(str(f) for _, f in proxy.hits) == ["500", "503", "drop", "drop", "drop"]
    assert len(proxy.after_drop) == 3 and all(status == 404 for _, status in proxy.after_drop)  # nothing partial
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto)
    assert _objects("faults") == _files(local)  # every object, byte for byte, and no stray key
    _read_back(f"s3://{BUCKET}/faults", local)


def test_killed_part_resume_and_merge_in_a_bucket(moto: str, local: Path, demo_src: Path) -> None:
    url = f"s3://{BUCKET}/parts"
    cmd = [sys.executable, "-m", "shardgen.cli", "pack", "--recipe", "csv", str(demo_src), url,
           "--max-shard-samples", "8", "--no-progress", "--part", "1/2"]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and sum(k.endswith(".tar") for k in _objects("parts")) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    objs = _objects("parts")
    assert MANIFEST not in objs and ".parts/part-0001-of-0002.json" not in objs
    for k, data in objs.items():  # whatever a reader could find is complete
        if k.endswith(".tar"):
            assert data == (local / k).read_bytes() and k[:-4] + ".idx" in objs
    with pytest.raises(MergeError, match=r"no part manifest .* not complete: \.parts/part-0001-of-0002\.jsonl"):
        merge(url)
    col = get("csv").load(demo_src)
    pack(col, url, PackOptions(**OPTS), part=(2, 2))
    res = pack(col, url, PackOptions(**{**OPTS, "resume": True}), part=(1, 2))
    assert res.kept_shards >= 3  # checked by size and sha256 against the part's journal
    assert res.kept_shards + res.shards_written == len(res.manifest["planned"])
    merge(url)
    assert _objects("parts") == _files(local)
    _read_back(url, local)


def test_no_permission_or_no_credentials_fail_before_encoding(moto: str, demo_src: Path, capsys,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import shardgen.writer as w

    def no_encoding(*a, **k):
        raise AssertionError("encoding started")

    monkeypatch.setattr(w, "_encoded", no_encoding)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    args = ["pack", "--recipe", "csv", str(demo_src), f"s3://{BUCKET}/denied", "--no-progress"]
    with S3FaultProxy(moto) as proxy:
        proxy.add(f"/{BUCKET}/denied/*", "deny", times=None)
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        assert main(args) == 2
    err = capsys.readouterr().err
    assert f"cannot write to s3://{BUCKET}/denied" in err and "no write permission" in err and SECRET not in err
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k)
    with pytest.raises(PackError, match=r"cannot write to s3://.*NoCredentialsError|Unable to locate credentials"):
        pack(get("csv").load(demo_src), f"s3://{BUCKET}/nocreds", PackOptions(**OPTS))
    assert main(args[:-2] + [f"s3://{BUCKET}/nocreds2", "--no-progress"]) == 2
    assert SECRET not in capsys.readouterr().err
