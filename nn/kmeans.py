"""Features learned without labels: a dictionary of image patches found by k-means.

Coates, Lee & Ng, "An Analysis of Single-Layer Networks in Unsupervised Feature Learning"
(AISTATS 2011): cut the training images into small patches, normalise and whiten them, run
k-means, and describe an image by how close each of its patches comes to each centroid. On
few labelled images this does as well as a CNN trained from scratch, for the price of one
k-means run, because the dictionary needs no labels and no gradient.

    layer = KMeansFeatures((64, 64), patch=8, stride=4, n_centroids=256, grid=2)
    layer.fit(train_images)      # uint8 (N, 64, 64, 3): k-means, once, before training
    codes = layer(x)             # flat images (B, 64*64*3) in [0, 1] -> (B, 2*2*256)

The dictionary (patch_mean, whiten, centroids) is held in Parameters so that checkpoints save
and load it like any weights, but it is fitted by k-means, not by gradient steps: the layer has
`learned = False`, and nn.models.trainable_parameters leaves it out of the optimizer.
"""

import numpy as np

from .conv import im2col
from .features import grid_cells
from .layers import Module, Parameter

CONTRAST_EPS = 0.01  # keeps flat patches (mostly noise, variance ~0) from being blown up
WHITEN_EPS = 0.1     # Coates et al.'s value for normalised patches: damps the tiniest directions


def normalise_patches(p):
    """Each row (a flattened patch) minus its mean, over its standard deviation: brightness and
    contrast divided out, so that a centroid stands for a pattern. (M, D) -> (M, D)."""
    p = p - p.mean(axis=1, keepdims=True)
    return p / np.sqrt(p.var(axis=1, keepdims=True) + CONTRAST_EPS)


class KMeansFeatures(Module):
    """Triangle codes of patches, max-pooled over a grid.   x: (N, H*W*3) -> y: (N, g*g*K).

    Every patch x patch window, at steps of `stride` pixels, is flattened to v (D = patch^2 * 3),
    normalised, and whitened: z = (v - patch_mean) @ whiten. With d_k = ||z - c_k|| its
    distance to centroid k, the triangle code is f_k = max(0, mean_j d_j - d_k): nonzero only
    for centroids nearer than average, so the code is sparse. Each of the grid x grid cells of
    the image then keeps, per centroid, the largest code among its patches.

    Not differentiable here, and not trained: make it the first layer (or a branch of a first
    Concat) and give the next Linear input_grad=False.
    """

    learned = False

    def __init__(self, image_size, patch=8, stride=4, n_centroids=256, grid=2):
        self.image_size = tuple(image_size)
        self.patch, self.stride, self.grid = patch, stride, grid
        d = patch * patch * 3
        self.patch_mean = Parameter(np.zeros(d, np.float32))
        self.whiten = Parameter(np.eye(d, dtype=np.float32))
        self.centroids = Parameter(np.zeros((n_centroids, d), np.float32))

    @property
    def n_features(self):
        return self.grid * self.grid * len(self.centroids.data)

    def fit(self, images, rng=0, n_patches=100_000, iterations=10):
        """Fit the whitening and the centroids to random patches of images (uint8 (N, H, W, 3),
        the training posters at image_size), by Lloyd's k-means. Returns self."""
        rng = np.random.default_rng(rng)
        p = self.patch
        n, h, w, _ = images.shape
        i = rng.integers(0, n, n_patches)[:, None, None]
        r = rng.integers(0, h - p + 1, n_patches)[:, None, None] + np.arange(p)[:, None]
        c = rng.integers(0, w - p + 1, n_patches)[:, None, None] + np.arange(p)[None, :]
        v = normalise_patches(images[i, r, c].reshape(n_patches, -1) / np.float32(255))
        mean = v.mean(axis=0)
        whiten = _zca(v - mean)
        centroids = _kmeans((v - mean) @ whiten, len(self.centroids.data), iterations, rng)
        self.patch_mean.data[:] = mean
        self.whiten.data[:] = whiten
        self.centroids.data[:] = centroids
        return self

    def forward(self, x):
        h, w = self.image_size
        images = x.reshape(len(x), h, w, 3)
        n = len(images)
        # rows of (p, p, 3), the pixel order of fit's patches
        v, (rows, cols) = im2col(images, (self.patch, self.patch), (self.stride, self.stride))
        z = (normalise_patches(v) - self.patch_mean.data) @ self.whiten.data
        distances = np.sqrt(_squared_distances(z, self.centroids.data))
        codes = np.maximum(distances.mean(axis=1, keepdims=True) - distances, 0)
        codes = codes.reshape(n, rows * cols, -1)
        cell = grid_cells(rows, cols, self.grid, self.grid).ravel()
        pooled = [codes[:, cell == k].max(axis=1) for k in range(self.grid * self.grid)]
        return np.concatenate(pooled, axis=1).astype(x.dtype, copy=False)

    def backward(self, g):
        raise RuntimeError("KMeansFeatures has no gradient: make it the first layer, and give "
                           "the next Linear input_grad=False")

    def __repr__(self):
        return (f"KMeansFeatures({self.image_size}, patch={self.patch}, stride={self.stride}, "
                f"{len(self.centroids.data)} centroids, grid={self.grid})")


def _zca(v):
    """The ZCA whitening matrix (D, D) of the centred rows v (M, D): rotate onto the principal axes,
    scale each to unit variance, rotate back. Neighbouring pixels are strongly correlated;
    without this, k-means spends its centroids on smooth gradients instead of edges."""
    eigenvalues, axes = np.linalg.eigh(np.cov(v, rowvar=False))
    return (axes @ np.diag(1 / np.sqrt(eigenvalues + WHITEN_EPS)) @ axes.T).astype(v.dtype)


def _kmeans(z, k, iterations, rng):
    """Lloyd's algorithm: k centroids (k, D) of the rows of z (M, D), started at k random rows;
    each iteration assigns every row to its nearest centroid and moves each centroid to the
    mean of its rows."""
    centroids = z[rng.choice(len(z), k, replace=False)]
    for _ in range(iterations):
        nearest = _squared_distances(z, centroids).argmin(axis=1)
        counts = np.bincount(nearest, minlength=k)
        sums = np.zeros_like(centroids)
        np.add.at(sums, nearest, z)
        used = counts > 0
        centroids[used] = sums[used] / counts[used, None]
        # a centroid that won no row starts again from a random one
        centroids[~used] = z[rng.choice(len(z), int((~used).sum()), replace=False)]
    return centroids


def _squared_distances(z, centroids):
    """||z_m - c_k||^2 for every row m and centroid k, as ||z||^2 - 2 z.c + ||c||^2: one matrix
    product instead of an (M, K, D) difference. Clipped at 0, which rounding can undershoot."""
    d2 = (z * z).sum(axis=1, keepdims=True) - 2 * z @ centroids.T + (centroids ** 2).sum(axis=1)
    return np.maximum(d2, 0)
