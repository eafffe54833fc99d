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
