"""Name the genres of any poster: the top three with their probabilities (the paper's Fig. 6).

    python examples/predict_poster.py poster.jpg [more.png ...] [--checkpoint CKPT]

Any size, JPEG or PNG, any colour mode. Without --checkpoint it uses the best model of
examples/compare_models.py (runs/best.npz) when that exists, else runs/paper/best.npz.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from common import run

from nn.data import DataError, load_image, to_float
from nn.layers import sigmoid
from nn.models import load_model

DEFAULTS = [Path("runs/best.npz"), Path("runs/paper/best.npz")]


def default_checkpoint():
    for path in DEFAULTS:
        if path.exists():
            return path
    raise FileNotFoundError("no checkpoint found at " + " or ".join(map(str, DEFAULTS)) +
                            ": train one with examples/train_posters.py or pass --checkpoint")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--top", type=int, default=3)
    args = p.parse_args(argv)

    checkpoint = args.checkpoint or default_checkpoint()
    model, meta, _ = load_model(checkpoint)
    model.eval()
    width, height = meta["image_size"]
    failed = 0
    for path in args.images:
        try:
            pixels = load_image(path, size=(width, height))
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        out = model(to_float(pixels[None]))[0]
        probs = sigmoid(out) if meta["output"] == "logits" else out
        top = np.argsort(-probs, kind="stable")[:args.top]
        print(f"{path}: " + ", ".join(f"{meta['genres'][g]} {probs[g]:.2f}" for g in top))
    return 2 if failed else 0


if __name__ == "__main__":
    run(main)
