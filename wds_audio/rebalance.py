"""Reservoir-based class rebalancing on a stream, before any audio is decoded.

A map-style loader rebalances a long-tail dataset with an index (PANNs' balanced sampler, AST's
per-clip weights in a ``WeightedRandomSampler``). A stream has no index, so this stage decides
one input at a time, reading only each sample's ``labels`` bytes (uint8 multi-hot, length C).

Target. With class counts n_c (from dataset.json, else counted online from the labels seen so
far) the target share of class c among emitted *label occurrences* is
``q_c = n_c**alpha / sum_k n_k**alpha`` (alpha 1 "natural", 0.5 "sqrt", 0 "uniform"), or comes
from a {class name: weight} dict. A clip with three labels counts once towards each of them.

Rate. After n valid inputs exactly ``floor(ratio * n)`` samples have been produced, so an
epoch's length is known in advance. Each input therefore opens 0, 1 or more output *slots*.

Emission rule: greedy descent on KL(emitted || target), with a starvation guard. With e_c the
label occurrences emitted so far and E = sum_c e_c, each class has a *need*
``need_c = log((q_c E + 1) / (e_c + 1))`` (> 0 behind target, < 0 ahead). Emitting a clip with
labels L changes KL(e/E || q) by -(sum_{c in L} need_c + |L| KL) / E to first order, so a clip's
*score* is ``sum_{c in L} (need_c + KL)``: the clip that most reduces the distance scores highest.
(The q_c E terms are refreshed whenever E has grown by 1 %, so a slot costs a few vector
operations over C plus work proportional to the candidates' labels.)
Each slot is filled by the best-scoring candidate among

- the fresh input clip, plus a bonus ``prefer_fresh`` when it was never emitted and its score is
  positive (a repeat must be clearly better to take the slot of a useful new clip; a harmful
  fresh clip gets no bonus, so frequent classes are still thinned);
- a few held clips of the neediest class (drawn from its reservoir), and a few held clips drawn
  uniformly from the whole store (they find good clips whose labels are not the neediest).

Frequent classes are thinned because their fresh clips score low and lose their slot to a held
clip; rare classes are repeated because their held clips score high. Co-occurrence is handled by
the score itself: a rare label riding on a clip full of frequent labels is worth less, so the
stage prefers clips of that class without the frequent passengers when it has them.

Starvation guard. Pure KL descent would give up on a class whose clips all carry a very frequent
partner (a child class that only appears with its parent). So a class whose emitted count falls
below ``floor * min(q_c E, natural_c)`` (natural_c: what it would have had without rebalancing)
is *starving*: any clip carrying a starving class gets a large bonus, and the starving classes
come first when held clips are drawn. No class ends up far below both its target and its
natural rate, whatever its partners. (floor 1 would promise "never below natural", but natural
jitter then triggers the guard all the time and costs distance; 0.75 costs almost nothing.)

Reservoir. Clips worth repeating are held, encoded, in one store bounded by ``buffer_bytes`` in
total (never per class, so memory is known in advance whatever C is), indexed per class for
draws. A clip is offered to the store after its slots are filled, with weight w = its current
score (clips with w <= 0 would not be emitted again and are not held). Admission and eviction
follow weighted reservoir sampling (Efraimidis & Spirakis, A-Res): each clip gets the key
``log(u) / w`` with u uniform in (0, 1), and the store keeps the largest keys that fit in the
budget, so within one class the held clips are a uniform sample of its stream: one reservoir per
class, all sharing one byte budget in proportion to need. A clip leaves the store after
``max_reuse`` emissions, and a held clip found useless when examined (score <= 0 now) is let go.
A single sample larger than the whole budget is an error (the stage could not hold anything).

Determinism. All randomness comes from one generator seeded by (seed, epoch, worker): the output
is a pure function of those and the input order, so replaying the input reproduces the output,
and ``state_dict()`` / ``load_state_dict()`` continue a stream exactly. Each call of the stage
starts a fresh epoch state (empty reservoir, zero counts) unless a matching state was loaded.

Bad samples (not a dict; labels missing, not bytes, of the wrong length, or not 0/1) are
counted in ``stats()["skipped"]`` by reason and not emitted. A sample with no label at all passes
through at the natural rate (it fills its own slots) and is never held.

Each emitted sample is a shallow copy of the input dict with ``"__repeat__"`` = how many times
that clip was emitted before in this epoch (0 the first time), so later stages can draw a
different crop or augmentation for a repeat.

Example:
    >>> import numpy as np
    >>> classes = ["speech", "music", "bird"]
    >>> hot = {c: bytes(np.eye(3, dtype=np.uint8)[i]) for i, c in enumerate(classes)}
    >>> clips = ["speech"] * 16 + ["music"] * 3 + ["bird"]
    >>> stream = [{"__key__": f"k{i}", "flac": b"x" * 100, "labels": hot[c]}
    ...           for i, c in enumerate(clips * 50)]
    >>> stage = RebalanceStage(Rebalance(target="uniform"), classes, None, seed=0)
    >>> out = list(stage(iter(stream)))
    >>> len(out) == len(stream)
    True
    >>> share = {c: n / len(out) for c, n in stage.stats()["emitted"].items()}
    >>> share["speech"] < 0.5 and share["bird"] > 0.15
    True
"""
from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from wds_audio.rng import seed_of

NAMED_ALPHAS = {"natural": 1.0, "sqrt": 0.5, "uniform": 0.0}
_END = object()
MAX_EXAMPLES = 5  # skipped samples named per reason in stats()
STATE_VERSION = 1
# With online counts the target is recomputed every this many labelled inputs (and whenever a
# rarely seen class shows up): q moves slowly and recomputing costs O(C).
REFRESH_EVERY = 32
# Score bonus of a clip carrying a starving class: larger than any KL score can be.
STARVE_BONUS = 1000.0
# Candidates per slot besides the fresh clip: NEEDIEST_DRAWS random held clips of the neediest
# class that has any, and RANDOM_HELD clips drawn uniformly from the whole store.
NEEDIEST_DRAWS = 4
RANDOM_HELD = 4
# The target terms of the need are refreshed when E has grown by this fraction.
REF_GROWTH = 0.01


@dataclass
class Rebalance:
    """Configuration of the rebalancing stage.

    target: "natural" (alpha 1), "sqrt" (0.5), "uniform" (0), a float alpha in [0, 1], or a
        {class name: weight} dict (relative weights; classes not named get weight 0).
    buffer_bytes: total bytes of encoded samples the reservoir may hold (all classes together).
    max_reuse: most times one clip is emitted in an epoch (1 = never repeat).
    ratio: samples out per sample in (1.0 keeps the epoch's length; at most max_reuse).
    floor: starvation guard; a class is served first whenever it falls below
        floor * min(its target, its natural rate). 0 turns the guard off.
    prefer_fresh: score bonus (in KL-gain units) of a useful clip never emitted over a repeat;
        larger values keep more unique clips per epoch, at some cost in distance to target.

    Example:
        >>> Rebalance(target="uniform").resolve(["a", "b"], [90, 10]).tolist()
        [0.5, 0.5]
        >>> Rebalance(target="sqrt").resolve(["a", "b"], [90, 10]).round(3).tolist()
        [0.75, 0.25]
    """

    target: str | float | dict[str, float] = "sqrt"
    buffer_bytes: int = 64 << 20
    max_reuse: int = 4
    ratio: float = 1.0
    floor: float = 0.75
    prefer_fresh: float = 0.5

    def alpha(self) -> float | None:
        """The exponent of ``q_c ∝ n_c**alpha``, or None for a dict target."""
        if isinstance(self.target, dict):
            return None
        if isinstance(self.target, str):
            if self.target not in NAMED_ALPHAS:
                raise ValueError(f"Rebalance.target: unknown name {self.target!r}; "
                                 f"use one of {sorted(NAMED_ALPHAS)}, a float alpha in [0, 1] or a dict")
            return NAMED_ALPHAS[self.target]
        if isinstance(self.target, bool) or not isinstance(self.target, (int, float)):
            raise ValueError(f"Rebalance.target: expected a name, a float alpha or a dict, got {self.target!r}")
        alpha = float(self.target)
        if not (math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
            raise ValueError(f"Rebalance.target: alpha must be in [0, 1] (1 natural, 0.5 sqrt, 0 uniform), got {alpha}")
        return alpha

    def validate(self, classes: Sequence[str]) -> None:
        """Check the settings against the vocabulary; the ValueError names the bad setting."""
        if len(classes) == 0:
            raise ValueError("Rebalance: the class list is empty")
        self.alpha()
        if isinstance(self.target, dict):
            _dict_weights(self.target, classes)
        if not _is_int(self.buffer_bytes) or self.buffer_bytes <= 0:
            raise ValueError(f"Rebalance.buffer_bytes must be a positive int, got {self.buffer_bytes!r}")
        if not _is_int(self.max_reuse) or self.max_reuse < 1:
            raise ValueError(f"Rebalance.max_reuse must be an int >= 1, got {self.max_reuse!r}")
        if not _is_number(self.ratio) or self.ratio <= 0:
            raise ValueError(f"Rebalance.ratio must be a positive finite number, got {self.ratio!r}")
        if self.ratio > self.max_reuse:
            raise ValueError(f"Rebalance.ratio={self.ratio} > max_reuse={self.max_reuse}: each input clip fills at "
                             f"most max_reuse outputs, so the epoch length could not be kept")
        if not _is_number(self.floor) or not 0 <= self.floor <= 1:
            raise ValueError(f"Rebalance.floor must be in [0, 1], got {self.floor!r}")
        if not _is_number(self.prefer_fresh) or self.prefer_fresh < 0:
            raise ValueError(f"Rebalance.prefer_fresh must be a finite number >= 0, got {self.prefer_fresh!r}")

    def resolve(self, classes: Sequence[str], class_counts: Sequence[int] | None) -> np.ndarray | None:
        """Validate and return the target distribution q (float64, length C, sums to 1).

        Returns None when the target depends on class counts that are not given: the stage then
        estimates them online. Classes with a zero count get q_c = 0 for alpha targets.
        """
        self.validate(classes)
        counts = None if class_counts is None else _check_counts(class_counts, len(classes))
        alpha = self.alpha()
        if alpha is None:
            w = _dict_weights(self.target, classes)  # type: ignore[arg-type]
            return w / w.sum()
        return None if counts is None else _power_target(counts, alpha)


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)


def _dict_weights(target: dict[str, float], classes: Sequence[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(target) - set(index), key=str)
    if unknown:
        raise ValueError(f"Rebalance.target names unknown classes {unknown[:10]}{' …' if len(unknown) > 10 else ''}; "
                         f"the vocabulary has {len(classes)} classes (e.g. {list(classes)[:5]})")
    w = np.zeros(len(classes))
    for name, weight in target.items():
        if not _is_number(weight) or weight < 0:
            raise ValueError(f"Rebalance.target[{name!r}] must be a finite weight >= 0, got {weight!r}")
        w[index[name]] = float(weight)
    if w.sum() <= 0:
        raise ValueError("Rebalance.target: at least one class weight must be > 0")
    return w


def _check_counts(class_counts: Sequence[int], num_classes: int) -> np.ndarray:
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.shape != (num_classes,):
        raise ValueError(f"class_counts has shape {counts.shape}, expected ({num_classes},): one count per class")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("class_counts must be finite and >= 0")
    if counts.sum() <= 0:
        raise ValueError("class_counts are all zero: there is no class to rebalance")
    return counts


def _power_target(counts: np.ndarray, alpha: float) -> np.ndarray:
    # 0**0 = 1 would give a class without clips target mass it can never receive: keep it at 0.
    w = np.power(counts, alpha, where=counts > 0, out=np.zeros_like(counts))
    return w / w.sum()


def sample_nbytes(sample: dict) -> int:
    """A sample's size for the byte budget: the summed lengths of its bytes-like values."""
    return sum(len(v) for v in sample.values() if isinstance(v, (bytes, bytearray, memoryview)))


class _Item:
    """One input clip: its sample, labels, size, times emitted and reservoir key."""

    __slots__ = ("id", "sample", "labels", "label_list", "nbytes", "uses", "key")

    def __init__(self, id: int, sample: dict, labels: np.ndarray, nbytes: int, uses: int = 0,
                 key: float = -math.inf) -> None:
        self.id, self.sample, self.nbytes, self.uses, self.key = id, sample, nbytes, uses, key
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
    reason stay in it as stale entries and are skipped when met.
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
        while self.heap and self.heap[0][1] not in self.items:
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
            self.heap = [e for e in self.heap if e[1] in self.items]
            heapq.heapify(self.heap)

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
        self.q = stage.q_fixed       # None until the first labelled input when counted online
        self.q_version = 0           # bumped whenever q is recomputed
        self.since_refresh = REFRESH_EVERY
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
        """With online counts, recompute q from the labels seen so far."""
        if self.alpha is None or self.q_fixed is not None:
            return
        st.since_refresh += 1
        if st.since_refresh >= REFRESH_EVERY or np.any(st.seen[labels] <= 2):
            st.since_refresh = 0
            st.q = _power_target(st.seen, self.alpha)
            st.q_version += 1

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
            if score <= 0:  # emitting it now would move away from the target: stop holding it
                st.settled[res.remove(cand).uses] += 1
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
        worth = view.score(item) if item.uses < self.config.max_reuse else 0.0
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
        skipped_examples: {reason: the first few skipped samples as "url key 'k'"}.
        """
        st = self._state or self._resume
        if st is None:
            return {}
        hist = st.settled.copy()
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
            "target": None if st.q is None else st.q.tolist(),
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
                "q_version": st.q_version, "log_emitted1": st.log_emitted1.tolist(),
                "log_target1": st.log_target1.tolist(), "guard": st.guard.tolist(),
                "ref": [st.ref_total, st.ref_q_version],
                "counters": [st.n_in, st.n_valid, st.n_empty, st.n_out, st.n_repeats, st.unique_out],
                "skipped": dict(st.skipped), "settled": st.settled.tolist(),
                "skipped_examples": {r: list(e) for r, e in st.skipped_examples.items()},
                "held": [[i.id, i.sample, i.label_list, i.nbytes, i.uses, i.key] for i in res.items.values()],
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
        st.since_refresh, st.q_version = s["since_refresh"], s["q_version"]
        st.log_emitted1, st.log_target1 = np.array(s["log_emitted1"]), np.array(s["log_target1"])
        st.guard = np.array(s["guard"])
        st.ref_total, st.ref_q_version = s["ref"]
        st.n_in, st.n_valid, st.n_empty, st.n_out, st.n_repeats, st.unique_out = s["counters"]
        st.skipped, st.settled = dict(s["skipped"]), np.array(s["settled"], dtype=np.int64)
        st.skipped_examples = {r: list(e) for r, e in s["skipped_examples"].items()}
        res = st.reservoir
        for id_, sample, labels, nbytes, uses, key in s["held"]:
            item = _Item(id_, sample, np.array(labels, dtype=np.int64), nbytes, uses, key)
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
