"""Input preprocessing as a layer, so that a checkpoint carries it and a new poster gets it too."""

import numpy as np

from .layers import Module, _saved


class Standardize(Module):
    """y = (x - mean) / std per channel, for flat channel-last rows.   x, y: (N, D).

    mean and std have C entries (lists, so that they go into a checkpoint's JSON model spec) and
    D must be a multiple of C: a row is read as D / C groups of C channels, the layout of a
    flattened (H, W, C) image. C = 3 standardises the colour channels of an image; C = D
    standardises every feature of a feature vector on its own.

    Why: raw pixels in [0, 1] all share one sign and an offset of about 0.4, which makes the
    first layer's gradient steps zig-zag; centred, unit-scale inputs train faster under one lr.
    No parameters: mean and std are measured on the training posters before training, then fixed.
    Backward: dL/dx = g / std.
    """

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        if self.mean.ndim != 1 or self.mean.shape != self.std.shape:
            raise ValueError(f"mean and std must be two lists of the same length, got shapes "
                             f"{self.mean.shape} and {self.std.shape}")
        if not (self.std > 0).all():
            raise ValueError("every std must be positive")
        self._shape = None

    def _channels(self, x):
        n, d = x.shape
        c = len(self.mean)
        if d % c:
            raise ValueError(f"{self!r}: {d} features are not groups of {c} channels")
        return x.reshape(n, d // c, c)

    def forward(self, x):
        self._shape = x.shape
        y = (self._channels(x) - self.mean.astype(x.dtype)) / self.std.astype(x.dtype)
        return y.reshape(x.shape)

    def backward(self, g):
        shape = _saved(self, self._shape)
        return (self._channels(g) / self.std.astype(g.dtype)).reshape(shape)

    def __repr__(self):
        return f"Standardize({len(self.mean)} channels)"


def standardize_stats(images, indices, transform=None, batch=256):
    """(mean, std) lists for Standardize, measured on images[indices] (uint8 (N, H, W, C)).

    transform None: one entry per colour channel, in [0, 1] units, for a model on pixels.
    transform(x) (flat float batch (B, H*W*C) -> (B, F)), a fixed layer such as ImageFeatures:
    one entry per output column, for a model on what it computes.
    Sums go a batch at a time, in float64: the images may be a memmap larger than memory.
    """
    total = squares = 0.0
    count = 0
    for start in range(0, len(indices), batch):
        u8 = images[np.sort(indices[start:start + batch])]
        x = u8.reshape(len(u8), -1) / np.float32(255)  # as the DataLoader's batches: float32
        rows = x.reshape(-1, images.shape[-1]) if transform is None else transform(x)
        rows = rows.astype(np.float64)
        total = total + rows.sum(axis=0)
        squares = squares + (rows * rows).sum(axis=0)
        count += len(rows)
    mean = total / count
    # a constant column (e.g. a colour bin no training poster uses) gets std 1, not 1 / 0
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0))
    std[std < 1e-6] = 1.0
    return mean.tolist(), std.tolist()
