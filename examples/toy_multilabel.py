"""A tiny multi-label problem that trains in seconds: watch the loss fall.

Each of 256 points in 2-D gets up to three labels: "right of the y axis", "above the x axis"
and "inside the unit circle". The last one is not linear, so the hidden layer has work to do.

    python examples/toy_multilabel.py [--epochs 60] [--lr 0.2] [--plot loss.png]
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too
sys.path.insert(0, str(Path(__file__).resolve().parent))
import nn  # noqa: E402
from plotting import plot_curves  # noqa: E402


def make_data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.5, 1.5, (n, 2)).astype(np.float32)
    y = np.stack([x[:, 0] > 0, x[:, 1] > 0, (x ** 2).sum(1) < 1], axis=1).astype(np.float32)
    return x, y


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, help="write the loss curve to this PNG")
    args = parser.parse_args(argv)

    x, y = make_data(seed=args.seed)
    model = nn.Sequential(nn.Linear(2, 16, rng=args.seed), nn.ReLU(),
                          nn.Linear(16, 3, rng=args.seed + 1), nn.Sigmoid())
    loss_fn = nn.BCELoss()
    opt = nn.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    rng = np.random.default_rng(args.seed)
    losses = []
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(x))
        total = 0.0
        for start in range(0, len(x), args.batch_size):
            batch = order[start:start + args.batch_size]
            loss = loss_fn(model(x[batch]), y[batch])   # forward
            model.backward(loss_fn.backward())          # backward: fills every p.grad
            opt.step()                                  # p -= lr * v
            opt.zero_grad()
            total += loss * len(batch)
        losses.append(total / len(x))
        accuracy = ((model(x) > 0.5) == y).mean()
        if epoch == 1 or epoch % 10 == 0:
            print(f"epoch {epoch:3d}  loss {losses[-1]:.4f}  label accuracy {accuracy:.3f}")
    if args.plot:
        plot_curves({"train loss": losses}, args.plot, title="toy multi-label problem",
                    ylabel="BCE loss")
    return losses


if __name__ == "__main__":
    main()
