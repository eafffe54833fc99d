"""Batch: moving it (to, pin_memory, map_tensors) keeps every field, and it crosses from a
DataLoader worker with small tensors inside the pickle and big ones in shared memory."""
from __future__ import annotations

import pickle
from multiprocessing.reduction import ForkingPickler

import pytest
import torch
import torch.multiprocessing  # noqa: F401 - registers torch's shared-memory reductions with ForkingPickler

from wds_audio.pipeline.batch import INLINE_BYTES, Batch


def _batch(cls: type = Batch, **extra: object) -> Batch:
    g = torch.Generator().manual_seed(0)
    return cls(audio=torch.randn(4, 100_000, generator=g), lengths=torch.tensor([100_000, 5, 7, 9]),
               targets=torch.rand(4, 3, generator=g), keys=list("abcd"), valid=torch.tensor([True, True, False, True]),
               index=3, stats={"samples": 4}, repeats=["0", "1", "0", "0"],
               features=torch.randn(4, 8, 11, generator=g), **extra)


def _assert_same(a: Batch, b: Batch) -> None:
    assert type(a) is type(b)
    for name, va in vars(a).items():
        vb = getattr(b, name)
        if isinstance(va, torch.Tensor):
            assert isinstance(vb, torch.Tensor) and vb.dtype == va.dtype and torch.equal(va, vb), name
        else:
            assert va == vb, name


def test_to_and_map_keep_every_field() -> None:
    b = _batch()
    _assert_same(b.to("cpu"), b)
    doubled = b.map_tensors(lambda t: t * 2)
    assert torch.equal(doubled.features, b.features * 2) and doubled.keys == b.keys and doubled.repeats == b.repeats


def test_dali_batch_keeps_its_fields_when_moved() -> None:
    # DaliBatch.to once passed its fields by position and put the features where repeats go
    pytest.importorskip("nvidia.dali")
    from wds_audio.dali.loader import DaliBatch

    b = _batch(DaliBatch, frames=torch.tensor([11, 1, 1, 1]))
    moved = b.to("cpu")
    _assert_same(moved, b)
    assert moved.repeats == ["0", "1", "0", "0"] and torch.equal(moved.frames, b.frames)
    if torch.cuda.is_available():
        _assert_same(b.pin_memory(), b)


def test_small_tensors_travel_in_the_pickle_big_ones_in_shared_memory() -> None:
    b = _batch()
    data = bytes(ForkingPickler.dumps(b))
    assert b.audio.is_shared()  # 1.6 MB: moved to shared memory by torch's reduction
    for name in ("lengths", "targets", "valid", "features"):
        assert not getattr(b, name).is_shared(), name
    _assert_same(pickle.loads(data), b)


def test_the_inlined_bytes_stay_small_whatever_the_batch() -> None:
    # AudioSet-sized targets (64 x 527 float32, 135 KB) must not go inline: a pickle larger than a
    # pipe's buffer blocks a worker's exit once the training process is gone
    b = Batch(audio=torch.zeros(64, 0), lengths=torch.zeros(64, dtype=torch.int64), targets=torch.ones(64, 527),
              keys=[f"clip{i:05d}" for i in range(64)], valid=torch.ones(64, dtype=torch.bool),
              features=torch.ones(64, 128, 3))  # 98 KB
    data = bytes(ForkingPickler.dumps(b))
    assert b.targets.is_shared() and b.features.is_shared() and not b.lengths.is_shared()
    assert len(data) < INLINE_BYTES + 8192 < 64 << 10
    _assert_same(pickle.loads(data), b)


def _make_batch(_: int) -> Batch:
    return _batch()


def test_batch_from_a_worker_process_equals_the_original() -> None:
    loader = torch.utils.data.DataLoader(range(2), batch_size=None, num_workers=1, collate_fn=_make_batch)
    got = list(loader)
    assert len(got) == 2
    for b in got:
        _assert_same(b, _batch())
