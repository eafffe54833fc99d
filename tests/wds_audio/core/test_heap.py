"""Freed memory kept in a worker's heap: the setting takes effect (that batches made in workers, which
use it, equal those of the main process is test_loader's determinism test)."""
from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.skipif(platform.system() != "Linux", reason="glibc's mallopt")
def test_keep_freed_memory_takes_effect_on_glibc() -> None:
    code = "from wds_audio.core.heap import keep_freed_memory; print(keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[3])
    assert out.stdout.strip() == ("True" if platform.libc_ver()[0] == "glibc" else "False")


_FRAGMENTED = """
import numpy as np
from wds_audio.core.heap import keep_freed_memory, release_freed_memory
def anon():
    return int(next(l for l in open("/proc/self/status") if l.startswith("RssAnon")).split()[1]) // 1024
keep_freed_memory()
blocks = [np.ones(1 << 20, np.uint8) for _ in range(200)]  # 200 MB in the heap, every page touched
pins = blocks[::20]  # one block in 20 stays: the heap cannot shrink from its top
del blocks
before = anon()
ok = release_freed_memory()
print(ok, before, anon())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim")
def test_release_freed_memory_returns_the_free_pages_inside_the_heap() -> None:
    """With freed memory kept (keep_freed_memory), 190 MB freed between blocks still in use stay
    resident; release_freed_memory gives them back (what a persistent worker does each epoch)."""
    out = subprocess.run([sys.executable, "-c", _FRAGMENTED], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[3])
    ok, before, after = out.stdout.split()
    assert ok == "True" and int(before) - int(after) > 150, out.stdout
