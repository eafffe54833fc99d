"""Per-sample randomness: every random choice comes from (seed, epoch, key, purpose).

Never from a worker's global state, so the same seed gives the same batches whatever
the number of workers, and a resumed run continues exactly.

Example:
    >>> a = sample_rng(0, 1, "clip1", "crop").integers(1000)
    >>> b = sample_rng(0, 1, "clip1", "crop").integers(1000)
    >>> bool(a == b)
    True
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch


def seed_of(*parts: object) -> int:
    """A 63-bit integer from any printable parts (stable across processes and runs)."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


def sample_rng(seed: int, epoch: int, key: str, purpose: str = "") -> np.random.Generator:
    return np.random.default_rng(seed_of(seed, epoch, key, purpose))


def sample_uniform(seed: int, epoch: int, key: str, purpose: str = "") -> float:
    """One uniform draw in [0, 1) from (seed, epoch, key, purpose): the hash's top 53 bits.

    For a single draw per sample (the crop): measured 3 us, where building a generator and asking
    it once took 34 us."""
    return (seed_of(seed, epoch, key, purpose) >> 10) / 2.0**53


def torch_generator(*parts: object, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed_of(*parts))
    return g
