"""An evaluation loader's batches are never augmented: not by a Frontend it runs in its workers,
nor by one the training loop calls on its batches, whatever mode that Frontend was left in."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import wds_audio
from wds_audio import Frontend, Gain, Mixup, SpecAugment

pytestmark = pytest.mark.numeric

KW = dict(batch_size=8, sample_rate=16000, clip_seconds=1.0, seed=2, split="valid", eval_crop="center")


def _augmenting() -> Frontend:
    """Left in train mode, with augmentations that change every batch (p=1)."""
    return Frontend(sample_rate=16000, n_fft=512, hop_length=160, n_mels=32, augment=[Gain(-6, 6, p=1.0)],
                    specaugment=SpecAugment(time_masks=1, time_width=10, freq_masks=1, freq_width=4, p=1.0),
                    mixup=Mixup(alpha=0.4, p=1.0)).train()


@pytest.mark.parametrize("workers", [0, 2])
def test_an_evaluation_loader_runs_its_frontend_in_eval_mode(demo_shards: Path, workers: int) -> None:
    fe = _augmenting()
    inside = wds_audio.loader(str(demo_shards), training=False, num_workers=workers, frontend=fe,
                              return_audio=True, **KW)
    plain = _augmenting().eval()
    n = 0
    for b in inside:
        x, t = plain(b.audio, b.lengths, b.targets)
        torch.testing.assert_close(b.features, x, rtol=0, atol=0)  # the same ops on the same audio
        torch.testing.assert_close(b.targets, t, rtol=0, atol=0)  # not mixed
        assert ((b.targets == 0) | (b.targets == 1)).all()
        n += 1
    assert n > 0 and fe.training  # the caller's Frontend is left as it was


def test_a_frontend_in_train_mode_does_not_augment_evaluation_batches(demo_shards: Path) -> None:
    fe, plain = _augmenting(), _augmenting().eval()
    for b in wds_audio.loader(str(demo_shards), training=False, **KW):
        assert not b.training
        x, t = fe(b)
        torch.testing.assert_close(x, plain(b)[0], rtol=0, atol=0)
        torch.testing.assert_close(t, b.targets, rtol=0, atol=0)
    train = next(iter(wds_audio.loader(str(demo_shards), training=True, **{**KW, "split": "train"})))
    assert train.training and not torch.equal(fe(train)[0], plain(train)[0])  # training batches are augmented
