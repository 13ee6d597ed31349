"""Binary cross-entropy, on probabilities and on logits.

Both average over all N x G entries (PyTorch's default `reduction="mean"`), return a float,
and keep what `backward()` needs; `backward()` returns dL/d(input), shape (N, G).
"""

import numpy as np

from .layers import _saved, sigmoid


class BCELoss:
    """L = -mean(y log p + (1 - y) log(1 - p)).   p, y: (N, G).

    Backward: dL/dp = (p - y) / (p (1 - p)) / (N G).
    p is clipped to [eps, 1 - eps] (eps of its dtype) so a saturated Sigmoid never gives log(0)
    or a division by zero. Paired with Sigmoid, p (1 - p) cancels and dL/dz = (p - y) / (N G);
    BCEWithLogitsLoss does that in one step and is the stabler choice.
    """

    def __init__(self):
        self._saved = None

    def __call__(self, p, y):
        return self.forward(p, y)

    def forward(self, p, y):
        y = _targets(p, y)
        eps = np.finfo(p.dtype).eps
        p = np.clip(p, eps, 1 - eps)
        self._saved = (p, y)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))

    def backward(self):
        p, y = _saved(self, self._saved)
        return (p - y) / (p * (1 - p)) / p.size


class BCEWithLogitsLoss:
    """L = mean(w_y * log(1 + exp(-z)) + (1 - y) z), the BCE of sigmoid(z), from logits z.

    Written stably as max(z, 0) - z y + log(1 + exp(-|z|)) when pos_weight is None.
    pos_weight (G,) multiplies the loss of positive labels, w_y = 1 + (pos_weight - 1) y, to
    make rare genres count more (PyTorch's argument of the same name).

    Backward: dL/dz = (sigmoid(z) - y) / (N G) without pos_weight;
              dL/dz = ((1 - y) - w_y sigmoid(-z)) / (N G) with it.
    """

    def __init__(self, pos_weight=None):
        self.pos_weight = pos_weight
        self._saved = None

    def __call__(self, z, y):
        return self.forward(z, y)

    def forward(self, z, y):
        y = _targets(z, y)
        # log(1 + exp(-z)) = max(-z, 0) + log1p(exp(-|z|)): exp of a non-positive number only.
        softplus_neg = np.maximum(-z, 0) + np.log1p(np.exp(-np.abs(z)))
        w = self._weights(y)
        self._saved = (z, y, w)
        return float(np.mean(w * softplus_neg + (1 - y) * z))

    def backward(self):
        z, y, w = _saved(self, self._saved)
        return ((1 - y) - w * sigmoid(-z)) / z.size

    def _weights(self, y):
        if self.pos_weight is None:
            return 1
        return 1 + (np.asarray(self.pos_weight, dtype=y.dtype) - 1) * y


def _targets(x, y):
    if x.shape != y.shape:
        raise ValueError(f"predictions {x.shape} and targets {y.shape} differ in shape")
    return np.asarray(y, dtype=x.dtype)
