"""Servers for integration tests, started and stopped by the tests, on 127.0.0.1 only.

- ``serve``: a factory that starts a FaultServer (tests/integration/faultserver.py) on a
  directory; ``fault_server``: one serving the packed demo dataset (fresh per test, so faults
  and request counts start empty).
- ``s3``: a moto S3 server (one per session) holding the demo dataset under
  ``s3://<bucket>/demo/``, reached exactly as a user reaches AWS: AWS_ENDPOINT_URL and
  credentials in the environment, for as long as the session runs.
"""
from __future__ import annotations

import contextlib

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from .faultserver import FaultServer

BUCKET = "wds-audio-test"


def s3_env(endpoint: str) -> dict[str, str]:
    """The environment a user sets to reach an S3-compatible endpoint, with dummy credentials."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


@pytest.fixture
def serve() -> Iterator[Callable[[Path], FaultServer]]:
    started: list[FaultServer] = []

    def start(root: Path) -> FaultServer:
        srv = FaultServer(root).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def fault_server(serve: Callable[[Path], FaultServer], demo_shards: Path) -> FaultServer:
    return serve(demo_shards)


@dataclass
class S3:
    endpoint: str
    bucket: str
    prefix: str  # s3://bucket/demo
    local: Path  # the same files on local disk


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1, with the environment pointing at it (as s3_env): its endpoint."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k, v in s3_env(endpoint).items():
                mp.setenv(k, v)
            yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3(demo_shards: Path) -> Iterator[S3]:
    with moto_server() as endpoint:
        _upload(demo_shards, BUCKET, "demo")
        yield S3(endpoint, BUCKET, f"s3://{BUCKET}/demo", demo_shards)


def _upload(root: Path, bucket: str, prefix: str) -> None:
    import boto3

    client = boto3.client("s3")  # endpoint and credentials from the environment, as for a user
    client.create_bucket(Bucket=bucket)
    for path in sorted(root.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(root).as_posix()}")
