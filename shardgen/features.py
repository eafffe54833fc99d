"""`shardgen features`: an existing pack -> the same pack with a cached log-mel member per sample.

Training for many epochs on a fixed frontend decodes, resamples and transforms every clip again in
every epoch. ``shardgen features DATASET OUT`` does it once: it reads DATASET's shards, decodes each clip
as the loader does (libsndfile to float32, channel mean, soxr HQ to ``--sample-rate``), computes its
log-mel with :class:`wds_audio.signal.features.LogMel` (the Frontend's own module) in float32 over the
whole clip, and writes shards with the same names, keys and members (json, labels, cls byte for byte;
the audio member too unless ``--drop-audio``) plus::

    <key>.logmel.npy        float16, shape (n_mels, frames), C order: a NumPy .npy file

**Why .npy, not raw fp16 bytes with the shape in the json:** the member describes itself (dtype and
shape in its 128-byte header), so ``np.load``, webdataset's default decoders (``.npy``) and ``tar x``
read it with no knowledge of ours, and the json stays byte-identical to the audio pack's; the header
is 0.1 % of a 5-s clip's 128 x 501 x 2 bytes. The extension ``logmel.npy`` keeps the sample's key
(webdataset splits at the first dot) and says what the array is.

dataset.json (written last: the commit marker) is DATASET's, with the new shards (bytes, sha256) and::

    "features": {"member": "logmel.npy", "dtype": "float16", "layout": "n_mels x frames",
                 "kind": "logmel", "sample_rate": 32000, "n_fft": 1024, "win_length": 1024,
                 "hop_length": 320, "n_mels": 128, "f_min": 0.0, "f_max": 16000.0, "mel_scale": "htk",
                 "audio": "kept" | "dropped", "source": DATASET, "created_by": "shardgen 0.1.0"}

The settings are those of :data:`wds_audio.device.stats.SETTINGS` (the vocabulary of the normalization
statistics, with the same effective values: ``win_length`` None is ``n_fft``, ``hop_length`` None 10 ms,
``f_max`` None half the rate), so a Frontend is checked against them as against statistics. Feature
statistics of DATASET are kept (they describe the same clips). A clip's features cover the whole
clip; the loader crops frames (``wds_audio.loader(..., features="cached")``, see
:mod:`wds_audio.pipeline.cached`).

Writing follows the packer's conventions (:mod:`shardgen.writer`): each tar is written under a
temporary name with its sha256 kept while writing, its ``.idx`` appears before it, and dataset.json
last, so a killed run leaves no dataset.json and no reader takes OUT for a dataset.

**Not MFCC.** MFCC's per-clip ``top_db`` floor (80 dB under the clip's loudest bin) depends on the crop
the loader takes, so the MFCC of a whole clip, cropped, is not the MFCC of the crop; cache log-mels.

Example:
    >>> from shardgen.features import FeatureOptions, make_features       # doctest: +SKIP
    >>> make_features("data/esc50", "data/esc50-mel", FeatureOptions(sample_rate=32000, hop_length=320))
"""
from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from . import __version__
from . import plan as planning
from .records import Problem, Record
from .store import Store, StoreError
from .verify import AUDIO_EXTS, _read, read_samples
from .writer import MANIFEST, PackError, _Shard, assemble_manifest, clean_temporaries, manifest_bytes

KINDS = ("logmel",)
MEMBER = {"logmel": "logmel.npy"}
DTYPE = "float16"


@dataclass
class FeatureOptions:
    """The feature settings (as ``shardgen stats`` and ``Frontend`` name them) and how to write."""

    kind: str = "logmel"
    sample_rate: int | None = None  # None: the dataset's stored rate
    n_fft: int = 1024
    win_length: int | None = None
    hop_length: int | None = None
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float | None = None
    mel_scale: str = "htk"
    keep_audio: bool = True
    splits: list[str] | None = None  # None: every split
    overwrite: bool = False
    threads: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"features must be one of {KINDS}, got {self.kind!r} (MFCC is not cacheable: its "
                             "per-clip top_db floor depends on the crop; cache log-mels)")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


@dataclass
class FeatureResult:
    manifest: dict[str, Any]
    seconds: float
    clips: int = 0
    shards: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    feature_bytes: int = 0
    splits: dict[str, int] = field(default_factory=dict)


def feature_module(opts: FeatureOptions, rate: int) -> Any:
    """The :class:`~wds_audio.signal.features.LogMel` that computes the cached features."""
    from wds_audio.signal.features import LogMel

    return LogMel(sample_rate=rate, n_fft=opts.n_fft, win_length=opts.win_length, hop_length=opts.hop_length,
                  n_mels=opts.n_mels, f_min=opts.f_min, f_max=opts.f_max, mel_scale=opts.mel_scale)


def settings_of(mel: Any, kind: str, mel_scale: str) -> dict[str, Any]:
    """The effective feature settings of ``mel``, in :data:`wds_audio.device.stats.SETTINGS` order."""
    from wds_audio.device.stats import SETTINGS

    values = {"kind": kind, "sample_rate": mel.sample_rate, "n_fft": mel.n_fft, "win_length": mel.win_length,
              "hop_length": mel.hop_length, "n_mels": mel.n_mels, "f_min": float(mel.f_min),
              "f_max": float(mel.f_max), "mel_scale": mel_scale}
    return {k: values[k] for k in SETTINGS}


def npy_bytes(x: np.ndarray) -> bytes:
    """``x`` as a .npy file (what ``np.save`` writes)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(x), allow_pickle=False)
    return buf.getvalue()


def clip_audio(key: str, members: dict[str, bytes], rate: int) -> np.ndarray:
    """A sample's audio as the loader shapes a whole clip (``eval_crop="full"``): decoded to float32 by
    libsndfile, the mean of its channels, resampled to ``rate`` with soxr HQ."""
    from wds_audio.pipeline.samples import SampleError, decode_audio
    from wds_audio.signal.resample_cpu import resample
    from wds_audio.signal.shaping import downmix

    if not any(e in members for e in AUDIO_EXTS):
        raise PackError(f"{key}: no audio member ({sorted(members)}): features are computed from the audio")
    try:
        x, sr = decode_audio({"__key__": key, **members}, pcm=False)
    except SampleError as e:
        raise PackError(str(e)) from None
    return resample(downmix(x), sr, rate)


def clip_features(mel: Any, x: np.ndarray) -> np.ndarray:
    """(n_mels, frames) float32 log-mel of one clip, computed by ``mel`` in float32."""
    import torch

    with torch.no_grad():
        return mel(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None])[0].numpy()


def _sample_members(key: str, members: dict[str, bytes], feats: bytes, member: str, keep_audio: bool,
                    old_member: str | None) -> list[tuple[str, bytes]]:
    """The tar members of one output sample: the input's, in their order (the audio dropped on
    request, an older feature member replaced), the feature member right after the audio."""
    out: list[tuple[str, bytes]] = []
    placed = False
    for ext, data in members.items():
        if ext == old_member or ext == member:
            continue
        if ext in AUDIO_EXTS:
            if keep_audio:
                out.append((f"{key}.{ext}", data))
            if not placed:
                out.append((f"{key}.{member}", feats))
                placed = True
            continue
        out.append((f"{key}.{ext}", data))
    if not placed:
        out.append((f"{key}.{member}", feats))
    return out


def _record(key: str, meta: dict[str, Any], shard: dict[str, Any]) -> Record:
    return Record(key=key, source=meta.get("source", ""), path=None, labels=list(meta.get("labels", [])),
                  split=shard["split"], fold=shard["fold"], group=shard.get("group", ""))


def _check_out(store: Store, source: str, overwrite: bool) -> None:
    if store.local is not None and os.path.realpath(store.local) == os.path.realpath(source.rstrip("/")):
        raise PackError(f"OUT is DATASET ({source}): write the features next to it, not over it")
    store.mkdir()
    if store.local is not None:
        clean_temporaries(store.local)  # of a killed run: never complete, never read
    existing = store.list()
    if existing and not overwrite:
        raise PackError(f"{store.url} is not empty; use --overwrite to replace what is there")
    store.delete(MANIFEST)  # first: OUT is not a dataset until the end
    for rel in existing:
        if rel.endswith((".tar", ".idx")):
            store.delete(rel)


def make_features(dataset: str, out: str, opts: FeatureOptions | None = None,
                  storage_options: dict[str, Any] | None = None) -> FeatureResult:
    """Write DATASET's shards with a cached feature member per sample into OUT (module docstring)."""
    opts = opts or FeatureOptions()
    t0 = time.perf_counter()
    source = str(dataset)
    try:
        manifest = json.loads(_read(source, MANIFEST))
    except Exception as e:  # noqa: BLE001 - missing, unreadable or not json: the same advice
        raise PackError(f"{source}/{MANIFEST} cannot be read ({e}): is it a dataset packed by shardgen?") from None
    splits = list(manifest["splits"]) if opts.splits is None else list(opts.splits)
    unknown = sorted(set(splits) - set(manifest["splits"]))
    if unknown:
        raise PackError(f"{source}: no split(s) {unknown}; the dataset has {sorted(manifest['splits'])}")
    rate = opts.sample_rate or manifest["sample_rate"]
    mel = feature_module(opts, rate)  # bad settings fail here, before OUT is touched
    settings = settings_of(mel, opts.kind, opts.mel_scale)
    member = MEMBER[opts.kind]
    old = (manifest.get("features") or {}).get("member")
    if (manifest.get("features") or {}).get("audio") == "dropped":
        raise PackError(f"{source} holds cached features without audio (--drop-audio): compute features from the "
                        f"dataset they came from, {manifest['features'].get('source')}")
    store = Store(out, storage_options)
    try:
        _check_out(store, source, opts.overwrite)
        return _write(source, manifest, splits, mel, settings, member, old, store, opts, t0)
    except StoreError as e:
        raise PackError(str(e)) from None
    finally:
        store.close()


def _write(source: str, manifest: dict[str, Any], splits: list[str], mel: Any, settings: dict[str, Any], member: str,
           old: str | None, store: Store, opts: FeatureOptions, t0: float) -> FeatureResult:
    import torch

    from wds_audio.core.threads import ordered_map

    torch_threads = torch.get_num_threads()
    if opts.threads > 1:
        torch.set_num_threads(1)  # one clip per thread: torch's own threads would compete with them
    shards = [s for sp in splits for s in manifest["splits"][sp]["shards"]]
    result = FeatureResult({}, 0.0)
    bar = tqdm(total=sum(s["samples"] for s in shards), desc="features", unit="clip", disable=not opts.progress)
    rate = settings["sample_rate"]

    def compute(item: tuple[str, dict[str, bytes]]) -> bytes:
        key, members = item
        return npy_bytes(clip_features(mel, clip_audio(key, members, rate)).astype(np.float16))

    metas = []
    try:
        for shard in shards:
            data = _read(source, shard["path"])
            result.bytes_in += len(data)
            samples = read_samples(data)
            del data
            metas_json = [json.loads(m["json"]) if "json" in m else {} for _, m in samples]
            spec = planning.ShardSpec(rel=shard["path"], split=shard["split"], fold=shard["fold"],
                                      group=shard.get("group", ""),
                                      records=tuple(_record(k, j, shard) for (k, _), j in zip(samples, metas_json)),
                                      bound=0)
            out = _Shard(store, spec, manifest["num_classes"])
            try:
                computed = ordered_map(samples, compute, lambda i: opts.threads)
                for record, (key, members), meta, feats in zip(spec.records, samples, metas_json, computed):
                    out.add(_sample_members(key, members, feats, member, opts.keep_audio, old), record,
                            float(meta.get("duration", 0.0)))
                    result.feature_bytes += len(feats)
                    bar.update(1)
                m = out.finish()
            except BaseException:
                out.abort()
                raise
            metas.append(m)
            result.bytes_out += m["bytes"]
            result.clips += m["samples"]
            result.splits[shard["split"]] = result.splits.get(shard["split"], 0) + m["samples"]
    finally:
        bar.close()
        torch.set_num_threads(torch_threads)
    header = {k: v for k, v in manifest.items() if k not in ("splits", "folds", "skipped")}
    header["features"] = {"member": member, "dtype": DTYPE, "layout": "n_mels x frames", **settings,
                          "audio": "kept" if opts.keep_audio else "dropped", "source": source,
                          "created_by": f"shardgen {__version__}"}
    if not opts.keep_audio:
        header["codec"] = None
    problems = [Problem(**p) for p in manifest.get("skipped", [])]
    result.manifest = assemble_manifest(header, metas, problems)
    store.write_bytes(MANIFEST, manifest_bytes(result.manifest))  # last: the commit marker
    result.shards = len(metas)
    result.seconds = time.perf_counter() - t0
    return result


def summary(result: FeatureResult, out: str) -> str:
    """The line ``shardgen features`` prints at the end."""
    f = result.manifest["features"]
    clips = max(result.clips, 1)
    return (f"features: {result.clips} clips in {result.shards} shards -> {out} in {result.seconds:.1f} s "
            f"({result.clips / max(result.seconds, 1e-9):.1f} clips/s); {f['kind']} {f['n_mels']} mels, n_fft "
            f"{f['n_fft']}, hop {f['hop_length']} at {f['sample_rate']} Hz, {f['dtype']}, audio {f['audio']}; "
            f"{result.bytes_in / clips / 1e3:.1f} kB/clip in, {result.bytes_out / clips / 1e3:.1f} kB/clip out "
            f"({result.feature_bytes / clips / 1e3:.1f} kB of features)")
