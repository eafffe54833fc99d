"""Feature statistics from dataset.json: pick the right entry, check it against the feature settings.

``shardgen stats`` writes (see ``shardgen/stats.py``)::

    "feature_stats":      the entry written last: one dict, as before, so older readers keep working
    "feature_stats_sets": every entry, one per (split, folds, feature settings); a rerun replaces its own

An entry records where it came from and how it was computed::

    {"split": "train", "folds": [1, 2, 3, 4],        # folds used; null for a split without folds
     "clips": 1600, "frames": 502400, "seed": 0, "max_clips": null,   # max_clips: null = every clip
     "kind": "logmel", "feature": "logmel_db", "sample_rate": 16000, "n_fft": 1024, "win_length": 1024,
     "hop_length": 160, "n_mels": 128, "f_min": 0.0, "f_max": 8000.0, "mel_scale": "htk",
     "mean": [... n_mels floats], "std": [...]}

An entry written before folds were recorded (no ``folds``) covered every fold of its split.

**Recorded or explicit.** Statistics that carry any feature setting (an entry from dataset.json, or a
dict naming some of :data:`SETTINGS`) are *recorded*: a Frontend or DaliFeatures checks every setting
present and raises ``ValueError`` naming both values on a mismatch; an evaluation loader also checks their
folds (:func:`resolve_stats`). A dict with only ``mean`` and ``std`` is *explicit*: used as given, no check
(``{k: entry[k] for k in ("mean", "std")}`` opts out on purpose).

**Evaluation folds.** A loader with ``training=False`` over (split, folds) -- every fold of the split when
``folds`` is None -- must not standardize with statistics computed over any of those clips. When the
recorded statistics include them, the loader switches to the entry of dataset.json with the same settings
that does not (the most folds, then the most clips), or raises ``ValueError`` naming the folds.

Example:
    >>> m = {"splits": {"train": {"folds": [1, 2, 3]}}, "feature_stats_sets": [
    ...     {"split": "train", "folds": [1, 2, 3], "n_mels": 64, "mean": [0.0], "std": [1.0]},
    ...     {"split": "train", "folds": [1, 2], "n_mels": 64, "mean": [0.0], "std": [1.0]}]}
    >>> select_stats(m, split="train", exclude_folds=[3])["folds"]
    [1, 2]
    >>> select_stats(m, split="train")["folds"]
    [1, 2, 3]
"""
from __future__ import annotations

import json
import math
from typing import Any, Iterable

SETTINGS = ("kind", "sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "f_min", "f_max", "mel_scale")
LEGACY_KIND = {"logmel_db": "logmel"}  # the "feature" field of entries written before "kind"
WHOLE_SPLIT = "the whole split"  # what an entry of a split without folds covers


def stats_entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every statistics entry of a dataset.json, oldest first (a legacy single ``feature_stats`` too)."""
    sets = manifest.get("feature_stats_sets")
    if sets:
        return list(sets)
    one = manifest.get("feature_stats")
    return [one] if one else []


def recorded_settings(stats: dict[str, Any]) -> dict[str, Any]:
    """The feature settings ``stats`` records (``kind`` also from a legacy ``feature`` field)."""
    out = {k: stats[k] for k in SETTINGS if k in stats and stats[k] is not None}
    if "kind" not in out and stats.get("feature") is not None:
        out["kind"] = LEGACY_KIND.get(stats["feature"], stats["feature"])
    return out


def is_recorded(stats: dict[str, Any]) -> bool:
    """Whether ``stats`` records any feature setting (else it is explicit: used without checks)."""
    return bool(recorded_settings(stats))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-6)
    return a == b


def _fmt(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={d[k]!r}" if isinstance(d[k], str) else f"{k}={d[k]}" for k in d)


def settings_mismatch(stats: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """The settings ``stats`` records with a value other than in ``settings``."""
    rec = recorded_settings(stats)
    return [k for k in SETTINGS if k in rec and k in settings and not _same(rec[k], settings[k])]


def check_settings(stats: dict[str, Any], settings: dict[str, Any], who: str = "this frontend") -> None:
    """Raise ``ValueError`` naming both values of every recorded setting that differs from ``settings``."""
    bad = settings_mismatch(stats, settings)
    if bad:
        rec = recorded_settings(stats)
        raise ValueError(
            f"feature statistics were computed with {_fmt({k: rec[k] for k in bad})}; {who} has "
            f"{_fmt({k: settings[k] for k in bad})} (statistics for {_where(stats)}). Compute matching ones "
            "(`shardgen stats DATASET --n-fft ... --hop-length ... --n-mels ...`), or pass "
            "stats={'mean': ..., 'std': ...} to use these anyway")


def covered_folds(entry: dict[str, Any], manifest: dict[str, Any] | None = None) -> list[int] | str | None:
    """The folds an entry's clips came from; ``WHOLE_SPLIT`` for a split without folds; None if unknown."""
    if "folds" in entry:
        return WHOLE_SPLIT if entry["folds"] is None else sorted(entry["folds"])
    split = (manifest or {}).get("splits", {}).get(entry.get("split"))
    if split is None:
        return None
    return sorted(split.get("folds") or []) or WHOLE_SPLIT  # legacy entries: every fold of the split


def _where(entry: dict[str, Any], manifest: dict[str, Any] | None = None) -> str:
    if "split" not in entry:
        return "unrecorded data"
    folds = covered_folds(entry, manifest)
    return f"split {entry['split']!r}" + ("" if folds in (None, WHOLE_SPLIT) else f" folds {folds}")


def leaked_folds(entry: dict[str, Any], split: str, folds: Iterable[int] | None,
                 manifest: dict[str, Any]) -> list[int] | str | None:
    """The evaluation folds of (split, folds) whose clips ``entry`` was computed over, or None.

    ``folds`` None: every fold of the split. ``WHOLE_SPLIT`` when the split has no folds and the entry
    covers it. An entry that does not record its split (explicit statistics) never leaks.
    """
    if entry.get("split") != split:
        return None
    have = covered_folds(entry, manifest)
    if have is None:
        return None
    split_folds = sorted(manifest.get("splits", {}).get(split, {}).get("folds") or [])
    evaluated = sorted(set(folds)) if folds is not None else split_folds
    if have == WHOLE_SPLIT or not evaluated:
        return WHOLE_SPLIT if (have == WHOLE_SPLIT or not split_folds) else None
    common = sorted(set(have) & set(evaluated))
    return common or None


def _rank(entry: dict[str, Any], manifest: dict[str, Any], order: int) -> tuple:
    folds = covered_folds(entry, manifest)
    n = len(folds) if isinstance(folds, list) else 0
    return (n, entry.get("clips") or 0, order)


def _summary(entries: list[dict[str, Any]], manifest: dict[str, Any]) -> str:
    if not entries:
        return "dataset.json has no feature statistics (run `shardgen stats`)"
    return "dataset.json has: " + "; ".join(f"{_where(e, manifest)} with {_fmt(recorded_settings(e))}"
                                            for e in entries)


def select_stats(manifest: dict[str, Any] | str, *, split: str | None = None, folds: Iterable[int] | None = None,
                 exclude_folds: Iterable[int] | None = None, settings: dict[str, Any] | None = None,
                 **setting_kw: Any) -> dict[str, Any]:
    """The statistics entry of a dataset for ``split``, computed over exactly ``folds`` (when given) and
    over none of ``exclude_folds``, with the feature ``settings`` (e.g. ``Frontend.feature_settings()``,
    or as keywords: ``n_mels=64``). Among several, the one over the most folds, then clips, then newest.

    ``manifest``: a dataset.json dict, or a dataset folder/URL (its dataset.json is read).
    Raises ``ValueError`` saying what dataset.json holds when no entry qualifies.

    Example (statistics for ESC-50 cross-validation with fold 5 held out)::

        stats = wds_audio.select_stats("data/esc50", split="train", exclude_folds=[5], n_mels=128)
        fe = wds_audio.Frontend(sample_rate=32000, n_mels=128, standardize="dataset", stats=stats)
    """
    if not isinstance(manifest, dict):
        manifest = read_manifest(str(manifest))
    settings = {**(settings or {}), **setting_kw}
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"select_stats: unknown setting(s) {unknown}; settings are {list(SETTINGS)}")
    entries = stats_entries(manifest)
    want = None if folds is None else sorted(set(folds))
    drop = set(exclude_folds or ())
    ok = []
    for i, e in enumerate(entries):
        have = covered_folds(e, manifest)
        if split is not None and e.get("split") != split:
            continue
        if want is not None and have != want:
            continue
        if drop and (have is None or (isinstance(have, list) and set(have) & drop)):
            continue
        if settings_mismatch(e, settings):
            continue
        ok.append((_rank(e, manifest, i), e))
    if not ok:
        asked = ", ".join(x for x in (f"split {split!r}" if split else "",
                                      f"folds {want}" if want is not None else "",
                                      f"without folds {sorted(drop)}" if drop else "",
                                      _fmt(settings) if settings else "") if x)
        raise ValueError(f"no feature statistics for {asked or 'any split'}; {_summary(entries, manifest)}")
    return max(ok, key=lambda t: t[0])[1]


def resolve_stats(stats: dict[str, Any] | None, settings: dict[str, Any], *, manifest: dict[str, Any] | None,
                  split: str, folds: Iterable[int] | None, training: bool, who: str = "the frontend") -> dict[str, Any]:
    """The statistics a loader over (split, folds) standardizes with, given the user's ``stats``.

    ``stats`` None: the dataset's entry for ``settings`` (the newest, ``feature_stats``, when it fits).
    Explicit statistics (no recorded setting) are returned as given. Recorded ones are checked against
    ``settings``; in evaluation (``training=False``) an entry computed over evaluation folds is replaced by
    the dataset's entry with the same settings that avoids them, or ``ValueError`` names the folds.
    """
    manifest = manifest or {}
    entries = stats_entries(manifest)
    if stats is None:
        fitting = [e for e in entries if not settings_mismatch(e, settings)]
        if not fitting:
            if entries:  # name both settings, those of the newest entry
                check_settings(manifest.get("feature_stats") or entries[-1], settings, who)
            raise ValueError("standardize='dataset' needs stats (dataset.json 'feature_stats'; run `shardgen stats`)")
        newest = manifest.get("feature_stats")
        stats = newest if newest in fitting else fitting[-1]
    if not is_recorded(stats):
        return stats
    check_settings(stats, settings, who)
    if training:
        return stats
    leak = leaked_folds(stats, split, folds, manifest)
    if leak is None:
        return stats
    clean = [(e.get("split") == stats.get("split"), *_rank(e, manifest, i), i) for i, e in enumerate(entries)
             if not settings_mismatch(e, settings) and leaked_folds(e, split, folds, manifest) is None
             and "split" in e]
    if clean:
        return entries[max(clean)[-1]]
    what = (f"the evaluation split {split!r}" if leak == WHOLE_SPLIT
            else f"evaluation fold(s) {leak} of split {split!r}")
    split_folds = sorted(manifest.get("splits", {}).get(split, {}).get("folds") or [])
    rest = sorted(set(split_folds) - (set(leak) if isinstance(leak, list) else set(split_folds)))
    hint = (f"`shardgen stats DATASET --split {split} --folds {' '.join(map(str, rest))}`" if rest
            else "`shardgen stats DATASET --split <a training split>`")
    raise ValueError(f"the feature statistics of {who} were computed over {_where(stats, manifest)}, which "
                     f"includes {what} this loader evaluates, and dataset.json has no statistics with these "
                     f"settings without them: compute them ({hint} with the same feature options), or pass "
                     "stats={'mean': ..., 'std': ...} to use these anyway")


def read_manifest(source: str, options: Any = None) -> dict[str, Any]:
    """The dataset.json of a dataset folder/URL."""
    from ..io.open import read_bytes

    base = source[: -len("/dataset.json")] if source.endswith("/dataset.json") else source.rstrip("/")
    return json.loads(read_bytes(f"{base}/dataset.json", options=options))
