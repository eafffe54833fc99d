"""Batched, deterministic augmentations for the device frontend.

Each transform is a small ``nn.Module`` that works on a whole batch on whatever device the batch is on
(CPU or CUDA), with no Python loop over samples. Randomness is split in two steps:

- ``randomize_parameters(x, keys, epoch)`` draws each sample's parameters on the CPU from
  ``sample_rng(seed, epoch, key, <transform name>)``: a handful of scalars per sample. A sample's
  augmentation therefore depends only on (seed, epoch, key), never on the batch it lands in, the
  worker that produced it or the device. The result is a dict of small CPU tensors, always with an
  ``apply`` (B,) bool entry (drawn with probability ``p``).
- ``apply_transform(x, params, lengths)`` does the batched work on ``x``'s device.
- ``forward(x, lengths, keys, epoch)`` is the two in a row.

Waveform transforms (Gain, NoiseMix, Reverb, Bandpass, SpeedPerturb, PitchShift) take ``x`` (B, T) float and
``lengths`` (B,) int64 (valid samples per clip; ``None`` = all). Samples past a clip's length are padding:
statistics (SNR, energy) are measured over the valid part only and padding stays zero. SpecAugment takes
features (B, F, frames) and *frame* lengths (see ``features.frames_for``). Every transform returns
``(x, lengths)`` (only SpeedPerturb changes lengths), Mixup returns ``(x, targets, lengths)``, so a frontend
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
from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
import torch
import torchaudio.functional as AF
from torch import nn

from .rng import sample_rng, seed_of, torch_generator

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


# ----------------------------------------------------------------------------------- noise mixing

class NoiseMix(BatchAugmentation):
    """Add a noise clip from a bank at an SNR drawn uniformly in [min_snr_db, max_snr_db].

    Per sample: a noise index, a start offset in that noise clip and an SNR. Noise shorter than the
    clip is tiled (read cyclically from the offset). The SNR is measured over the valid part of the clip
    and the noise is scaled so the result has exactly that SNR; padding stays zero. A silent clip gets
    no noise (any SNR relative to silence means zero noise).

    Args:
        noise: (N, L) float bank (e.g. the dataset's noise split, loaded by the caller), or (L,).
        noise_lengths: valid samples of each bank row (rows zero-padded to L); default all L.

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
        if bank.dim() == 1:
            bank = bank[None]
        if bank.dim() != 2 or bank.shape[0] == 0 or bank.shape[1] == 0:
            raise ValueError(f"NoiseMix: noise bank must be a non-empty (N, L) tensor, got shape {tuple(bank.shape)}")
        n_rows, width = bank.shape
        sizes = torch.full((n_rows,), width, dtype=torch.int64) if noise_lengths is None \
            else torch.as_tensor(noise_lengths, dtype=torch.int64).cpu()
        if sizes.shape != (n_rows,):
            raise ValueError(f"NoiseMix: noise_lengths must have shape ({n_rows},), got {tuple(sizes.shape)}")
        for row in range(n_rows):
            size = int(sizes[row])
            if not 1 <= size <= width:
                raise ValueError(f"NoiseMix: noise row {row}: length {size} not in [1, {width}]")
            valid = bank[row, :size]
            if not bool(torch.isfinite(valid).all()):
                raise ValueError(f"NoiseMix: noise row {row} holds NaN or inf")
            if float(valid.square().sum()) == 0.0:
                raise ValueError(f"NoiseMix: noise row {row} is silent")
        self.register_buffer("noise", bank, persistent=False)
        self.register_buffer("noise_lengths", sizes, persistent=False)
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
        bank, sizes = self.noise.to(dev), self.noise_lengths.to(dev)
        # Cyclic read from the offset: tiles noise that is shorter than the clip.
        position = (offset[:, None] + torch.arange(size, device=dev)[None, :]) % sizes[index][:, None]
        mask = valid_mask(lengths, size)
        noise = bank[index[:, None], position] * mask
        signal = x.float() * mask
        p_signal = signal.square().sum(1)
        p_noise = noise.square().sum(1)  # same sample count as p_signal, so sums compare as powers
        target = p_signal / torch.pow(10.0, snr_db / 10.0)
        scale = torch.where(p_noise > 0, torch.sqrt(target / p_noise.clamp_min(1e-30)), torch.zeros_like(p_noise))
        mixed = (x.float() + scale[:, None] * noise).to(x.dtype)
        return torch.where(params["apply"].to(dev)[:, None], mixed, x), lengths


# ----------------------------------------------------------------------------------------- reverb

def synthetic_rirs(n: int, sample_rate: int, rt60_range: tuple[float, float] = (0.2, 1.0), seed: int = 0,
                   drr_db: float = 0.0, length_seconds: float | None = None) -> torch.Tensor:
    """``n`` synthetic room impulse responses, (n, L) float32, for users without recorded ones.

    Each is a direct-path impulse at t=0 followed by Gaussian noise under an exponential envelope that
    decays by 60 dB in ``rt60`` seconds (drawn uniformly in ``rt60_range`` per IR), with the direct path
    ``drr_db`` dB above the tail's energy (direct-to-reverberant ratio); normalised to unit energy.
    L = ``length_seconds`` (default: the largest RT60) x sample_rate.

    Example:
        >>> synthetic_rirs(4, 16000, rt60_range=(0.3, 0.6)).shape
        torch.Size([4, 9600])
    """
    if n < 1 or sample_rate <= 0:
        raise ValueError(f"synthetic_rirs: need n >= 1 and sample_rate > 0, got n={n}, sample_rate={sample_rate}")
    lo, hi = rt60_range
    if not 0 < lo <= hi:
        raise ValueError(f"synthetic_rirs: need 0 < rt60_range[0] <= rt60_range[1], got {rt60_range}")
    seconds = hi if length_seconds is None else length_seconds
    size = max(2, int(math.ceil(seconds * sample_rate)))
    rng = np.random.default_rng(seed_of(seed, "synthetic_rirs"))
    rt60 = rng.uniform(lo, hi, size=n)
    t = np.arange(size) / sample_rate
    # Amplitude envelope 10 ** (-3 t / rt60): energy falls 60 dB after rt60 seconds.
    tail = rng.standard_normal((n, size)) * np.power(10.0, -3.0 * t[None, :] / rt60[:, None])
    tail[:, 0] = 0.0
    tail[:, 0] = np.sqrt(np.square(tail).sum(1) * 10.0 ** (drr_db / 10.0))
    tail /= np.sqrt(np.square(tail).sum(1, keepdims=True))
    return torch.from_numpy(tail.astype(np.float32))


class Reverb(BatchAugmentation):
    """Convolve each clip with an impulse response from a bank (batched FFT convolution).

    y = (x * h)[:T], computed with torch.fft.rfft on a power-of-two size >= T + L - 1 (linear, not
    circular, convolution), zeroed past the clip's length (the tail is cut where the clip ends) and then
    scaled so its energy over the valid samples equals the dry clip's: the level is kept, only the
    colour and the tail change. With ``align_peak`` (default) each IR is shifted at construction so
    its largest-magnitude sample (the direct path) is at t=0, so the reverberant clip is not delayed.

    Example:
        >>> import torch
        >>> reverb = Reverb(synthetic_rirs(2, 16000, (0.2, 0.4)), p=1.0)
        >>> y, _ = reverb(torch.randn(2, 16000), None, ["a", "b"], epoch=0)
        >>> y.shape
        torch.Size([2, 16000])
    """

    name = "reverb"

    def __init__(self, irs: torch.Tensor, p: float = 0.5, align_peak: bool = True, seed: int = 0) -> None:
        super().__init__(p, seed, align_peak=align_peak)
        bank = torch.as_tensor(irs).detach().to("cpu", torch.float32)
        if bank.dim() == 1:
            bank = bank[None]
        if bank.dim() != 2 or bank.shape[0] == 0 or bank.shape[1] == 0:
            raise ValueError(f"Reverb: impulse-response bank must be a non-empty (N, L) tensor, got {tuple(bank.shape)}")
        for row in range(bank.shape[0]):
            if not bool(torch.isfinite(bank[row]).all()):
                raise ValueError(f"Reverb: impulse response {row} holds NaN or inf")
            if float(bank[row].square().sum()) == 0.0:
                raise ValueError(f"Reverb: impulse response {row} is all zeros")
        if align_peak:
            bank = torch.stack([_fit_length(h[int(h.abs().argmax()):], bank.shape[1]) for h in bank])
        self.align_peak = align_peak
        self.register_buffer("irs", bank, persistent=False)

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"ir_index": int(rng.integers(self.irs.shape[0]))}

    def apply_transform(self, x: torch.Tensor, params: Params,
                        lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = _wave("Reverb", x, lengths)
        rows = _applied_rows(params, x.device)
        if rows.numel() == 0:
            return x, lengths
        size = x.shape[1]
        dry = x[rows].float() * valid_mask(lengths[rows], size)
        h = self.irs.to(x.device)[params["ir_index"].to(x.device)[rows]]
        n = _fft_size(size + h.shape[1] - 1)
        wet = torch.fft.irfft(torch.fft.rfft(dry, n) * torch.fft.rfft(h, n), n)[:, :size]
        wet = wet * valid_mask(lengths[rows], size)
        wet = wet * _energy_ratio_scale(dry, wet)[:, None]
        out = x.clone()
        out[rows] = wet.to(x.dtype)
        return out, lengths


# --------------------------------------------------------------------------------------- bandpass

class Bandpass(BatchAugmentation):
    """Band-pass each clip around its own centre frequency (zero-phase, FFT domain).

    Per sample: a centre f0 drawn log-uniformly in [min_center_hz, max_center_hz] and a bandwidth
    B = f0 x fraction, fraction uniform in [min_bandwidth_fraction, max_bandwidth_fraction]. The
    spectrum (rfft of the zero-padded clip, size >= 2T so the zero-phase response does not wrap) is
    multiplied by the magnitude of an analog Butterworth band-pass of ``order``:
    ``|H(f)| = 1 / sqrt(1 + ((f^2 - f0^2) / (f B)) ** (2 order))``, whose -3 dB edges f1 < f2 satisfy
    f2 - f1 = B and f1 f2 = f0^2. No phase change, so nothing is delayed; padding stays zero.

    Example:
        >>> import torch
        >>> bp = Bandpass(16000, min_center_hz=1000.0, max_center_hz=1000.0, p=1.0)
        >>> bp(torch.randn(2, 8000), None, ["a", "b"], epoch=0)[0].shape
        torch.Size([2, 8000])
    """

    name = "bandpass"

    def __init__(self, sample_rate: int, min_center_hz: float = 200.0, max_center_hz: float = 4000.0,
                 min_bandwidth_fraction: float = 0.5, max_bandwidth_fraction: float = 1.99, order: int = 4,
                 p: float = 0.5, seed: int = 0) -> None:
        super().__init__(p, seed, sample_rate=sample_rate, min_center_hz=min_center_hz,
                         max_center_hz=max_center_hz, min_bandwidth_fraction=min_bandwidth_fraction,
                         max_bandwidth_fraction=max_bandwidth_fraction, order=order)
        _check_range("Bandpass", "min_center_hz", min_center_hz, "max_center_hz", max_center_hz)
        _check_range("Bandpass", "min_bandwidth_fraction", min_bandwidth_fraction,
                     "max_bandwidth_fraction", max_bandwidth_fraction)
        if sample_rate <= 0 or min_center_hz <= 0 or max_center_hz >= sample_rate / 2:
            raise ValueError(f"Bandpass: need 0 < min_center_hz <= max_center_hz < sample_rate / 2, got "
                             f"{min_center_hz}..{max_center_hz} Hz at sample_rate={sample_rate}")
        if min_bandwidth_fraction <= 0:
            raise ValueError(f"Bandpass: min_bandwidth_fraction must be > 0, got {min_bandwidth_fraction}")
        if int(order) != order or order < 1:
            raise ValueError(f"Bandpass: order must be a positive integer, got {order}")
        self.sample_rate, self.order = int(sample_rate), int(order)
        self.min_center_hz, self.max_center_hz = float(min_center_hz), float(max_center_hz)
        self.min_bandwidth_fraction = float(min_bandwidth_fraction)
        self.max_bandwidth_fraction = float(max_bandwidth_fraction)

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        log_center = rng.uniform(math.log(self.min_center_hz), math.log(self.max_center_hz))
        return {"center_hz": math.exp(log_center),
                "bandwidth_fraction": rng.uniform(self.min_bandwidth_fraction, self.max_bandwidth_fraction)}

    def response(self, freqs_hz: torch.Tensor, center_hz: torch.Tensor, bandwidth_hz: torch.Tensor) -> torch.Tensor:
        """|H(f)| for each (centre, bandwidth) row: (B,) x (F,) -> (B, F)."""
        f = freqs_hz[None, :]
        ratio = (f.square() - center_hz[:, None].square()) / (f * bandwidth_hz[:, None])
        # At f = 0 the ratio is -inf and |H| = 1 / sqrt(inf) = 0, as it should be (no NaN: f0 > 0).
        return torch.rsqrt(1.0 + ratio.abs().pow(2 * self.order))

    def apply_transform(self, x: torch.Tensor, params: Params,
                        lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = _wave("Bandpass", x, lengths)
        rows = _applied_rows(params, x.device)
        if rows.numel() == 0:
            return x, lengths
        dev, size = x.device, x.shape[1]
        center = params["center_hz"].to(dev, torch.float32)[rows]
        bandwidth = center * params["bandwidth_fraction"].to(dev, torch.float32)[rows]
        n = _fft_size(2 * size)
        freqs = torch.fft.rfftfreq(n, 1.0 / self.sample_rate, device=dev)
        clip = x[rows].float() * valid_mask(lengths[rows], size)
        y = torch.fft.irfft(torch.fft.rfft(clip, n) * self.response(freqs, center, bandwidth), n)[:, :size]
        out = x.clone()
        out[rows] = (y * valid_mask(lengths[rows], size)).to(x.dtype)
        return out, lengths


# ------------------------------------------------------------------------------- speed and pitch

class SpeedPerturb(BatchAugmentation):
    """Kaldi-style speed perturbation: resample by a factor drawn from ``rates`` (duration and pitch change).

    A factor s > 1 plays faster (shorter, higher); the clip is resampled with
    torchaudio.functional.resample from p to q where p/q ~ s (the smallest fraction within 1 cent),
    then cropped or zero-padded back to T; lengths become ceil(length * q / p), capped at T. One
    resampling pass per distinct factor in the batch. ``p`` defaults to 1 because ``rates`` usually
    holds 1.0.

    Example:
        >>> import torch
        >>> sp = SpeedPerturb(rates=(0.9,), p=1.0)
        >>> sp(torch.randn(1, 9000), torch.tensor([9000]), ["a"], epoch=0)[1].tolist()
        [9000]
    """

    name = "speed"

    def __init__(self, rates: Sequence[float] = (0.9, 1.0, 1.1), p: float = 1.0, seed: int = 0) -> None:
        super().__init__(p, seed, rates=tuple(float(r) for r in rates))
        self.rates = tuple(float(r) for r in rates)
        if not self.rates or not all(math.isfinite(r) and r > 0 for r in self.rates):
            raise ValueError(f"SpeedPerturb: rates must be a non-empty list of positive factors, got {rates}")
        self.fractions = tuple(_rational(r, "SpeedPerturb") for r in self.rates)

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"rate_index": int(rng.integers(len(self.rates)))}

    def apply_transform(self, x: torch.Tensor, params: Params,
                        lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = _wave("SpeedPerturb", x, lengths)
        size = x.shape[1]
        out, new_lengths = x, lengths
        for i, fraction in enumerate(self.fractions):
            selected = params["apply"] & (params["rate_index"] == i)
            if fraction == 1 or not bool(selected.any()):
                continue
            rows = selected.nonzero().flatten().to(x.device)
            num, den = fraction.numerator, fraction.denominator
            y = _fit_length(AF.resample(x[rows].float(), orig_freq=num, new_freq=den), size)
            # ceil(length * den / num) in exact integer arithmetic
            rows_lengths = ((lengths[rows] * den + num - 1) // num).clamp(max=size)
            if out is x:
                out, new_lengths = x.clone(), lengths.clone()
            out[rows] = (y * valid_mask(rows_lengths, size)).to(x.dtype)
            new_lengths[rows] = rows_lengths
        return out, new_lengths


class PitchShift(BatchAugmentation):
    """Shift pitch by a number of semitones, keeping the duration.

    Semitones are drawn uniformly from the grid min_semitones, min_semitones + semitone_step, ...,
    max_semitones; each distinct shift in the batch costs one pass over its samples (so a coarse grid keeps
    the cost bounded). For a pitch factor r = 2 ** (semitones / 12) ~ p/q (smallest fraction within
    1 cent), the clip is time-stretched by r with a phase vocoder (torchaudio.functional.phase_vocoder;
    Hann STFT of ``n_fft``, hop ``n_fft // 4``) and resampled from p to q samples, which is
    torchaudio.functional.pitch_shift with a small resampling kernel. Lengths are unchanged; padding
    stays zero. ``n_fft`` is in samples: 512 suits 16 kHz, scale it with the sample rate.

    Example:
        >>> import torch
        >>> ps = PitchShift(min_semitones=2.0, max_semitones=2.0, p=1.0)
        >>> ps(torch.randn(2, 8000), None, ["a", "b"], epoch=0)[0].shape
        torch.Size([2, 8000])
    """

    name = "pitch"

    def __init__(self, min_semitones: float = -2.0, max_semitones: float = 2.0, semitone_step: float = 0.5,
                 n_fft: int = 512, p: float = 0.5, seed: int = 0) -> None:
        super().__init__(p, seed, min_semitones=min_semitones, max_semitones=max_semitones,
                         semitone_step=semitone_step, n_fft=n_fft)
        _check_range("PitchShift", "min_semitones", min_semitones, "max_semitones", max_semitones)
        if not semitone_step > 0:
            raise ValueError(f"PitchShift: semitone_step must be > 0, got {semitone_step}")
        if n_fft < 16:
            raise ValueError(f"PitchShift: n_fft must be >= 16, got {n_fft}")
        if max(abs(min_semitones), abs(max_semitones)) > 24:
            raise ValueError(f"PitchShift: shifts beyond two octaves are not supported, got "
                             f"{min_semitones}..{max_semitones}")
        steps = int(math.floor((max_semitones - min_semitones) / semitone_step + 1e-9))
        self.semitones = tuple(float(min_semitones + k * semitone_step) for k in range(steps + 1))
        self.fractions = tuple(_rational(2.0 ** (s / 12.0), "PitchShift") for s in self.semitones)
        self.n_fft, self.hop_length = int(n_fft), int(n_fft) // 4
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        index = int(rng.integers(len(self.semitones)))
        return {"shift_index": index, "semitones": self.semitones[index]}

    def _shift(self, x: torch.Tensor, fraction: Fraction) -> torch.Tensor:
        """Pitch-shift (B, T) float32 by the factor ``fraction`` = p/q."""
        num, den = fraction.numerator, fraction.denominator
        window = self.window.to(x.device)
        spec = torch.stft(x, self.n_fft, self.hop_length, window=window, center=True, pad_mode="reflect",
                          return_complex=True)
        advance = torch.linspace(0, math.pi * self.hop_length, spec.shape[-2], device=x.device)[:, None]
        stretched = AF.phase_vocoder(spec, rate=den / num, phase_advance=advance)
        long = torch.istft(stretched, self.n_fft, self.hop_length, window=window,
                           length=int(round(x.shape[1] * num / den)))
        return _fit_length(AF.resample(long, orig_freq=num, new_freq=den), x.shape[1])

    def apply_transform(self, x: torch.Tensor, params: Params,
                        lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = _wave("PitchShift", x, lengths)
        size = x.shape[1]
        if size <= self.n_fft // 2:
            raise ValueError(f"PitchShift: clips of {size} samples are too short for n_fft={self.n_fft}")
        out = x
        for i, fraction in enumerate(self.fractions):
            selected = params["apply"] & (params["shift_index"] == i)
            if fraction == 1 or not bool(selected.any()):
                continue
            rows = selected.nonzero().flatten().to(x.device)
            clip = x[rows].float() * valid_mask(lengths[rows], size)
            if out is x:
                out = x.clone()
            out[rows] = (self._shift(clip, fraction) * valid_mask(lengths[rows], size)).to(x.dtype)
        return out, lengths


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
