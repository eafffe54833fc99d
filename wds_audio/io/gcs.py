"""gs:// (and gcs://) specifics: the gcsfs filesystem with per-request limits."""
from __future__ import annotations

from typing import Any

from .objects import _FsspecOpener, require
from .options import SourceOptions
from .request import _Want
from .resume import _Opener


def gcs_filesystem(options: SourceOptions) -> Any:  # pragma: no cover - gcsfs is not installed in the test environment
    require("gcsfs", "gs")
    import aiohttp
    import gcsfs

    # Per request: connect and per-read (stall) limits, no limit on the whole transfer.
    # gcsfs retries some errors itself (a fixed class setting); ours come on top.
    limits = aiohttp.ClientTimeout(total=None, sock_connect=options.timeout_s, sock_read=options.timeout_s)
    return gcsfs.GCSFileSystem(skip_instance_cache=True, requests_timeout=limits)


def gcs_opener(want: _Want) -> _Opener:
    return _FsspecOpener(want.url, want.options, gcs_filesystem, want.small)
