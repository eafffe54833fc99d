"""`shardgen verify`: every shard against dataset.json, every sample complete, every clip decodes.

Prints one line per problem naming the shard (and key) and returns the problems; the CLI
exits non-zero when there is any.

Example:
    >>> from shardgen.verify import verify     # doctest: +SKIP
    >>> assert verify("data/demo") == []
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from typing import Any

import soundfile as sf
from tqdm import tqdm

from .tarfmt import index_of, split_name

AUDIO_EXTS = ("flac", "wav", "ogg")


def _read(base: str, rel: str) -> bytes:
    from wds_audio.io.open import read_bytes

    return read_bytes(base.rstrip("/") + "/" + rel)


def read_samples(data: bytes) -> list[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) in tar order; raises tarfile.TarError on a damaged tar."""
    out: list[tuple[str, dict[str, bytes]]] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tf:
        for m in tf:
            if not m.isreg():
                continue
            key, ext = split_name(m.name)
            f = tf.extractfile(m)
            payload = f.read() if f else b""
            if len(payload) != m.size:
                raise tarfile.ReadError(f"member {m.name} truncated ({len(payload)} of {m.size} bytes)")
            if not out or out[-1][0] != key:
                out.append((key, {}))
            out[-1][1][ext] = payload
    return out


def check_sample(key: str, members: dict[str, bytes], manifest: dict[str, Any], decode: bool) -> list[str]:
    """Problems of one sample (empty when it is complete and consistent)."""
    c = manifest["num_classes"]
    problems = []
    audio = [e for e in AUDIO_EXTS if e in members]
    cached = manifest.get("features") or {}  # `shardgen features`: a feature member, the audio optional
    if not audio and cached.get("member") not in members:
        problems.append("no audio member")
    if cached:
        problems += _check_features(members, cached)
    if "json" not in members:
        problems.append("no json member")
    if "labels" not in members:
        problems.append("no labels member")
    elif len(members["labels"]) != c or any(b > 1 for b in members["labels"]):
        problems.append(f"labels member is not a {c}-byte multi-hot vector")
    if "json" in members:
        try:
            meta = json.loads(members["json"])
            hot = [i for i, b in enumerate(members.get("labels", b"")) if b]
            if meta.get("key") != key:
                problems.append(f"json key {meta.get('key')!r} differs from member key")
            if "labels" in members and sorted(meta.get("labels", [])) != hot:
                problems.append(f"json labels {meta.get('labels')} differ from labels member {hot}")
        except ValueError as e:
            problems.append(f"json does not parse ({e})")
    if "cls" in members and "labels" in members:
        if not members["cls"].isdigit() or members["labels"][int(members["cls"])] != 1:
            problems.append(f"cls {members['cls']!r} disagrees with labels member")
    if decode and audio:
        try:
            x, sr = sf.read(io.BytesIO(members[audio[0]]), dtype="float32")
            if sr != manifest["sample_rate"]:
                problems.append(f"sample rate {sr} != dataset's {manifest['sample_rate']}")
            if len(x) == 0:
                problems.append("zero-length audio")
        except Exception as e:  # noqa: BLE001 - any decoder failure is a finding
            problems.append(f"audio does not decode ({e})")
    return problems


def _check_features(members: dict[str, bytes], cached: dict[str, Any]) -> list[str]:
    """Problems of a sample's cached feature member: present, a .npy of the dtype and mel bins dataset.json gives."""
    name = cached["member"]
    if name not in members:
        return [f"no {name} member"]
    try:
        import numpy as np

        x = np.load(io.BytesIO(members[name]), allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any parse failure is a finding
        return [f"{name} is not a .npy file ({e})"]
    if str(x.dtype) != cached["dtype"] or x.ndim != 2 or x.shape[0] != cached["n_mels"]:
        return [f"{name} is {x.dtype} {x.shape}, dataset.json says {cached['dtype']} ({cached['n_mels']}, frames)"]
    return []


def check_shard(base: str, shard: dict[str, Any], manifest: dict[str, Any], decode: bool) -> list[str]:
    rel = shard["path"]
    try:
        data = _read(base, rel)
    except Exception as e:  # noqa: BLE001
        return [f"{rel}: cannot read ({e})"]
    problems = []
    if len(data) != shard["bytes"]:
        problems.append(f"{rel}: {len(data)} bytes, dataset.json says {shard['bytes']}")
    if hashlib.sha256(data).hexdigest() != shard["sha256"]:
        problems.append(f"{rel}: sha256 mismatch (content changed or damaged)")
    try:
        samples = read_samples(data)
    except (tarfile.TarError, EOFError, OSError) as e:
        return problems + [f"{rel}: not a complete tar ({e})"]
    if len(samples) != shard["samples"]:
        problems.append(f"{rel}: {len(samples)} samples, dataset.json says {shard['samples']}")
    for key, members in samples:
        problems += [f"{rel}: {key}: {p}" for p in check_sample(key, members, manifest, decode)]
    try:
        idx = _read(base, shard["index"]).decode()
        if idx != index_of(data):
            problems.append(f"{shard['index']}: does not match the tar (stale or damaged index)")
    except Exception as e:  # noqa: BLE001
        problems.append(f"{shard['index']}: cannot read ({e})")
    return problems


def verify(dataset: str, decode: bool = True, out=None, progress: bool = True) -> list[str]:
    """Check every shard of ``dataset`` (folder or URL); print and return the problems."""
    out = out or sys.stdout
    base = str(dataset)
    try:
        manifest = json.loads(_read(base, "dataset.json"))
    except Exception as e:  # noqa: BLE001
        msg = [f"{base}/dataset.json: cannot read ({e})"]
        print(msg[0], file=out)
        return msg
    shards = [s for sp in manifest["splits"].values() for s in sp["shards"]]
    problems: list[str] = []
    samples = 0
    for shard in tqdm(shards, desc="verify", unit="shard", disable=not progress):
        found = check_shard(base, shard, manifest, decode)
        for p in found:
            print(p, file=out)
        problems += found
        samples += shard["samples"]
    verdict = "OK" if not problems else f"{len(problems)} problem(s)"
    print(f"verified {len(shards)} shards, {samples} samples{' (decoded)' if decode else ''}: {verdict}", file=out)
    return problems
