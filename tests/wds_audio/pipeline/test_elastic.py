"""Resuming an epoch with another world size, stream count or num_workers (pipeline/elastic.py),
on real shards: every sample the old ranks had not handed out is seen exactly once across the
new ranks, and every new rank makes the same number of batches."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

import wds_audio


def _load(src: Path, **kw):
    args = dict(split="train", batch_size=4, sample_rate=16000, clip_seconds=0.5, seed=3)
    args.update(kw)
    return wds_audio.loader(str(src), **args)


def _real(batches) -> list[str]:
    """The epoch's own samples in ``batches``: not evaluation fill-ins, not training wrap-arounds."""
    return [k for b in batches for k, r, v in zip(b.keys, b.repeats or ["0"] * len(b), b.valid.tolist())
            if v and r == "0"]


def _epoch_keys(src: Path) -> Counter:
    m = json.loads((src / "dataset.json").read_text())
    total = m["splits"]["train"]["samples"]
    keys = Counter(_real(_load(src, training=False)))
    assert sum(keys.values()) == total and set(keys.values()) == {1}
    return keys


def _run(src: Path, world: int, at: int | None, state=None, **kw) -> tuple[list[list], list[dict]]:
    """Each rank's batches (up to batch ``at``) and its state_dict after them."""
    out, states = [], []
    for r in range(world):
        loader = _load(src, rank=r, world_size=world, **kw)
        if state is not None:
            loader.load_state_dict(state)
        got = []
        for b in loader:
            got.append(b)
            if at is not None and len(got) == at:
                break
        out.append(got)
        states.append(loader.state_dict())
    return out, states


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("old,new", [((4, 8, 0), (2, 8, 0)), ((2, 8, 0), (3, 8, 0)), ((2, 8, 2), (2, 8, 4)),
                                     ((2, 8, 0), (3, 5, 2))],
                         ids=["4-to-2-ranks", "2-to-3-ranks", "2-to-4-workers", "2-to-3-ranks-5-streams"])
def test_every_unconsumed_sample_once_across_the_new_ranks(demo_shards: Path, training: bool, old: tuple,
                                                           new: tuple) -> None:
    everything = _epoch_keys(demo_shards)
    (w0, s0, n0), (w1, s1, n1) = old, new
    first = _load(demo_shards, world_size=w0, rank=0, streams=s0, training=training)
    at = len(first) // 2
    head, states = _run(demo_shards, w0, at, streams=s0, num_workers=n0, training=training)
    assert all(len(h) == at for h in head) and len({(s["epoch"], s["batches"]) for s in states}) == 1
    rest, after = _run(demo_shards, w1, None, state=states[0], streams=s1, num_workers=n1, training=training)
    assert len({len(r) for r in rest}) == 1 and len(rest[0]) > 0  # equal batch counts on every new rank
    seen = Counter(_real(b for h in head for b in h)) + Counter(_real(b for r in rest for b in r))
    assert seen == everything  # each sample of the epoch exactly once: before or after the resume
    assert all(s["epoch"] == 1 and s["batches"] == 0 for s in after)  # the next epoch is a plain one


def test_a_resumed_epoch_resumed_again(demo_shards: Path) -> None:
    """4 ranks -> 2 ranks -> 3 ranks within one evaluation epoch (the checkpoint keeps the chain)."""
    everything = _epoch_keys(demo_shards)
    head, states = _run(demo_shards, 4, 2, training=False)
    mid, states2 = _run(demo_shards, 2, 2, state=states[0], training=False)
    assert states2[0]["segments"] == [[4, 8, 2]] and states2[0]["batches"] == 2
    rest, _ = _run(demo_shards, 3, None, state=states2[0], training=False)
    assert len({len(r) for r in rest}) == 1
    seen = sum((Counter(_real(b for part in x for b in part)) for x in (head, mid, rest)), Counter())
    assert seen == everything


def test_the_same_checkpoint_gives_the_same_rest(demo_shards: Path) -> None:
    _, states = _run(demo_shards, 2, 3, training=True)
    a, _ = _run(demo_shards, 3, None, state=states[0], training=True)
    b, _ = _run(demo_shards, 3, None, state=states[0], training=True, num_workers=2)
    assert [[x.keys for x in r] for r in a] == [[x.keys for x in r] for r in b]


def test_rebalanced_epoch_on_another_layout_is_refused(demo_shards: Path) -> None:
    kw = dict(rebalance=wds_audio.Rebalance("sqrt"))
    _, states = _run(demo_shards, 2, 2, **kw)
    with pytest.raises(ValueError, match="world_size=2.*rebalanced"):
        _load(demo_shards, rank=0, world_size=3, **kw).load_state_dict(states[0])
