"""Importing DALI once, with a clear message when it is not installed."""
from __future__ import annotations

from typing import Any

INSTALL_HINT = "pip install wds-audio[dali]"


def import_dali() -> Any:
    """The ``nvidia.dali`` module, or an ImportError that says how to install it."""
    try:
        import nvidia.dali as dali
        import nvidia.dali.fn  # noqa: F401 - the operators live in submodules
        import nvidia.dali.math  # noqa: F401
        import nvidia.dali.plugin.pytorch  # noqa: F401
        import nvidia.dali.types  # noqa: F401
    except ImportError as e:
        raise ImportError(f"backend='dali' needs NVIDIA DALI, which is not installed: `{INSTALL_HINT}` "
                          f"(or install an nvidia-dali-cudaXXX wheel matching your CUDA) ({e})") from e
    return dali
