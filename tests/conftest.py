"""Shared fixtures: real audio written to disk, the shared reference data, small datasets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SHARED = Path(__file__).resolve().parents[2] / "shared"
if not SHARED.is_dir():
    SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"


def write_tone(path: Path, seconds: float = 0.5, sr: int = 16000, freq: float = 440.0,
               channels: int = 1, fmt: str | None = None, subtype: str | None = None, seed: int = 0) -> Path:
    """A short real audio file (tone + a little noise) at ``path``; format from the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = max(1, int(round(seconds * sr)))
    t = np.arange(n) / sr
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(n)
    if channels > 1:
        x = np.stack([x * (1 - 0.1 * c) for c in range(channels)], axis=1)
    sf.write(path, x.astype(np.float32), sr, format=fmt, subtype=subtype)
    return path


def read_shards(out: Path) -> dict[str, dict[str, bytes]]:
    """key -> {extension: bytes} over every tar below ``out`` (a packed dataset read back)."""
    import tarfile

    samples: dict[str, dict[str, bytes]] = {}
    for tar in sorted(Path(out).rglob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                key, ext = m.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return samples


@pytest.fixture
def shared() -> Path:
    """../shared (datasets-meta, audio-samples); tests using it skip when it is absent."""
    if not (SHARED / "datasets-meta").is_dir():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture(scope="session")
def demo_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic source tree in the csv recipe layout (shared by the session)."""
    from shardgen.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("demo-src"), num_clips=120, seed=1, progress=False)


@pytest.fixture(scope="session")
def demo_shards(demo_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small synthetic dataset packed into shards (read-only for tests: copy before damaging)."""
    from shardgen.recipes import get
    from shardgen.writer import PackOptions, pack

    out = tmp_path_factory.mktemp("demo-shards")
    pack(get("csv").load(demo_src), out, PackOptions(max_shard_samples=16, progress=False))
    return out
