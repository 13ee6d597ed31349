"""Model builders, so a checkpoint can name its architecture and be rebuilt from that name."""

import numpy as np

from .layers import Linear, ReLU, Sequential, Sigmoid

PAPER_INPUT = 350 * 350 * 3
PAPER_HIDDEN = (512, 256, 128, 64)


def paper_mlp(input_size=PAPER_INPUT, hidden=PAPER_HIDDEN, n_out=25, rng=0, dtype=np.float32,
              logits=False):
    """The paper's MLP: a linear input layer, three hidden layers and a linear output layer.

    With hidden = (512, 256, 128, 64) the layers are 367500->512 (the input layer),
    512->256, 256->128, 128->64 (the three hidden layers) and 64->25 (the output layer),
    ReLU after each but the last, then Sigmoid; logits=True leaves the Sigmoid out, for
    BCEWithLogitsLoss. The first layer computes no gradient for its input, the images.
    """
    rng = np.random.default_rng(rng)
    sizes = [input_size, *hidden, n_out]
    layers = []
    for i, (d, h) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(d, h, rng=rng, dtype=dtype, input_grad=i > 0))
        layers.append(ReLU())
    layers.pop()  # the output layer is linear: no ReLU after it
    if not logits:
        layers.append(Sigmoid())
    return Sequential(*layers)
