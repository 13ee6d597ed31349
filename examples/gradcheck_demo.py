"""Gradient checking in class: a correct backward passes, a broken one is caught.

    python examples/gradcheck_demo.py

1. One centred difference by hand, then nn.gradcheck on a Linear layer.
2. A paper-shaped MLP with BCE (the paper's widths divided by 16, a batch of 33): PASS.
   Why a tiny gradient needs the rounding discount.
3. Two bugs planted on purpose (a bias gradient that averages, a ReLU that forgets its mask):
   FAIL, and the report points at the layer.
4. A false alarm that is not a bug: an input sitting on ReLU's kink.
Everything is float64: float32 cannot resolve a difference of h = 1e-5.
"""

import sys
import textwrap
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too
import nn  # noqa: E402
from nn.gradcheck import relative_error  # noqa: E402
from nn.models import paper_mlp  # noqa: E402

H = 1e-5
EPS = np.finfo(np.float64).eps


class BiasMeanLinear(nn.Linear):
    """Bug 1: the bias gradient averages over the batch instead of summing."""

    def backward(self, g):
        dx = super().backward(g)
        self.bias.grad[...] = g.mean(axis=0)   # should be g.sum(axis=0)
        return dx


class ForgetfulReLU(nn.ReLU):
    """Bug 2: passes the gradient through where the input was negative (forgets the mask)."""

    def backward(self, g):
        return g.copy()                        # should be g * (x > 0)


def say(text):
    print(textwrap.fill(" ".join(text.split()), 88))


def title(text):
    print(f"\n=== {text} " + "=" * max(0, 84 - len(text)))


def by_hand(objective, array, index, analytic):
    """The centred difference at one coordinate, step by step; returns the numeric slope."""
    old = array[index]
    array[index] = old + H
    plus = objective()
    array[index] = old - H
    minus = objective()
    array[index] = old
    numeric = (plus - minus) / (2 * H)
    print(f"  f(w + h) = {plus:+.12f}")
    print(f"  f(w - h) = {minus:+.12f}")
    print(f"  numeric  = (f(w + h) - f(w - h)) / 2h = {numeric:+.10e}")
    print(f"  analytic = from backward()            = {analytic:+.10e}")
    print(f"  relative error |a - n| / (|a| + |n|)   = {relative_error(analytic, numeric):.1e}")
    return numeric, plus, minus


def part1(rng):
    title("1. A Linear layer: y = x @ W + b, batch of 5, 4 -> 3")
    layer = nn.Linear(4, 3, rng=0, dtype=np.float64)
    x = rng.standard_normal((5, 4))
    g = rng.standard_normal((5, 3))          # f = sum(g * y): a scalar that uses every output
    layer(x)
    layer.zero_grad()
    layer.backward(g)                        # dL/dW = x.T @ g lands in layer.weight.grad
    say("By hand, for the single weight W[1, 2], with f = sum(g * layer(x)) and h = 1e-5:")
    by_hand(lambda: float(np.sum(g * layer(x))), layer.weight.data, (1, 2),
            layer.weight.grad[1, 2])
    say("nn.gradcheck does the same for every input, weight and bias coordinate (up to 20 "
        "random ones per array) and keeps the worst:")
    print(nn.gradcheck(layer, x))
    say("Below 1e-7 is right; above 1e-4 is a bug; in between, look closer.")


def small_paper_mlp(seed=0):
    """367500 -> 512 -> 256 -> 128 -> 64 -> 25, shrunk: a 7 x 7 x 3 'poster', widths / 16."""
    return paper_mlp(input_size=7 * 7 * 3, hidden=(32, 16, 8, 4), n_out=25, rng=seed,
                     dtype=np.float64)


def batch(rng):
    x = rng.random((33, 7 * 7 * 3))                          # 33 "posters", pixels in [0, 1]
    y = (rng.random((33, 25)) < 0.15).astype(np.float64)     # a few genres each
    return x, y


def part2(rng):
    title("2. The paper's MLP, shrunk: 147 -> 32 -> 16 -> 8 -> 4 -> 25, Sigmoid, BCE, batch 33")
    model, (x, y), loss = small_paper_mlp(), batch(rng), nn.BCELoss()
    print(nn.gradcheck(model, x, y, loss=loss))
    say("No 'input' row: the first Linear has input_grad=False, because nobody learns the "
        "pixels. 'rel err' is what rounding cannot explain (the verdict); 'raw' is the plain "
        "relative error, which for gradients near 1e-5 is mostly rounding noise, as shown next.")

    # Why 0.00e+00 and not 1e-10: the rounding discount, on the tiniest first-layer gradient.
    objective = lambda: loss(model(x), y)  # noqa: E731
    model.zero_grad()
    objective()
    model.backward(loss.backward())
    grad = model[0].weight.grad
    small = np.where(np.abs(grad) > 1e-7, np.abs(grad), np.inf)
    index = np.unravel_index(np.argmin(small), grad.shape)
    print()
    say(f"The rounding discount. The first-layer weight with the smallest gradient above 1e-7 "
        f"is W{tuple(int(i) for i in index)}:")
    numeric, plus, minus = by_hand(objective, model[0].weight.data, index, grad[index])
    noise = EPS * max(abs(plus), abs(minus)) / H
    print(f"  |a - n| = {abs(grad[index] - numeric):.1e};  rounding noise eps * |f| / h = "
          f"{noise:.1e}")
    say("The loss itself is only known to eps * |f| (about 1e-16), so the numeric slope "
        "carries noise up to eps * |f| / h. On a gradient this small that noise alone can "
        "exceed 1e-7 of it. nn.gradcheck does not count the part of |a - n| below the noise, "
        "so a correct backward reads 0.00e+00 instead of a false alarm.")


def part3(rng):
    title("3. Bug 1: the bias gradient averages over the batch instead of summing")
    x = rng.standard_normal((5, 4))
    report = nn.gradcheck(BiasMeanLinear(4, 3, rng=0, dtype=np.float64), x)
    print(report)
    bias = next(c for c in report.checks if c.name == "bias")
    say(f"Caught: only the bias fails, and analytic / numeric = "
        f"{bias.analytic / bias.numeric:.3f} = 1/5 for a batch of 5. b is added to every row, "
        "so dL/db = g.sum(0).")

    title("3. Bug 2: a ReLU that forgets its mask, second ReLU of the MLP")
    model, (x, y) = small_paper_mlp(), batch(rng)
    model.layers[3] = ForgetfulReLU()          # the ReLU after Linear 2 (32 -> 16)
    print(nn.gradcheck(model, x, y, loss=nn.BCELoss()))
    say("Caught, and located: backward runs from the loss down, so the arrays above the "
        "broken ReLU (4, 6, 8) still pass and the ones below it (0, 2) fail.")


def part4(rng):
    title("4. A false alarm: an input on ReLU's kink")
    x = rng.standard_normal((3, 4))
    x[1, 2] = 0.0                              # exactly on the kink
    report = nn.gradcheck(nn.ReLU(), x, max_coords=12)
    print(report)
    say("max(x, 0) has no slope at 0: the centred difference straddles the kink and sees half "
        "of each side, while backward takes 0 there. This FAIL is about the test point, not the "
        "code. Keep inputs more than h away from 0 (tests/conftest.py: away_from_kink):")
    x[1, 2] = 1e-3
    print(nn.gradcheck(nn.ReLU(), x, max_coords=12))


def main():
    rng = np.random.default_rng(0)
    part1(rng)
    part2(rng)
    part3(rng)
    part4(rng)
    return 0


if __name__ == "__main__":
    sys.exit(main())
