"""Numbers -> numbers, with no knowledge of shards or loaders.

Enters: decoded audio (NumPy arrays per clip, or (B, T) tensors on any device). Leaves: shaped
clips (shaping.py), resampled audio (resample.py), loudness-normalized audio (loudness.py),
log-mel / MFCC features (features.py) and augmented batches (augment/). The pipeline uses the
per-clip parts in its workers; the device frontend uses the batched parts.
"""
