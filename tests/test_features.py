import colorsys

import numpy as np
import pytest

import nn
from nn.features import Concat, ImageFeatures, grid_cells, rgb_to_hsv


def test_rgb_to_hsv_matches_colorsys(rng):
    rgb = rng.random((200, 3))
    rgb[:20] = rgb[:20, :1]                       # greys: no hue, no saturation
    rgb[20:40] = np.round(rgb[20:40])             # pure and mixed primaries, black, white
    hue, sat, val = rgb_to_hsv(rgb)
    expected = np.array([colorsys.rgb_to_hsv(*c) for c in rgb])
    np.testing.assert_allclose(np.c_[hue, sat, val], expected, atol=1e-12)


def test_grid_cells_cut_nearly_equal_cells():
    cells = grid_cells(5, 4, 2, 2)
    assert cells.shape == (5, 4)
    np.testing.assert_array_equal(cells[:, 0], [0, 0, 0, 2, 2])
    np.testing.assert_array_equal(np.bincount(cells.ravel()), [6, 6, 4, 4])


def solid(colour, size=16):
    return np.tile(np.asarray(colour, np.float32), (1, size * size))


def test_a_solid_colour_fills_one_bin_and_has_no_edges():
    layer = ImageFeatures((16, 16), histogram_grids=(1, 2), hsv_bins=(8, 3, 3), moments_grid=2,
                          hog_cell=8, hog_bins=9)
    y = layer(solid([1.0, 0.0, 0.0]))             # pure red: hue 0, saturation 1, value 1
    assert y.shape == (1, layer.n_features) == (1, 5 * 72 + 2 * 4 * 7 + 4 * 9)
    hist = y[0, :5 * 72].reshape(5, 72)           # the global histogram, then 4 cells
    red_bin = (0 * 3 + 2) * 3 + 2
    np.testing.assert_allclose(hist[:, red_bin], 1)
    assert hist.sum() == pytest.approx(5)
    mean, std = y[0, 5 * 72:5 * 72 + 2 * 4 * 7].reshape(2, 4, 7)
    np.testing.assert_allclose(mean, [[1, 0, 0, 1, 1, 1, 0]] * 4, atol=1e-6)
    np.testing.assert_allclose(std, 0, atol=1e-3)
    np.testing.assert_allclose(y[0, -4 * 9:], 0)


def test_vertical_stripes_are_horizontal_gradients():
    image = np.zeros((16, 16, 3), np.float32)
    image[:, ::4] = 1                             # bright columns: edges along x
    y = ImageFeatures((16, 16), hog_cell=8, hog_bins=9)(image.reshape(1, -1))
    hog = y[0, -4 * 9:].reshape(4, 9)
    assert (hog.argmax(axis=1) == 0).all()        # direction 0: the gradient points along x
    np.testing.assert_allclose(np.linalg.norm(hog, axis=1), 1, atol=1e-3)


def test_features_have_no_gradient():
    layer = ImageFeatures((16, 16))
    layer(solid([0.2, 0.4, 0.6]))
    with pytest.raises(RuntimeError, match="first layer"):
        layer.backward(np.ones((1, layer.n_features)))


def test_concat_joins_columns_and_passes_the_gradient_to_each_branch(rng):
    branches = [nn.Linear(6, 3, rng=0, dtype=np.float64), nn.Linear(6, 2, rng=1, dtype=np.float64)]
    layer = Concat(*branches)
    x = rng.standard_normal((4, 6))
    np.testing.assert_allclose(layer(x), np.c_[branches[0](x), branches[1](x)])
    report = nn.gradcheck(layer, x)
    assert [c.name for c in report.checks] == ["input", "0.weight", "0.bias", "1.weight",
                                               "1.bias"]
    assert report.ok, report


def test_concat_of_first_layers_returns_no_input_gradient(rng):
    layer = Concat(nn.Linear(6, 3, input_grad=False), nn.Linear(6, 2, input_grad=False))
    layer(rng.random((2, 6), dtype=np.float32))
    assert layer.backward(np.ones((2, 5), np.float32)) is None
