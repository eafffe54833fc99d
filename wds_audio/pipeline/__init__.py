"""dataset.json -> plan -> samples -> batches: the torch back end.

Enters: a source (a folder or URL with dataset.json, or a shard pattern) and a LoaderConfig.
On the way: catalog.py (the shards of a split and folds), plan.py (which slices of which
shards each stream reads this epoch, from the seed, epoch and rank alone), shards.py (tar
bytes -> samples), samples.py (decoding, labels, the error policy), shuffle.py, rebalance.py
and reservoir.py (the class mix), batch.py (collation), stream.py (one stream, end to end) and
loader.py (streams on DataLoader workers, state for resuming). Leaves: Batch objects (audio,
lengths, multi-hot targets, keys, a valid mask) and the loader's metrics.

Example:
    >>> from wds_audio.pipeline.config import LoaderConfig                   # doctest: +SKIP
    >>> from wds_audio.pipeline.loader import AudioLoader
    >>> batches = AudioLoader(LoaderConfig("data/demo", split="valid", batch_size=8, sample_rate=16000))
"""
