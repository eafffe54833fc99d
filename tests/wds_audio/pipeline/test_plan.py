"""The epoch plan: balanced ranks, equal batch counts, exactly-once evaluation, determinism."""
from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wds_audio.pipeline.plan import plan_epoch


def _samples(plan):
    return [(sl.shard, i, sl.valid, sl.rep) for sp in plan.streams for sl in sp.slices for i in range(sl.start, sl.stop)]


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 40), min_size=1, max_size=8).filter(lambda c: sum(c) > 0),
       world=st.integers(1, 5), batch=st.integers(1, 9), streams=st.integers(1, 6), training=st.booleans(),
       epoch=st.integers(0, 3))
def test_properties(counts, world, batch, streams, training, epoch) -> None:
    plans = [plan_epoch(counts, batch_size=batch, seed=7, epoch=epoch, rank=r, world_size=world, streams=streams,
                        training=training) for r in range(world)]
    # every rank yields the same number of batches, each batch full
    assert len({p.batches for p in plans}) == 1
    for p in plans:
        assert sum(sp.batches for sp in p.streams) == p.batches
        assert all(sp.samples == sp.batches * batch for sp in p.streams)
        assert max(sp.batches for sp in p.streams) - min(sp.batches for sp in p.streams) <= 1
    # ranks are balanced to the sample
    real = [p.real_samples for p in plans]
    assert max(real) - min(real) <= 1 and sum(real) == sum(counts)
    # every real sample exactly once across ranks (valid, first occurrence)
    firsts = Counter((s, i) for p in plans for s, i, valid, rep in _samples(p) if rep == 0)
    assert set(firsts) == {(s, i) for s, n in enumerate(counts) for i in range(n)}
    assert all(v == 1 for v in firsts.values())
    if not training:  # evaluation: everything beyond the real samples is an invalid fill-in
        valid = [(s, i) for p in plans for s, i, v, _ in _samples(p) if v]
        assert Counter(valid) == firsts
    # pure function
    again = plan_epoch(counts, batch_size=batch, seed=7, epoch=epoch, rank=0, world_size=world, streams=streams,
                       training=training)
    assert again == plans[0]


def test_training_order_changes_with_epoch_and_seed() -> None:
    kw = dict(batch_size=4, rank=0, world_size=1, streams=2, training=True)
    a = plan_epoch([50, 60, 70], seed=0, epoch=0, **kw)
    assert a != plan_epoch([50, 60, 70], seed=0, epoch=1, **kw)
    assert a != plan_epoch([50, 60, 70], seed=1, epoch=0, **kw)
    assert a == plan_epoch([50, 60, 70], seed=0, epoch=0, **kw)


def test_evaluation_is_file_order() -> None:
    p = plan_epoch([3, 2], batch_size=2, seed=0, epoch=5, rank=0, world_size=1, streams=1, training=False)
    assert [(s, i) for s, i, v, _ in _samples(p) if v] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert p.batches == 3 and [v for *_, v, _ in _samples(p)].count(False) == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        plan_epoch([1], batch_size=0, seed=0, epoch=0, rank=0, world_size=1, streams=1, training=True)
    with pytest.raises(ValueError, match="no samples"):
        plan_epoch([0, 0], batch_size=1, seed=0, epoch=0, rank=0, world_size=1, streams=1, training=True)
    with pytest.raises(ValueError):
        plan_epoch([3], batch_size=1, seed=0, epoch=0, rank=2, world_size=2, streams=1, training=True)
