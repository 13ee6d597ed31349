"""Training on a model's fixed leading layers' outputs, computed once instead of every epoch.

A feature extractor and its Standardize have no trainable parameters and draw nothing at
random, so every epoch would compute the same features again (14 s of a 15 s epoch for the
"features" model). split_fixed cuts such a model in two, precompute runs the fixed part over
the posters once, FeatureLoader batches the result exactly as nn.data.DataLoader batches images,
and random_flips keeps the flip augmentation by choosing, per row, precomputed features of the
plain or the mirrored poster. The Trainer then trains the rest (see its checkpoint_model).
"""

import math

import numpy as np

from .layers import Sequential
from .models import trainable_parameters


def split_fixed(model):
    """(fixed, rest): Sequentials of the leading layers of the Sequential `model` that training
    never changes (no parameters but ones with learned = False, no random draws, e.g. a feature
    extractor and its Standardize), and of the layers after them. They share model's layers:
    training `rest` trains `model`."""
    layers = list(model)
    n = 0
    while n < len(layers) and _is_fixed(layers[n]):
        n += 1
    return Sequential(*layers[:n]), Sequential(*layers[n:])


def _is_fixed(layer):
    random = any(hasattr(m, "rng") for m in layer.modules())  # e.g. Dropout
    return not trainable_parameters(layer) and not random


def precompute(fixed, images, indices, flip=False, batch_size=64):
    """fixed's outputs float32 (N, F) for images[indices] (uint8 (N, H, W, 3)), mirrored left
    to right first if flip (as RandomFlipShift mirrors them); the other rows are 0. Batches as
    small as training's keep a k-means layer's temporaries in cache (256: twice as slow)."""
    from .data import DataLoader

    indices = np.sort(np.asarray(indices, np.intp))
    no_labels = np.zeros((len(images), 0), np.float32)
    out = None
    done = 0
    for x, _ in DataLoader(images, no_labels, indices, batch_size, shuffle=False):
        if flip:
            x = x.reshape(len(x), *images.shape[1:])[:, :, ::-1].reshape(len(x), -1)
        features = fixed(x)
        if out is None:
            out = np.zeros((len(images), features.shape[1]), features.dtype)
        out[indices[done:done + len(x)]] = features
        done += len(x)
    return out


def with_flips(features, flipped):
    """Rows [features | flipped] (N, 2F), for a FeatureLoader and the transform random_flips."""
    return np.concatenate([features, flipped], axis=1)


def random_flips(x, rng):
    """The Trainer transform for rows of with_flips: each row's flipped half with probability
    1/2, else its plain half. (B, 2F) -> (B, F). Draws what RandomFlipShift(size, 0) draws, so
    training on precomputed features flips the same posters as training on images."""
    mirror = rng.random(len(x)) < 0.5
    half = x.shape[1] // 2
    return np.where(mirror[:, None], x[:, half:], x[:, :half])


class FeatureLoader:
    """Minibatches (x (B, F), y (B, G)) of rows of a float array features (N, F), such as
    precompute's, in exactly the order in which nn.data.DataLoader batches images: epoch k
    shuffles the indices by (seed, k), each batch comes in increasing index order."""

    def __init__(self, features, y, indices=None, batch_size=64, shuffle=True, seed=0):
        if len(features) != len(y):
            raise ValueError(f"{len(features)} feature rows but {len(y)} label rows")
        self.features, self.y = features, y
        self.indices = np.arange(len(features)) if indices is None else np.asarray(indices,
                                                                                     np.intp)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch = 0

    def __len__(self):
        return math.ceil(len(self.indices) / self.batch_size)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        order = self.indices
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        self.epoch += 1
        for start in range(0, len(order), self.batch_size):
            batch = np.sort(order[start:start + self.batch_size])
            yield self.features[batch], self.y[batch].astype(np.float32)
