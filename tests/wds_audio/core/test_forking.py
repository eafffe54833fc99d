"""wds_audio.core.forking: the training process's objects frozen while a loader's workers live."""
from __future__ import annotations

import gc
from pathlib import Path

import pytest

import wds_audio
from wds_audio.core.forking import freeze_for_workers, release


@pytest.fixture(autouse=True)
def _unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_holds_nest_and_the_last_release_unfreezes() -> None:
    a = freeze_for_workers()
    b = freeze_for_workers()
    assert a and b and gc.get_freeze_count() > 0
    release(a)
    assert gc.get_freeze_count() > 0  # the other loader's workers still run
    release(b)
    assert gc.get_freeze_count() == 0


def test_a_program_that_froze_objects_itself_is_left_alone() -> None:
    gc.freeze()
    n = gc.get_freeze_count()
    made_since = [[] for _ in range(1000)]  # tracked, not frozen: our call would freeze them
    hold = freeze_for_workers()
    assert not hold
    release(hold)
    # frozen objects freed by reference counting leave the count, so it may only go down a little
    assert 0 < gc.get_freeze_count() <= n
    del made_since


def _load(src: Path, **kw):
    return wds_audio.loader(str(src), split="train", batch_size=8, sample_rate=16000, clip_seconds=0.5, seed=0, **kw)


def test_frozen_during_an_epoch_with_workers_only(demo_shards: Path) -> None:
    seen = [gc.get_freeze_count() for _ in _load(demo_shards, num_workers=2)]
    assert seen and min(seen) > 0
    assert gc.get_freeze_count() == 0
    assert all(gc.get_freeze_count() == 0 for _ in _load(demo_shards, num_workers=0))


def test_an_abandoned_epoch_gives_the_freeze_up(demo_shards: Path) -> None:
    it = iter(_load(demo_shards, num_workers=2))
    next(it)
    assert gc.get_freeze_count() > 0
    it.close()
    assert gc.get_freeze_count() == 0
    it = iter(_load(demo_shards, num_workers=2))
    next(it)  # a peek: the iterator then only dropped
    del it
    assert gc.get_freeze_count() == 0


def test_persistent_workers_keep_it_while_the_loader_lives(demo_shards: Path) -> None:
    loader = _load(demo_shards, num_workers=2, persistent_workers=True)
    for epoch in range(2):
        loader.set_epoch(epoch)
        assert len(list(loader)) == len(loader)
        assert gc.get_freeze_count() > 0  # the workers, and the pages they share, are still there
    del loader
    gc.collect()
    assert gc.get_freeze_count() == 0
