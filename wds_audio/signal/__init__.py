"""Numbers -> numbers, with no knowledge of shards or loaders.

Enters: decoded audio (NumPy arrays per clip, or (B, T) tensors on any device). Leaves: shaped
clips (shaping.py), resampled audio (resample_cpu.py per clip with soxr, resample.py per batch
on any device), loudness-normalized audio (loudness.py), log-mel / MFCC features (features.py)
and augmented batches (augment/). The pipeline and shardgen use the per-clip parts; the device
frontend uses the batched parts.
"""
