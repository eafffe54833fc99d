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


@pytest.mark.parametrize("cmd", [[], ["pack"], ["verify"], ["stats"], ["synth"]])
def test_help_has_examples(cmd: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "shardgen.cli", *cmd, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "example" in out.stdout


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
    """Per-bin mean/std equal numpy over torchaudio's MelSpectrogram frames of the same clips."""
    import io
    import shutil
    import tarfile

    import soundfile as sf
    import torch
    import torchaudio

    ds = tmp_path / "ds"
    shutil.copytree(demo_shards, ds)
    assert main(["stats", str(ds), "--n-mels", "40", "--n-fft", "512", "--max-clips", "5"]) == 0
    fs = json.loads((ds / MANIFEST).read_text())["feature_stats"]
    shard = json.loads((ds / MANIFEST).read_text())["splits"]["train"]["shards"][0]["path"]
    tf = tarfile.open(ds / shard)
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=512, hop_length=160, n_mels=40)
    frames = []
    for m in tf.getmembers():
        if m.name.endswith(".flac") and len(frames) < 5:
            x, _ = sf.read(io.BytesIO(tf.extractfile(m).read()), dtype="float32")
            frames.append(10 * torch.log10(mel(torch.from_numpy(x)).clamp_min(1e-10)).T.double().numpy())
    allf = np.concatenate(frames)
    np.testing.assert_allclose(fs["mean"], allf.mean(0), atol=1e-3)
    np.testing.assert_allclose(fs["std"], allf.std(0), atol=1e-3)


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
