"""Reservoir-based class rebalancing on a stream, before any audio is decoded.

A map-style loader rebalances a long-tail dataset with an index (PANNs' balanced sampler, AST's
per-clip weights in a ``WeightedRandomSampler``). A stream has no index, so this stage decides
one input at a time, reading only each sample's ``labels`` bytes (uint8 multi-hot, length C).

Target. With class counts n_c (from dataset.json, else counted online from the labels seen so
far) the target share of class c among emitted *label occurrences* is
``q_c = n_c**alpha / sum_k n_k**alpha`` (alpha 1 "natural", 0.5 "sqrt", 0 "uniform"), or comes
from a {class name: weight} dict. A clip with three labels counts once towards each of them.

Streams. The loader runs one stage per stream (``streams`` per rank, 8 by default), and an epoch
is the sum of the streams. With the dataset's counts, each stream therefore steers to its own share
of the target: ``q_c * m_c / n_c`` normalized, where m_c is the number of label occurrences of
class c the stream has met so far. Every clip of class c is then worth the same number of
emissions whichever stream it lands in (what an offline weighted sampler gives a clip), and the
streams add up to q. Aiming every stream at q itself does not add up on short streams: a stream
that drew one clip of a rare class cannot reach q under ``max_reuse``, one that drew five stops at
q, and the shortfalls sum (issue 21: 735 clips in 8 streams of 96 reached TV 0.066 to uniform
instead of 0.020). Before a class's first clip the stream owes it nothing, so no stream starts
in debt to a class it may never see. Counted online (no counts), every stream aims at q estimated
from what it has seen.

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
class, all sharing one byte budget in proportion to need. A clip useless now (score <= 0) may still
be worth holding over the stream's run: its worth ``sum_{c in L} log(q_c / p_c)``, with p the label
shares met so far, is positive for the clips of a class that fresh clips alone cannot keep on
target. Such a clip enters with weight worth / 1000: a lower tier, holding only room the clips
useful now leave free, and evicted first; a held clip examined and found useless now but worth
holding over the run moves to that tier (its key times 1000: weight / 1000 for the same u). A
clip leaves the store after ``max_reuse`` emissions, or when examined and found useless both now
and over the run. Judging by the score alone let the first clips of a rare class go as soon as
they had put it on target, a few slots before it fell behind again for good: on short streams
these clips are most of what the class will ever get (issue 21: 68 emissions of the rarest
class's 24 clips, 96 allowed by max_reuse 4, 105 wanted).
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
    >>> from wds_audio.pipeline.reservoir import RebalanceStage
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

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

NAMED_ALPHAS = {"natural": 1.0, "sqrt": 0.5, "uniform": 0.0}


@dataclass
class Rebalance:
    """Configuration of the rebalancing stage.

    target: "natural" (alpha 1), "sqrt" (0.5), "uniform" (0), a float alpha in [0, 1], or a
        {class name: weight} dict (relative weights; classes not named get weight 0).
    buffer_bytes: bytes of encoded samples one stream's reservoir may hold (all classes together).
        Memory rule: the budget is per stream, and the loader runs one stage per stream, all of a
        worker's streams at once. A rank holds at most ``streams * buffer_bytes`` of held samples
        (8 * 64 MiB = 512 MiB with the defaults), a DataLoader worker ``ceil(streams /
        num_workers) * buffer_bytes``. For a total budget B per rank, pass ``buffer_bytes=B //
        streams``. The reservoir only needs room for the clips worth repeating: a rare class's
        clips, not the whole stream; ``stats()["peak_bytes"]`` (summed over streams in
        ``loader.metrics()["rebalance"]``) shows what was used.
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
