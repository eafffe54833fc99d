"""Noise mixing at a random SNR, from a bank of noise clips stored back to back."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .base import BatchAugmentation, Params, _check_range, _wave, valid_mask

# ----------------------------------------------------------------------------------- noise mixing

class NoiseMix(BatchAugmentation):
    """Add a noise clip from a bank at an SNR drawn uniformly in [min_snr_db, max_snr_db].

    Per sample: a noise index, a start offset in that noise clip and an SNR. Noise shorter than the
    clip is tiled (read cyclically from the offset). The SNR is measured over the valid part of the clip
    and the noise is scaled so the result has exactly that SNR; padding stays zero. A silent clip gets
    no noise (any SNR relative to silence means zero noise).

    Args:
        noise: the clips back to back, (sum of noise_lengths,) float (as ``noise_bank`` gives them); or
            an (N, L) bank of zero-padded rows; or one clip (L,).
        noise_lengths: samples of each clip: for clips back to back they add up to the length of
            ``noise``; for (N, L) rows, the valid samples of each (default all L).

    The clips are held back to back whatever the form given (memory: the sum of their lengths, not
    N times the longest); the mixes are those of the padded bank, value for value.

    Example:
        >>> import torch
        >>> mix = NoiseMix(torch.randn(3, 1000), min_snr_db=10.0, max_snr_db=10.0, p=1.0)
        >>> y, _ = mix(torch.randn(2, 4000), None, ["a", "b"], epoch=0)
        >>> y.shape
        torch.Size([2, 4000])
    """

    name = "noise"

    def __init__(self, noise: torch.Tensor, noise_lengths: torch.Tensor | Sequence[int] | None = None,
                 min_snr_db: float = 3.0, max_snr_db: float = 30.0, p: float = 0.5, seed: int = 0) -> None:
        super().__init__(p, seed, min_snr_db=min_snr_db, max_snr_db=max_snr_db)
        _check_range("NoiseMix", "min_snr_db", min_snr_db, "max_snr_db", max_snr_db)
        self.min_snr_db, self.max_snr_db = float(min_snr_db), float(max_snr_db)
        bank = torch.as_tensor(noise).detach().to("cpu", torch.float32)
        sizes = None if noise_lengths is None else torch.as_tensor(noise_lengths, dtype=torch.int64).cpu().flatten()
        if bank.dim() == 1 and sizes is not None and len(sizes) > 1:  # clips back to back
            if int(sizes.sum()) != bank.shape[0] or bool((sizes < 1).any()):
                raise ValueError(f"NoiseMix: noise_lengths {sizes.tolist()} do not split the {bank.shape[0]} samples "
                                 "of the clips given back to back (each >= 1, adding up to all of them)")
            rows = list(torch.split(bank, sizes.tolist()))
        else:
            if bank.dim() == 1:
                bank = bank[None]
            if bank.dim() != 2 or bank.shape[0] == 0 or bank.shape[1] == 0:
                raise ValueError(f"NoiseMix: noise bank must be a non-empty (N, L) tensor, got shape {tuple(bank.shape)}")
            n_rows, width = bank.shape
            sizes = torch.full((n_rows,), width, dtype=torch.int64) if sizes is None else sizes
            if sizes.shape != (n_rows,):
                raise ValueError(f"NoiseMix: noise_lengths must have shape ({n_rows},), got {tuple(sizes.shape)}")
            for row in range(n_rows):
                if not 1 <= int(sizes[row]) <= width:
                    raise ValueError(f"NoiseMix: noise row {row}: length {int(sizes[row])} not in [1, {width}]")
            rows = [bank[row, :int(sizes[row])] for row in range(n_rows)]
        for row, valid in enumerate(rows):
            if not bool(torch.isfinite(valid).all()):
                raise ValueError(f"NoiseMix: noise row {row} holds NaN or inf")
            if float(valid.square().sum()) == 0.0:
                raise ValueError(f"NoiseMix: noise row {row} is silent")
        # back to back, each clip at its start: the sum of the lengths, not N x the longest
        self.register_buffer("noise", rows[0].clone() if len(rows) == 1 else torch.cat(rows), persistent=False)
        self.register_buffer("noise_lengths", sizes.clone(), persistent=False)
        self.register_buffer("noise_starts", torch.cumsum(sizes, 0) - sizes, persistent=False)
        self._sizes = sizes.numpy().copy()  # CPU copy for drawing offsets without touching the device

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        index = int(rng.integers(len(self._sizes)))
        return {"noise_index": index, "offset": int(rng.integers(self._sizes[index])),
                "snr_db": rng.uniform(self.min_snr_db, self.max_snr_db)}

    def apply_transform(self, x: torch.Tensor, params: Params,
                        lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = _wave("NoiseMix", x, lengths)
        if not bool(params["apply"].any()):
            return x, lengths
        dev, size = x.device, x.shape[1]
        index = params["noise_index"].to(dev)
        offset = params["offset"].to(dev)
        snr_db = params["snr_db"].to(dev, torch.float32)
        bank, sizes, starts = self.noise.to(dev), self.noise_lengths.to(dev), self.noise_starts.to(dev)
        # Cyclic read from the offset: tiles noise that is shorter than the clip.
        position = (offset[:, None] + torch.arange(size, device=dev)[None, :]) % sizes[index][:, None]
        mask = valid_mask(lengths, size)
        noise = bank[starts[index][:, None] + position] * mask
        signal = x.float() * mask
        p_signal = signal.square().sum(1)
        p_noise = noise.square().sum(1)  # same sample count as p_signal, so sums compare as powers
        target = p_signal / torch.pow(10.0, snr_db / 10.0)
        scale = torch.where(p_noise > 0, torch.sqrt(target / p_noise.clamp_min(1e-30)), torch.zeros_like(p_noise))
        mixed = (x.float() + scale[:, None] * noise).to(x.dtype)
        return torch.where(params["apply"].to(dev)[:, None], mixed, x), lengths
