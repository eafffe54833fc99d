"""Grouped, label-stratified splits for data that has none (the csv and folder recipes).

A *group* is what must never be divided between splits: a speaker, an artist, a recording
location, a source recording. Every clip names its group; the whole group goes to one split
(``train``/``valid``/``test`` by fractions) or to one fold (grouped K-fold, folds ``1..K``).

The assignment is a pure function of the multiset of (group, labels) pairs and the seed:
the same input in any row order gives the same assignment, on any platform (no RNG state, only
sha256). The greedy, in the spirit of scikit-learn's ``StratifiedGroupKFold``:

1. Groups are taken largest first, by size class (the clip count's power of two, so 5, 6 and 7
   clips count as one size); within a size class in seeded order (sha256 of seed and group
   name). Size classes rather than exact sizes so that a different seed gives a different split
   even when no two groups have exactly the same size.
2. Each group goes to the split that is furthest below its target share of the group's labels:
   the largest ``sum over the group's labels c of count_c * (target_c - current_c) / total_c``,
   where ``target_c`` is the split's fraction of all clips of class ``c``. Only splits that the
   group does not push past their clip target are candidates; when none is left, the split
   furthest below its clip target takes it. Ties: the larger clip deficit, then split order.

What that guarantees (proved in the comments of :func:`assign`): every split's (fold's) clip
count is within one largest group of its target share, ``|n_s - f_s * N| <= max group size``,
and for K-fold the largest and smallest fold differ by at most the largest group. Label shares
are matched as well as whole groups allow, not guaranteed.

Example:
    >>> items = [(f"spk{i % 6}", [i % 3]) for i in range(60)]
    >>> a = split_groups(items, valid_fraction=0.2, test_fraction=0.2, seed=0)
    >>> sorted(a.values()).count("train"), sorted(a.values()).count("valid")
    (4, 1)
    >>> sorted(fold_groups(items, folds=3, seed=0).values())
    [1, 1, 2, 2, 3, 3]
"""
from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass, replace
from typing import Any, Iterable, Sequence

from .records import Record, RecipeError

SPLITS = ("train", "valid", "test")
METHOD = ("grouped greedy (shardgen.splits): groups largest first by power-of-two size class, seeded order "
          "within a class; each to the split furthest below its target share of the group's labels "
          "without passing its clip target")


@dataclass(frozen=True)
class SplitOptions:
    """What the user asked for: ``by`` names the grouping (a column, or the folder recipe's regex)."""

    by: str | None = None
    valid_fraction: float = 0.0
    test_fraction: float = 0.0
    folds: int | None = None
    seed: int = 0

    @property
    def active(self) -> bool:
        return self.by is not None

    def check(self) -> None:
        """RecipeError naming the option when the combination cannot be used (before any row is read)."""
        v, t = self.valid_fraction, self.test_fraction
        given = [n for n, x in (("--valid-fraction", v), ("--test-fraction", t)) if x]
        if self.by is None:
            asked = given + (["--folds"] if self.folds is not None else []) + (["--split-seed"] if self.seed else [])
            if asked:
                raise RecipeError(f"{' and '.join(asked)} need(s) --split-by (the group that must stay in one "
                                  f"split: a speaker, artist or recording column; --split-by path in a CSV makes "
                                  f"every clip its own group)")
            return
        negative = [f"{n} {x:g}" for n, x in (("--valid-fraction", v), ("--test-fraction", t)) if not x >= 0]
        if negative:
            raise RecipeError(f"{' and '.join(negative)}: a fraction is a number from 0 to 1, never negative")
        if v + t > 1 + 1e-9:
            raise RecipeError(f"--valid-fraction {v:g} + --test-fraction {t:g} = {v + t:g} is more than 1")
        if self.folds is not None:
            if given:
                raise RecipeError(f"--folds {self.folds} and {' / '.join(given)} exclude each other: "
                                  f"grouped K-fold puts every clip in split 'train', fold 1..K")
            if self.folds < 2:
                raise RecipeError(f"--folds {self.folds}: K-fold needs K >= 2")
        elif not given:
            raise RecipeError(f"--split-by {self.by} needs --valid-fraction and/or --test-fraction, or --folds K")

    def describe(self) -> dict[str, Any]:
        """How the splits were made, for dataset.json (the recipe's info)."""
        d: dict[str, Any] = {"by": self.by, "seed": self.seed, "method": METHOD}
        if self.folds is not None:
            d["folds"] = self.folds
        else:
            d.update(valid_fraction=self.valid_fraction, test_fraction=self.test_fraction)
        return d

    def rule(self) -> str:
        if self.folds is not None:
            return f"grouped {self.folds}-fold by {self.by} (seed {self.seed}), label-stratified"
        return (f"grouped split by {self.by}: valid {self.valid_fraction:g}, test {self.test_fraction:g} "
                f"(seed {self.seed}), label-stratified")


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, by_help: str,
                  metavar: str = "COLUMN") -> None:
    """The split options of a recipe (dests: split_by, valid_fraction, test_fraction, folds, split_seed)."""
    parser.add_argument("--split-by", metavar=metavar, default=None, help=by_help)
    parser.add_argument("--valid-fraction", type=float, default=0.0, metavar="F",
                        help="with --split-by: share of clips for split 'valid' (default 0)")
    parser.add_argument("--test-fraction", type=float, default=0.0, metavar="F",
                        help="with --split-by: share of clips for split 'test' (default 0); the rest is 'train'")
    parser.add_argument("--folds", type=int, default=None, metavar="K",
                        help="with --split-by: grouped K-fold instead: split 'train', folds 1..K, "
                             "each group in one fold")
    parser.add_argument("--split-seed", type=int, default=0, metavar="N",
                        help="seed of the grouped split (default 0); same seed, same split, in any row order")


def _key(seed: int, group: str) -> bytes:
    return hashlib.sha256(f"{seed}\0{group}".encode()).digest()


def _tally(items: Iterable[tuple[str, Sequence[int]]]) -> tuple[dict[str, int], dict[str, dict[int, int]]]:
    sizes: dict[str, int] = {}
    labels: dict[str, dict[int, int]] = {}
    for group, labs in items:
        sizes[group] = sizes.get(group, 0) + 1
        per = labels.setdefault(group, {})
        for c in set(labs):
            per[c] = per.get(c, 0) + 1
    return sizes, labels


def assign(items: Iterable[tuple[str, Sequence[int]]], targets: Sequence[float], seed: int = 0) -> dict[str, int]:
    """Group -> index into ``targets`` (fractions summing to 1) for one (group, labels) item per clip.

    Size bound, |n_s - f_s N| <= max group size m, for any group order:
    - overshoot: a split passes its target only by the fallback, taking the group g when every
      split's deficit is below n_g, so by less than n_g <= m; after that its deficit is negative
      and it is never chosen again (the deficits sum to the clips left, > 0, so another is larger).
    - undershoot: if a split ended more than m below target, its deficit was > m all along, so
      every group g met a candidate (deficit >= n_g) and no split ever overshot: the final
      deficits are all >= 0 and sum to 0, so all are 0, a contradiction.
    For equal targets (K-fold) the fullest fold also ends within m of the emptiest: its last group
    either kept it at or below target (and the emptiest is within m of target) or was the fallback
    to the emptiest fold at that moment.
    """
    sizes, labels = _tally(items)
    if not sizes:
        return {}
    total = sum(sizes.values())
    class_total: dict[int, int] = {}
    for per in labels.values():
        for c, k in per.items():
            class_total[c] = class_total.get(c, 0) + k
    order = sorted(sizes, key=lambda g: (-sizes[g].bit_length(), _key(seed, g), g))
    count = [0] * len(targets)
    held = [dict.fromkeys(class_total, 0) for _ in targets]
    out: dict[str, int] = {}
    for g in order:
        n = sizes[g]
        deficit = [f * total - k for f, k in zip(targets, count)]
        cand = [s for s, f in enumerate(targets) if f > 0 and deficit[s] >= n - 1e-9]
        if not cand:
            cand = [max(range(len(targets)), key=lambda s: (deficit[s], -s))]
        labs = sorted(labels[g].items())

        def score(s: int) -> tuple[float, float, int]:
            below = sum(k * (targets[s] * class_total[c] - held[s][c]) / class_total[c] for c, k in labs)
            return below, deficit[s], -s

        best = max(cand, key=score)
        out[g] = best
        count[best] += n
        for c, k in labs:
            held[best][c] += k
    return out


def split_groups(items: Iterable[tuple[str, Sequence[int]]], valid_fraction: float, test_fraction: float,
                 seed: int = 0) -> dict[str, str]:
    """Group -> "train" / "valid" / "test"."""
    targets = (max(0.0, 1.0 - valid_fraction - test_fraction), valid_fraction, test_fraction)
    return {g: SPLITS[s] for g, s in assign(items, targets, seed).items()}


def fold_groups(items: Iterable[tuple[str, Sequence[int]]], folds: int, seed: int = 0) -> dict[str, int]:
    """Group -> fold 1..folds (grouped, label-stratified K-fold)."""
    return {g: s + 1 for g, s in assign(items, [1.0 / folds] * folds, seed).items()}


def apply(records: list[Record], opts: SplitOptions, what: str) -> list[Record]:
    """New records with split (and fold) set from ``opts``; each record's ``group`` is its group.

    ``what`` names the grouping in errors (e.g. "column 'speaker'"). RecipeError when there are
    fewer groups than folds, or a split asked for (fraction > 0) gets no group at all.
    """
    opts.check()
    items = [(r.group, r.labels) for r in records]
    groups = {g for g, _ in items}
    if opts.folds is not None:
        if opts.folds > len(groups):
            raise RecipeError(f"--folds {opts.folds} is more than the {len(groups)} group(s) of {what}: "
                              f"every fold needs at least one group")
        fold = fold_groups(items, opts.folds, opts.seed)
        return [replace(r, split="train", fold=fold[r.group]) for r in records]
    split = split_groups(items, opts.valid_fraction, opts.test_fraction, opts.seed)
    got = set(split.values())
    train = 1.0 - opts.valid_fraction - opts.test_fraction
    for name, f in (("train", train), ("valid", opts.valid_fraction), ("test", opts.test_fraction)):
        if f > 1e-9 and name not in got:
            sizes, _ = _tally(items)
            option = "1 - --valid-fraction - --test-fraction" if name == "train" else f"--{name}-fraction"
            raise RecipeError(f"{option} {f:g} of {len(records)} clips is {f * len(records):.1f} clips, "
                              f"but no whole group of {what} fits ({len(groups)} groups, the largest "
                              f"{max(sizes.values())} clips): split '{name}' would be empty; raise the fraction "
                              f"or group more finely")
    return [replace(r, split=split[r.group], fold=None) for r in records]
