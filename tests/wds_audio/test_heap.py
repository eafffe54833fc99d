"""Memory reuse in workers: recycled collate buffers never leak one batch into another."""
from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import wds_audio
from wds_audio.heap import BatchBuffer
from wds_audio.stream import collate


def _samples(lengths: list[int], seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"key": f"k{i}", "audio": rng.standard_normal(n).astype(np.float32), "labels": np.eye(3, dtype=np.uint8)[i % 3],
             "valid": True} for i, n in enumerate(lengths)]


def test_collate_into_a_dirty_buffer_equals_a_fresh_one() -> None:
    buf = BatchBuffer()
    collate(_samples([50, 50, 50], 0), 50, buf)  # fills the buffer with non-zero audio
    again = _samples([50, 20, 7], 1)  # shorter clips: the tails must be zeroed, not left over
    got, ref = collate(again, 50, buf), collate(again, 50)
    assert got.audio.data_ptr() == buf.take((3, 50), np.float32).ctypes.data
    assert torch.equal(got.audio, ref.audio) and torch.equal(got.lengths, ref.lengths)
    assert float(got.audio[2, 7:].abs().max()) == 0.0


def test_buffer_is_new_after_release_or_a_new_shape() -> None:
    buf = BatchBuffer()
    a = buf.take((2, 3), np.float32)
    buf.release()
    b = buf.take((2, 3), np.float32)
    assert b is not a and buf.take((2, 4), np.float32) is not b and buf.take((2, 4), np.int16).dtype == np.int16


class _ViewFrontend(torch.nn.Module):
    """Features that are a view of the batch's audio: the buffer must leave with them."""

    def set_epoch(self, epoch: int) -> None:
        pass

    def forward(self, batch):
        return batch.audio[:, :100], batch.targets


def test_features_that_alias_the_buffer_are_not_overwritten(demo_shards: Path) -> None:
    kw = dict(split="train", batch_size=8, sample_rate=16000, clip_seconds=1.0, seed=3)
    kept = [b.features for b in wds_audio.loader(str(demo_shards), frontend=_ViewFrontend(), **kw)]  # no clones
    ref = [b.audio[:, :100] for b in wds_audio.loader(str(demo_shards), **kw)]
    assert len(kept) == len(ref) > 2
    assert all(torch.equal(k, r) for k, r in zip(kept, ref))


@pytest.mark.skipif(platform.system() != "Linux", reason="glibc's mallopt")
def test_keep_freed_memory_takes_effect_on_glibc() -> None:
    code = "from wds_audio.heap import keep_freed_memory; print(keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == ("True" if platform.libc_ver()[0] == "glibc" else "False")
