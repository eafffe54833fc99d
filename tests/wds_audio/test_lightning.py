"""wds_audio.lightning.AudioDataModule under a real Lightning Trainer: 2-process DDP (gloo, CPU).

One fit of 2 epochs (with a ModelCheckpoint every 10 steps, i.e. mid-epoch 1) and one fit resumed
from that checkpoint, each launched with torchrun (tests/wds_audio/lightning_fit.py, run as a
module: run as a script, its folder would shadow the standard library's ``signal`` with
tests/wds_audio/signal). The batches of each rank are checked against the loader built by hand
with that rank and world size and ``set_epoch``; the resumed fit must go on with the batches (and
the augmentation draws) of the uninterrupted one; validation and test run the Frontend in eval mode.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pytorch_lightning")

import torch  # noqa: E402

import wds_audio  # noqa: E402

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BATCH, CLIP, SEED = 8, 0.5, 7  # as in lightning_fit.py
CKPT_EVERY = 10  # 7 batches per rank and epoch: step 10 is after batch 3 of epoch 1


def _fit(source: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "--max_restarts=0", "-m", "tests.wds_audio.lightning_fit", str(source), str(out), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _logs(out: Path, tag: str) -> list[dict]:
    return [json.loads((out / f"{tag}_rank{r}.json").read_text()) for r in (0, 1)]


def _expected(source: Path, rank: int, epoch: int) -> list[list[str]]:
    """The keys of each batch of ``rank`` in ``epoch``, from the loader built by hand."""
    loader = wds_audio.loader(source, split="train", folds=[1, 2, 3, 4], batch_size=BATCH, sample_rate=16000,
                              clip_seconds=CLIP, seed=SEED, rank=rank, world_size=2)
    loader.set_epoch(epoch)
    return [b.keys for b in loader]


def _all_keys(source: Path, split: str) -> set[str]:
    loader = wds_audio.loader(source, split=split, batch_size=16, sample_rate=16000, clip_seconds=CLIP,
                              training=False, rank=0, world_size=1)
    return {k for b in loader for k, v in zip(b.keys, b.valid) if v}


def test_datamodule_without_a_trainer(demo_shards: Path) -> None:
    from wds_audio.lightning import AudioDataModule

    dm = AudioDataModule(demo_shards, folds=[1, 2], batch_size=4, sample_rate=16000, clip_seconds=CLIP)
    assert (dm.val_split, dm.val_folds, dm.test_split) == ("valid", None, None)  # the dataset's valid split
    cv = AudioDataModule(demo_shards, folds=[1, 2], batch_size=4, clip_seconds=CLIP, val_split="auto")
    assert cv.num_classes == len(cv.classes) > 0
    # a dataset without a `valid` split validates on the training split's other folds (ESC-50 style)
    cv._catalog.manifest = {**cv._catalog.manifest, "splits": {"train": cv._catalog.manifest["splits"]["train"]}}
    assert cv._resolve("auto", None, "valid", cross_validate=True) == ("train", [3, 4])
    with pytest.raises(ValueError, match="no test data"):
        dm.test_dataloader()
    train = dm.train_dataloader()
    assert len(train) == len(dm.train_dataloader().loader) and not hasattr(train, "dataset")
    assert train.state_dict()["epoch"] == 0 and train.classes == dm.classes
    with pytest.raises(ValueError, match="training= is chosen per loader"):
        AudioDataModule(demo_shards, batch_size=4, training=False)
    with pytest.raises(ValueError, match="frontend takes audio at 8000 Hz"):
        AudioDataModule(demo_shards, batch_size=4, frontend=wds_audio.Frontend(sample_rate=8000)).train_dataloader()


def test_two_rank_ddp_fit_with_mid_epoch_resume(demo_shards: Path, tmp_path: Path) -> None:
    full = _fit(demo_shards, tmp_path, "--ckpt-every", str(CKPT_EVERY), "--test")
    assert full.returncode == 0, full.stderr[-4000:]
    logs = _logs(tmp_path, "full")
    n = logs[0]["len"]
    assert n == 7 and logs[1]["len"] == n

    train_keys = _all_keys(demo_shards, "train")
    for r, log in enumerate(logs):
        assert (log["rank"], log["world"]) == (r, 2)  # from the Trainer
        for epoch in (0, 1):
            got = [t["keys"] for t in log["train"] if t["epoch"] == epoch]
            assert got == _expected(demo_shards, r, epoch)  # this rank's share, this epoch's order
        # training ran the Frontend on the device side in train mode: every batch augmented
        assert all(t["fe_training"] and t["augmented"] for t in log["train"])
    for epoch in (0, 1):
        mine = [{k for t in log["train"] if t["epoch"] == epoch for k in t["keys"]} for log in logs]
        assert not mine[0] & mine[1] and mine[0] | mine[1] == train_keys  # each rank its own data, all of it
    assert [t["keys"] for t in logs[0]["train"] if t["epoch"] == 0] != \
           [t["keys"] for t in logs[0]["train"] if t["epoch"] == 1]  # set_epoch: a new order

    valid_keys = _all_keys(demo_shards, "valid")
    for stage in ("val", "test"):
        for log in logs:
            # eval mode: features exactly those of an eval-mode Frontend, targets untouched, Frontend not training
            assert log[stage] and all(v["plain"] and not v["fe_training"] for v in log[stage])
        for epoch in ((0, 1) if stage == "val" else (None,)):
            seen = [k for log in logs for v in log[stage] if epoch is None or v["epoch"] == epoch for k in v["keys"]]
            assert sorted(seen) == sorted(valid_keys)  # each clip exactly once across the ranks
    assert all(v["binary"] and not v["batch_training"] for log in logs for v in log["val"])

    ckpt = tmp_path / "ckpt-full" / f"mid-step={CKPT_EVERY}.ckpt"
    state = torch.load(ckpt, weights_only=False)["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert [(s["epoch"], s["batches"], s["world_size"]) for s in state] == [(1, CKPT_EVERY - n, 2)]

    resumed = _fit(demo_shards, tmp_path, "--tag", "resumed", "--resume", str(ckpt))
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    for log, again in zip(logs, _logs(tmp_path, "resumed")):
        rest = [t for t in log["train"] if (t["epoch"], t["idx"]) >= (1, CKPT_EVERY - n)]
        assert [(t["epoch"], t["idx"]) for t in again["train"]] == [(t["epoch"], t["idx"]) for t in rest]
        assert [t["keys"] for t in again["train"]] == [t["keys"] for t in rest]  # the batches it would have had
        assert [t["sum"] for t in again["train"]] == pytest.approx([t["sum"] for t in rest], rel=1e-6)  # same draws
        assert [v["keys"] for v in again["val"]] == [v["keys"] for v in log["val"] if v["epoch"] == 1]
