"""Hand-made poster features: colour and texture statistics, computed, never learned.

Genre shows in a poster's palette and layout before it shows in any object: horror is dark and
desaturated, animation bright and saturated, comedies sit on white, dramas on faces. A linear
model on raw pixels must find those statistics itself from 4,000 posters; here they are written
out, so a small classifier on top starts from them.

    ImageFeatures((64, 64)):  flat images (N, 64*64*3) in [0, 1] -> features (N, F)

Three families, each over a grid of cells (a g x g grid cuts the image into g*g nearly equal cells,
so that "where" is kept as well as "what"):
  - colour histograms: the share of a cell's pixels in each joint (hue, saturation, value) bin;
  - colour moments: mean and standard deviation per cell of R, G, B, saturation, value and the
    hue as a point on the colour wheel scaled by saturation (s cos h, s sin h), so that a grey
    pixel, whose hue means nothing, sits at the centre;
  - gradient orientations (as in HOG, Dalal & Triggs): per cell, the gradient magnitude summed
    into bins of edge direction, then L2-normalised, so that text, faces and landscapes differ.
"""

import numpy as np

from .layers import Module, _saved

MOMENTS = 7  # channels of the colour moments: r, g, b, s, v, s cos h, s sin h


def rgb_to_hsv(rgb):
    """(..., 3) RGB in [0, 1] -> hue, saturation, value, each (...) in [0, 1]; grey has hue 0."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(axis=-1)
    chroma = value - rgb.min(axis=-1)
    safe = np.where(chroma > 0, chroma, 1)  # hue and saturation are 0 where chroma is
    saturation = np.where(value > 0, chroma / np.where(value > 0, value, 1), 0)
    # the sector of the colour wheel comes from which channel is largest (six sectors of 1/6)
    hue = np.where(value == r, ((g - b) / safe) % 6,
                   np.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    return np.where(chroma > 0, hue, 0), saturation, value


def grid_cells(h, w, rows, cols):
    """The cell of every pixel when an h x w image is cut into rows x cols nearly equal cells:
    an int (h, w) array of row-major cell numbers 0 .. rows*cols - 1."""
    return (np.arange(h) * rows // h)[:, None] * cols + (np.arange(w) * cols // w)[None, :]


def _binned_sums(cell, n_cells, bins, n_bins, weights=None):
    """Per image, cell and bin, the number of pixels in it (or the sum of their weights).

    cell (H, W) int; bins (N, H, W) int, or 0 for one bin; weights (N, H, W) or None.
    -> (N, n_cells, n_bins). One bincount over the flat index (image, cell, bin): no Python loop
    over images or pixels.
    """
    n = len(weights) if weights is not None else len(bins)
    index = (np.arange(n)[:, None, None] * n_cells + cell) * n_bins + bins
    sums = np.bincount(index.ravel(), None if weights is None else weights.ravel(),
                       minlength=n * n_cells * n_bins)
    return sums.reshape(n, n_cells, n_bins)


def _colour_histograms(colour, n_colours, grid):
    """The share of each cell's pixels in each colour bin. colour (N, H, W) int ->
    (N, grid^2 * n_colours)."""
    h, w = colour.shape[1:]
    cell = grid_cells(h, w, grid, grid)
    pixels = np.bincount(cell.ravel(), minlength=grid * grid)
    counts = _binned_sums(cell, grid * grid, colour, n_colours)
    return (counts / pixels[:, None]).reshape(len(colour), -1)


def _cell_moments(channels, grid):
    """Mean and std over each cell of every channel. (N, H, W, C) -> (N, 2 * grid^2 * C)."""
    n, h, w, c = channels.shape
    cell = grid_cells(h, w, grid, grid)
    pixels = np.bincount(cell.ravel(), minlength=grid * grid)[:, None]
    mean = np.concatenate([_binned_sums(cell, grid * grid, 0, 1, channels[..., k])
                           for k in range(c)], axis=-1) / pixels
    mean_square = np.concatenate([_binned_sums(cell, grid * grid, 0, 1, channels[..., k] ** 2)
                                  for k in range(c)], axis=-1) / pixels
    std = np.sqrt(np.maximum(mean_square - mean ** 2, 0))  # rounding can dip below 0
    return np.concatenate([mean.reshape(n, -1), std.reshape(n, -1)], axis=1)


def _orientation_histograms(gray, cell_size, n_bins):
    """HOG cells: the gradient magnitude summed by direction (n_bins over 0..pi) in each cell
    of about cell_size x cell_size pixels, each cell's histogram L2-normalised, so that it
    describes the shape of the edges whatever their contrast. (N, H, W) -> (N, F)."""
    gx = np.zeros_like(gray)
    gy = np.zeros_like(gray)
    gx[:, :, 1:-1] = gray[:, :, 2:] - gray[:, :, :-2]  # centred differences, 0 at the border
    gy[:, 1:-1, :] = gray[:, 2:, :] - gray[:, :-2, :]
    magnitude = np.hypot(gx, gy)
    # unsigned: an edge from dark to light and one from light to dark share a bin
    angle = np.arctan2(gy, gx) % np.pi
    bins = np.minimum((angle * (n_bins / np.pi)).astype(np.intp), n_bins - 1)
    h, w = gray.shape[1:]
    rows, cols = h // cell_size, w // cell_size
    hist = _binned_sums(grid_cells(h, w, rows, cols), rows * cols, bins, n_bins, magnitude)
    hist /= np.sqrt((hist ** 2).sum(axis=-1, keepdims=True) + 1e-6)
    return hist.reshape(len(gray), -1)


class Concat(Module):
    """y = [f_1(x), f_2(x), ...] side by side: several layers applied to the same input.

    x: (N, D) -> y: (N, F_1 + F_2 + ...), the branches' outputs (N, F_i) joined column-wise,
    e.g. ImageFeatures and KMeansFeatures of the same images.
    Backward: branch i gets its own columns g_i of g, and dL/dx is the sum of the branches'
    dL/dx, since x fed every one of them. A branch returning None (no input gradient) adds
    nothing; if every branch does, so does Concat.
    """

    def __init__(self, *branches):
        self.branches = list(branches)
        self._widths = None

    def forward(self, x):
        outputs = [branch(x) for branch in self.branches]
        self._widths = [out.shape[1] for out in outputs]
        return np.concatenate(outputs, axis=1)

    @property
    def n_features(self):
        return sum(branch.n_features for branch in self.branches)

    def backward(self, g):
        widths = _saved(self, self._widths)
        parts = np.split(g, np.cumsum(widths)[:-1], axis=1)
        grads = [b.backward(part) for b, part in zip(self.branches, parts)]
        grads = [d for d in grads if d is not None]
        return sum(grads[1:], grads[0]) if grads else None

    def __repr__(self):
        return "Concat(" + ", ".join(map(repr, self.branches)) + ")"


class ImageFeatures(Module):
    """Colour histograms, colour moments and orientation histograms of flat images.

    x: (N, H*W*3) float in [0, 1], image_size = (H, W)  ->  y: (N, n_features) float.
    histogram_grids: one joint HSV histogram of hsv_bins = (hue, sat, value) bins per cell of
    each grid size listed; moments_grid: the grid of the colour moments; hog_cell: the side in
    pixels of a HOG cell, with hog_bins directions.

    No parameters and no derivative (counts in bins are piecewise constant), so this layer must
    come first and the layer after it must not ask for an input gradient (Linear with
    input_grad=False); backward() says so if it is ever reached.
    """

    def __init__(self, image_size, histogram_grids=(1, 2), hsv_bins=(8, 3, 3), moments_grid=4,
                 hog_cell=8, hog_bins=9):
        self.image_size = tuple(image_size)
        self.histogram_grids = tuple(histogram_grids)
        self.hsv_bins = tuple(hsv_bins)
        self.moments_grid = moments_grid
        self.hog_cell, self.hog_bins = hog_cell, hog_bins
        h, w = self.image_size
        if h < hog_cell or w < hog_cell:
            raise ValueError(f"images {self.image_size} are smaller than a HOG cell ({hog_cell})")

    @property
    def n_features(self):
        h, w = self.image_size
        hist = sum(g * g for g in self.histogram_grids) * int(np.prod(self.hsv_bins))
        moments = 2 * self.moments_grid ** 2 * MOMENTS
        hog = (h // self.hog_cell) * (w // self.hog_cell) * self.hog_bins
        return hist + moments + hog

    def forward(self, x):
        h, w = self.image_size
        rgb = x.reshape(len(x), h, w, 3)
        hue, sat, val = rgb_to_hsv(rgb)
        nh, ns, nv = self.hsv_bins
        # joint bin of every pixel: hue slowest, value fastest
        colour = ((np.minimum((hue * nh).astype(np.intp), nh - 1) * ns
                   + np.minimum((sat * ns).astype(np.intp), ns - 1)) * nv
                  + np.minimum((val * nv).astype(np.intp), nv - 1))
        parts = [_colour_histograms(colour, nh * ns * nv, grid) for grid in self.histogram_grids]
        wheel = 2 * np.pi * hue
        moments = np.stack([rgb[..., 0], rgb[..., 1], rgb[..., 2], sat, val,
                            sat * np.cos(wheel), sat * np.sin(wheel)], axis=-1)
        parts.append(_cell_moments(moments, self.moments_grid))
        parts.append(_orientation_histograms(rgb.mean(axis=-1), self.hog_cell, self.hog_bins))
        return np.concatenate(parts, axis=1).astype(x.dtype)

    def backward(self, g):
        raise RuntimeError("ImageFeatures has no gradient: make it the first layer, and give the "
                           "next Linear input_grad=False")

    def __repr__(self):
        return f"ImageFeatures({self.image_size}, {self.n_features} features)"
