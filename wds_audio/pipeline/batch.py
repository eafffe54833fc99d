"""Shaped samples -> batches: the Batch type (pickled cheaply between processes), collation."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .shards import Sample

# Measured (2 DataLoader workers, one tensor per item): passing a tensor through shared memory
# costs ~0.6 ms in the training process plus the worker's share, whatever its size, while copying
# a 16 KB tensor's bytes inside the pickle costs 0.25 ms. The inlined bytes stay far below a pipe's
# 64 KB buffer: a worker whose training process was killed must still be able to exit, and a
# multiprocessing queue's feeder thread blocks at exit on a pickle the pipe cannot take (seen: a
# killed DDP rank's orphaned worker hung on 192 KB of inlined audio).
INLINE_BYTES = 32 << 10


@dataclass
class Batch:
    """A batch: audio (B, T) float32 (int16 with pcm_on_device), lengths, multi-hot targets, keys, valid."""

    audio: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    keys: list[str]
    valid: torch.Tensor
    index: int = -1
    stats: dict[str, Any] = field(default_factory=dict)
    repeats: list[str] = field(default_factory=list)
    features: torch.Tensor | None = None  # set when the loader runs a Frontend in its workers
    training: bool = True  # made by a training loader: a Frontend augments only these

    @property
    def draw_keys(self) -> list[str]:
        """Keys for per-sample random draws: a repeated clip (``key#occurrence``) gets its own."""
        reps = self.repeats or ["0"] * len(self.keys)
        return [k if r == "0" else f"{k}#{r}" for k, r in zip(self.keys, reps)]

    def __len__(self) -> int:
        return len(self.keys)

    def map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Batch":
        """A batch of the same type with ``fn`` applied to every tensor field (other fields shared)."""
        return replace(self, **{f.name: fn(v) for f in fields(self) if isinstance(v := getattr(self, f.name), torch.Tensor)})

    def pin_memory(self) -> "Batch":
        return self.map_tensors(lambda t: t.pin_memory())

    def to(self, device: str | torch.device, non_blocking: bool = False) -> "Batch":
        return self.map_tensors(lambda t: t.to(device, non_blocking=non_blocking))

    def __reduce__(self) -> tuple[Any, ...]:
        # From a DataLoader worker every tensor would travel as its own shared-memory segment and
        # file descriptor: the small ones (lengths, valid, most targets, an emptied audio) go inside
        # the pickle instead, smallest first, up to INLINE_BYTES in all.
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        budget = INLINE_BYTES
        for name, t in sorted(((k, v) for k, v in values.items() if _inlinable(v)), key=lambda kv: _nbytes(kv[1])):
            if _nbytes(t) > budget:
                break
            budget -= _nbytes(t)
            values[name] = _Bytes(t.numpy())
        return _unpickle_batch, (type(self), values)


class _Bytes:
    """A small CPU tensor's values, pickled inline (numpy pickles its buffer by value)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _inlinable(v: Any) -> bool:
    return (isinstance(v, torch.Tensor) and v.device.type == "cpu" and v.layout == torch.strided
            and not v.requires_grad and v.dtype != torch.bfloat16)


def _unpickle_batch(cls: type, values: dict[str, Any]) -> Batch:
    return cls(**{k: torch.from_numpy(v.array) if isinstance(v, _Bytes) else v for k, v in values.items()})


def collate(samples: list[Sample], window: int | None) -> Batch:
    lengths = [min(len(s["audio"]), window) if window else len(s["audio"]) for s in samples]
    t = window or max(lengths)
    audio = np.zeros((len(samples), t), dtype=samples[0]["audio"].dtype)
    for i, s in enumerate(samples):
        audio[i, : lengths[i]] = s["audio"][: lengths[i]]
    return Batch(audio=torch.from_numpy(audio), lengths=torch.tensor(lengths, dtype=torch.int64),
                 targets=torch.from_numpy(np.stack([s["labels"] for s in samples]).astype(np.float32)),
                 keys=[s["key"] for s in samples], valid=torch.tensor([s["valid"] for s in samples], dtype=torch.bool),
                 repeats=[s.get("repeat", "0") for s in samples])


def batches(samples: Iterator[Sample], batch_size: int, count: int, window: int | None) -> Iterator[Batch]:
    """``count`` batches of ``batch_size`` samples. Nothing of a batch stays referenced here while
    it is handed on: a stream's generator is suspended until the stream's next batch (with 8
    streams on 2 workers, 4 batches of a worker's time), and its last batch and samples would stay
    alive all that time (measured: 57 MB per stream, 64 x 5 s at 32 kHz plus the features)."""
    for _ in range(count):
        yield (_streamed(samples, batch_size, window) if window else _collated(samples, batch_size, None))


def batches_by_chunks(samples: Iterator[Sample], batch_size: int, count: int, window: int,
                      features: Callable[[torch.Tensor, torch.Tensor], Any], shape: tuple[int, int],
                      chunk: int = 4) -> Iterator[Batch]:
    """``count`` batches whose ``features`` (B, *shape) ``features(audio, out)`` writes, ``chunk``
    clips at a time as they come (``audio`` (chunk, window), padded as :func:`collate` pads), and
    whose ``audio`` is empty (B, 0): no batch of waveforms is made. In a DataLoader worker the
    features are made in shared memory, so that handing them over copies nothing."""
    for _ in range(count):
        yield _by_chunks(samples, batch_size, window, features, shape, chunk)


def _by_chunks(samples: Iterator[Sample], batch_size: int, window: int,
               features: Callable[[torch.Tensor, torch.Tensor], Any], shape: tuple[int, int], chunk: int) -> Batch:
    out = handover_empty((batch_size, *shape))
    buf: np.ndarray | None = None
    lengths: list[int] = []
    rest: list[tuple[str, bool, str, np.ndarray]] = []
    for i, s in zip(range(batch_size), samples):
        x = s["audio"]
        if buf is None:
            buf = np.empty((chunk, window), dtype=x.dtype)
        n, j = min(len(x), window), i % chunk
        buf[j, :n] = x[:n]
        buf[j, n:] = 0
        lengths.append(n)
        rest.append((s["key"], s["valid"], s.get("repeat", "0"), s["labels"]))
        del s, x
        if j == chunk - 1 or i == batch_size - 1:
            features(torch.from_numpy(buf[:j + 1]), out[i - j:i + 1])
    if len(rest) < batch_size:
        raise RuntimeError(f"stream ended after {len(rest)} of {batch_size} samples of a planned batch")
    keys, valid, repeats, labels = zip(*rest)
    return Batch(audio=torch.empty((batch_size, 0), dtype=torch.from_numpy(buf[:0]).dtype),
                 lengths=torch.tensor(lengths, dtype=torch.int64),
                 targets=torch.from_numpy(np.stack(labels).astype(np.float32)), keys=list(keys),
                 valid=torch.tensor(valid, dtype=torch.bool), repeats=list(repeats), features=out)


def handover_empty(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An uninitialised tensor, in shared memory inside a DataLoader worker: sent to the training
    process as it is (torch's own collation does the same), where one made on the heap is first
    copied into a new shared-memory segment (16 MB of log-mels per batch: ~6 ms)."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    numel = int(np.prod(shape))
    storage = torch.UntypedStorage._new_shared(numel * torch.empty((), dtype=dtype).element_size())
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def _collated(samples: Iterator[Sample], batch_size: int, window: int | None) -> Batch:
    chunk = [s for _, s in zip(range(batch_size), samples)]
    if len(chunk) < batch_size:
        raise RuntimeError(f"stream ended after {len(chunk)} of {batch_size} samples of a planned batch")
    return collate(chunk, window)


def _streamed(samples: Iterator[Sample], batch_size: int, window: int) -> Batch:
    """:func:`collate` of the next ``batch_size`` samples, each written into the batch as it comes
    (with a fixed ``window`` the batch's shape is known before its samples): a sample's audio is
    freed at once instead of all of them being held until the last arrives (41 MB for 64 x 5 s
    at 32 kHz). The same batch as collate's."""
    audio: np.ndarray | None = None
    lengths: list[int] = []
    rest: list[tuple[str, bool, str, np.ndarray]] = []
    for i, s in zip(range(batch_size), samples):
        x = s["audio"]
        if audio is None:
            audio = np.zeros((batch_size, window), dtype=x.dtype)
        n = min(len(x), window)
        audio[i, :n] = x[:n]
        lengths.append(n)
        rest.append((s["key"], s["valid"], s.get("repeat", "0"), s["labels"]))
        del s, x
    if len(rest) < batch_size:
        raise RuntimeError(f"stream ended after {len(rest)} of {batch_size} samples of a planned batch")
    keys, valid, repeats, labels = zip(*rest)
    return Batch(audio=torch.from_numpy(audio), lengths=torch.tensor(lengths, dtype=torch.int64),
                 targets=torch.from_numpy(np.stack(labels).astype(np.float32)), keys=list(keys),
                 valid=torch.tensor(valid, dtype=torch.bool), repeats=list(repeats))
