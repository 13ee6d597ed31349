"""Layers for images: convolution, pooling, reshaping, dropout.

Images are NHWC: (N, H, W, C), batch, height, width, channels, the layout of the poster arrays
(N, 350, 350, 3). The DataLoader yields flat rows (N, H*W*C) for the MLP; `Unflatten((H, W, C))`
as a model's first layer turns them back into images without a copy.

Convolution is one matrix product. im2col copies every kh x kw x C window of the input into a
row of `cols` (N*Ho*Wo, kh*kw*C), so Conv2d's forward is cols @ W, exactly a Linear on windows.
Its backward is Linear's backward, plus col2im: each window's gradient is added back onto the
pixels it was copied from, one kernel offset at a time (a loop over the kh*kw offsets, never
over pixels). Windows overlap, so one pixel can receive several contributions: they add up,
because the pixel feeds several outputs. MaxPool2d loops over the offsets in the same way.

Output sizes, for a kernel k, stride s and padding p along one axis of size H:
    Ho = (H + 2p - k) // s + 1
Rows and columns that no window reaches (when (H + 2p - k) is not a multiple of s) get zero
gradient, as in PyTorch.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .layers import Module, Parameter, _check_dtype, _saved, _uniform


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _check_images(layer, x, channels=None):
    if x.ndim != 4:
        raise ValueError(f"{layer!r} needs NHWC images (N, H, W, C), got shape {x.shape}; "
                         "for flat (N, H*W*C) batches put nn.Unflatten((H, W, C)) first")
    if channels is not None and x.shape[3] != channels:
        raise ValueError(f"{layer!r} expects {channels} channels (the last axis), got shape "
                         f"{x.shape}")


def _output_size(layer, x, kernel, stride):
    """(Ho, Wo) = ((H - kh) // sh + 1, (W - kw) // sw + 1) for an (already padded) x."""
    (h, w), (kh, kw), (sh, sw) = x.shape[1:3], kernel, stride
    if h < kh or w < kw:
        raise ValueError(f"{layer!r}: the (padded) image {(h, w)} is smaller than the kernel "
                         f"{kernel}")
    return (h - kh) // sh + 1, (w - kw) // sw + 1


def _at_offset(i, j, stride, out_size):
    """Index of the pixels x[:, i + sh*r, j + sw*c, :] for every output position (r, c).

    These are the pixels that kernel offset (i, j) meets, one per window: one strided slice,
    so a loop over the kh*kw offsets (never over pixels) covers every window.
    """
    (sh, sw), (ho, wo) = stride, out_size
    return np.s_[:, i:i + sh * ho:sh, j:j + sw * wo:sw, :]


def _col2im(d_windows, x_shape, stride):
    """The adjoint of im2col: add each window's gradient (N, Ho, Wo, kh, kw, C) back onto the
    pixels it was copied from, giving dL/dx of shape x_shape.

    `+=` and not `=`: when windows overlap (stride < kernel), a pixel sits in several windows,
    feeds several outputs, and so sums the gradients of them all.
    """
    n, ho, wo, kh, kw, c = d_windows.shape
    dx = np.zeros(x_shape, d_windows.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[_at_offset(i, j, stride, (ho, wo))] += d_windows[:, :, :, i, j, :]
    return dx


def im2col(x, kernel_size, stride):
    """Every kernel_size = (kh, kw) window of the images x (N, H, W, C), stride = (sh, sw) apart,
    as one row: (N * Ho * Wo, kh * kw * C) in (kh, kw, C) order, and (Ho, Wo).

    sliding_window_view gives the windows as a view at stride 1, [::sh, ::sw] keeps every s-th,
    and the reshape of the reordered view is the one copy.
    """
    sh, sw = stride
    windows = sliding_window_view(x, kernel_size, axis=(1, 2))[:, ::sh, ::sw]
    n, ho, wo = windows.shape[:3]
    return windows.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, -1), (ho, wo)


class Conv2d(Module):
    """y[n, r, c, :] = sum over (i, j, ci) of x[n, s*r + i, s*c + j, ci] W[i, j, ci, :]  +  b.

    x: (N, H, W, C_in)   W: (kh, kw, C_in, C_out)   b: (C_out,)   y: (N, Ho, Wo, C_out),
    with x zero-padded by `padding` on each side of H and W first.

    As matrices, with cols = im2col(x) (N*Ho*Wo, kh*kw*C_in) and W as (kh*kw*C_in, C_out):
        y = cols @ W + b
    Backward, for g = dL/dy as (N*Ho*Wo, C_out), as in Linear:
        dL/dW    = cols.T @ g
        dL/db    = g.sum(0)     -- b was added at every position of every image
        dL/dcols = g @ W.T,  then dL/dx = col2im(dL/dcols), the padding cut off again.

    kernel_size, stride and padding are ints or (height, width) pairs. W is stored
    (kh, kw, C_in, C_out) so that it reshapes to the matrix above without a copy; PyTorch's
    weight is (C_out, C_in, kh, kw), W.transpose(3, 2, 0, 1). Initialisation, as PyTorch's
    default: W and b uniform in [-1/sqrt(fan_in), 1/sqrt(fan_in)], fan_in = C_in*kh*kw, drawn
    from `rng` (a numpy Generator, or an int seed). Forward keeps cols for backward: an array
    kh*kw times the size of the (padded) input.

    input_grad=False skips dL/dx and makes backward return None: use it for the first layer,
    whose input is the images.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, rng=None,
                 dtype=np.float32, input_grad=True):
        rng = np.random.default_rng(rng)
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding = _pair(padding)
        kh, kw = self.kernel_size
        bound = 1.0 / np.sqrt(in_channels * kh * kw)
        self.weight = Parameter(_uniform(rng, (kh, kw, in_channels, out_channels), bound, dtype))
        self.bias = Parameter(_uniform(rng, (out_channels,), bound, dtype))
        self.input_grad = input_grad
        self._cols = None

    def forward(self, x):
        _check_dtype(self, x, self.weight.data.dtype)
        _check_images(self, x, self.weight.data.shape[2])
        ph, pw = self.padding
        if ph or pw:
            x = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
        ho, wo = _output_size(self, x, self.kernel_size, self.stride)
        cols, _ = im2col(x, self.kernel_size, self.stride)   # rows in (kh, kw, C) order, as W's
        self._cols = cols, x.shape
        c_out = self.weight.data.shape[3]
        y = cols @ self.weight.data.reshape(-1, c_out)
        y += self.bias.data
        return y.reshape(len(x), ho, wo, c_out)

    def backward(self, g):
        cols, padded_shape = _saved(self, self._cols)
        n, ho, wo, c_out = g.shape
        w = self.weight.data
        g = g.reshape(-1, c_out)
        dx = None
        if self.input_grad:   # first, while W is still the W of forward (see nn/layers.py)
            d_cols = g @ w.reshape(-1, c_out).T
            dx = _col2im(d_cols.reshape(n, ho, wo, *w.shape[:3]), padded_shape, self.stride)
            ph, pw = self.padding
            dx = dx[:, ph:padded_shape[1] - ph, pw:padded_shape[2] - pw, :]
        self.weight.add_grad((cols.T @ g).reshape(w.shape))
        self.bias.add_grad(g.sum(axis=0))
        return dx

    def __repr__(self):
        kh, kw, c_in, c_out = self.weight.data.shape
        extra = "" if self.input_grad else ", input_grad=False"
        return (f"Conv2d({c_in}, {c_out}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}{extra})")


class MaxPool2d(Module):
    """y[n, r, c, ch] = max of x[n, s*r + i, s*c + j, ch] over the window 0 <= i < kh, 0 <= j < kw.

    x: (N, H, W, C) -> y: (N, Ho, Wo, C); stride defaults to kernel_size (windows side by side),
    no padding, and trailing rows and columns that no window covers are dropped (PyTorch's
    default, ceil_mode=False). Forward is a running maximum over the kh*kw kernel offsets.

    Backward: the max is the identity on its winner and constant in the others, so g goes whole
    to the winner of each window and the other pixels get 0; overlapping windows (stride <
    kernel) can send a pixel several contributions, which add up. Forward keeps x and y, and
    backward finds each winner again as the window's first pixel equal to y in row-major order
    (smallest i, then j).
    Ties: that first one is the only winner, as in PyTorch's CPU kernel. At a tie the max has no
    derivative, so gradient checks need inputs without ties.
    """

    def __init__(self, kernel_size, stride=None):
        self.kernel_size = _pair(kernel_size)
        self.stride = self.kernel_size if stride is None else _pair(stride)
        self._saved = None

    def _offsets(self, out_size):
        kh, kw = self.kernel_size
        return [_at_offset(i, j, self.stride, out_size) for i in range(kh) for j in range(kw)]

    def forward(self, x):
        _check_images(self, x)
        first, *others = self._offsets(_output_size(self, x, self.kernel_size, self.stride))
        y = x[first].copy()
        for offset in others:
            np.maximum(y, x[offset], out=y)
        self._saved = x, y
        return y

    def backward(self, g):
        x, y = _saved(self, self._saved)
        dx = np.zeros(x.shape, g.dtype)
        found = np.zeros(y.shape, bool)  # windows whose winner an earlier offset already was
        for offset in self._offsets(y.shape[1:3]):
            wins = x[offset] == y
            wins &= ~found
            found |= wins
            dx[offset] += wins * g
        return dx

    def __repr__(self):
        return f"MaxPool2d(kernel_size={self.kernel_size}, stride={self.stride})"


class GlobalAvgPool2d(Module):
    """y[n, c] = mean of x[n, :, :, c] over the H*W positions.   x: (N, H, W, C) -> y: (N, C).

    Backward: every position had weight 1/(H W) in the mean, so dL/dx[n, h, w, c] = g[n, c]/(H W).
    """

    def __init__(self):
        self._shape = None

    def forward(self, x):
        _check_images(self, x)
        self._shape = x.shape
        return x.mean(axis=(1, 2))

    def backward(self, g):
        n, h, w, c = _saved(self, self._shape)
        # a real array, not a read-only broadcast view, since earlier layers may write into it
        return np.broadcast_to(g[:, None, None, :] / (h * w), (n, h, w, c)).copy()

    def __repr__(self):
        return "GlobalAvgPool2d()"


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1*d2*...), in C order.   Backward: g reshaped back."""

    def __init__(self):
        self._shape = None

    def forward(self, x):
        self._shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, g):
        return g.reshape(_saved(self, self._shape))

    def __repr__(self):
        return "Flatten()"


class Unflatten(Module):
    """(N, prod(shape)) -> (N, *shape), the inverse of Flatten.   Backward: g flattened back.

    Unflatten((H, W, C)) turns the DataLoader's flat rows (N, H*W*C) back into NHWC images:
    a flat row lists the pixels row by row, the C channels of each pixel together, exactly
    the C-order flattening of an (H, W, C) image. (PyTorch's Unflatten also takes the axis,
    Unflatten(1, shape); here it is always axis 1.)
    """

    def __init__(self, shape):
        self.shape = tuple(shape)
        self._shape = None

    def forward(self, x):
        self._shape = x.shape
        return x.reshape(len(x), *self.shape)

    def backward(self, g):
        return g.reshape(_saved(self, self._shape))

    def __repr__(self):
        return f"Unflatten({self.shape})"


class Dropout(Module):
    """Inverted dropout: y = x * mask, mask = keep / (1 - p), keep ~ Bernoulli(1 - p) per entry.

    In training mode each entry is zeroed with probability p and the survivors are scaled by
    1/(1-p), so E[y] = x and eval mode needs no rescaling: after `model.eval()`, y = x.
    Backward: dL/dx = g * mask, the very mask of the last forward (g itself in eval mode).

    The mask is drawn from `rng` (a numpy Generator, or an int seed), anew at every forward.
    A gradient check runs forward many times and needs one fixed function, so freeze the mask:
        layer.freeze_mask = True
    and every training forward after the next one reuses the mask it draws (the input shape
    must stay the same); `layer.freeze_mask = False` draws afresh again.
    """

    def __init__(self, p=0.5, rng=None):
        if not 0 <= p < 1:
            raise ValueError(f"Dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.rng = np.random.default_rng(rng)
        self.freeze_mask = False
        self._mask = None     # the last mask drawn
        self._applied = None  # what the last forward multiplied by: the mask, or 1 in eval mode

    def forward(self, x):
        if not self.training:
            self._applied = np.ones((), x.dtype)
            return x
        if self._mask is None or not self.freeze_mask:
            # float32 draws: half the memory of float64, and the same mask for either dtype of x
            keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
            self._mask = keep.astype(x.dtype) / (1 - self.p)
        elif self._mask.shape != x.shape:
            raise ValueError(f"{self!r} has a frozen mask of shape {self._mask.shape} but got "
                             f"input {x.shape}; set freeze_mask = False to draw a new one")
        self._applied = self._mask
        return x * self._mask

    def backward(self, g):
        return g * _saved(self, self._applied)

    def __repr__(self):
        return f"Dropout(p={self.p})"
