"""Batched, deterministic augmentations for the device frontend, one transform per module.

Enters: a batch on its device, (B, T) waveforms or (B, F, frames) features, with lengths and
sample keys. Leaves: the same shapes (SpeedPerturb changes lengths; Mixup mixes targets too).

Each transform is a small ``nn.Module`` that works on a whole batch on whatever device the batch is on
(CPU or CUDA), with no Python loop over samples. Randomness is split in two steps:

- ``randomize_parameters(x, keys, epoch)`` draws each sample's parameters on the CPU from
  ``sample_rng(seed, epoch, key, <transform name>)``: a handful of scalars per sample. A sample's
  augmentation therefore depends only on (seed, epoch, key), never on the batch it lands in, the
  worker that produced it or the device. The result is a dict of small CPU tensors, always with an
  ``apply`` (B,) bool entry (drawn with probability ``p``).
- ``apply_transform(x, params, lengths)`` does the batched work on ``x``'s device.
- ``forward(x, lengths, keys, epoch)`` is the two in a row.

Waveform transforms (Gain, NoiseMix, Reverb, Bandpass, SpeedPerturb, PitchShift, TimeStretch,
DeviceResponse) take ``x`` (B, T) float and
``lengths`` (B,) int64 (valid samples per clip; ``None`` = all). Samples past a clip's length are padding:
statistics (SNR, energy) are measured over the valid part only and padding stays zero. SpecAugment takes
features (B, F, frames) and *frame* lengths (see ``features.frames_for``). Every transform returns
``(x, lengths)`` (only SpeedPerturb and TimeStretch change lengths), Mixup returns ``(x, targets, lengths)``, so a frontend
composes them uniformly.

The batched step is named ``apply_transform`` (as in torch-audiomentations), not ``apply``: overriding
``nn.Module.apply(fn)`` would break ``model.apply(init_fn)`` on any model that holds a transform.

State: the transforms are stateless. Their only randomness is derived from (seed, epoch, key), so
resuming needs nothing but the constructor arguments and the epoch; ``state_dict()`` is empty. The noise and
impulse-response banks are non-persistent buffers (they move with ``.to(device)`` but are data, reloaded by
the caller, not checkpoint content). ``get_config()`` returns the constructor arguments (banks excluded).

Example:
    >>> import torch
    >>> gain = Gain(min_gain_db=-6.0, max_gain_db=6.0, p=1.0, seed=0)
    >>> x = torch.ones(2, 8)
    >>> y, lengths = gain(x, torch.tensor([8, 4]), keys=["a", "b"], epoch=0)
    >>> y.shape, lengths.tolist()
    (torch.Size([2, 8]), [8, 4])
"""
from .bandpass import Bandpass
from .base import BatchAugmentation, valid_mask
from .device_response import DeviceResponse
from .gain import Gain
from .mixup import Mixup
from .noise import NoiseMix
from .reverb import Reverb, synthetic_rirs
from .specaugment import SpecAugment
from .speed import PitchShift, SpeedPerturb
from .stretch import TimeStretch

__all__ = ["Bandpass", "BatchAugmentation", "DeviceResponse", "Gain", "Mixup", "NoiseMix", "PitchShift", "Reverb", "SpecAugment",
           "SpeedPerturb", "TimeStretch", "synthetic_rirs", "valid_mask"]
