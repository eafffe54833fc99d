"""The shardgen command line: help with examples, pack/stats/synth/recipes end to end."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shardgen.cli import main
from shardgen.writer import MANIFEST


def _subcommands() -> list[str]:
    """Every sub-command the parser has, so that a new one without examples fails the test below."""
    import argparse

    from shardgen.cli import _parser

    acts = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(acts[0].choices)


def test_the_subcommands_are_found() -> None:
    assert {"pack", "merge", "verify", "stats", "synth", "recipes"} <= set(_subcommands())


@pytest.mark.parametrize("cmd", [[]] + [[c] for c in _subcommands()])
def test_help_has_examples(cmd: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "shardgen.cli", *cmd, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "example" in out.stdout
    # an example is a command line of this very sub-command, not only the word
    assert any(line.strip().startswith(" ".join(["shardgen", *cmd])) for line in out.stdout.splitlines()
               if "example" not in line), out.stdout


def test_demo_help_has_an_example() -> None:
    out = subprocess.run([sys.executable, "-m", "wds_audio.demo", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "python -m wds_audio.demo data/demo" in out.stdout


def test_recipe_help_shows_layout() -> None:
    out = subprocess.run([sys.executable, "-m", "shardgen.cli", "pack", "--recipe", "csv", "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "metadata.csv" in out.stdout and "--classes" in out.stdout


def test_recipes_lists_generic_ones(capsys) -> None:
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "csv " in out and "folder " in out and "SRC/<class>/<clip>" in out


def test_pack_then_stats_writes_feature_stats(demo_src: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ds"
    assert main(["pack", "--recipe", "csv", str(demo_src), str(out), "--no-progress", "--max-shard-samples", "50"]) == 0
    printed = capsys.readouterr().out
    assert "train:" in printed and "valid:" in printed
    assert main(["stats", str(out), "--plot", str(tmp_path / "c.png"), "--n-mels", "32", "--max-clips", "20"]) == 0
    m = json.loads((out / MANIFEST).read_text())
    fs = m["feature_stats"]
    assert fs["n_mels"] == 32 and len(fs["mean"]) == 32 and fs["clips"] == 20
    assert all(s > 0 for s in fs["std"]) and -100 < np.mean(fs["mean"]) < 20
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    table = capsys.readouterr().out
    assert "tone_low" in table and "durations over 20 clips" in table


@pytest.mark.numeric
def test_stats_match_a_direct_computation(demo_shards: Path, tmp_path: Path) -> None:
    """Per-bin mean/std equal numpy over torchaudio's MelSpectrogram frames of the same clips (the
    seeded sample of 5 clips `--max-clips 5` takes)."""
    from shardgen.stats import sample_clips

    ds, m = _stats_copy(demo_shards, tmp_path)
    assert main(["stats", str(ds), "--n-mels", "40", "--n-fft", "512", "--max-clips", "5"]) == 0
    fs = json.loads((ds / MANIFEST).read_text())["feature_stats"]
    mean, std, clips = _direct_stats(ds, sample_clips(m["splits"]["train"]["shards"], 5, seed=0), n_mels=40)
    assert clips == 5
    np.testing.assert_allclose(fs["mean"], mean, atol=1e-3)
    np.testing.assert_allclose(fs["std"], std, atol=1e-3)


def test_pack_error_is_one_clear_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "metadata.csv").write_text("file,label\nx.wav,a\n")
    assert main(["pack", "--recipe", "csv", str(tmp_path / "src"), str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "metadata.csv: missing column(s) ['path']" in err


def test_recipe_options_anywhere_on_the_line(demo_src: Path, tmp_path: Path) -> None:
    """Recipe options before SRC OUT are the recipe's, not the paths (a former parsing trap)."""
    classes = tmp_path / "classes.txt"
    classes.write_text((demo_src / "classes.txt").read_text())
    out = tmp_path / "ds"
    assert main(["pack", "--recipe", "csv", "--classes", str(classes), "--name", "early", str(demo_src), str(out),
                 "--no-progress"]) == 0
    m = json.loads((out / MANIFEST).read_text())
    assert m["name"] == "early" and m["classes"] == classes.read_text().split()


def test_unknown_recipe_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["pack", "--recipe", "nope", str(tmp_path), str(tmp_path / "o")]) == 2
    assert "unknown recipe 'nope'" in capsys.readouterr().err


# ------------------------------------------------------------------ stats: folds, sampling, sets of statistics

def _stats_copy(demo_shards: Path, tmp_path: Path) -> tuple[Path, dict]:
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(demo_shards, ds)
    return ds, json.loads((ds / MANIFEST).read_text())


def _direct_stats(ds: Path, picks: dict[str, set[int] | None], n_mels: int = 16) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-bin mean/std over torchaudio's MelSpectrogram of the chosen (shard, position) clips, read with tarfile."""
    import io
    import tarfile

    import soundfile as sf
    import torch
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=512, hop_length=160, n_mels=n_mels)
    frames, clips = [], 0
    for path, wanted in picks.items():
        audio = [m for m in tarfile.open(ds / path).getmembers() if m.name.endswith(".flac")]
        for i, m in enumerate(audio):
            if wanted is None or i in wanted:
                x, _ = sf.read(io.BytesIO(tarfile.open(ds / path).extractfile(m).read()), dtype="float32")
                frames.append(10 * torch.log10(mel(torch.from_numpy(x)).clamp_min(1e-10)).T.double().numpy())
                clips += 1
    allf = np.concatenate(frames)
    return allf.mean(0), allf.std(0), clips


@pytest.mark.numeric
def test_stats_folds_use_only_those_folds_and_are_recorded(demo_shards: Path, tmp_path: Path) -> None:
    ds, m = _stats_copy(demo_shards, tmp_path)
    assert m["splits"]["train"]["folds"] == [1, 2, 3, 4]
    assert main(["stats", str(ds), "--n-mels", "16", "--n-fft", "512", "--folds", "1", "2"]) == 0
    fs = json.loads((ds / MANIFEST).read_text())["feature_stats"]
    shards = [s for s in m["splits"]["train"]["shards"] if s["fold"] in (1, 2)]
    assert fs["split"] == "train" and fs["folds"] == [1, 2] and fs["clips"] == sum(s["samples"] for s in shards)
    assert fs["seed"] == 0 and fs["max_clips"] is None
    assert {k: fs[k] for k in ("kind", "sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "f_min",
                               "f_max", "mel_scale")} == {
        "kind": "logmel", "sample_rate": 16000, "n_fft": 512, "win_length": 512, "hop_length": 160, "n_mels": 16,
        "f_min": 0.0, "f_max": 8000.0, "mel_scale": "htk"}
    mean, std, clips = _direct_stats(ds, {s["path"]: None for s in shards})
    assert clips == fs["clips"]
    np.testing.assert_allclose(fs["mean"], mean, atol=1e-3)
    np.testing.assert_allclose(fs["std"], std, atol=1e-3)
    # the other spelling, and --exclude-folds: the same folds, the same entry replaced
    assert main(["stats", str(ds), "--n-mels", "16", "--n-fft", "512", "--exclude-folds", "3,4"]) == 0
    m2 = json.loads((ds / MANIFEST).read_text())
    assert [e["folds"] for e in m2["feature_stats_sets"]] == [[1, 2]] and m2["feature_stats"]["mean"] == fs["mean"]


def test_stats_sets_accumulate_and_keep_the_legacy_entry(demo_shards: Path, tmp_path: Path) -> None:
    ds, m = _stats_copy(demo_shards, tmp_path)
    legacy = {"split": "train", "feature": "logmel_db", "sample_rate": 16000, "n_fft": 512, "hop_length": 160,
              "n_mels": 16, "f_min": 0.0, "f_max": 8000.0, "mel_scale": "htk", "frames": 1,
              "clips": m["splits"]["train"]["samples"], "mean": [0.0] * 16, "std": [1.0] * 16}
    (ds / MANIFEST).write_text(json.dumps({**m, "feature_stats": legacy}))
    for folds in (["1", "2", "3"], ["2", "3", "4"]):
        assert main(["stats", str(ds), "--n-mels", "16", "--n-fft", "512", "--max-clips", "10", "--folds", *folds]) == 0
    assert main(["stats", str(ds), "--n-mels", "20", "--n-fft", "512", "--max-clips", "10", "--folds", "1", "2", "3"]) == 0
    m2 = json.loads((ds / MANIFEST).read_text())
    sets = m2["feature_stats_sets"]
    assert [(e["folds"], e["n_mels"]) for e in sets] == [([1, 2, 3, 4], 16), ([1, 2, 3], 16), ([2, 3, 4], 16),
                                                         ([1, 2, 3], 20)]
    assert sets[0]["kind"] == "logmel" and sets[0]["win_length"] == 512 and sets[0]["max_clips"] is None
    assert m2["feature_stats"] == sets[-1]  # readers of the single dict get the newest entry


@pytest.mark.parametrize("argv, message", [
    (["--folds", "7"], "split 'train' has no fold(s) [7]; folds present: [1, 2, 3, 4]"),
    (["--exclude-folds", "1", "9"], "split 'train' has no fold(s) [9]"),
    (["--split", "noise", "--folds", "1"], "split 'noise' has no fold(s) [1]; folds present: none"),
    (["--exclude-folds", "1", "2", "3", "4"], "no fold of split 'train' left"),
    (["--split", "test"], "no split 'test'"),
    (["--max-clips", "0"], "--max-clips must be at least 1"),
])
def test_stats_bad_folds_are_clear_errors(demo_shards: Path, tmp_path: Path, capsys, argv, message) -> None:
    ds, m = _stats_copy(demo_shards, tmp_path)
    assert main(["stats", str(ds), *argv]) == 2
    assert message in capsys.readouterr().err
    assert json.loads((ds / MANIFEST).read_text()) == m  # nothing written


def test_stats_fold_values_must_be_integers(demo_shards: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["stats", str(demo_shards), "--folds", "one"])
    assert "folds are integers" in capsys.readouterr().err


@pytest.mark.numeric
def test_stats_max_clips_is_a_seeded_sample_across_all_shards(demo_shards: Path, tmp_path: Path) -> None:
    from shardgen.stats import sample_clips

    ds, m = _stats_copy(demo_shards, tmp_path)
    shards = m["splits"]["train"]["shards"]
    argv = ["stats", str(ds), "--n-mels", "16", "--n-fft", "512", "--max-clips", "12"]
    assert main([*argv, "--seed", "5"]) == 0
    fs = json.loads((ds / MANIFEST).read_text())["feature_stats"]
    assert fs["clips"] == 12 and fs["seed"] == 5 and fs["max_clips"] == 12
    picks = sample_clips(shards, 12, seed=5)
    folds = {s["fold"] for s in shards if s["path"] in picks}
    assert len(picks) >= 4 and len(folds) >= 3  # spread over the shards, not the first 12 clips of one
    assert picks != sample_clips(shards, 12, seed=6) and picks == sample_clips(shards, 12, seed=5)
    mean, std, clips = _direct_stats(ds, picks)
    assert clips == 12
    np.testing.assert_allclose(fs["mean"], mean, atol=1e-3)
    np.testing.assert_allclose(fs["std"], std, atol=1e-3)
    first, _, _ = _direct_stats(ds, {shards[0]["path"]: set(range(12))} if shards[0]["samples"] >= 12 else
                                {s["path"]: None for s in shards[:2]})
    assert np.abs(np.asarray(fs["mean"]) - first).max() > 1e-2  # not the first clips
    assert main([*argv, "--seed", "5"]) == 0  # the same seed: the same statistics
    assert json.loads((ds / MANIFEST).read_text())["feature_stats"]["mean"] == fs["mean"]
    assert main([*argv, "--seed", "6"]) == 0
    assert json.loads((ds / MANIFEST).read_text())["feature_stats"]["mean"] != fs["mean"]


def _png(path: Path) -> np.ndarray:
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400, img.shape
    return img


def test_pack_plot_draws_shard_sizes_and_classes(demo_src: Path, tmp_path: Path, capsys) -> None:
    png = tmp_path / "pack.png"
    assert main(["pack", "--recipe", "csv", str(demo_src), str(tmp_path / "out"), "--max-shard-samples", "16",
                 "--no-progress", "--plot", str(png)]) == 0
    assert f"chart: {png}" in capsys.readouterr().out
    img = _png(png)
    assert len(np.unique(img.reshape(-1, img.shape[2]), axis=0)) > 10  # bars and text, not a blank canvas


def test_pack_plot_of_parts_goes_to_merge(demo_src: Path, tmp_path: Path, capsys) -> None:
    out, png = tmp_path / "out", tmp_path / "merged.png"
    argv = ["pack", "--recipe", "csv", str(demo_src), str(out), "--max-shard-samples", "16", "--no-progress"]
    assert main([*argv, "--part", "1/2", "--plot", str(png)]) == 2
    assert "--plot with --part" in capsys.readouterr().err and not png.exists()
    for i in (1, 2):
        assert main([*argv, "--part", f"{i}/2"]) == 0
    assert main(["merge", str(out), "--plot", str(png)]) == 0
    _png(png)
