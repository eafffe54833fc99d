"""Random gain in dB per sample."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import BatchAugmentation, Params, _check_range, _wave

# ---------------------------------------------------------------------------------------- gain

class Gain(BatchAugmentation):
    """Multiply each clip by a gain drawn uniformly in [min_gain_db, max_gain_db] dB.

    Example:
        >>> import torch
        >>> y, _ = Gain(6.0, 6.0, p=1.0)(torch.ones(1, 4), None, ["k"], 0)
        >>> round(float(y[0, 0]), 4)
        1.9953
    """

    name = "gain"

    def __init__(self, min_gain_db: float = -12.0, max_gain_db: float = 6.0, p: float = 0.5,
                 seed: int = 0) -> None:
        super().__init__(p, seed, min_gain_db=min_gain_db, max_gain_db=max_gain_db)
        _check_range("Gain", "min_gain_db", min_gain_db, "max_gain_db", max_gain_db)
        self.min_gain_db, self.max_gain_db = float(min_gain_db), float(max_gain_db)

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"gain_db": rng.uniform(self.min_gain_db, self.max_gain_db)}

    def apply_transform(self, x: torch.Tensor, params: Params,
                        lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = _wave("Gain", x, lengths)
        db = torch.where(params["apply"], params["gain_db"], 0.0)
        factor = torch.pow(10.0, db / 20.0).to(device=x.device, dtype=x.dtype)
        return x * factor[:, None], lengths
