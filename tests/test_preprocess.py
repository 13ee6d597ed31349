import numpy as np
import pytest

import nn
from nn.preprocess import Standardize, standardize_stats


def test_standardize_per_channel_and_per_feature(rng):
    x = rng.random((4, 2 * 2 * 3)).astype(np.float32)
    layer = Standardize([0.1, 0.2, 0.3], [2.0, 4.0, 0.5])
    expected = (x.reshape(4, 4, 3) - [0.1, 0.2, 0.3]) / [2.0, 4.0, 0.5]
    np.testing.assert_allclose(layer(x), expected.reshape(4, 12), rtol=1e-6)
    assert layer(x).dtype == np.float32
    per_feature = Standardize(np.arange(12.0), np.full(12, 2.0))
    np.testing.assert_allclose(per_feature(x), (x - np.arange(12)) / 2, rtol=1e-6)


def test_standardize_gradcheck(rng):
    layer = Standardize([0.1, -0.2, 0.3], [2.0, 4.0, 0.5])
    report = nn.gradcheck(layer, rng.standard_normal((3, 15)))
    assert [c.name for c in report.checks] == ["input"] and report.ok, report


@pytest.mark.parametrize("mean, std, message", [
    ([0, 0], [1], "same length"), ([0], [0], "positive")])
def test_standardize_refuses_bad_statistics(mean, std, message):
    with pytest.raises(ValueError, match=message):
        Standardize(mean, std)


def test_standardize_needs_whole_groups_of_channels():
    with pytest.raises(ValueError, match="groups of 3"):
        Standardize([0, 0, 0], [1, 1, 1])(np.zeros((2, 10), np.float32))


def test_standardize_stats_match_numpy(rng):
    images = rng.integers(0, 256, (10, 4, 5, 3), dtype=np.uint8)
    idx = np.array([7, 1, 3, 8])
    mean, std = standardize_stats(images, idx, batch=3)
    pixels = images[idx].reshape(-1, 3) / 255
    np.testing.assert_allclose(mean, pixels.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, pixels.std(0), rtol=1e-5)
    # through a transform: one entry per output column; a constant column gets std 1
    mean, std = standardize_stats(images, idx, transform=lambda x: np.c_[x[:, :2], 0 * x[:, :1]])
    flat = images[idx].reshape(4, -1) / 255
    np.testing.assert_allclose(mean[:2], flat[:, :2].mean(0), rtol=1e-6)
    assert mean[2] == 0 and std[2] == 1
