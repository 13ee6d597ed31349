"""An ensemble: several trained models answer together, by averaging their probabilities."""

import numpy as np

from .layers import Module, sigmoid


class Ensemble(Module):
    """p = mean over members of each member's genre probabilities.   x: (N, D) -> p: (N, G).

    outputs[i] says what members[i] returns, "logits" (sigmoid is applied) or "probabilities".
    Why average: models that see a poster differently (learned filters, hand-made colour
    statistics) make partly independent mistakes, which averaging cancels. The members must
    take the same input, images of the same size. An ensemble is put together from models
    trained on their own; it is not trained as a whole, so it has no backward.
    """

    def __init__(self, members, outputs):
        if len(members) != len(outputs) or not members:
            raise ValueError("an ensemble needs one output kind per member, and a member")
        unknown = set(outputs) - {"logits", "probabilities"}
        if unknown:   # a typo would otherwise skip the sigmoid of that member without a word
            raise ValueError(f"unknown output kinds {sorted(unknown)}: 'logits' or "
                             "'probabilities'")
        self.members = list(members)
        self.outputs = list(outputs)

    def forward(self, x):
        probs = [sigmoid(m(x)) if out == "logits" else m(x)
                 for m, out in zip(self.members, self.outputs)]
        return np.mean(probs, axis=0)

    def backward(self, g):
        raise RuntimeError("an Ensemble is not trained as a whole: train each member")

    def __repr__(self):
        return f"Ensemble({len(self.members)} members)"
