"""The embedded demo dataset: deterministic, long-tailed, multi-label, 5 folds, distinct classes."""
from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

from shardgen.synth import NAMES, synthesize


def _rows(root: Path) -> list[dict[str, str]]:
    with open(root / "metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_deterministic_from_seed(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", num_clips=30, seed=3, progress=False)
    b = synthesize(tmp_path / "b", num_clips=30, seed=3, progress=False)
    c = synthesize(tmp_path / "c", num_clips=30, seed=4, progress=False)
    digest = lambda r: hashlib.sha256(b"".join(p.read_bytes() for p in sorted(r.rglob("*.flac")))).hexdigest()  # noqa: E731
    assert digest(a) == digest(b) != digest(c)
    assert (a / "metadata.csv").read_text() == (b / "metadata.csv").read_text()


def test_layout_and_distribution(demo_src: Path) -> None:
    rows = [r for r in _rows(demo_src) if r["split"] != "noise"]
    assert len(NAMES) >= 20 and len(rows) == 120
    for r in rows[:10]:
        x, sr = sf.read(demo_src / r["path"])
        assert sr == 16000 and 1.0 <= len(x) / sr <= 10.0
    assert {int(r["fold"]) for r in rows} <= {1, 2, 3, 4, 5}
    assert all((r["split"] == "valid") == (r["fold"] == "5") for r in rows)
    groups: dict[str, set[str]] = {}
    for r in rows:
        groups.setdefault(r["group"], set()).add(r["fold"])
    assert all(len(f) == 1 for f in groups.values())  # a source recording never spans folds
    assert any(";" in r["labels"] for r in rows)  # multi-label mixtures
    noise = [r for r in _rows(demo_src) if r["split"] == "noise"]
    assert noise and all(r["labels"] == "" for r in noise)


def test_long_tail_on_the_full_size_prior() -> None:
    """Over the label sampler the demo uses, most common >= 20x the rarest."""
    from shardgen.synth import _clip

    counts = Counter(c for i in range(2000) for c in _clip((0, i))[1])
    assert len(counts) == len(NAMES)
    assert max(counts.values()) >= 20 * min(counts.values())


def test_classes_are_spectrally_distinct() -> None:
    """Mean log-spectra of single-label clips differ between classes more than within."""
    from shardgen.synth import CLASSES, SR

    rng = np.random.default_rng(0)
    spectra = []
    for _, gen in CLASSES:
        s = [np.log(np.abs(np.fft.rfft(gen(rng, SR)))[:4000:40] + 1e-6) for _ in range(2)]
        spectra.append(s)
    within = np.mean([np.linalg.norm(a - b) for a, b in spectra])
    between = np.mean([np.linalg.norm(spectra[i][0] - spectra[j][0])
                       for i in range(len(spectra)) for j in range(len(spectra)) if i != j])
    assert between > within
