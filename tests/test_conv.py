import numpy as np
import pytest

import nn
from nn.conv import _at_offset

# (kernel_size, stride, padding): square and rectangular kernels, overlapping and strided windows,
# and sizes where the last rows or columns are left out by the stride.
CONV_CASES = [(3, 1, 0), (3, 1, 1), (3, 2, 0), (3, 2, 1), (1, 1, 0), (2, 2, 1),
              ((2, 3), (2, 1), (1, 0))]
POOL_CASES = [(2, None), (3, 2), (3, 1), ((2, 3), (1, 2))]


def tie_free(rng, shape):
    """Distinct values at least 1/size apart (far more than gradcheck's h): no window has a tie."""
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) / size - 0.5).astype(np.float64)


def small_cnn(h=9, w=9, n_out=5, seed=0, head="flatten", conv_cls=None):
    """Flat (N, h*w*3) rows -> conv, ReLU, pool, strided padded conv, ReLU -> head -> logits."""
    rng = np.random.default_rng(seed)
    conv_cls = conv_cls or nn.Conv2d
    ho, wo = ((h // 2 + 2 - 3) // 2 + 1), ((w // 2 + 2 - 3) // 2 + 1)
    dropout = nn.Dropout(0.25, rng=seed)
    dropout.freeze_mask = True
    heads = {"flatten": [nn.Flatten(), dropout, nn.Linear(ho * wo * 6, n_out, rng=rng,
                                                           dtype=np.float64)],
             "global": [nn.GlobalAvgPool2d(), nn.Linear(6, n_out, rng=rng, dtype=np.float64)]}
    return nn.Sequential(nn.Unflatten((h, w, 3)),
                         nn.Conv2d(3, 4, 3, padding=1, rng=rng, dtype=np.float64), nn.ReLU(),
                         nn.MaxPool2d(2),
                         conv_cls(4, 6, 3, stride=2, padding=1, rng=rng, dtype=np.float64),
                         nn.ReLU(), *heads[head])


# --- gradient checks --------------------------------------------------------------------------

@pytest.mark.parametrize("kernel, stride, padding", CONV_CASES)
def test_conv_gradcheck_input_weight_bias(rng, kernel, stride, padding):
    layer = nn.Conv2d(3, 4, kernel, stride, padding, rng=0, dtype=np.float64)
    x = rng.standard_normal((2, 7, 5, 3))
    report = nn.gradcheck(layer, x, max_coords=60)
    assert [c.name for c in report.checks] == ["input", "weight", "bias"]
    assert report.max_error < 1e-7, report


def test_conv_first_layer_skips_input_gradient(rng):
    layer = nn.Conv2d(3, 2, 3, rng=0, dtype=np.float64, input_grad=False)
    x = rng.standard_normal((2, 6, 6, 3))
    layer(x)
    assert layer.backward(np.ones((2, 4, 4, 2))) is None
    report = nn.gradcheck(layer, x)
    assert [c.name for c in report.checks] == ["weight", "bias"]
    assert report.max_error < 1e-7, report


@pytest.mark.parametrize("kernel, stride", POOL_CASES)
def test_maxpool_gradcheck_without_ties(rng, kernel, stride):
    x = tie_free(rng, (2, 7, 9, 3))
    report = nn.gradcheck(nn.MaxPool2d(kernel, stride), x, max_coords=200)
    assert report.checks[0].n_checked == 200
    assert report.max_error < 1e-7, report


@pytest.mark.parametrize("layer, shape", [(nn.GlobalAvgPool2d(), (3, 5, 7, 4)),
                                          (nn.Flatten(), (3, 5, 7, 4)),
                                          (nn.Unflatten((5, 7, 4)), (3, 140))])
def test_shape_layers_gradcheck(rng, layer, shape):
    report = nn.gradcheck(layer, rng.standard_normal(shape), max_coords=100)
    assert report.max_error < 1e-7, report


def test_dropout_gradcheck_with_a_frozen_mask(rng):
    layer = nn.Dropout(0.4, rng=0)
    layer.freeze_mask = True
    report = nn.gradcheck(layer, rng.standard_normal((6, 10)), max_coords=60)
    assert report.max_error < 1e-7, report


@pytest.mark.parametrize("head", ["flatten", "global"])
def test_small_cnn_gradcheck_end_to_end_through_the_loss(rng, head):
    model = small_cnn(head=head)
    x = rng.standard_normal((3, 9 * 9 * 3))
    y = (rng.random((3, 5)) < 0.4).astype(np.float64)
    report = nn.gradcheck(model, x, y, loss=nn.BCEWithLogitsLoss(), max_coords=60)
    # input, then weight and bias of the two convolutions and the linear layer
    assert [c.name for c in report.checks] == ["input", "1.weight", "1.bias", "4.weight",
                                               "4.bias", f"{len(model) - 1}.weight",
                                               f"{len(model) - 1}.bias"]
    assert report.max_error < 1e-7, report


# --- deliberately wrong backward passes are caught --------------------------------------------

class ConvOverwritingOverlaps(nn.Conv2d):
    """A classic col2im bug: `=` instead of `+=`, so overlapping windows overwrite each other."""

    def backward(self, g):
        cols, padded_shape = self._cols
        n, ho, wo, c_out = g.shape
        w = self.weight.data
        super().backward(g)  # the parameter gradients are right
        d_windows = (g.reshape(-1, c_out) @ w.reshape(-1, c_out).T).reshape(n, ho, wo,
                                                                            *w.shape[:3])
        dx = np.zeros(padded_shape)
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                dx[_at_offset(i, j, self.stride, (ho, wo))] = d_windows[:, :, :, i, j, :]
        ph, pw = self.padding
        return dx[:, ph:padded_shape[1] - ph, pw:padded_shape[2] - pw]


class MaxPoolToEveryPixel(nn.MaxPool2d):
    """Routes g to every pixel of the window, as if the max were a sum."""

    def backward(self, g):
        x, y = self._saved
        dx = np.zeros(x.shape)
        for offset in self._offsets(y.shape[1:3]):
            dx[offset] += g
        return dx


class DropoutWithoutScale(nn.Dropout):
    """Forgets the 1/(1-p) of inverted dropout in backward."""

    def backward(self, g):
        return g * (self._mask != 0)


def test_col2im_that_overwrites_overlaps_is_caught(rng):
    layer = ConvOverwritingOverlaps(3, 4, 3, padding=1, rng=0, dtype=np.float64)
    report = nn.gradcheck(layer, rng.standard_normal((2, 6, 6, 3)), max_coords=60)
    assert report.checks[0].max_error > 1e-4, report
    assert all(c.max_error < 1e-7 for c in report.checks[1:])
    # without overlap (stride = kernel) nothing is overwritten: the same code is right
    layer = ConvOverwritingOverlaps(3, 4, 2, stride=2, rng=0, dtype=np.float64)
    assert nn.gradcheck(layer, rng.standard_normal((2, 6, 6, 3))).max_error < 1e-7


def test_maxpool_that_ignores_the_argmax_is_caught(rng):
    report = nn.gradcheck(MaxPoolToEveryPixel(2), tie_free(rng, (2, 6, 6, 3)), max_coords=100)
    assert report.max_error > 1e-4


def test_dropout_without_scaling_is_caught(rng):
    layer = DropoutWithoutScale(0.5, rng=0)
    layer.freeze_mask = True
    assert nn.gradcheck(layer, rng.standard_normal((4, 8))).max_error > 1e-4


def test_a_conv_bug_inside_a_cnn_is_caught_through_the_loss(rng):
    model = small_cnn(conv_cls=ConvOverwritingOverlaps)
    x = rng.standard_normal((3, 9 * 9 * 3))
    y = (rng.random((3, 5)) < 0.4).astype(np.float64)
    report = nn.gradcheck(model, x, y, loss=nn.BCEWithLogitsLoss(), max_coords=60)
    by_name = {c.name: c.max_error for c in report.checks}
    # the first conv's gradients flow through the buggy dL/dx of the second; the ones above don't
    assert by_name["1.weight"] > 1e-4 and by_name["input"] > 1e-4
    assert by_name["4.weight"] < 1e-7 and by_name[f"{len(model) - 1}.weight"] < 1e-7


# --- dropout ----------------------------------------------------------------------------------

def test_dropout_train_scales_survivors_and_eval_is_the_identity(rng):
    p = 0.3
    layer = nn.Dropout(p, rng=0)
    x = rng.random((200, 500)) + 0.5
    y = layer(x)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-15)
    assert abs(1 - kept.mean() - p) < 0.01
    assert abs(y.mean() / x.mean() - 1) < 0.01  # inverted dropout keeps the expectation
    layer.eval()
    assert layer(x) is x
    np.testing.assert_array_equal(layer.backward(x), x)


def test_dropout_backward_uses_the_forward_mask_and_forward_redraws(rng):
    layer = nn.Dropout(0.5, rng=1)
    x = np.ones((10, 20), np.float32)
    y1 = layer(x)
    g = rng.random((10, 20), dtype=np.float32)
    dx = layer.backward(g)
    np.testing.assert_array_equal(dx, g * y1)  # x = 1, so y1 is the mask itself
    assert dx.dtype == np.float32 and set(np.unique(y1)) == {0, 2}
    y2 = layer(x)
    assert not np.array_equal(y1, y2)
    np.testing.assert_array_equal(layer.backward(g), g * y2)


def test_dropout_frozen_mask_is_reused_and_seeded(rng):
    x = rng.random((4, 6))
    a, b = nn.Dropout(0.5, rng=7), nn.Dropout(0.5, rng=7)
    np.testing.assert_array_equal(a(x), b(x))
    a.freeze_mask = True
    first = a(x)
    np.testing.assert_array_equal(a(x), first)
    np.testing.assert_array_equal(a(2 * x), 2 * first)
    a.eval()
    a(x)
    a.train()
    np.testing.assert_array_equal(a(x), first)  # an eval forward in between keeps the mask
    with pytest.raises(ValueError, match="frozen mask of shape"):
        a(rng.random((3, 6)))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        nn.Dropout(1.0)


def test_train_and_eval_reach_dropout_inside_a_model(rng):
    model = small_cnn()
    dropout = next(m for m in model.modules() if isinstance(m, nn.Dropout))
    model.eval()
    assert not dropout.training
    x = rng.standard_normal((2, 243))
    np.testing.assert_array_equal(model(x), model(x))
    assert model.train() is model and dropout.training


# --- shapes, dtypes, errors -------------------------------------------------------------------

@pytest.mark.parametrize("kernel, stride, padding", CONV_CASES)
def test_conv_output_shape(kernel, stride, padding):
    layer = nn.Conv2d(3, 4, kernel, stride, padding)
    (kh, kw), (sh, sw), (ph, pw) = [(v, v) if isinstance(v, int) else v
                                    for v in (kernel, stride, padding)]
    y = layer(np.zeros((2, 7, 5, 3), np.float32))
    assert y.shape == (2, (7 + 2 * ph - kh) // sh + 1, (5 + 2 * pw - kw) // sw + 1, 4)
    assert layer.backward(np.ones_like(y)).shape == (2, 7, 5, 3)


def test_poster_shaped_cnn_keeps_float32_everywhere(rng):
    model = nn.Sequential(nn.Unflatten((32, 24, 3)),
                          nn.Conv2d(3, 8, 3, padding=1, rng=0, input_grad=False), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, stride=2, rng=1), nn.ReLU(),
                          nn.GlobalAvgPool2d(), nn.Dropout(0.5, rng=2), nn.Linear(16, 25, rng=3))
    x = rng.random((5, 32 * 24 * 3), dtype=np.float32)
    logits = model(x)
    assert logits.shape == (5, 25) and logits.dtype == np.float32
    assert [model[i](np.zeros((1, *s), np.float32)).shape[1:] for i, s in
            [(1, (32, 24, 3)), (3, (32, 24, 8)), (4, (16, 12, 8))]] == [(32, 24, 8), (16, 12, 8),
                                                                      (7, 5, 16)]
    model(x)
    loss_fn = nn.BCEWithLogitsLoss()
    loss_fn(model(x), (rng.random((5, 25)) < 0.2).astype(np.float32))
    assert model.backward(loss_fn.backward()) is None  # the first conv skips dL/dx
    for p in model.parameters():
        assert p.data.dtype == p.grad.dtype == np.float32 and p.grad.any()


@pytest.mark.parametrize("layer, shape", [
    (nn.Conv2d(3, 2, 3, padding=1, dtype=np.float64), (2, 5, 5, 3)),
    (nn.MaxPool2d(2), (2, 5, 5, 3)), (nn.GlobalAvgPool2d(), (2, 5, 5, 3)),
    (nn.Flatten(), (2, 5, 5, 3)), (nn.Unflatten((5, 5, 3)), (2, 75)), (nn.Dropout(), (2, 75))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layers_preserve_dtype(rng, layer, shape, dtype):
    if isinstance(layer, nn.Conv2d):
        layer.to(dtype)
    y = layer(rng.random(shape).astype(dtype))
    dx = layer.backward(np.ones_like(y))
    assert y.dtype == dx.dtype == dtype and dx.shape == shape
    assert all(p.grad.dtype == dtype for p in layer.parameters())


def test_unflatten_reads_loader_rows_as_nhwc_images(rng):
    images = rng.integers(0, 256, (4, 6, 5, 3)).astype(np.float32)
    flat = images.reshape(4, -1)  # what the DataLoader yields, pixel by pixel
    np.testing.assert_array_equal(nn.Unflatten((6, 5, 3))(flat), images)
    np.testing.assert_array_equal(nn.Flatten()(images), flat)


@pytest.mark.parametrize("layer", [nn.Conv2d(3, 2, 3), nn.MaxPool2d(2), nn.GlobalAvgPool2d(),
                                   nn.Flatten(), nn.Unflatten((2, 2, 2)), nn.Dropout()])
def test_backward_before_forward_is_a_clear_error(layer):
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((1, 2, 2, 2), np.float32))


def test_bad_inputs_are_clear_errors(rng):
    conv = nn.Conv2d(3, 2, 3)
    with pytest.raises(TypeError, match=r"float64 input .* float32"):
        conv(rng.random((1, 5, 5, 3)))
    with pytest.raises(ValueError, match=r"NHWC .* nn\.Unflatten"):
        conv(rng.random((1, 75), dtype=np.float32))
    with pytest.raises(ValueError, match="expects 3 channels"):
        conv(rng.random((1, 3, 5, 5), dtype=np.float32))  # NCHW by mistake
    with pytest.raises(ValueError, match="smaller than the kernel"):
        conv(rng.random((1, 2, 5, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        nn.MaxPool2d(3)(rng.random((1, 2, 5, 3)))


def test_conv_init_is_seeded_and_bounded_by_fan_in():
    a, b = nn.Conv2d(4, 8, 5, rng=3), nn.Conv2d(4, 8, 5, rng=3)
    assert a.weight.data.shape == (5, 5, 4, 8) and a.bias.data.shape == (8,)
    assert np.array_equal(a.weight.data, b.weight.data)
    bound = 1 / np.sqrt(4 * 5 * 5)
    assert bound * 0.95 < np.abs(a.weight.data).max() <= bound
    assert not np.array_equal(a.weight.data, nn.Conv2d(4, 8, 5, rng=4).weight.data)
    assert repr(nn.Conv2d(3, 16, 3, padding=1, input_grad=False)) == (
        "Conv2d(3, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), input_grad=False)")


def test_conv_gradients_accumulate_until_zero_grad(rng):
    layer = nn.Conv2d(2, 3, 3, stride=2, rng=0, dtype=np.float64)
    x = rng.random((2, 7, 7, 2))
    g = rng.random(layer(x).shape)
    layer.backward(g)
    once = layer.weight.grad.copy()
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * once)
    layer.zero_grad()
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, once)


def test_maxpool_ties_route_to_the_first_maximum_only():
    x = np.zeros((1, 4, 4, 1))  # every window of the bottom row is all zeros: a 4-way tie
    x[0, 0, 1, 0] = x[0, 1, 0, 0] = 1.0  # a 2-way tie in the top-left window
    pool = nn.MaxPool2d(2)
    pool(x)
    dx = pool.backward(np.ones((1, 2, 2, 1)))[0, :, :, 0]
    np.testing.assert_array_equal(dx, [[0, 1, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])


# --- against PyTorch, float64 -----------------------------------------------------------------

def nchw(a):
    return a.transpose(0, 3, 1, 2)


def nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("kernel, stride, padding", CONV_CASES + [(5, 3, 2)])
def test_conv_forward_and_all_gradients_equal_torch_float64(rng, kernel, stride, padding):
    torch = pytest.importorskip("torch", reason="torch not installed (pip install -e .[torch])")
    layer = nn.Conv2d(3, 4, kernel, stride, padding, rng=0, dtype=np.float64)
    x = rng.standard_normal((2, 9, 8, 3))
    y = layer(x)
    g = rng.standard_normal(y.shape)
    dx = layer.backward(g)

    tx = torch.tensor(nchw(x), requires_grad=True)
    tw = torch.tensor(layer.weight.data.transpose(3, 2, 0, 1), requires_grad=True)
    tb = torch.tensor(layer.bias.data, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=padding)
    ty.backward(torch.tensor(nchw(g)))

    np.testing.assert_allclose(y, nhwc(ty), rtol=0, atol=1e-10)
    np.testing.assert_allclose(dx, nhwc(tx.grad), rtol=0, atol=1e-10)
    np.testing.assert_allclose(layer.weight.grad, tw.grad.numpy().transpose(2, 3, 1, 0),
                               rtol=0, atol=1e-10)
    np.testing.assert_allclose(layer.bias.grad, tb.grad.numpy(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("kernel, stride", POOL_CASES)
@pytest.mark.parametrize("ties", [False, True])
def test_maxpool_forward_and_gradient_equal_torch_float64(rng, kernel, stride, ties):
    torch = pytest.importorskip("torch", reason="torch not installed (pip install -e .[torch])")
    shape = (2, 9, 8, 3)
    x = rng.integers(0, 3, shape).astype(np.float64) if ties else rng.standard_normal(shape)
    pool = nn.MaxPool2d(kernel, stride)
    y = pool(x)
    g = rng.standard_normal(y.shape)
    dx = pool.backward(g)

    tx = torch.tensor(nchw(x), requires_grad=True)
    ty = torch.nn.functional.max_pool2d(tx, kernel, stride)
    ty.backward(torch.tensor(nchw(g)))
    np.testing.assert_allclose(y, nhwc(ty), rtol=0, atol=1e-10)
    np.testing.assert_allclose(dx, nhwc(tx.grad), rtol=0, atol=1e-10)
