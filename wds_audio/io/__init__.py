"""Shard URLs -> bytes.

Enters: a URL (plain path, file://, http(s)://, s3://, gs://, pipe:) with what is expected of
it (size, sha256, a byte range). Leaves: a readable binary stream, or the whole object, that
survived the network (retried and resumed at the byte reached), or a SourceError naming the URL.

One module per scheme (file, http, s3, gcs; s3 and gcs share objects.py), one table of schemes
(open.py), and the logic they share - retries, ranges, ETag and sha256 checks - in resume.py.
Around them: the connection pool (pool.py), the local shard cache (cache.py), opening ahead
(prefetch.py) and the per-worker queue of whole-shard fetches (fetchqueue.py).

Example:
    >>> from wds_audio.io import SourceOptions, open_shard                  # doctest: +SKIP
    >>> with open_shard("https://host/esc50/train/fold1-000000.tar", options=SourceOptions(retries=5)) as f:
    ...     tar_bytes = f.read()
"""
from .open import MemoryReader, fetch_shard, open_shard, open_url, read_bytes
from .options import REMOTE, SourceError, SourceMetrics, SourceOptions, redact, scheme_of
from .prefetch import Prefetcher, prefetch

__all__ = ["REMOTE", "MemoryReader", "Prefetcher", "SourceError", "SourceMetrics", "SourceOptions", "fetch_shard",
           "open_shard", "open_url", "prefetch", "read_bytes", "redact", "scheme_of"]
