"""Data augmentation: random changes to a training batch that keep every poster's genres.

A poster mirrored left to right, or moved by a few pixels, is still the same film, so each
epoch shows the model slightly different images and it cannot learn the training posters
pixel by pixel. Used as the Trainer's transform(x, rng) on flat float batches.
"""

import numpy as np


class RandomFlipShift:
    """transform(x, rng): mirror each image left-right with probability 1/2 and shift it by up
    to max_shift pixels along each axis, filling the uncovered border with its edge pixels.

    x: flat images (B, H*W*3), image_size = (H, W) -> a new array of the same shape. Every
    draw comes from rng, so a resumed run augments exactly as an uninterrupted one.
    """

    def __init__(self, image_size, max_shift=4, flip=True):
        self.image_size = tuple(image_size)
        self.max_shift, self.flip = max_shift, flip

    def __call__(self, x, rng):
        h, w = self.image_size
        k = self.max_shift
        images = x.reshape(len(x), h, w, 3)
        padded = np.pad(images, ((0, 0), (k, k), (k, k), (0, 0)), mode="edge")
        dy, dx = rng.integers(0, 2 * k + 1, size=(2, len(x)))
        mirror = rng.random(len(x)) < 0.5 if self.flip else np.zeros(len(x), bool)
        out = np.empty_like(images)
        for i in range(len(x)):  # a crop per image: B slices, never a loop over pixels
            crop = padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
            out[i] = crop[:, ::-1] if mirror[i] else crop
        return out.reshape(x.shape)

    def __repr__(self):
        return f"RandomFlipShift({self.image_size}, max_shift={self.max_shift}, flip={self.flip})"
