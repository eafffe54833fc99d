"""What the integration tests compare against: a packed dataset's shard entries and a tar's keys."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any, BinaryIO


def shards(root: Path) -> list[dict[str, Any]]:
    """Every shard entry of ``root/dataset.json``, all splits."""
    manifest = json.loads((root / "dataset.json").read_text())
    return [s for split in manifest["splits"].values() for s in split["shards"]]


def tar_keys(f: BinaryIO) -> list[str]:
    """Sample keys of a tar stream, in order; every member is read whole (a short read fails)."""
    keys: list[str] = []
    with tarfile.open(fileobj=f, mode="r|") as tf:
        for m in tf:
            if not m.isreg():
                continue
            data = tf.extractfile(m).read()  # type: ignore[union-attr]
            assert len(data) == m.size
            key = m.name.split(".", 1)[0]
            if not keys or keys[-1] != key:
                keys.append(key)
    return keys
