"""Class weights on real shards: counts read back from the tars' ``.labels`` bytes, each kind
recomputed in float64 from its formula, compared with the float32 result at rtol=1e-6 (float32
rounding is about 6e-8 relative, so 1e-6 is loose for it and tight for any formula slip)."""
from __future__ import annotations

import csv
import functools
import http.server
import json
import math
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import wds_audio
from wds_audio.pipeline.class_weights import ClassCounts, class_counts, class_weights

KINDS = ["inverse", "sqrt_inverse", "effective", "pos_weight"]
RTOL = 1e-6  # float32 rounding of a float64 reference


def _tar_counts(out: Path, split: str, folds: list[int] | None = None) -> tuple[np.ndarray, int]:
    """Clips per class and clips in all, from the tars alone: each sample's ``.labels`` multi-hot
    bytes, its split and fold from its ``.json`` (dataset.json is not read)."""
    counts, clips = None, 0
    for path in sorted(Path(out).rglob("*.tar")):
        with tarfile.open(path) as tf:
            members = {m.name: m for m in tf.getmembers()}
            for name, m in members.items():
                if not name.endswith(".json"):
                    continue
                meta = json.loads(tf.extractfile(m).read())
                if meta["split"] != split or (folds is not None and meta["fold"] not in folds):
                    continue
                hot = np.frombuffer(tf.extractfile(members[name[:-5] + ".labels"]).read(), dtype=np.uint8)
                counts = hot.astype(np.int64) if counts is None else counts + hot
                clips += 1
    assert counts is not None, f"no clip of split {split!r} folds {folds} in {out}"
    return counts, clips


def _reference(counts: np.ndarray, clips: int, kind: str, beta: float = 0.999,
               normalize: bool | None = None) -> np.ndarray:
    """Each kind by its formula in float64; classes without clips get 0 (allow_missing=True)."""
    n, N, C = counts.astype(np.float64), float(clips), len(counts)
    ok = n > 0
    w = np.zeros(C)
    if kind == "pos_weight":
        w[ok] = (N - n[ok]) / n[ok]
    elif kind == "inverse":
        w[ok] = N / (C * n[ok])
    elif kind == "sqrt_inverse":
        w[ok] = 1.0 / np.sqrt(n[ok])
    else:
        w[ok] = (1.0 - beta) / (1.0 - beta ** n[ok])
    if (kind in ("sqrt_inverse", "effective")) if normalize is None else normalize:
        w = w * ok.sum() / w.sum()
    return w


def _check(got: torch.Tensor, want: np.ndarray) -> None:
    assert got.dtype == torch.float32 and got.shape == (len(want),)
    np.testing.assert_allclose(got.numpy().astype(np.float64), want, rtol=RTOL, atol=0)


@pytest.fixture(scope="module")
def single_label(demo_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A single-label dataset packed by the csv recipe from the demo's audio: 5 classes, long-tailed,
    train folds 1-3 (class 'rare' only in fold 1) and a valid fold 4, several shards per fold."""
    from shardgen.recipes import get
    from shardgen.writer import PackOptions, pack

    src = tmp_path_factory.mktemp("single-src")
    (src / "audio").mkdir()
    names = ["common", "mid", "few", "tail", "rare"]
    rows = []
    for i in range(56):
        name = f"clip{i:05d}.flac"
        (src / "audio" / name).symlink_to(demo_src / "audio" / name)
        fold = 4 if i >= 48 else 1 + i % 3
        label = "rare" if i in (0, 3) else names[[0, 0, 0, 0, 1, 1, 2, 3][i % 8]]
        rows.append({"path": f"audio/{name}", "labels": label, "split": "valid" if fold == 4 else "train",
                     "fold": fold, "group": f"g{i}"})
    (src / "classes.txt").write_text("\n".join(names) + "\n")
    with open(src / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path_factory.mktemp("single-shards")
    pack(get("csv").load(src), out, PackOptions(codec="wav", max_shard_samples=6, progress=False))
    assert json.loads((out / "dataset.json").read_text())["multi_label"] is False
    return out


@pytest.mark.parametrize("split,folds", [("train", None), ("train", [1]), ("train", [2, 4]), ("valid", None)])
def test_counts_match_the_tars_multi_label(demo_shards: Path, split: str, folds: list[int] | None) -> None:
    counts, clips = _tar_counts(demo_shards, split, folds)
    cc = class_counts(demo_shards, split=split, folds=folds)
    assert cc.clips == clips and cc.counts.tolist() == counts.tolist()
    assert cc.counts.dtype == np.int64 and len(cc.classes) == len(counts)
    if folds is None and split == "train":  # multi-label: a clip counts once per class it carries
        assert cc.counts.sum() > cc.clips


def test_counts_match_the_tars_single_label(single_label: Path) -> None:
    for folds in (None, [1], [2], [3], [1, 3]):
        counts, clips = _tar_counts(single_label, "train", folds)
        cc = class_counts(single_label, split="train", folds=folds)
        assert (cc.counts.tolist(), cc.clips) == (counts.tolist(), clips)
        assert cc.counts.sum() == cc.clips  # one label per clip


def test_folds_select_their_counts(demo_shards: Path, single_label: Path) -> None:
    for out in (demo_shards, single_label):
        per_fold = [class_counts(out, folds=[f]) for f in (1, 2, 3)]
        assert per_fold[0].counts.tolist() != per_fold[1].counts.tolist()
        assert class_counts(out, folds=2).counts.tolist() == per_fold[1].counts.tolist()  # an int is one fold
        both = class_counts(out, folds=[3, 1, 3])  # order and repeats do not matter
        assert both.counts.tolist() == (per_fold[0].counts + per_fold[2].counts).tolist()
        assert both.clips == per_fold[0].clips + per_fold[2].clips
        w1, w2 = class_weights(out, folds=[1], allow_missing=True), class_weights(out, folds=[2], allow_missing=True)
        assert not torch.equal(w1, w2)


@pytest.mark.parametrize("kind", KINDS)
def test_weights_match_formulas_single_label(single_label: Path, kind: str) -> None:
    for folds in (None, [1, 2]):  # every class present in both selections
        counts, clips = _tar_counts(single_label, "train", folds)
        assert (counts > 0).all()
        _check(class_weights(single_label, folds=folds, kind=kind), _reference(counts, clips, kind))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("split,folds", [("train", None), ("train", [1, 3]), ("valid", None)])
def test_weights_match_formulas_multi_label(demo_shards: Path, kind: str, split: str, folds: list[int] | None) -> None:
    counts, clips = _tar_counts(demo_shards, split, folds)
    got = class_weights(str(demo_shards), split=split, folds=folds, kind=kind, allow_missing=True)
    _check(got, _reference(counts, clips, kind))


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 0.99, 0.9999])
def test_effective_beta_and_normalization(single_label: Path, beta: float) -> None:
    counts, clips = _tar_counts(single_label, "train")
    C = len(counts)
    w = class_weights(single_label, kind="effective", beta=beta)
    _check(w, _reference(counts, clips, "effective", beta))
    assert math.isclose(float(w.sum()), C, rel_tol=RTOL)  # Cui et al.: the weights sum to C
    raw = class_weights(single_label, kind="effective", beta=beta, normalize=False)
    _check(raw, _reference(counts, clips, "effective", beta, normalize=False))
    if beta == 0.0:  # no re-weighting
        _check(w, np.ones(C))
    # towards beta = 1 the effective number becomes n_c: the weights approach rescaled inverse frequency
    near_one = class_weights(single_label, kind="effective", beta=1 - 1e-9)
    np.testing.assert_allclose(near_one.numpy(), class_weights(single_label, kind="inverse", normalize=True).numpy(),
                               rtol=1e-5)


def test_normalize_flag(single_label: Path) -> None:
    counts, clips = _tar_counts(single_label, "train")
    for kind in ("inverse", "sqrt_inverse"):
        for normalize in (True, False):
            _check(class_weights(single_label, kind=kind, normalize=normalize),
                   _reference(counts, clips, kind, normalize=normalize))
    # scikit-learn's "balanced": sum_c n_c * w_c = N for single-label data
    w = class_weights(single_label, kind="inverse").double().numpy()
    assert math.isclose(float((counts * w).sum()), clips, rel_tol=RTOL)


def test_zero_count_classes(single_label: Path) -> None:
    counts, clips = _tar_counts(single_label, "train", [2, 3])
    assert counts.tolist()[4] == 0 and (counts[:4] > 0).all()  # 'rare' is only in fold 1
    for kind in KINDS:
        with pytest.raises(ValueError, match=r"no clip in split 'train' folds \[2, 3\] .*4:rare.*allow_missing=True"):
            class_weights(single_label, folds=[2, 3], kind=kind)
        w = class_weights(single_label, folds=[2, 3], kind=kind, allow_missing=True)
        assert w[4] == 0 and (w[:4] > 0).all()
        _check(w, _reference(counts, clips, kind))
    w = class_weights(single_label, folds=[2, 3], kind="effective", allow_missing=True)
    assert math.isclose(float(w.sum()), 4, rel_tol=RTOL)  # the 4 present classes average 1


def test_bad_inputs(single_label: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown kind 'balanced'; kinds are \['inverse', 'sqrt_inverse', "):
        class_weights(single_label, kind="balanced")
    for beta in (-0.1, 1.0, 1.5, float("nan"), "0.9", True):
        with pytest.raises(ValueError, match=r"beta=.* must be in \[0, 1\)"):
            class_weights(single_label, kind="effective", beta=beta)
    with pytest.raises(ValueError, match=r"no split 'test'; the dataset has \['train', 'valid'\]"):
        class_weights(single_label, split="test")
    with pytest.raises(ValueError, match=r"split 'train' has no fold\(s\) \[4, 9\]; folds present: \[1, 2, 3\]"):
        class_counts(single_label, folds=[1, 4, 9])
    with pytest.raises(ValueError, match=r"normalize=True does not apply to kind='pos_weight'"):
        class_weights(single_label, kind="pos_weight", normalize=True)
    with pytest.raises(ValueError, match=r"dataset.json cannot be read"):
        class_weights(tmp_path / "nothing-here")
    with pytest.raises(ValueError, match=r"format_version 7, expected 1"):
        class_counts({"format_version": 7})


def test_noise_split_has_no_class(demo_shards: Path) -> None:
    with pytest.raises(ValueError, match=r"no class has a clip in split 'noise' \(\d+ clips\)"):
        class_weights(demo_shards, split="noise", allow_missing=True)


def test_manifest_dict_counts_and_http_url_agree(single_label: Path) -> None:
    want = class_weights(single_label, folds=[1, 2], kind="effective")
    manifest = json.loads((single_label / "dataset.json").read_text())
    assert torch.equal(class_weights(manifest, folds=[1, 2], kind="effective"), want)
    cc = class_counts(single_label, folds=[1, 2])
    assert isinstance(cc, ClassCounts) and torch.equal(class_weights(cc, kind="effective"), want)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(single_label))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert torch.equal(class_weights(url, folds=[1, 2], kind="effective"), want)
        with pytest.raises(ValueError, match=r"no split 'test'"):
            class_counts(url, split="test")
    finally:
        server.shutdown()
        server.server_close()


def test_weights_in_torch_losses(single_label: Path, demo_shards: Path) -> None:
    # single-label: CrossEntropyLoss(weight=) on a real batch, checked against the weighted mean by hand
    w = class_weights(single_label, kind="effective")
    batch = next(iter(wds_audio.loader(str(single_label), split="train", batch_size=8, sample_rate=16000,
                                       clip_seconds=0.5, seed=0, num_workers=0)))
    target = batch.targets.argmax(1)
    logits = torch.randn(len(target), len(w), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = torch.nn.CrossEntropyLoss(weight=w.double())(logits, target)
    nll = -torch.log_softmax(logits, 1).gather(1, target[:, None])[:, 0]
    assert torch.allclose(got, (w.double()[target] * nll).sum() / w.double()[target].sum(), rtol=1e-12)
    # multi-label: BCEWithLogitsLoss(pos_weight=) scales only the positive term
    pw = class_weights(demo_shards, kind="pos_weight", allow_missing=True)
    batch = next(iter(wds_audio.loader(str(demo_shards), split="train", batch_size=8, sample_rate=16000,
                                       clip_seconds=0.5, seed=0, num_workers=0)))
    y = batch.targets.double()
    assert y.shape[1] == len(pw)
    logits = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = torch.nn.BCEWithLogitsLoss(pos_weight=pw.double())(logits, y)
    by_hand = -(pw.double() * y * torch.nn.functional.logsigmoid(logits)
                + (1 - y) * torch.nn.functional.logsigmoid(-logits)).mean()
    assert torch.allclose(got, by_hand, rtol=1e-12)
    assert torch.isfinite(torch.nn.BCEWithLogitsLoss(pos_weight=pw)(logits.float(), y.float()))


def test_exported_from_the_package() -> None:
    assert wds_audio.class_weights is class_weights and wds_audio.class_counts is class_counts
    assert {"class_weights", "class_counts"} <= set(wds_audio.__all__)
