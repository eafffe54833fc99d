"""The DALI back end: the same LoaderConfig as a DALI pipeline, yielding the same Batch type.

Reading. Each epoch gets its own pipeline, built from the torch back end's epoch plan
(:func:`wds_audio.pipeline.plan.plan_epoch`), in one of two modes:

* ``"plan"`` (every selected shard has a readable DALI ``.idx``): the rank's planned samples,
  in the torch back end's batch order, are written as small per-epoch index files (lines of
  the shard's own ``.idx``, so DALI reads exactly those samples from the original tar), and
  ``fn.readers.webdataset`` reads that explicit per-rank path list with ``num_shards=1``. The
  epoch therefore holds ``len(loader) * batch_size`` samples on every rank: wrap-around repeats
  in training, fill-ins (``valid=False``) in evaluation, and evaluation batches carry the same
  keys in the same order as the torch back end's.
* ``"reader"`` (some ``.idx`` is missing: DALI infers the index from the tar): whole shards with
  ``shard_id=rank``, ``num_shards=world_size``, ``pad_last_batch=True`` and ``stick_to_shard``.
  DALI splits the samples with the same ``floor(rank * N / world)`` rule as the plan, so each
  rank reads the same samples; batch order is file order and padding repeats the last sample.

Training shuffles with the reader's seeded ``random_shuffle`` buffer (``initial_fill`` =
``cfg.shuffle_buffer``) on top of the plan's per-epoch shard order and rotation; the seed is
derived from (seed, epoch, rank), so shuffling changes every epoch and repeats across runs.
Evaluation reads in order without shuffling.

Decoding and shaping: ``fn.decoders.audio`` (``downmix``, float32), then, when the stored rate
(dataset.json, or the first sample's json for a shard pattern) differs from ``cfg.sample_rate``,
an anti-aliasing FIR and ``fn.audio_resample``, optional ``fn.nonsilent_region`` trimming, a
random crop (training) or centre crop / full clip (evaluation) with ``fn.slice`` and ``fn.pad``,
and peak/RMS loudness normalization. With the feature stage on the GPU, everything after
decoding runs there (except with trimming); lengths are always computed from CPU metadata.

Features (:class:`DaliFeatures`, optional): random gain, noise mixing at a sampled SNR from a
second reader over the ``noise`` split, ``fn.spectrogram`` -> ``fn.mel_filter_bank`` ->
``fn.to_decibels`` (-> ``fn.mfcc``), ``fn.normalize`` (dataset.json statistics or per
utterance) and SpecAugment with ``fn.erase`` at random anchors. On a machine with CUDA they run
on the GPU (``.gpu()``); otherwise on CPU with ``device_id=None``.

Where DALI's definitions differ from ours (``wds_audio.signal.features.LogMel``), and the options
that align them:

==============  ====================================  ==========================================
setting         DALI default                          used here (= LogMel)
==============  ====================================  ==========================================
window          its own Hann, sampled at (t + 0.5)    ``window_fn`` = periodic Hann samples
frames          centred, reflect padding              same (``center_windows``, ``reflect``)
mel scale       ``slaney``                            ``mel_formula="htk"`` (or ``slaney``)
filter norm     area (``normalize=True``)             ``normalize=False`` (peak 1, no norm)
dB reference    the per-sample maximum                ``reference=1.0``
dB floor        ``cutoff_db=-200``                    ``cutoff_db=-100`` (amin 1e-10)
MFCC top_db     none                                  ``max(dB, max(dB) - top_db)`` per clip
DCT             unnormalized                          ``normalize=True`` (ortho, type II)
downsampling    sinc at the input Nyquist: aliases    Kaiser FIR (``fn.filter``) first;
                                                      soxr's output length (round)
==============  ====================================  ==========================================

Features are computed on each clip's own samples (not on the zero-padded batch), then padded
to the batch: padding frames hold the silence floor (-100 dB) without standardization, else 0.

Randomness differs from the torch back end by construction: DALI's random operators are seeded
per (seed, epoch, rank, purpose), not per sample key, so crops and augmentations repeat for the
same run configuration but are not the torch back end's draws.

Known limits: ``rebalance``, ``pcm_on_device`` and ``loudness="lufs"`` are not available
(clear errors); shards must be local files (DALI's webdataset reader opens paths); a clip that
does not decode stops the pipeline with DALI's error (in ``"plan"`` mode, samples without an
audio member are replaced by fill-ins before reading and counted, like the torch back end).

Example:
    >>> import wds_audio                                                     # doctest: +SKIP
    >>> from wds_audio.dali import DaliFeatures, DaliSpecAugment
    >>> loader = wds_audio.loader("data/demo", split="train", batch_size=64, sample_rate=16000,
    ...                           clip_seconds=2.0, backend="dali",
    ...                           extra={"dali_features": DaliFeatures(n_mels=64, specaugment=DaliSpecAugment())})
    >>> for batch in loader:
    ...     batch.features.shape            # (64, 64, 201)
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from ..device.stats import resolve_stats
from ..pipeline.batch import Batch
from ..pipeline.catalog import Catalog
from ..pipeline.config import LoaderConfig
from ..pipeline.metrics import LoaderMetrics
from ..pipeline.plan import EpochPlan, plan_epoch
from .features import AMIN_DB, DaliFeatures, _dataset_stats, _scalar_i32, _seed, dali_augment, dali_features
from .inputs import AUDIO_EXTS, READER, IndexUnusable, ReaderInputs, ShardIndex, _local_path, plan_inputs, reader_inputs
from .ops import import_dali

log = logging.getLogger(__name__)


@dataclass
class DaliBatch(Batch):
    """A :class:`Batch` plus the DALI feature stage's output: features (B, F, frames) and frame counts."""

    features: torch.Tensor | None = None
    frames: torch.Tensor | None = None


def antialias_taps(rate_in: int, rate_out: int, attenuation_db: float = 80.0) -> np.ndarray:
    """Odd-length Kaiser FIR low-pass at ``rate_in``: flat to 0.9, stopped from 1.0 x rate_out / 2.

    Example:
        >>> h = antialias_taps(44100, 16000)
        >>> len(h) % 2, round(float(h.sum()), 4)
        (1, 1.0)
    """
    from scipy.signal import firwin, kaiserord

    nyq_out = rate_out / 2
    numtaps, beta = kaiserord(attenuation_db, 0.1 * nyq_out / (rate_in / 2))
    numtaps |= 1  # odd: the filter is centred on each sample (no delay)
    return firwin(numtaps, 0.95 * nyq_out, window=("kaiser", beta), fs=rate_in).astype(np.float32)


# ------------------------------------------------------------------------------------------ loader

def _unsupported(cfg: LoaderConfig) -> None:
    if cfg.rebalance is not None:
        raise ValueError("rebalance is not available with backend='dali' (DALI's reader cannot drop or repeat "
                         "samples by label); use backend='torch'")
    if cfg.pcm_on_device:
        raise ValueError("pcm_on_device is a torch back end option; DALI decodes WAV itself")
    if cfg.resample_on_device:
        raise ValueError("resample_on_device is a torch back end option; DALI resamples inside its own pipeline")
    if cfg.loudness == "lufs":
        raise ValueError("loudness='lufs' (BS.1770 gating) is not available with backend='dali'; use 'peak' or 'rms'")
    if cfg.frontend is not None:
        raise ValueError("frontend= runs a torch Frontend in DataLoader workers; with backend='dali' use "
                         "extra={'dali_features': DaliFeatures(...)}")


class DaliLoader:
    """An iterable of :class:`DaliBatch` with the AudioLoader interface, run by a DALI pipeline.

    Options beyond LoaderConfig come from ``features`` or ``cfg.extra``: ``dali_features``
    (:class:`DaliFeatures`), ``dali_num_threads`` (default ``num_workers``, else min(4, cores)),
    ``dali_resample_quality`` (0-100, default 50). Per-epoch index files live in a temporary
    folder removed with the loader.

    Example:
        >>> cfg = LoaderConfig("data/demo", split="valid", batch_size=8, sample_rate=16000, training=False)
        >>> loader = DaliLoader(cfg)                                          # doctest: +SKIP
        >>> len(loader), next(iter(loader)).audio.shape                       # doctest: +SKIP
        (3, torch.Size([8, 80000]))
    """

    def __init__(self, cfg: LoaderConfig, features: DaliFeatures | None = None) -> None:
        self._dali = import_dali()
        from ..pipeline.loader import dist_info

        _unsupported(cfg)
        self.cfg = cfg
        self.features: DaliFeatures | None = features or cfg.extra.get("dali_features")
        self.catalog = Catalog.open(cfg.source, cfg.split, cfg.folds, cfg.classes, cfg.source_options)
        self.rank, self.world_size = dist_info(cfg)
        for s in self.catalog.shards:
            _local_path(s.url)
        self.num_threads = int(cfg.extra.get("dali_num_threads", cfg.num_workers or min(4, os.cpu_count() or 1)))
        self.resample_quality = float(cfg.extra.get("dali_resample_quality", 50.0))
        self.indexes = self._load_indexes(self.catalog)
        self.mode = "plan" if self.indexes is not None else "reader"
        self.stored_rate = self.catalog.sample_rate or self._rate_from_json()
        self.noise = self._noise_shards()
        self.workdir = tempfile.mkdtemp(prefix="wds-dali-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.workdir, True)
        self.epoch, self.start = 0, 0  # start: batches of this epoch delivered so far (state_dict)
        self._resume_at = 0  # where the next iteration begins: only load_state_dict sets it
        self._pending: str | None = None  # a DALI checkpoint from load_state_dict
        self._live: tuple[int, Any] | None = None  # (epoch, DALIGenericIterator) being consumed
        self._metrics = LoaderMetrics(cfg.max_reported_keys)
        if self.features is not None and self.features.standardize == "dataset":
            stats = resolve_stats(self.features.stats, self.features.feature_settings(cfg.sample_rate),
                                  manifest=self.catalog.manifest, split=cfg.split, folds=cfg.folds,
                                  training=cfg.training, who="this DALI feature stage")
            _dataset_stats(self.features, stats, cfg.sample_rate)
            self.features = dataclasses.replace(self.features, stats=stats)

    @staticmethod
    def _load_indexes(catalog: Catalog) -> list[ShardIndex] | None:
        out = []
        for s in catalog.shards:
            try:
                out.append(ShardIndex(s))
            except IndexUnusable as e:
                log.warning("%s: no usable .idx (%s): DALI infers the indexes and shards by itself", s.url, e)
                return None
        return out

    def _rate_from_json(self) -> int | None:
        """The stored rate of a shard-pattern source (no dataset.json): the first sample's json says it."""
        if self.indexes is None:
            return None
        parts = self.indexes[0].lines[0].split()
        for ext, offset, size in zip(parts[0::4], parts[1::4], parts[2::4]):
            if ext == "json":
                with open(_local_path(self.catalog.shards[0].url), "rb") as f:
                    f.seek(int(offset))
                    rate = json.loads(f.read(int(size))).get("sample_rate")
                return int(rate) if rate else None
        return None

    def _noise_shards(self) -> dict[str, Any]:
        """Reader arguments for the noise split's shards (with their .idx when every one has one)."""
        if self.features is None or self.features.noise is None or not self.cfg.training:
            return {}
        if not self.catalog.manifest:
            raise ValueError("DaliNoise reads a noise split of the dataset: it needs a source with dataset.json")
        shards = [s for s in self.catalog.shards_of(self.features.noise.split) if s.samples > 0]
        if not shards:
            raise ValueError(f"{self.cfg.source}: split {self.features.noise.split!r} holds no noise clip")
        args: dict[str, Any] = {"paths": [_local_path(s.url) for s in shards]}
        indexes = [_local_path(s.index_url) for s in shards if s.index_url]
        if len(indexes) == len(shards) and all(os.path.isfile(p) for p in indexes):
            args["index_paths"] = indexes
        return args

    @property
    def classes(self) -> list[str]:
        return self.catalog.classes

    def plan(self, epoch: int | None = None) -> EpochPlan:
        return plan_epoch([s.samples for s in self.catalog.shards], batch_size=self.cfg.batch_size, seed=self.cfg.seed,
                          epoch=self.epoch if epoch is None else epoch, rank=self.rank, world_size=self.world_size,
                          streams=self.cfg.streams, training=self.cfg.training)

    def __len__(self) -> int:
        """Batches per epoch on this rank: the same on every rank, known before iterating."""
        return self.plan(0).batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.start, self._resume_at, self._pending, self._live = epoch, 0, 0, None, None

    # ---------------------------------------------------------------- the pipeline

    def _window(self) -> int | None:
        cfg = self.cfg
        return cfg.clip_samples if (cfg.training or cfg.eval_crop == "center") else None

    def _decode(self, encoded: Any, to_gpu: bool = False) -> tuple[Any, Any]:
        """Encoded bytes -> (mono float32 at cfg.sample_rate, its length as a CPU node).

        Resampled only when the stored rate differs; with ``to_gpu`` the anti-aliasing filter and
        the resampler (the costly CPU steps: measured 4 + 12 ms per 3.75-s clip, 44.1 -> 32 kHz,
        against 4 ms to decode) run on the GPU. Lengths always come from CPU metadata.
        """
        fn, types, dmath = self._dali.fn, self._dali.types, self._dali.math
        x, rate = fn.decoders.audio(encoded, downmix=True, dtype=types.FLOAT)
        n = x.shape()[0]
        stored, target = self.stored_rate, self.cfg.sample_rate
        if stored == target:
            return (x.gpu() if to_gpu else x), n
        x = x.gpu() if to_gpu else x
        if stored is None or stored > target:
            x = self._antialias(x, stored)
        x = fn.audio_resample(x, in_rate=rate, out_rate=float(target), quality=self.resample_quality)
        # DALI emits ceil(n * out / in) samples, soxr (the torch back end) round(n * out / in)
        n = fn.cast(dmath.floor(fn.cast(n, dtype=types.FLOAT) * float(target) / rate + 0.5), dtype=types.INT64)
        x = fn.slice(x, start=[0], shape=_scalar_i32(n), axes=[0], out_of_bounds_policy="trim_to_shape")
        return x, n

    def _antialias(self, x: Any, stored: int | None) -> Any:
        """Low-pass below the target Nyquist before downsampling.

        fn.audio_resample interpolates with a sinc at the *input* Nyquist: measured on white noise
        from 44.1 to 16 kHz it keeps 98 % of the power (soxr: 35 %), i.e. everything between 8 and
        22 kHz aliases. A Kaiser-windowed sinc FIR (fn.filter over the clip as a 1 x n image) with
        its passband to 0.9 and stopband from 1.0 of the target Nyquist (80 dB) fixes that.
        """
        if stored is None:
            log.warning("neither dataset.json nor the sample json gives the stored sample rate: no anti-aliasing "
                        "filter can be designed, and downsampling with fn.audio_resample alone aliases")
            return x
        fn, types = self._dali.fn, self._dali.types
        taps = antialias_taps(stored, self.cfg.sample_rate)
        row = fn.reshape(x, shape=[1, -1], layout="HW")
        # the filter is a regular input: it lives where the audio is
        y = fn.filter(row, types.Constant(taps.reshape(1, -1), device=x.device), border="constant")
        return fn.reshape(y, shape=[-1], layout="")

    def _trim(self, x: Any, n: Any) -> tuple[Any, Any]:
        """fn.nonsilent_region trimming (CPU audio: its outputs become slice arguments)."""
        fn, dmath = self._dali.fn, self._dali.math
        window = max(1, self.cfg.sample_rate // 100)  # 10 ms, as the torch back end's frames
        begin, length = fn.nonsilent_region(x, cutoff_db=-float(self.cfg.trim_db), window_length=window,
                                            reset_interval=window * max(1, 8192 // window))
        silent = fn.cast(length == 0, dtype=self._dali.types.INT64)  # all quiet: keep the clip as it is
        begin = begin * (1 - silent)
        length = dmath.max(length, silent * n)
        return fn.slice(x, start=_scalar_i32(begin), shape=_scalar_i32(length), axes=[0]), length

    def _crop(self, x: Any, n: Any, seed: int) -> tuple[Any, Any]:
        """Random (training) or centre crop to the window; clips shorter than it stay whole (padded later)."""
        fn, dmath, types = self._dali.fn, self._dali.math, self._dali.types
        w = self._window()
        if w is None:
            return x, n
        excess = dmath.max(n - w, 0)
        if self.cfg.training:
            u = fn.random.uniform(range=[0.0, 1.0], seed=_seed(seed, "crop"))
            start = dmath.floor(u * fn.cast(excess + 1, dtype=types.FLOAT))
        else:
            start = excess // 2
        n = dmath.min(n, w)
        return fn.slice(x, start=_scalar_i32(start), shape=_scalar_i32(n), axes=[0]), n

    def _loudness(self, x: Any) -> Any:
        fn, dmath = self._dali.fn, self._dali.math
        level = fn.reductions.max(dmath.abs(x)) if self.cfg.loudness == "peak" else fn.reductions.rms(x)
        # as loudness.normalize: at most +40 dB, silence stays silence (0 * 100)
        return x * dmath.min(10.0 ** (self.cfg.loudness_db / 20.0) / level, 100.0)

    def output_names(self) -> list[str]:
        names = ["audio", "length", "labels", "labels_len", "meta", "meta_len"]
        return names + (["features", "frames"] if self.features is not None else [])

    def _pipeline(self, epoch: int, inputs: ReaderInputs, checkpoint: str | None) -> Any:
        dali, cfg, spec = self._dali, self.cfg, self.features
        fn, types = dali.fn, dali.types
        seed = _seed(cfg.seed, epoch, self.rank)
        gpu = spec is not None and spec.on_gpu()
        window = self._window()
        reader_args: dict[str, Any] = dict(
            paths=inputs.paths, ext=[";".join(AUDIO_EXTS), "json", "labels"], dtypes=[types.UINT8] * 3,
            missing_component_behavior="empty", pad_last_batch=True, name=READER)
        if inputs.index_paths is not None:
            reader_args["index_paths"] = inputs.index_paths
        else:
            reader_args.update(shard_id=self.rank, num_shards=self.world_size, stick_to_shard=True)
        if cfg.training:
            reader_args.update(random_shuffle=True, initial_fill=max(1, min(cfg.shuffle_buffer, len(inputs.valid))),
                               seed=_seed(seed, "shuffle"))

        @dali.pipeline_def(batch_size=cfg.batch_size, num_threads=self.num_threads,
                           device_id=torch.cuda.current_device() if gpu else None, seed=seed,
                           enable_checkpointing=True, prefetch_queue_depth=max(1, cfg.prefetch_factor))
        def graph() -> tuple[Any, ...]:
            encoded, meta, labels = fn.readers.webdataset(**reader_args)
            # with GPU features the audio moves to the GPU right after decoding, unless trimming
            # needs it on the CPU (fn.nonsilent_region's outputs become slice arguments)
            x, length = self._decode(encoded, to_gpu=gpu and cfg.trim_db is None)
            if cfg.trim_db is not None:
                x, length = self._trim(x, length)
            x, length = self._crop(x, length, seed)
            if cfg.loudness is not None:
                x = self._loudness(x)
            outs = [fn.pad(labels, axes=[0]), labels.shape()[0], fn.pad(meta, axes=[0]),
                    meta.shape()[0]]
            if spec is not None:
                x, feats = self._feature_stage(x, length, seed, gpu)
                outs += feats
            return (fn.pad(x, axes=[0], shape=[window] if window else [-1]), length, *outs)

        return graph(checkpoint=checkpoint) if checkpoint else graph()

    def _feature_stage(self, x: Any, length: Any, seed: int, gpu: bool) -> tuple[Any, list[Any]]:
        fn, cfg, spec = self._dali.fn, self.cfg, self.features
        assert spec is not None
        x = x.gpu() if gpu and x.device != "gpu" else x
        if cfg.training and (spec.gain is not None or spec.noise is not None):
            noise = noise_length = None
            if self.noise:
                encoded = fn.readers.webdataset(**self.noise, ext=[";".join(AUDIO_EXTS)], random_shuffle=True,
                                                initial_fill=64, seed=_seed(seed, "noise-reader"), name="noise_reader")
                noise, noise_length = self._decode(encoded, to_gpu=gpu)
            x = dali_augment(x, length, spec, seed, noise, noise_length)
        feats, frames = dali_features(x, length, spec, cfg.sample_rate, training=cfg.training, seed=seed,
                                      stats=spec.stats or self.catalog.feature_stats)
        fill = AMIN_DB if (spec.kind == "logmel" and spec.standardize is None) else 0.0
        window = self._window()
        n_frames = [window // spec.hop(cfg.sample_rate) + 1] if window else [-1]
        return x, [fn.pad(feats, axes=[1], shape=n_frames, fill_value=fill), frames]

    # ---------------------------------------------------------------- iteration

    def _inputs(self, plan: EpochPlan) -> ReaderInputs:
        if self.indexes is not None:
            # DALI parses the index files when the pipeline is built: earlier epochs' can go
            for name in os.listdir(self.workdir):
                shutil.rmtree(os.path.join(self.workdir, name), ignore_errors=True)
            folder = os.path.join(self.workdir, f"epoch{plan.epoch}")
            os.makedirs(folder)
            return plan_inputs(self.catalog, self.indexes, plan, folder, self.cfg.training, self.cfg.on_error)
        return reader_inputs(self.catalog, plan, self.cfg.seed, self.cfg.training)

    def _iterator(self, epoch: int, inputs: ReaderInputs, checkpoint: str | None) -> Any:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        pipe = self._pipeline(epoch, inputs, checkpoint)
        return DALIGenericIterator([pipe], self.output_names(), reader_name=READER,
                                   last_batch_policy=LastBatchPolicy.FILL, auto_reset=False)

    def __iter__(self) -> Iterator[DaliBatch]:
        epoch, start = self.epoch, self._resume_at  # an abandoned iteration does not shorten the next
        self.start, self._resume_at = start, 0
        checkpoint = self._resume_checkpoint(epoch, start)
        plan = self.plan(epoch)
        inputs = self._inputs(plan)
        self._metrics.add_skips(inputs.skipped, inputs.skipped_keys)
        self._metrics.start()
        it = self._iterator(epoch, inputs, checkpoint)
        self._live, self._pending = (epoch, it), None
        if checkpoint is None and start > 0:
            log.warning("resuming epoch %d at batch %d without a DALI checkpoint: re-reading %d batches", epoch, start, start)
            for _ in range(start):
                next(it)
        for index in range(start, plan.batches):
            t_wait = time.perf_counter()
            out = next(it)[0]
            batch = self._batch(out, inputs.valid, index)
            self._metrics.batch(batch, time.perf_counter() - t_wait)
            self.start = index + 1
            yield batch
        self.epoch, self.start, self._live = epoch + 1, 0, None

    def _resume_checkpoint(self, epoch: int, start: int) -> str | None:
        if start == 0:
            return None
        if self._pending is not None:
            return self._pending
        if self._live is not None and self._live[0] == epoch:
            return self._live[1].checkpoints()[0]
        return None

    def _batch(self, out: dict[str, torch.Tensor], valid: np.ndarray, index: int) -> DaliBatch:
        b, c = self.cfg.batch_size, self.catalog.num_classes
        labels, labels_len = out["labels"].cpu().numpy(), out["labels_len"].cpu().numpy().reshape(-1)
        meta, meta_len = out["meta"].cpu().numpy(), out["meta_len"].cpu().numpy().reshape(-1)
        keys, targets = [], np.zeros((b, c), np.float32)
        for i in range(b):
            info = json.loads(meta[i, : meta_len[i]].tobytes()) if meta_len[i] else {}
            keys.append(str(info.get("key", "")))
            if labels_len[i] == c and labels[i, :c].max(initial=0) <= 1:
                targets[i] = labels[i, :c]
            else:  # no (usable) .labels member: the json's label indices, as the torch back end
                targets[i, [j for j in info.get("labels", []) if 0 <= j < c]] = 1.0
        lo = index * b
        ok = torch.from_numpy(valid[lo: lo + b].copy()) if len(valid) >= lo + b else torch.ones(b, dtype=torch.bool)
        feats = out.get("features")
        frames = out["frames"].reshape(-1).to(torch.int64) if "frames" in out else None
        return DaliBatch(audio=out["audio"], lengths=out["length"].reshape(-1).to(torch.int64),
                         targets=torch.from_numpy(targets), keys=keys, valid=ok, index=index,
                         features=feats, frames=frames, training=self.cfg.training)

    def metrics(self) -> dict[str, Any]:
        """As the torch back end's (wds_audio.pipeline.metrics.LoaderMetrics), plus the back end and mode."""
        return {**self._metrics.as_dict(), "backend": "dali", "mode": self.mode}

    # ---------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Epoch, batches consumed and DALI's pipeline checkpoint (readers, shuffle and random states)."""
        return {"backend": "dali", "epoch": self.epoch, "batches": self.start, "seed": self.cfg.seed,
                "rank": self.rank, "world_size": self.world_size, "streams": self.cfg.streams, "mode": self.mode,
                "dali_checkpoint": self._resume_checkpoint(self.epoch, self.start)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("backend") != "dali":
            raise ValueError("this checkpoint was not taken by the DALI back end (no DALI pipeline state in it)")
        for k, have in (("seed", self.cfg.seed), ("world_size", self.world_size), ("streams", self.cfg.streams),
                        ("mode", self.mode)):
            if state[k] != have:
                raise ValueError(f"checkpoint was taken with {k}={state[k]}, this loader has {have}: batches would differ")
        self.epoch, self.start = int(state["epoch"]), int(state["batches"])
        self._resume_at = self.start
        self._pending, self._live = state.get("dali_checkpoint"), None
