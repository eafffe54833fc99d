"""The rebalancing stage: a bounded, byte-budgeted reservoir per class that re-emits samples
so that the class mix follows the target of :class:`wds_audio.Rebalance` (see pipeline/rebalance.py).
"""
from __future__ import annotations

import heapq
import math
from collections import deque
from typing import Any, Iterator

import numpy as np

from ..core.rng import seed_of
from .rebalance import Rebalance, _power_target
from .spans import Span

_END = object()
MAX_EXAMPLES = 5  # skipped samples named per reason in stats()
STATE_VERSION = 2


# The stream's target (stream-relative or counted online) and the classes' supply terms are
# recomputed every min(REFRESH_EVERY, 1 + inputs // 32) labelled inputs, and whenever a rarely
# seen class shows up: they move by about 1/inputs per input, so a young stream refreshes at every
# input and a long one every 32 (recomputing costs O(C)).
REFRESH_EVERY = 32


# Score bonus of a clip carrying a starving class: larger than any KL score can be.
STARVE_BONUS = 1000.0


# Candidates per slot besides the fresh clip: NEEDIEST_DRAWS random held clips of the neediest
# class that has any, and RANDOM_HELD clips drawn uniformly from the whole store.
NEEDIEST_DRAWS = 4
RANDOM_HELD = 4


# A clip held only for its worth over the stream's run (useless now) enters the store with its
# worth times this: its key log(u) / w is then ~1000x further below zero than that of a clip of the
# same worth held for its score now, so it only fills room the clips useful now leave free, and is
# the first evicted when one of them needs it. Measured: weighted 1, such clips crowded a full
# 64-MiB store on a 100k-clip multi-label stream (TV 0.019 -> 0.092 to uniform); weighted 1e-3,
# 0.014. A held clip found useless now but worth holding later is moved to this tier the same way.
FUTURE_WEIGHT = 1e-3

# The target terms of the need are refreshed when E has grown by this fraction.
REF_GROWTH = 0.01


def sample_nbytes(sample: dict) -> int:
    """A sample's size for the byte budget: the summed lengths of its bytes-like values, and of
    the bytes its Spans name. A clip held as its place in a local shard (spans.py) weighs what it
    would as bytes, so the store holds the same clips, and draws the same, either way."""
    return sum(v.size if isinstance(v, Span) else len(v) for v in sample.values()
               if isinstance(v, (bytes, bytearray, memoryview, Span)))


class _Item:
    """One input clip: its sample, labels, size, times emitted and reservoir key."""

    __slots__ = ("id", "sample", "labels", "label_list", "nbytes", "uses", "key", "low")

    def __init__(self, id: int, sample: dict, labels: np.ndarray, nbytes: int, uses: int = 0,
                 key: float = -math.inf, low: bool = False) -> None:
        self.id, self.sample, self.nbytes, self.uses, self.key = id, sample, nbytes, uses, key
        self.low = low  # held in the lower tier: for its worth over the run only (see FUTURE_WEIGHT)
        self.labels = labels
        self.label_list: list[int] = labels.tolist()


class _View:
    """The controller's state at one instant: per-class need, KL, starving classes."""

    __slots__ = ("need", "need_list", "kl", "starving", "starve_list")

    def __init__(self, st: _EpochState, floor: float) -> None:
        self.need = st.log_target1 - st.log_emitted1
        self.kl = -float(np.dot(st.emitted, self.need)) / st.total if st.total > 0 else 0.0
        self.starving = st.guard > st.emitted if floor > 0 else np.zeros(st.emitted.size, dtype=bool)
        # plain lists: scoring a clip with a few labels is much cheaper in Python than in numpy
        self.need_list: list[float] = self.need.tolist()
        self.starve_list: list[bool] = self.starving.tolist()

    def score(self, item: _Item) -> float:
        """First-order drop in KL(emitted || target) from emitting ``item`` (times E)."""
        need, starve = self.need_list, self.starve_list
        s, starving = 0.0, False
        for c in item.label_list:
            s += need[c]
            starving = starving or starve[c]
        return s + self.kl * len(item.label_list) + (STARVE_BONUS if starving else 0.0)


class _Reservoir:
    """Held clips: one store bounded in bytes, indexed per class and as a whole for draws.

    The heap orders held clips by key, smallest (next to evict) first; clips removed for another
    reason, and the old keys of clips moved to the lower tier, stay in it as stale entries and are
    skipped when met.
    """

    def __init__(self, num_classes: int, budget: int) -> None:
        self.budget = budget
        self.items: dict[int, _Item] = {}
        self.heap: list[tuple[float, int]] = []
        self.by_class: list[list[int]] = [[] for _ in range(num_classes)]
        self.everything: list[int] = []
        self.pos: dict[tuple[int, int], int] = {}  # (item id, class or -1) -> index in its list
        self.count = np.zeros(num_classes, dtype=np.int64)
        self.bytes_held = 0
        self.peak_bytes = 0

    def _lowest(self) -> tuple[float, int] | None:
        while self.heap and not self._current(self.heap[0]):
            heapq.heappop(self.heap)
        return self.heap[0] if self.heap else None

    def offer(self, item: _Item) -> list[_Item]:
        """Admit ``item`` if its key beats enough held keys to make room; return the evicted."""
        popped: list[tuple[float, int]] = []
        freed = 0
        while self.bytes_held - freed + item.nbytes > self.budget:
            low = self._lowest()
            if low is None or low[0] >= item.key:
                for entry in popped:  # it does not fit: everything stays as it was
                    heapq.heappush(self.heap, entry)
                return []
            popped.append(heapq.heappop(self.heap))
            freed += self.items[low[1]].nbytes
        evicted = [self.remove(self.items[i]) for _, i in popped]
        self.insert(item)
        return evicted

    def insert(self, item: _Item) -> None:
        self.items[item.id] = item
        heapq.heappush(self.heap, (item.key, item.id))
        for c in item.label_list:
            self._append(self.by_class[c], item.id, c)
        self._append(self.everything, item.id, -1)
        self.count[item.labels] += 1
        self.bytes_held += item.nbytes
        self.peak_bytes = max(self.peak_bytes, self.bytes_held)
        if len(self.heap) > 2 * len(self.items) + 64:  # drop stale entries now and then
            self.heap = [e for e in self.heap if self._current(e)]
            heapq.heapify(self.heap)

    def _current(self, entry: tuple[float, int]) -> bool:
        item = self.items.get(entry[1])
        return item is not None and item.key == entry[0]

    def demote(self, item: _Item) -> None:
        """Move a held clip to the lower tier: the same draw u, its weight times FUTURE_WEIGHT."""
        item.key /= FUTURE_WEIGHT  # log(u) / (w * FUTURE_WEIGHT): a key < 0 moves further below zero
        item.low = True
        heapq.heappush(self.heap, (item.key, item.id))

    def remove(self, item: _Item) -> _Item:
        del self.items[item.id]
        for c in item.label_list:
            self._discard(self.by_class[c], item.id, c)
        self._discard(self.everything, item.id, -1)
        self.count[item.labels] -= 1
        self.bytes_held -= item.nbytes
        return item

    def _append(self, ids: list[int], item_id: int, slot: int) -> None:
        self.pos[(item_id, slot)] = len(ids)
        ids.append(item_id)

    def _discard(self, ids: list[int], item_id: int, slot: int) -> None:
        i = self.pos.pop((item_id, slot))
        last = ids.pop()
        if last != item_id:  # swap-remove keeps removal O(1)
            ids[i] = last
            self.pos[(last, slot)] = i


class _EpochState:
    """Everything that changes while one (epoch, worker) stream is processed."""

    def __init__(self, stage: RebalanceStage, epoch: int, worker: int) -> None:
        c = len(stage.classes)
        self.epoch, self.worker = epoch, worker
        self.rng = np.random.default_rng(seed_of(stage.seed, epoch, worker, "rebalance"))
        self.emitted = np.zeros(c)   # e_c: label occurrences emitted
        self.total = 0.0             # E = sum(e_c)
        self.seen = np.zeros(c)      # label occurrences of valid inputs
        self.q = stage.q_fixed       # the stream's target; None until the first labelled input when counted online
        self.q_version = 0           # bumped whenever q is recomputed
        self.since_refresh = REFRESH_EVERY
        # supply_c = log(q_c / p_c), p the label shares seen so far: > 0 for a class that fresh clips
        # alone cannot keep on target, whose clips are worth holding whether or not it is behind now
        self.supply: list[float] | None = None
        # need_c = log(q_c E + 1) - log(e_c + 1): the second term is kept up to date per emission,
        # the first (and the starvation guard) only when E has grown by 1 % since (see _view)
        self.log_emitted1 = np.zeros(c)
        self.log_target1 = np.zeros(c)
        self.guard = np.zeros(c)
        self.ref_total, self.ref_q_version = -1.0, -1
        self.n_in = self.n_valid = self.n_empty = self.n_out = self.n_repeats = self.unique_out = 0
        self.skipped: dict[str, int] = {}
        self.skipped_examples: dict[str, list[str]] = {}  # reason -> the first few "url key" of skipped samples
        self.settled = np.zeros(stage.config.max_reuse + 1, dtype=np.int64)  # clips no longer held, by uses
        self.reservoir = _Reservoir(c, stage.config.buffer_bytes)
        self.pending: deque[dict] = deque()


class RebalanceStage:
    """A webdataset-style generator stage: ``stage(samples, epoch, worker) -> samples``.

    Example:
        >>> stage = RebalanceStage(Rebalance("sqrt"), ["a", "b"], [90, 10], seed=0)
        >>> out = list(stage(iter([{"__key__": f"k{i}", "labels": bytes([1, 0])} for i in range(4)])))
        >>> [s["__key__"] for s in out], stage.stats()["samples_out"]
        (['k0', 'k1', 'k2', 'k3'], 4)
    """

    def __init__(self, config: Rebalance, classes: list[str], class_counts: list[int] | None, seed: int) -> None:
        self.config = config
        self.classes = list(classes)
        self.seed = int(seed)
        self.q_fixed = config.resolve(self.classes, class_counts)  # validates the whole config
        self.alpha = config.alpha()
        # with the dataset's counts the stream steers to its own share of the target (see _refresh)
        self.counts = None if class_counts is None else np.asarray(class_counts, dtype=np.float64)
        self.relative = self.q_fixed is not None and self.counts is not None
        self._state: _EpochState | None = None
        self._resume: _EpochState | None = None

    # ------------------------------------------------------------------ the stream
    def __call__(self, samples: Iterator[dict], epoch: int = 0, worker: int = 0) -> Iterator[dict]:
        resume = self._resume
        self._resume = None
        if resume is not None and (resume.epoch, resume.worker) != (epoch, worker):
            raise ValueError(f"RebalanceStage: the loaded state is for epoch {resume.epoch} worker {resume.worker}, "
                             f"not epoch {epoch} worker {worker}")
        self._state = resume or _EpochState(self, epoch, worker)
        return self._run(iter(samples), self._state)

    def _run(self, samples: Iterator[dict], st: _EpochState) -> Iterator[dict]:
        while True:
            while st.pending:
                out = st.pending.popleft()
                st.n_out += 1
                yield out
            sample = next(samples, _END)
            if sample is _END:
                return
            self._step(st, sample)

    def _step(self, st: _EpochState, sample: dict) -> None:
        """Read one input and queue the samples its slots produce."""
        st.n_in += 1
        labels = self._labels(st, sample)
        if labels is None:
            return
        nbytes = sample_nbytes(sample)
        if nbytes > self.config.buffer_bytes:
            raise ValueError(f"{_where(sample)}: sample is {nbytes} bytes, larger than Rebalance.buffer_bytes="
                             f"{self.config.buffer_bytes}: the reservoir could not hold a single sample")
        st.n_valid += 1
        ratio = self.config.ratio
        slots = _floor(ratio * st.n_valid) - _floor(ratio * (st.n_valid - 1))
        item = _Item(st.n_valid, sample, labels, nbytes)
        if labels.size == 0:  # no class: passes at the natural rate, never held
            st.n_empty += 1
            for _ in range(slots):
                self._emit(st, item)
            st.settled[item.uses] += 1
            return
        st.seen[labels] += 1
        self._refresh(st, labels)
        if self.config.floor > 0 and st.q is not None:  # guard this clip's classes with up-to-date counts
            share = st.total / float(st.seen.sum())
            for c in item.label_list:
                st.guard[c] = self.config.floor * min(st.q[c] * st.total, st.seen[c] * share)
        view = self._view(st)
        for i in range(slots):
            if i:
                view = self._view(st)
            self._emit(st, self._choose(st, item, view))
        self._hold_or_settle(st, item, view)

    def _labels(self, st: _EpochState, sample: dict) -> np.ndarray | None:
        raw = sample.get("labels") if isinstance(sample, dict) else None
        reason = None
        if not isinstance(sample, dict):
            reason = "not_a_dict"
        elif raw is None:
            reason = "missing_labels"
        elif not isinstance(raw, (bytes, bytearray, memoryview)):
            reason = "labels_not_bytes"
        else:
            hot = np.frombuffer(raw, dtype=np.uint8)
            if hot.size != len(self.classes):
                reason = "labels_length"
            elif hot.size and hot.max() > 1:
                reason = "labels_values"
            else:
                return np.flatnonzero(hot)
        st.skipped[reason] = st.skipped.get(reason, 0) + 1
        examples = st.skipped_examples.setdefault(reason, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(_where(sample) if isinstance(sample, dict) else repr(sample)[:80])
        return None

    def _refresh(self, st: _EpochState, labels: np.ndarray) -> None:
        """Recompute the stream's target and the supply terms from the labels seen so far.

        With the dataset's counts n_c the stream's target is ``q_c * seen_c / n_c`` normalized:
        the global target scaled by the share of class c's clips this stream has met, so every
        clip of class c is worth the same number of emissions whichever stream it is in, and the
        streams' outputs add up to q (aiming every stream at q itself, a stream that drew few
        clips of a rare class falls short of it and one that drew many stops at it: the
        shortfalls add up). Counted online, the target is q from the counts seen so far.
        """
        st.since_refresh += 1
        if (st.supply is not None and st.since_refresh < min(REFRESH_EVERY, 1 + st.n_valid // 32)
                and not np.any(st.seen[labels] <= 2)):
            return
        st.since_refresh = 0
        if self.relative:
            counts = self.counts
            share = st.seen.sum() / counts.sum()  # a class the counts say has no clip keeps its plain target
            met = np.divide(st.seen, counts, out=np.full_like(counts, share), where=counts > 0)
            w = self.q_fixed * met
            total = w.sum()
            st.q = w / total if total > 0 else self.q_fixed  # nothing of a targeted class met yet
            st.q_version += 1
        elif self.q_fixed is None:
            st.q = _power_target(st.seen, self.alpha)
            st.q_version += 1
        p = st.seen / st.seen.sum()
        both = (p > 0) & (st.q > 0)
        supply = np.zeros_like(p)
        supply[both] = np.log(st.q[both] / p[both])
        st.supply = supply.tolist()

    def _future(self, st: _EpochState, item: _Item) -> float:
        """A clip's worth on the stream's whole run: the sum of its classes' supply terms."""
        supply = st.supply
        return sum(supply[c] for c in item.label_list) if supply is not None else 0.0

    def _view(self, st: _EpochState) -> _View:
        floor = self.config.floor
        if st.total >= st.ref_total * (1.0 + REF_GROWTH) + 1.0 or st.ref_q_version != st.q_version:
            # the target terms move with E; refreshing them only as E grows 1 % keeps the O(C) work low
            qe = st.q * st.total
            st.log_target1 = np.log(qe + 1.0)
            if floor > 0:
                natural = st.seen * (st.total / max(float(st.seen.sum()), 1.0))
                st.guard = floor * np.minimum(qe, natural)
            st.ref_total, st.ref_q_version = st.total, st.q_version
        return _View(st, floor)

    def _choose(self, st: _EpochState, fresh: _Item, view: _View) -> _Item:
        """The best-scoring candidate for one slot: the fresh clip or a held one."""
        best, best_score = fresh, view.score(fresh)
        if fresh.uses == 0 and best_score > 0:  # a useful clip never emitted beats a repeat unless ...
            best_score += self.config.prefer_fresh  # ... the repeat is better by this margin
        res = st.reservoir
        if not res.items:
            return best
        priority = np.where(res.count > 0, view.need + STARVE_BONUS * view.starving, -np.inf)
        neediest = int(np.argmax(priority))
        pools = [res.by_class[neediest]] * NEEDIEST_DRAWS if priority[neediest] > 0 else []
        pools += [res.everything] * RANDOM_HELD
        u = st.rng.random(len(pools)).tolist()  # one call: drawing one number at a time is slow
        candidates = [res.items[ids[int(x * len(ids))]] for ids, x in zip(pools, u)]
        for cand in candidates:
            if cand.id not in res.items:  # let go earlier in this loop
                continue
            score = view.score(cand)
            if score <= 0:  # emitting it now would move away from the target ...
                if self._future(st, cand) <= 0:  # ... and its classes need no repeats: stop holding it
                    st.settled[res.remove(cand).uses] += 1
                elif not cand.low:  # ... but they will: hold it only in room nothing useful now wants
                    res.demote(cand)
            elif score > best_score or (score == best_score and cand.uses < best.uses):
                best, best_score = cand, score
        return best

    def _emit(self, st: _EpochState, item: _Item) -> None:
        out = dict(item.sample)  # a copy: later stages may change their sample in place
        out["__repeat__"] = item.uses
        if item.uses == 0:
            st.unique_out += 1
        else:
            st.n_repeats += 1
        item.uses += 1
        if item.label_list:
            emitted, log1 = st.emitted, st.log_emitted1
            for c in item.label_list:
                emitted[c] += 1.0
                log1[c] = math.log(emitted[c] + 1.0)
            st.total += len(item.label_list)
        if item.uses >= self.config.max_reuse and item.id in st.reservoir.items:
            st.settled[st.reservoir.remove(item).uses] += 1
        st.pending.append(out)

    def _hold_or_settle(self, st: _EpochState, item: _Item, view: _View) -> None:
        # worth holding if it helps now, or if its classes need repeats over the stream's run: a
        # rare class just put on target by its first clips falls behind again within a few slots
        # (the second kind in a lower tier: see FUTURE_WEIGHT)
        worth = 0.0
        if item.uses < self.config.max_reuse:
            worth = view.score(item)
            if worth <= 0:
                worth = FUTURE_WEIGHT * self._future(st, item)
                item.low = True
        u = st.rng.random()
        if worth > 0 and u > 0:
            item.key = math.log(u) / worth
            for old in st.reservoir.offer(item):
                st.settled[old.uses] += 1
        if item.id not in st.reservoir.items:
            st.settled[item.uses] += 1

    # ------------------------------------------------------------------ reporting
    def stats(self) -> dict[str, Any]:
        """Counters of the current (or last) epoch stream.

        emitted: {class: label occurrences emitted}; reuse_histogram[k]: input clips emitted k
        times (held clips count with their uses so far); dropped: valid inputs never emitted and
        no longer held; bytes_held / peak_bytes of the reservoir; skipped: {reason: count};
        skipped_examples: {reason: the first few skipped samples as "url key 'k'"}; target: the
        configured target q (estimated from this stream when counted online); stream_target: what
        this stream steers to (q scaled by the share of each class's clips it has met, when the
        dataset's counts are known).
        """
        st = self._state or self._resume
        if st is None:
            return {}
        hist = st.settled.copy()
        target = self.q_fixed if self.q_fixed is not None else st.q
        for item in st.reservoir.items.values():
            hist[item.uses] += 1
        return {
            "epoch": st.epoch, "worker": st.worker,
            "samples_in": st.n_in, "samples_valid": st.n_valid, "samples_empty": st.n_empty,
            "samples_out": st.n_out, "pending": len(st.pending), "repeats": st.n_repeats,
            "unique_out": st.unique_out, "dropped": int(st.settled[0]), "skipped": dict(st.skipped),
            "skipped_examples": {r: list(e) for r, e in st.skipped_examples.items()},
            "emitted": {self.classes[c]: int(n) for c, n in enumerate(st.emitted) if n},
            "emitted_counts": st.emitted.astype(np.int64).tolist(),
            "seen_counts": st.seen.astype(np.int64).tolist(),
            "target": None if target is None else target.tolist(),
            "stream_target": None if st.q is None else st.q.tolist(),
            "reuse_histogram": hist.tolist(),
            "bytes_held": st.reservoir.bytes_held, "peak_bytes": st.reservoir.peak_bytes,
            "held": len(st.reservoir.items), "buffer_bytes": self.config.buffer_bytes,
        }

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the current stream exactly, held samples included.

        Plain Python values only (lists, numbers, bytes, the samples' own dicts), so it loads
        with ``torch.load(weights_only=True)``. ``samples_in`` says how many inputs were read:
        after ``load_state_dict``, call the stage with the same epoch and worker on the input
        that follows them.
        """
        st = self._state or self._resume
        if st is None:
            return {"version": STATE_VERSION, "stream": None}
        res = st.reservoir
        return {
            "version": STATE_VERSION, "config": _config_key(self), "stream": {
                "epoch": st.epoch, "worker": st.worker, "rng": st.rng.bit_generator.state,
                "emitted": st.emitted.tolist(), "total": st.total, "seen": st.seen.tolist(),
                "q": None if st.q is None else st.q.tolist(), "since_refresh": st.since_refresh,
                "q_version": st.q_version, "supply": st.supply, "log_emitted1": st.log_emitted1.tolist(),
                "log_target1": st.log_target1.tolist(), "guard": st.guard.tolist(),
                "ref": [st.ref_total, st.ref_q_version],
                "counters": [st.n_in, st.n_valid, st.n_empty, st.n_out, st.n_repeats, st.unique_out],
                "skipped": dict(st.skipped), "settled": st.settled.tolist(),
                "skipped_examples": {r: list(e) for r, e in st.skipped_examples.items()},
                "held": [[i.id, i.sample, i.label_list, i.nbytes, i.uses, i.key, i.low] for i in res.items.values()],
                "heap": [list(e) for e in res.heap], "by_class": [list(ids) for ids in res.by_class],
                "everything": list(res.everything), "peak_bytes": res.peak_bytes,
                "pending": list(st.pending), "samples_in": st.n_in,
            }}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict()``; the next call with its epoch and worker continues it."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"RebalanceStage state version {state.get('version')!r}, expected {STATE_VERSION}")
        s = state["stream"]
        if s is None:
            self._state = self._resume = None
            return
        if state["config"] != _config_key(self):
            raise ValueError(f"RebalanceStage state was saved with another configuration: {state['config']} "
                             f"!= {_config_key(self)}")
        st = _EpochState(self, s["epoch"], s["worker"])
        st.rng.bit_generator.state = s["rng"]
        st.emitted, st.seen = np.array(s["emitted"], dtype=float), np.array(s["seen"], dtype=float)
        st.total = s["total"]
        st.q = None if s["q"] is None else np.array(s["q"], dtype=float)
        st.since_refresh, st.q_version, st.supply = s["since_refresh"], s["q_version"], s["supply"]
        st.log_emitted1, st.log_target1 = np.array(s["log_emitted1"]), np.array(s["log_target1"])
        st.guard = np.array(s["guard"])
        st.ref_total, st.ref_q_version = s["ref"]
        st.n_in, st.n_valid, st.n_empty, st.n_out, st.n_repeats, st.unique_out = s["counters"]
        st.skipped, st.settled = dict(s["skipped"]), np.array(s["settled"], dtype=np.int64)
        st.skipped_examples = {r: list(e) for r, e in s["skipped_examples"].items()}
        res = st.reservoir
        for id_, sample, labels, nbytes, uses, key, low in s["held"]:
            item = _Item(id_, sample, np.array(labels, dtype=np.int64), nbytes, uses, key, low)
            res.items[id_] = item
            res.count[item.labels] += 1
            res.bytes_held += nbytes
        # the index lists keep their saved order: random draws index into them
        res.heap = [(key, id_) for key, id_ in s["heap"]]
        res.everything = list(s["everything"])
        res.by_class = [list(ids) for ids in s["by_class"]]
        res.pos = {(i, c): k for c, ids in enumerate(res.by_class) for k, i in enumerate(ids)}
        res.pos.update({(i, -1): k for k, i in enumerate(res.everything)})
        res.peak_bytes = s["peak_bytes"]
        st.pending = deque(s["pending"])
        self._state = None
        self._resume = st


def _config_key(stage: RebalanceStage) -> str:
    c = stage.config
    return repr((c.target, c.buffer_bytes, c.max_reuse, c.ratio, c.floor, c.prefer_fresh, len(stage.classes),
                 stage.seed))


def _floor(x: float) -> int:
    # ratio * n in floating point may land a hair below an integer (0.29 * 100 = 28.999999999999996)
    return math.floor(x + 1e-9)


def _where(sample: dict) -> str:
    return f"{sample.get('__url__', '?')} key {sample.get('__key__', '?')!r}"
