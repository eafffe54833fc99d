"""Batches -> features on the device.

Enters: a Batch's (B, T) audio and lengths, on the GPU or the CPU. Leaves: (B, F, frames)
features - resampled, augmented in training, standardized - and mixed targets when Mixup is on
(:class:`Frontend`). ``noise_bank`` reads a dataset's noise split for NoiseMix.
"""
