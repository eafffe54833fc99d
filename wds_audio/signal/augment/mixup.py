"""Mixup of waveforms or features and their multi-hot targets."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from ...core.rng import torch_generator
from .base import BatchAugmentation, Params, _check_batch

# ------------------------------------------------------------------------------------------ mixup

class Mixup(BatchAugmentation):
    """Mix each selected sample with a partner from the same batch; targets become the label union.

    Per sample (from its key): apply with probability ``p`` and a weight lam ~ Beta(alpha, alpha),
    folded to max(lam, 1 - lam) so the sample itself stays dominant. The partner is batch-level: a random
    cyclic derangement of the batch drawn from torch_generator(seed, epoch, "mixup", *keys), so nobody is
    paired with itself (for B >= 2). x' = lam x + (1 - lam) x[partner] for waveforms or features, any
    trailing shape. Targets (B, C): with ``union=True`` (multi-label) max(t, t[partner]); with
    ``union=False`` (single-label) lam t + (1 - lam) t[partner]. Lengths become max(len, len[partner]).

    Example:
        >>> import torch
        >>> mix = Mixup(alpha=0.4, p=1.0)
        >>> t = torch.eye(2)
        >>> _, targets, _ = mix(torch.randn(2, 100), t, None, ["a", "b"], epoch=0)
        >>> targets.tolist()
        [[1.0, 1.0], [1.0, 1.0]]
    """

    name = "mixup"

    def __init__(self, alpha: float = 0.4, p: float = 0.5, union: bool = True, seed: int = 0) -> None:
        super().__init__(p, seed, alpha=alpha, union=union)
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"Mixup: alpha must be > 0, got {alpha}")
        self.alpha, self.union = float(alpha), bool(union)

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        lam = rng.beta(self.alpha, self.alpha)
        return {"lam": max(lam, 1.0 - lam)}

    def randomize_parameters(self, x: torch.Tensor, keys: Sequence[str], epoch: int) -> Params:
        params = super().randomize_parameters(x, keys, epoch)
        size = len(keys)
        order = torch.randperm(size, generator=torch_generator(self.seed, epoch, self.name, *map(str, keys)))
        partner = torch.empty(size, dtype=torch.int64)
        partner[order] = order.roll(-1)
        params["partner"] = partner
        return params

    def forward(self, x: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor | None,  # type: ignore[override]
                keys: Sequence[str], epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.apply_transform(x, targets, self.randomize_parameters(x, keys, epoch), lengths)

    def apply_transform(self, x: torch.Tensor, targets: torch.Tensor, params: Params,  # type: ignore[override]
                        lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if x.dim() < 2 or not x.is_floating_point():
            raise ValueError(f"Mixup: expected float x of shape (B, ...), got {tuple(x.shape)} {x.dtype}")
        if targets.dim() != 2 or targets.shape[0] != x.shape[0]:
            raise ValueError(f"Mixup: targets must be (B, C) with B={x.shape[0]}, got {tuple(targets.shape)}")
        lengths = _check_batch("Mixup", x, lengths, x.dim(), "(B, ...)")
        dev = x.device
        partner = params["partner"].to(dev)
        # A sample paired with itself (a batch of one) is left exactly as it is.
        apply = params["apply"].to(dev) & (partner != torch.arange(len(partner), device=dev))
        lam = params["lam"].to(dev, torch.float32)
        shape = (-1,) + (1,) * (x.dim() - 1)
        mixed = (lam.view(shape) * x.float() + (1 - lam.view(shape)) * x[partner].float()).to(x.dtype)
        t = targets.float()
        if self.union:
            mixed_t = torch.maximum(t, t[partner])
        else:
            mixed_t = lam[:, None] * t + (1 - lam[:, None]) * t[partner]
        x_out = torch.where(apply.view(shape), mixed, x)
        t_out = torch.where(apply[:, None], mixed_t.to(targets.dtype), targets)
        l_out = torch.where(apply, torch.maximum(lengths, lengths[partner]), lengths)
        return x_out, t_out, l_out
