"""SpecAugment: frequency and time masks on features."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .base import BatchAugmentation, Params, _check_batch, valid_mask

# ------------------------------------------------------------------------------------ SpecAugment

class SpecAugment(BatchAugmentation):
    """Time and frequency masks on features (B, F, frames), confined to each clip's valid frames.

    Per sample: ``time_masks`` masks of width uniform in [0, time_width] frames and ``freq_masks``
    masks of width uniform in [0, freq_width] bins, each at a uniform start. Starts are drawn as fractions
    and placed when the valid frame count is known, so a width never exceeds the valid frames and every
    mask lies inside them (masks may overlap). Masked cells get ``mask_value``: a number, or "mean" for
    the mean of that sample's valid features. ``lengths`` are frame counts (features.frames_for).

    Example:
        >>> import torch
        >>> sa = SpecAugment(time_masks=1, time_width=5, freq_masks=1, freq_width=3)
        >>> y, n = sa(torch.ones(2, 16, 50), torch.tensor([50, 30]), ["a", "b"], epoch=0)
        >>> bool((y[1, :, 30:] == 1).all())   # padding frames untouched
        True
    """

    name = "specaugment"

    def __init__(self, time_masks: int = 2, time_width: int = 20, freq_masks: int = 2, freq_width: int = 8,
                 mask_value: float | str = 0.0, p: float = 1.0, seed: int = 0) -> None:
        super().__init__(p, seed, time_masks=time_masks, time_width=time_width, freq_masks=freq_masks,
                         freq_width=freq_width, mask_value=mask_value)
        for label, value in (("time_masks", time_masks), ("time_width", time_width),
                             ("freq_masks", freq_masks), ("freq_width", freq_width)):
            if int(value) != value or value < 0:
                raise ValueError(f"SpecAugment: {label} must be a non-negative integer, got {value}")
        if not (mask_value == "mean" or (isinstance(mask_value, (int, float)) and math.isfinite(mask_value))):
            raise ValueError(f"SpecAugment: mask_value must be a finite number or 'mean', got {mask_value!r}")
        self.time_masks, self.time_width = int(time_masks), int(time_width)
        self.freq_masks, self.freq_width = int(freq_masks), int(freq_width)
        self.mask_value = mask_value

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"time_width": rng.integers(0, self.time_width + 1, size=self.time_masks),
                "time_start": rng.random(self.time_masks),
                "freq_width": rng.integers(0, self.freq_width + 1, size=self.freq_masks),
                "freq_start": rng.random(self.freq_masks)}

    @staticmethod
    def _intervals(width: torch.Tensor, start: torch.Tensor, extent: torch.Tensor, size: int) -> torch.Tensor:
        """(B, size) bool union of intervals; widths capped at ``extent`` (B,), starts placed inside it."""
        width = torch.minimum(width, extent[:, None])
        first = torch.floor(start * (extent[:, None] - width + 1)).long()
        first = torch.minimum(first, extent[:, None] - width)  # start < 1 already; guards rounding only
        idx = torch.arange(size, device=extent.device)[None, None, :]
        inside = (idx >= first[..., None]) & (idx < (first + width)[..., None])
        return inside.any(1)

    def masks(self, params: Params, lengths: torch.Tensor, num_freqs: int, num_frames: int) -> torch.Tensor:
        """(B, F, frames) bool: the cells this call masks."""
        dev = lengths.device
        frames = lengths.clamp(max=num_frames)
        time = self._intervals(params["time_width"].to(dev).long(), params["time_start"].to(dev), frames, num_frames)
        freq_extent = torch.full_like(frames, num_freqs)
        freq = self._intervals(params["freq_width"].to(dev).long(), params["freq_start"].to(dev), freq_extent,
                               num_freqs)
        valid = valid_mask(frames, num_frames)
        cells = (time[:, None, :] | freq[:, :, None]) & valid[:, None, :]
        return cells & params["apply"].to(dev)[:, None, None]

    def apply_transform(self, x: torch.Tensor, params: Params,
                        lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = _check_batch("SpecAugment", x, lengths, 3, "(B, F, frames)")
        if not bool(params["apply"].any()):
            return x, lengths
        cells = self.masks(params, lengths, x.shape[1], x.shape[2])
        if self.mask_value == "mean":
            valid = valid_mask(lengths, x.shape[2])[:, None, :]
            count = (lengths * x.shape[1]).clamp_min(1).to(x.dtype)
            value = ((x * valid).sum((1, 2)) / count)[:, None, None]
        else:
            value = torch.tensor(float(self.mask_value), dtype=x.dtype, device=x.device)
        return torch.where(cells, value, x), lengths
