"""The embedded demo dataset: distinct synthetic sounds, long-tailed, multi-label, 5 folds.

Written as a source tree in the ``csv`` recipe's layout (``audio/*.flac`` + ``metadata.csv``)
so the demo packs it exactly as a user's own data. Every clip is generated from
``numpy.random.default_rng([seed, index])``: the same seed gives the same files.

Example:
    >>> from shardgen.synth import synthesize        # doctest: +SKIP
    >>> synthesize("data/demo-src", num_clips=2000, seed=0)
"""
from __future__ import annotations

import csv
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
from tqdm import tqdm

SR = 16000
Gen = Callable[[np.random.Generator, int], np.ndarray]


def _t(n: int) -> np.ndarray:
    return np.arange(n) / SR


def _tone(lo: float, hi: float) -> Gen:
    return lambda rng, n: np.sin(2 * np.pi * rng.uniform(lo, hi) * _t(n))


def _chirp(up: bool) -> Gen:
    def g(rng: np.random.Generator, n: int) -> np.ndarray:
        f0, f1 = rng.uniform(200, 800), rng.uniform(2500, 6000)
        f0, f1 = (f0, f1) if up else (f1, f0)
        period = rng.uniform(0.5, 2.0)
        phase_t = (_t(n) % period) / period
        freq = f0 * (f1 / f0) ** phase_t
        return np.sin(2 * np.pi * np.cumsum(freq) / SR)
    return g


def _band(lo: float, hi: float) -> Gen:
    def g(rng: np.random.Generator, n: int) -> np.ndarray:
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1 / SR)
        spec[(f < lo) | (f > hi)] = 0
        x = np.fft.irfft(spec, n)
        return x / (np.abs(x).max() + 1e-9)
    return g


def _clicks(rate_lo: float, rate_hi: float, poisson: bool) -> Gen:
    def g(rng: np.random.Generator, n: int) -> np.ndarray:
        x = np.zeros(n)
        if poisson:
            idx = np.flatnonzero(rng.random(n) < rng.uniform(rate_lo, rate_hi) / SR)
        else:
            idx = np.arange(0, n, int(SR / rng.uniform(rate_lo, rate_hi)))
        x[idx] = rng.choice([-1.0, 1.0], size=len(idx))
        return np.convolve(x, np.exp(-np.arange(64) / 8.0), mode="same")
    return g


def _harmonic(f_lo: float, f_hi: float, k: int) -> Gen:
    def g(rng: np.random.Generator, n: int) -> np.ndarray:
        f0 = rng.uniform(f_lo, f_hi)
        return sum(np.sin(2 * np.pi * f0 * h * _t(n)) / h for h in range(1, k + 1) if f0 * h < SR / 2)
    return g


def _am(rng: np.random.Generator, n: int) -> np.ndarray:
    return (1 + np.sin(2 * np.pi * rng.uniform(3, 10) * _t(n))) * np.sin(2 * np.pi * rng.uniform(800, 1500) * _t(n))


def _fm(rng: np.random.Generator, n: int) -> np.ndarray:
    fc, fm, beta = rng.uniform(1000, 2000), rng.uniform(50, 200), rng.uniform(2, 6)
    return np.sin(2 * np.pi * fc * _t(n) + beta * np.sin(2 * np.pi * fm * _t(n)))


def _vibrato(rng: np.random.Generator, n: int) -> np.ndarray:
    f = rng.uniform(500, 900) * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(4, 7) * _t(n)))
    return np.sin(2 * np.pi * np.cumsum(f) / SR)


def _square(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.sign(np.sin(2 * np.pi * rng.uniform(150, 400) * _t(n)))


def _saw(rng: np.random.Generator, n: int) -> np.ndarray:
    return 2 * ((_t(n) * rng.uniform(150, 400)) % 1.0) - 1


def _gated(inner: Gen, on_lo: float, on_hi: float) -> Gen:
    def g(rng: np.random.Generator, n: int) -> np.ndarray:
        period = rng.uniform(on_hi * 1.5, on_hi * 4)
        on = rng.uniform(on_lo, on_hi)
        return inner(rng, n) * ((_t(n) % period) < on)
    return g


def _dual(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.sin(2 * np.pi * rng.choice([697, 770, 852, 941]) * _t(n)) + np.sin(
        2 * np.pi * rng.choice([1209, 1336, 1477]) * _t(n))


def _sweep_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    x = _band(300, 3000)(rng, n)
    return x * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * _t(n)))


CLASSES: list[tuple[str, Gen]] = [
    ("tone_low", _tone(200, 400)), ("tone_high", _tone(2000, 4000)), ("chirp_up", _chirp(True)),
    ("chirp_down", _chirp(False)), ("click_train", _clicks(5, 20, False)), ("noise_low", _band(60, 400)),
    ("noise_mid", _band(1000, 2000)), ("noise_high", _band(4500, 7500)), ("harmonic_stack", _harmonic(90, 200, 12)),
    ("am_tone", _am), ("fm_tone", _fm), ("square_wave", _square), ("sawtooth", _saw),
    ("tone_pulses", _gated(_tone(600, 1200), 0.05, 0.2)), ("dual_tone", _dual), ("vibrato", _vibrato),
    ("noise_bursts", _gated(_band(20, 8000), 0.1, 0.4)), ("drone", _harmonic(45, 80, 20)),
    ("beeps", _gated(_tone(2500, 3500), 0.02, 0.08)), ("noise_sweep", _sweep_noise),
    ("whistle", _tone(6000, 7000)), ("crackle", _clicks(30, 120, True)),
]
NAMES = [n for n, _ in CLASSES]
NUM_NOISE = 20


def class_weights(alpha: float = 1.1) -> np.ndarray:
    """Long-tail class prior: most common / rarest = len(CLASSES) ** alpha (about 30x)."""
    w = 1.0 / np.arange(1, len(CLASSES) + 1) ** alpha
    return w / w.sum()


def _clip(args: tuple[int, int]) -> tuple[np.ndarray, list[int], dict]:
    seed, i = args
    rng = np.random.default_rng([seed, i])
    n = int(SR * np.exp(rng.uniform(np.log(1.0), np.log(10.0))))
    k = 1 + int(rng.random() < 0.25) + int(rng.random() < 0.05)
    labels = sorted(set(rng.choice(len(CLASSES), size=k, replace=False, p=class_weights()).tolist()))
    x = np.zeros(n)
    for c in labels:
        s = CLASSES[c][1](rng, n)
        x += s / (np.abs(s).max() + 1e-9) * 10 ** (rng.uniform(-24, -6) / 20)
    lead, tail = (int(rng.uniform(0, 0.3) * n) if rng.random() < 0.3 else 0 for _ in range(2))
    x[:lead] = 0
    x[n - tail:] = 0
    x += rng.standard_normal(n) * 10 ** (-60 / 20)  # microphone-like floor
    return x.astype(np.float32), labels, {"layers": len(labels)}


def _noise(args: tuple[int, int]) -> np.ndarray:
    seed, i = args
    rng = np.random.default_rng([seed, 10**6 + i])
    n = SR * 10
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0)
    x = np.fft.irfft(spec / f ** rng.uniform(0.5, 1.0), n)  # pink-to-brown background
    return (x / np.abs(x).max() * 0.3).astype(np.float32)


def synthesize(out: str | Path, num_clips: int = 2000, seed: int = 0, workers: int = 1, progress: bool = True) -> Path:
    """Write ``num_clips`` labelled clips + background noise and ``metadata.csv`` under ``out``."""
    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    (out / "noise").mkdir(parents=True, exist_ok=True)
    rows = []
    jobs = [(seed, i) for i in range(num_clips)]
    with get_context("spawn").Pool(workers) if workers > 1 else _Serial() as pool:
        clips = pool.imap(_clip, jobs, chunksize=16)
        for i, (x, labels, extra) in enumerate(tqdm(clips, total=num_clips, desc="synth", disable=not progress)):
            rel = f"audio/clip{i:05d}.flac"
            sf.write(out / rel, x, SR, format="FLAC", subtype="PCM_16")
            group = i // 3  # three clips per "source recording", always in the same fold
            fold = int(np.random.default_rng([seed, 7, group]).integers(1, 6))
            rows.append({"path": rel, "labels": ";".join(NAMES[c] for c in labels),
                         "split": "valid" if fold == 5 else "train", "fold": fold,
                         "group": f"src{group:04d}", **extra})
        for i, x in enumerate(pool.imap(_noise, [(seed, j) for j in range(NUM_NOISE)])):
            rel = f"noise/noise{i:03d}.flac"
            sf.write(out / rel, x, SR, format="FLAC", subtype="PCM_16")
            rows.append({"path": rel, "labels": "", "split": "noise", "fold": "", "group": f"noise{i:03d}", "layers": 0})
    (out / "classes.txt").write_text("\n".join(NAMES) + "\n")
    with open(out / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "labels", "split", "fold", "group", "layers"])
        w.writeheader()
        w.writerows(rows)
    return out


class _Serial:
    """Pool stand-in for workers=1 (no process start-up cost)."""

    def __enter__(self) -> "_Serial":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @staticmethod
    def imap(fn, jobs, chunksize: int = 1):  # noqa: ANN001, ANN205
        return map(fn, jobs)
