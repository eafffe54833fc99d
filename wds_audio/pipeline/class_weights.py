"""Class weights for a loss, from the per-shard class counts in dataset.json (no tar is opened).

``n_c`` is the number of clips of the selected split (and folds) that carry class ``c`` (for a
multi-label dataset a clip counts once for each of its classes), ``N`` the number of clips, ``C``
the number of classes. The kinds:

- ``"pos_weight"``: ``(N - n_c) / n_c``, negatives per positive, as ``BCEWithLogitsLoss(pos_weight=)``
  expects (0 for a class in every clip). Never rescaled: its scale is its meaning.
- ``"inverse"``: ``N / (C * n_c)`` (scikit-learn's ``class_weight="balanced"``).
- ``"sqrt_inverse"``: ``1 / sqrt(n_c)``, rescaled to sum to C.
- ``"effective"``: ``(1 - beta) / (1 - beta ** n_c)``, the inverse "effective number of samples" of
  Cui et al. 2019 ("Class-Balanced Loss Based on Effective Number of Samples"), rescaled to sum to C
  as in the paper. ``beta`` = 0 gives equal weights; towards 1 they approach ``1 / n_c`` (rescaled).

``normalize``: None keeps each kind's convention above; True rescales ``inverse``, ``sqrt_inverse`` or
``effective`` to sum to C; False returns the raw formula.

Classes with no clip in the selection: ``ValueError`` naming them (usually the wrong split or folds, or
a class list that does not match the data), unless ``allow_missing=True``: their weight is then 0, and
rescaling makes the classes that have clips sum to their number (weights of present classes average 1).

Example, single-label (ESC-50 training folds 1-4, fold 5 held out)::

    w = wds_audio.class_weights("data/esc50", split="train", folds=[1, 2, 3, 4], kind="effective", beta=0.999)
    loss_fn = torch.nn.CrossEntropyLoss(weight=w.to(device))          # loss_fn(logits, batch.targets.argmax(1))

Example, multi-label (AudioSet-style; a URL works as for the loader)::

    pw = wds_audio.class_weights("s3://bucket/audioset", split="balanced_train", kind="pos_weight")
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pw.to(device))    # loss_fn(logits, batch.targets.float())
"""
from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch

# _select is the catalog's own split/fold selection: one reader of dataset.json, one set of messages
from .catalog import Catalog, CatalogError, _select

KINDS = ("inverse", "sqrt_inverse", "effective", "pos_weight")
RESCALED_BY_DEFAULT = {"inverse": False, "sqrt_inverse": True, "effective": True, "pos_weight": False}


class ClassCounts(NamedTuple):
    """Clips per class (``counts[c]`` = clips carrying class c) and clips in all, for one selection."""

    counts: np.ndarray  # int64, length C
    clips: int
    classes: list[str]


def class_counts(source: str | os.PathLike | Mapping[str, Any], split: str = "train",
                 folds: int | Iterable[int] | None = None, options: Any = None) -> ClassCounts:
    """The class counts and the number of clips of ``split`` (only ``folds`` when given), summed over the
    per-shard counts of dataset.json.

    ``source``: a dataset folder or URL (``file://``, ``http(s)://``, ``s3://``, ``gs://``; read with
    ``options``, a :class:`~wds_audio.SourceOptions`, as the loader does) or a parsed dataset.json dict.
    Raises ``ValueError`` naming what the dataset has for an unknown split or folds absent from the split.
    """
    if folds is not None:
        folds = [folds] if isinstance(folds, int) else sorted(set(folds))
    try:
        if isinstance(source, Mapping):
            if source.get("format_version") != 1:
                raise CatalogError(f"dataset.json: format_version {source.get('format_version')!r}, expected 1")
            cat = Catalog(shards=_select(dict(source), "dataset.json", split, folds), classes=list(source["classes"]))
        else:
            cat = Catalog.open(os.fspath(source), split=split, folds=folds, options=options)
    except CatalogError as e:  # one error type for bad arguments, with the catalog's message
        raise ValueError(str(e)) from e
    counts = cat.class_counts()
    if counts is None:  # a shard pattern (no dataset.json) or a selection of no shard
        what = f"split {split!r}" + (f" folds {folds}" if folds is not None else "")
        raise ValueError(f"{source}: no class counts for {what} (class weights need a dataset.json "
                         "with shards in the selection)")
    return ClassCounts(np.asarray(counts, dtype=np.int64), cat.num_samples, cat.classes)


def class_weights(source: str | os.PathLike | Mapping[str, Any] | ClassCounts, split: str = "train",
                  folds: int | Iterable[int] | None = None, kind: str = "inverse", beta: float = 0.999,
                  normalize: bool | None = None, allow_missing: bool = False, options: Any = None) -> torch.Tensor:
    """Per-class weights (float32 tensor of length C) for ``split`` and ``folds`` of a dataset.

    ``kind``: ``"inverse"`` (default), ``"sqrt_inverse"``, ``"effective"`` (with ``beta`` in [0, 1)) or
    ``"pos_weight"``; the formulas, the rescaling (``normalize``) and zero-count classes
    (``allow_missing``) are in this module's docstring. ``source`` as for :func:`class_counts`, or the
    :class:`ClassCounts` it returned (``split``/``folds`` are then not used).

    Example::

        w = wds_audio.class_weights("data/esc50", folds=[1, 2, 3, 4], kind="effective", beta=0.999)
        torch.nn.CrossEntropyLoss(weight=w)
        pw = wds_audio.class_weights("data/audioset", split="balanced_train", kind="pos_weight")
        torch.nn.BCEWithLogitsLoss(pos_weight=pw)
    """
    # the arguments are checked before dataset.json is read: a typo fails fast and offline
    if kind not in KINDS:
        raise ValueError(f"class_weights: unknown kind {kind!r}; kinds are {list(KINDS)}")
    if isinstance(beta, bool) or not (isinstance(beta, numbers.Real) and 0.0 <= beta < 1.0):
        raise ValueError(f"class_weights: beta={beta!r} must be in [0, 1) (Cui et al.: 0.9, 0.99, 0.999, 0.9999)")
    if kind == "pos_weight" and normalize:
        raise ValueError("class_weights: normalize=True does not apply to kind='pos_weight' (its scale is the "
                         "negatives-per-positive ratio BCEWithLogitsLoss expects)")
    cc = source if isinstance(source, ClassCounts) else class_counts(source, split, folds, options)
    where = "the given counts" if isinstance(source, ClassCounts) else (
        f"split {split!r}" + ("" if folds is None else f" folds {folds}"))
    n = cc.counts.astype(np.float64)
    N, C = float(cc.clips), len(n)
    present = n > 0
    if not present.any():
        raise ValueError(f"class_weights: no class has a clip in {where} ({cc.clips} clips)")
    if not present.all() and not allow_missing:
        missing = ", ".join(f"{i}:{cc.classes[i]}" for i in np.flatnonzero(~present))
        raise ValueError(f"class_weights: class(es) with no clip in {where} ({cc.clips} clips): {missing}; "
                         "choose other split/folds, or pass allow_missing=True to give them weight 0")
    w = np.zeros(C, dtype=np.float64)
    m = n[present]
    if kind == "pos_weight":
        w[present] = (N - m) / m
    elif kind == "inverse":
        w[present] = N / (C * m)
    elif kind == "sqrt_inverse":
        w[present] = 1.0 / np.sqrt(m)
    else:  # effective number E_n = (1 - beta^n) / (1 - beta); the weight is 1 / E_n
        w[present] = (1.0 - float(beta)) / (1.0 - float(beta) ** m)
    if RESCALED_BY_DEFAULT[kind] if normalize is None else normalize:
        w *= present.sum() / w.sum()  # the present classes sum to their number (C when all are present)
    return torch.from_numpy(w.astype(np.float32))
