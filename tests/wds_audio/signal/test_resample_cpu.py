"""wds_audio.signal.resample_cpu: the cached soxr resampler gives soxr.resample's numbers, call after call."""
import threading

import numpy as np
import pytest
import soxr

from wds_audio.signal.resample_cpu import resample


@pytest.mark.parametrize("rates", [(44100, 32000), (8000, 16000), (48000, 16000)])
@pytest.mark.parametrize("shape", [(1,), (441,), (10007,), (22050, 2)])
def test_resample_equals_soxr_on_every_call(rates, shape):
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]
    for x in clips + clips[::-1]:  # state left by one call must not leak into the next
        got = resample(x, *rates)
        want = soxr.resample(x, *rates, quality="HQ")
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_resample_is_identity_at_the_same_rate():
    x = np.arange(10, dtype=np.float32)
    assert resample(x, 16000, 16000) is x


def test_resample_threads_do_not_share_a_resampler():
    rng = np.random.default_rng(1)
    clips = [rng.standard_normal(30000).astype(np.float32) for _ in range(8)]
    want = [soxr.resample(x, 44100, 16000, quality="HQ") for x in clips]
    errors = []

    def work(i: int) -> None:
        for _ in range(20):
            if not np.array_equal(resample(clips[i], 44100, 16000), want[i]):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
