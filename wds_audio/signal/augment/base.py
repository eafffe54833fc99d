"""What every augmentation shares: the base class, checks of ranges and batches, small helpers."""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ...core.rng import sample_rng

Params = dict[str, torch.Tensor]


# Rational approximations of speed and pitch factors are accepted within this many cents
# (1 cent = 0.058 %): small numerators/denominators keep the polyphase resampling kernels small.
RATIO_TOLERANCE_CENTS = 1.0


# ----------------------------------------------------------------------------------------- helpers

def _check_probability(p: float, owner: str) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{owner}: p must be in [0, 1], got {p}")


def _check_range(owner: str, lo_name: str, lo: float, hi_name: str, hi: float) -> None:
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"{owner}: need finite {lo_name} <= {hi_name}, got {lo_name}={lo}, {hi_name}={hi}")


def valid_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size) bool: True at positions before each clip's length (real audio, not padding)."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def _fft_size(n: int) -> int:
    """The power of two >= n (fast for every FFT backend, CPU and cuFFT)."""
    return 1 << max(0, (n - 1).bit_length())


def _rational(factor: float, owner: str) -> Fraction:
    """The fraction with the smallest denominator within RATIO_TOLERANCE_CENTS of ``factor``."""
    exact = Fraction(factor)
    for denominator in range(1, 10_001):
        approx = exact.limit_denominator(denominator)
        if approx > 0 and abs(1200.0 * math.log2(approx / exact)) < RATIO_TOLERANCE_CENTS:
            return approx
    raise ValueError(f"{owner}: factor {factor} has no small rational approximation")


def _fit_length(y: torch.Tensor, size: int) -> torch.Tensor:
    """Crop or zero-pad the last dimension to ``size``."""
    if y.shape[-1] >= size:
        return y[..., :size]
    return torch.nn.functional.pad(y, (0, size - y.shape[-1]))


def _energy_ratio_scale(reference: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) factor that gives ``y`` the energy of ``reference`` (0 where ``y`` is silent)."""
    e_ref = reference.square().sum(-1)
    e_y = y.square().sum(-1)
    return torch.where(e_y > 0, torch.sqrt(e_ref / e_y.clamp_min(torch.finfo(y.dtype).tiny)), torch.zeros_like(e_y))


# -------------------------------------------------------------------------------------- base class

class BatchAugmentation(nn.Module):
    """Base of all transforms: per-sample parameters from (seed, epoch, key), batched apply.

    Subclasses set ``name`` (the rng purpose), implement ``draw(rng)`` (one sample's parameters as
    scalars or equal-length lists) and ``apply_transform``.
    """

    name = ""

    def __init__(self, p: float, seed: int, **config: Any) -> None:
        super().__init__()
        _check_probability(p, type(self).__name__)
        self.p = float(p)
        self.seed = int(seed)
        self._config = {**config, "p": self.p, "seed": self.seed}

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (banks excluded): enough to rebuild the transform."""
        return dict(self._config)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._config.items())

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        raise NotImplementedError

    def _draw_sample(self, key: str, epoch: int) -> dict[str, Any]:
        rng = sample_rng(self.seed, epoch, key, self.name)
        # The apply decision is drawn first and the parameters always, so a sample's parameters
        # do not depend on p.
        apply = bool(rng.random() < self.p)
        return {"apply": apply, **self.draw(rng)}

    def randomize_parameters(self, x: torch.Tensor, keys: Sequence[str], epoch: int) -> Params:
        """Each sample's parameters, drawn on the CPU from sample_rng(seed, epoch, key, name)."""
        if len(keys) != x.shape[0]:
            raise ValueError(f"{type(self).__name__}: {len(keys)} keys for a batch of {x.shape[0]}")
        rows = [self._draw_sample(str(key), epoch) for key in keys]
        template = rows[0] if rows else self._draw_sample("", epoch)
        params = {}
        for name, value in template.items():
            dtype = np.asarray(value).dtype
            if rows:
                params[name] = torch.from_numpy(np.stack([np.asarray(r[name], dtype=dtype) for r in rows]))
            else:
                params[name] = torch.from_numpy(np.empty((0, *np.shape(value)), dtype=dtype))
        return params

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None, keys: Sequence[str],
                epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.apply_transform(x, self.randomize_parameters(x, keys, epoch), lengths)

    def apply_transform(self, x: torch.Tensor, params: Params,
                        lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def _check_batch(owner: str, x: torch.Tensor, lengths: torch.Tensor | None, dims: int,
                 what: str) -> torch.Tensor:
    """Validate x's rank and lengths' shape and values; return lengths as int64 on x's device."""
    if x.dim() != dims or not x.is_floating_point():
        raise ValueError(f"{owner}: expected a float tensor of shape {what}, got {tuple(x.shape)} {x.dtype}")
    size = x.shape[-1]
    if lengths is None:
        return torch.full((x.shape[0],), size, dtype=torch.int64, device=x.device)
    lengths = torch.as_tensor(lengths, device=x.device).long()
    if lengths.shape != (x.shape[0],):
        raise ValueError(f"{owner}: lengths must have shape ({x.shape[0]},), got {tuple(lengths.shape)}")
    if bool(((lengths < 0) | (lengths > size)).any()):
        raise ValueError(f"{owner}: lengths must lie in [0, {size}], got {lengths.tolist()}")
    return lengths


def _wave(owner: str, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    return _check_batch(owner, x, lengths, 2, "(B, T)")


def _applied_rows(params: Params, device: torch.device) -> torch.Tensor:
    """Indices (on ``device``) of the samples whose ``apply`` flag is set."""
    return params["apply"].nonzero().flatten().to(device)
