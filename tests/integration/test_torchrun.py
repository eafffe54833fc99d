"""A real multi-process run: torchrun --nproc_per_node=2 (gloo, CPU), DDP, shards on an S3 endpoint (moto).

Both ranks get equal batch counts, evaluation sees each sample exactly once across ranks, and a
run killed mid-epoch resumes from its checkpoint with exactly the remaining batches.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).with_name("ddp_train.py")
ROOT = Path(__file__).resolve().parents[2]


def _torchrun(source: str, out: Path, *extra: str, port: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           "--max_restarts=0", str(SCRIPT), source, str(out), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _logs(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_ddp_two_ranks_from_s3_with_kill_and_resume(s3, tmp_path: Path) -> None:
    source = s3.prefix
    full = tmp_path / "full"
    full.mkdir()
    done = _torchrun(source, full, port=_free_port())
    assert done.returncode == 0, done.stderr[-3000:]
    logs = _logs(full)
    valid_total = json.loads((s3.local / "dataset.json").read_text())["splits"]["valid"]["samples"]
    for epoch in ("0", "1"):
        counts = [len(log["train"][epoch]) for log in logs]
        assert counts[0] == counts[1] == logs[0]["len"]  # equal batch counts, as announced by len()
        assert [log["eval"][epoch]["batches"] for log in logs][0] == logs[1]["eval"][epoch]["batches"]
        seen = Counter(k for log in logs for k in log["eval"][epoch]["keys"])
        assert len(seen) == valid_total and set(seen.values()) == {1}  # exactly once across ranks
    assert logs[0]["train"]["0"] != logs[0]["train"]["1"]  # a new epoch, a new order

    crashed = tmp_path / "crashed"
    crashed.mkdir()
    run = _torchrun(source, crashed, "--crash-after", "3", port=_free_port())
    assert run.returncode != 0
    resumed = _torchrun(source, crashed, "--resume", port=_free_port())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for r, log in enumerate(_logs(crashed)):
        # rank 0 died after batch 3 of epoch 1; rank 1 may have gone a little further before the
        # group was torn down: both resume from their own checkpoints and end with the same batches
        assert log["train"]["1"] == logs[r]["train"]["1"]
        assert log["train"]["0"] == logs[r]["train"]["0"]
