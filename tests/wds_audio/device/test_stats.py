"""Feature statistics and evaluation folds: which dataset.json entry a loader's Frontend standardizes
with, and the errors when none fits (wds_audio.device.stats), on shards and statistics written by shardgen."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import wds_audio
from shardgen.cli import main
from wds_audio.device.frontend import Frontend

FE = dict(sample_rate=16000, n_fft=512, n_mels=16)
LOADER = dict(batch_size=8, sample_rate=16000, clip_seconds=1.0, eval_crop="center")


def _stats(ds: Path, *argv: str) -> dict:
    assert main(["stats", str(ds), "--n-mels", "16", "--n-fft", "512", "--max-clips", "12", *argv]) == 0
    return json.loads((ds / "dataset.json").read_text())["feature_stats"]


@pytest.fixture(scope="module")
def datasets(demo_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``all``: statistics over every train fold only; ``cv``: also over folds 1-3 and over 1-3 with 20 mels."""
    base = tmp_path_factory.mktemp("stats-folds")
    out = {}
    for name in ("all", "cv"):
        shutil.copytree(demo_shards, base / name)
        out[name] = base / name
    _stats(out["all"])
    _stats(out["cv"], "--folds", "1", "2", "3")
    assert main(["stats", str(out["cv"]), "--n-mels", "20", "--n-fft", "512", "--max-clips", "12", "--folds", "1",
                 "2"]) == 0
    _stats(out["cv"])  # newest: every fold, as in `all`
    return out


def _entries(ds: Path) -> list[dict]:
    return json.loads((ds / "dataset.json").read_text())["feature_stats_sets"]


def test_an_evaluation_fold_in_the_stats_is_refused_with_the_folds_named(datasets: dict[str, Path]) -> None:
    ds = datasets["all"]
    stats = json.loads((ds / "dataset.json").read_text())["feature_stats"]
    fe = Frontend(standardize="dataset", stats=stats, **FE)
    with pytest.raises(ValueError, match=r"includes evaluation fold\(s\) \[4\] of split 'train'") as e:
        wds_audio.loader(str(ds), split="train", folds=[4], training=False, frontend=fe, **LOADER)
    assert "split 'train' folds [1, 2, 3, 4]" in str(e.value) and "--folds 1 2 3" in str(e.value)
    with pytest.raises(ValueError, match=r"evaluation fold\(s\) \[1, 2, 3, 4\]"):
        wds_audio.loader(str(ds), split="train", training=False, frontend=fe, **LOADER)  # folds None: all of them
    # not an evaluation of those clips: training on them, or evaluating another split (valid: fold 5)
    assert wds_audio.loader(str(ds), split="train", folds=[4], frontend=fe, **LOADER).cfg.frontend is fe
    assert wds_audio.loader(str(ds), split="valid", training=False, frontend=fe, **LOADER).cfg.frontend is fe
    # explicit statistics are the user's choice
    explicit = Frontend(standardize="dataset", stats={k: stats[k] for k in ("mean", "std")}, **FE)
    assert wds_audio.loader(str(ds), split="train", folds=[4], training=False, frontend=explicit,
                            **LOADER).cfg.frontend is explicit


@pytest.mark.numeric
def test_the_loader_switches_to_the_entry_without_the_evaluation_fold(datasets: dict[str, Path]) -> None:
    ds = datasets["cv"]
    entries = _entries(ds)
    everything = json.loads((ds / "dataset.json").read_text())["feature_stats"]
    held_out = next(e for e in entries if e["folds"] == [1, 2, 3] and e["n_mels"] == 16)
    assert everything["folds"] == [1, 2, 3, 4]
    fe = Frontend(standardize="dataset", stats=everything, **FE)
    loader = wds_audio.loader(str(ds), split="train", folds=[4], training=False, frontend=fe, return_audio=True,
                              **LOADER)
    used = loader.cfg.frontend
    assert used is not fe and used.stats_info["folds"] == [1, 2, 3]
    assert fe.stats_info["folds"] == [1, 2, 3, 4]  # the caller's frontend is left as it was
    torch.testing.assert_close(used.mean[:, 0], torch.tensor(held_out["mean"]))
    ref = Frontend(standardize="dataset", stats=held_out, **FE).eval()
    n = 0
    for b in loader:
        torch.testing.assert_close(b.features, ref(b.audio, b.lengths), rtol=0, atol=0)
        n += 1
    assert n > 0
    with pytest.raises(ValueError, match=r"evaluation fold\(s\) \[3\]"):  # no 16-mel entry without fold 3
        wds_audio.loader(str(ds), split="train", folds=[3], training=False, frontend=fe, **LOADER)


def test_select_stats_picks_by_split_folds_and_settings(datasets: dict[str, Path]) -> None:
    ds = datasets["cv"]
    pick = wds_audio.select_stats(str(ds), split="train", exclude_folds=[4], n_mels=16)
    assert pick["folds"] == [1, 2, 3] and pick["n_mels"] == 16
    assert wds_audio.select_stats(str(ds), split="train", exclude_folds=[3], n_mels=20)["folds"] == [1, 2]
    assert wds_audio.select_stats(str(ds), split="train", n_mels=16)["folds"] == [1, 2, 3, 4]  # the most folds
    fe = Frontend(**{**FE, "n_mels": 20})
    assert wds_audio.select_stats(str(ds), folds=[1, 2], settings=fe.feature_settings())["n_mels"] == 20
    with pytest.raises(ValueError, match=r"no feature statistics for split 'train', without folds \[3\], n_mels=16; "
                                         r"dataset.json has: split 'train' folds \[1, 2, 3\] with kind='logmel'"):
        wds_audio.select_stats(str(ds), split="train", exclude_folds=[3], n_mels=16)
    with pytest.raises(ValueError, match="unknown setting"):
        wds_audio.select_stats(str(ds), n_mel=16)
